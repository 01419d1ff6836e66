"""Cut an output of N frames into chunks (frame ranges) for the worker pool. Pure."""

from __future__ import annotations

import math


def plan_chunks(
    n_frames: int,
    fps: float,
    chunk_duration_s: float,
    parallel: bool = True,
    single_chunk_below_s: float = 0.0,
    max_chunks: int = 64,
) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` ranges covering ``[0, n_frames)``, as even as possible.

    One chunk when parallelism is off or the output is shorter than
    ``single_chunk_below_s`` (splitting a short clip costs more in per-chunk overhead
    than it gains). Otherwise about ``chunk_duration_s`` seconds per chunk, at most
    ``max_chunks`` chunks, sizes differing by at most one frame.
    """
    if n_frames <= 0:
        raise ValueError("n_frames must be positive")
    if not parallel or n_frames / fps < single_chunk_below_s:
        return [(0, n_frames)]
    per_chunk = max(1, round(chunk_duration_s * fps))
    count = min(max_chunks, n_frames, math.ceil(n_frames / per_chunk))
    base, extra = divmod(n_frames, count)
    bounds = [0]
    for i in range(count):
        bounds.append(bounds[-1] + base + (1 if i < extra else 0))
    return list(zip(bounds[:-1], bounds[1:]))
