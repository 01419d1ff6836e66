"""The one chunk dispatcher: whole videos, jobs and progressive streams all send their
chunks to the worker pool through it.

It owns what every render needs from the pool: retries (on another replica when there is
one), timeouts, an optional window of chunks in flight, results in order, progress and
cancellation. A ``Dispatch`` is one render's chunks; ``feed`` turns the speech updates
of the media deployment into chunks as their mel windows (and AAC frames) become final.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import AsyncIterator, Awaitable, Callable

from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError

from actors.records import AvatarVariant, ChunkJob, ChunkResult, SpeechUpdate
from wav2lip.audio import final_frames, frame_count
from wav2lip.aac import aac_frame_at
from wav2lip.errors import InputError

from .errors import Overloaded, RenderFailed
from .render_spec import RenderSpec
from .settings import Settings

log = logging.getLogger("ray.serve")
_INFO_TTL_S = 30.0  #: how long what the workers render with is trusted before asking again

Progress = Callable[[int, int], Awaitable[None]]  #: (frames done, frames planned)
Planned = Callable[[int, int], Awaitable[None]]  #: (frames, chunks) once the whole speech is known


class ChunkDispatcher:
    def __init__(self, worker, settings: Settings):
        self.worker = worker
        self.settings = settings
        self._info: dict | None = None
        self._info_at = 0.0

    async def renderer(self) -> dict:
        """What the workers render with (renderer, model id, precision, device): part of every key.

        Re-read every ``_INFO_TTL_S`` so a redeploy with new weights is noticed.
        """
        now = time.monotonic()
        if self._info is None or now - self._info_at > _INFO_TTL_S:
            self._info, self._info_at = await self.worker.info.remote(), now
        return self._info

    def start(self, spec: RenderSpec, avatar: AvatarVariant, window: int | None = None,
              progress: Progress | None = None, t_start: float | None = None) -> Dispatch:  # fmt: skip
        """A render's chunks; at most ``window`` in flight (None: all at once); times count from ``t_start``."""
        return Dispatch(self, spec, avatar, window, progress, t_start or time.perf_counter())

    async def render(self, job: ChunkJob) -> tuple[ChunkResult, int]:
        """A chunk's result and how many retries it took; input errors are not retried."""
        s = self.settings
        attempts = s.chunk_retries + 1
        last: BaseException | None = None
        for attempt in range(attempts):
            delayed = s.inject_chunk_delay_s and (not s.inject_delay_attempts or attempt < s.inject_delay_attempts)
            response = self.worker.render_chunk.remote(
                replace(job, attempt=attempt, delay_s=s.inject_chunk_delay_s if delayed else 0.0))
            try:
                return await asyncio.wait_for(response, s.chunk_timeout_s), attempt
            except asyncio.CancelledError:  # request cancelled or client gone: stop the worker too
                response.cancel()
                raise
            except InputError:
                raise
            except BackPressureError:
                raise Overloaded("all lip-sync workers are busy; retry shortly", s.retry_after_s) from None
            except asyncio.TimeoutError as exc:
                response.cancel()
                last = exc
                log.warning("chunk %s/%d timed out after %.0f s (attempt %d)", job.request_id, job.index,
                            s.chunk_timeout_s, attempt + 1)  # fmt: skip
            except (RayActorError, RayTaskError, RuntimeError) as exc:
                last = exc
                log.warning("chunk %s/%d failed (attempt %d): %s", job.request_id, job.index, attempt + 1, exc)
        log.warning("chunk %s/%d failed after %d attempts: %s", job.request_id, job.index, attempts, last)
        raise RenderFailed(f"chunk {job.index} failed after {attempts} attempts")


class Dispatch:
    """One render's chunks in flight: sent in order, results taken in order."""

    def __init__(self, dispatcher: ChunkDispatcher, spec: RenderSpec, avatar: AvatarVariant, window: int | None,
                 progress: Progress | None, t_start: float):  # fmt: skip
        self.dispatcher = dispatcher
        self.spec = spec
        self.avatar = avatar
        self.jobs: list[ChunkJob] = []
        self.tasks: list[asyncio.Future] = []
        self.slots = asyncio.Semaphore(window) if window else None
        self.progress = progress
        self.t_start = t_start
        self.first_chunk_s: float | None = None
        self.frames_total = 0
        self.frames_done = 0
        self.retries = 0
        self._taken = 0  #: results handed out in order so far (``in_order``)
        self._closed = False
        self._sent = asyncio.Event()

    async def send(self, start: int, stop: int, update: SpeechUpdate, aac_stop: int = 0) -> None:
        """Frames [start, stop) as one chunk; ``update`` must hold their final mel windows."""
        if self.slots is not None:
            await self.slots.acquire()  # released when the chunk's result is taken
        spec = self.spec
        aac = {"aac": update.aac, "aac_start": aac_frame_at(start / spec.fps), "aac_stop": aac_stop} if update.aac else {}
        job = ChunkJob(spec.request_id, len(self.jobs), start, stop, spec.fps, spec.req.loop, spec.enc, self.avatar,
                       update.mel, **aac)  # fmt: skip
        self.jobs.append(job)
        self.frames_total = max(self.frames_total, stop)
        self.tasks.append(asyncio.ensure_future(self._run(job)))
        self._sent.set()

    def close(self) -> None:
        """No more chunks will be sent: ``in_order`` ends after the last one."""
        self._closed = True
        self._sent.set()

    async def in_order(self) -> AsyncIterator[tuple[ChunkJob, ChunkResult]]:
        """Each chunk and its result strictly in order, as soon as it and all before it are done."""
        while True:
            while self._taken >= len(self.tasks):
                if self._closed:
                    return
                self._sent.clear()
                await self._sent.wait()
            index = self._taken
            result = await self.result(index)
            self._taken += 1
            yield self.jobs[index], result

    async def _run(self, job: ChunkJob) -> ChunkResult:
        result, retries = await self.dispatcher.render(job)
        self.retries += retries
        self.frames_done += result.n_frames
        if self.first_chunk_s is None:
            self.first_chunk_s = time.perf_counter() - self.t_start
        if self.progress is not None:
            await self.progress(self.frames_done, self.frames_total)
        return result

    async def feed(self, updates: AsyncIterator[SpeechUpdate], planner) -> SpeechUpdate:
        """Send chunks as ``updates`` settle their frames (``planner.ready``); the final update."""
        fps = self.spec.fps
        async for update in updates:
            if update.final:
                return update
            for a, b in planner.ready(final_frames(update.known_samples, fps), update.aac_frames):
                await self.send(a, b, update, aac_frame_at(b / fps))
        raise RuntimeError("the speech ended without a final update")

    async def finish(self, final: SpeechUpdate, planner, planned: Planned | None = None) -> int:
        """Send the chunks left once the whole speech is known; the render's frame count.

        ``planned(n_frames, n_chunks)`` hears the whole plan before the rest is sent.
        """
        n_frames = frame_count(final.known_samples, self.spec.fps)
        rest = planner.rest(n_frames)
        if planned is not None:
            await planned(n_frames, len(self.jobs) + len(rest))
        for a, b in rest:
            await self.send(a, b, final, aac_frame_at(b / self.spec.fps) if b < n_frames else final.aac_frames)
        return n_frames

    async def result(self, index: int) -> ChunkResult:
        """Chunk ``index``'s result (frees its window slot)."""
        try:
            return await self.tasks[index]
        finally:
            if self.slots is not None:
                self.slots.release()

    async def results(self) -> list[ChunkResult]:
        """Every chunk's result, in order; a failure cancels the rest."""
        try:
            return list(await asyncio.gather(*self.tasks))
        except BaseException:
            self.cancel()
            raise

    async def rerender(self, index: int) -> ChunkResult:
        """Chunk ``index`` again (its segment was lost with its worker); counts as a retry."""
        self.retries += 1
        result, retries = await self.dispatcher.render(self.jobs[index])
        self.retries += retries
        return result

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()

    def stats(self, results: list[ChunkResult]) -> dict:
        """Seconds per stage as the workers measured them, and where they ran."""
        return {"model": sum(r.seconds.get("model", 0.0) for r in results),
                "encode": sum(r.seconds.get("encode", 0.0) for r in results),
                "nodes": sorted({r.node_id for r in results})}  # fmt: skip
