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


def stream_chunk_frames(fps: float, first_frames: int, chunk_duration_s: float, grid: int = 1) -> tuple[int, int]:
    """(first chunk, later chunks) of a progressive stream in frames, both multiples of ``grid``."""
    grid = max(1, grid)
    return max(grid, math.ceil(first_frames / grid) * grid), max(grid, round(chunk_duration_s * fps / grid) * grid)


def plan_stream_chunks(n_frames: int, fps: float, first_frames: int, chunk_duration_s: float,
                       grid: int = 1) -> list[tuple[int, int]]:  # fmt: skip
    """Chunks of a progressive stream: a short first chunk, then ``chunk_duration_s`` ones.

    Every boundary but the end lies on a multiple of ``grid`` frames (where video and
    AAC frames align), so each fragment's audio slice starts and ends with its video.
    A remainder shorter than one grid step joins the chunk before it. Chunk ``j`` depends
    only on the sizes, never on ``n_frames``, once ``n_frames`` is a grid step past its end:
    so chunks can be sent while the speech is still growing. No chunk is longer than
    ``max(first, later + grid - 1)`` frames.
    """
    if n_frames <= 0:
        raise ValueError("n_frames must be positive")
    first, per = stream_chunk_frames(fps, first_frames, chunk_duration_s, grid)
    first = min(n_frames, first)
    bounds = [0, first] + list(range(first + per, n_frames, per))
    if n_frames - bounds[-1] < max(1, grid) and len(bounds) > 2:
        bounds.pop()
    if bounds[-1] != n_frames:
        bounds.append(n_frames)
    return list(zip(bounds[:-1], bounds[1:]))
