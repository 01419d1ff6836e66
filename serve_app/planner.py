"""Cut an output of N frames into chunks (frame ranges) for the worker pool. Pure (no Ray)."""

from __future__ import annotations

import math

from wav2lip.aac import aac_frame_at


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


class VideoChunks:
    """Chunks of a whole video as its speech becomes known: whole ``chunk_duration_s``
    chunks of the settled frames at once (when pipelining), the rest once all is known."""

    def __init__(self, fps: float, chunk_duration_s: float, parallel: bool, single_chunk_below_s: float,
                 max_chunks: int, pipelined: bool):  # fmt: skip
        self.fps, self.chunk_s, self.parallel = fps, chunk_duration_s, parallel
        self.single_below, self.max_chunks, self.pipelined = single_chunk_below_s, max_chunks, pipelined
        self.sent = 0

    def _plan(self, stop: int) -> list[tuple[int, int]]:
        chunks = plan_chunks(stop - self.sent, self.fps, self.chunk_s, self.parallel, self.single_below,
                             self.max_chunks)  # fmt: skip
        out = [(self.sent + a, self.sent + b) for a, b in chunks]
        self.sent = stop
        return out

    def ready(self, settled_frames: int, aac_frames: int = 0) -> list[tuple[int, int]]:
        per = max(1, round(self.chunk_s * self.fps))
        stop = self.sent + (settled_frames - self.sent) // per * per
        return self._plan(stop) if self.pipelined and stop > self.sent else []

    def rest(self, n_frames: int) -> list[tuple[int, int]]:
        return self._plan(n_frames) if n_frames > self.sent else []


class StreamChunks:
    """Chunks of a progressive stream as its speech becomes known: a chunk goes once its end
    is a grid step inside the settled frames and its AAC frames are encoded."""

    def __init__(self, fps: float, first_frames: int, chunk_duration_s: float, grid: int):
        self.fps, self.first_frames, self.chunk_s, self.grid = fps, first_frames, chunk_duration_s, grid
        self.first, self.per = stream_chunk_frames(fps, first_frames, chunk_duration_s, grid)
        self.sent: list[tuple[int, int]] = []

    def ready(self, settled_frames: int, aac_frames: int) -> list[tuple[int, int]]:
        out = []
        while True:
            a = self.sent[-1][1] if self.sent else 0
            b = a + self.per if self.sent else self.first
            if b + self.grid > settled_frames or aac_frame_at(b / self.fps) > aac_frames:
                return out
            self.sent.append((a, b))
            out.append((a, b))

    def rest(self, n_frames: int) -> list[tuple[int, int]]:
        plan = plan_stream_chunks(n_frames, self.fps, self.first_frames, self.chunk_s, self.grid)
        if plan[: len(self.sent)] != self.sent:
            raise ValueError(f"stream plan changed under sent chunks: {self.sent} vs {plan[: len(self.sent)]}")
        out = plan[len(self.sent):]
        self.sent = plan
        return out
