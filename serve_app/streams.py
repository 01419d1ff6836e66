"""Progressive streams: a short first chunk, a bounded window of chunks in flight, and
fragments published strictly in order while the rest renders.

``open`` validates the request and answers at once; the render then runs as a task on
this replica. The media deployment decodes (or synthesises) the speech and encodes its
AAC once; the workers render each chunk as a CMAF fragment with its AAC slice; the
stream registry fetches each fragment from its worker when it is published (every
replica reads it from there); the combiner remuxes the fragments into the final MP4.
This flow moves only metadata and references.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ray.exceptions import ObjectLostError, RayTaskError

from wav2lip.aac import aligned_frames
from wav2lip.keys import request_key

from .admission import Slot
from .background import Background, watch
from .dispatch import Dispatch
from .flow import FlowContext
from .planner import StreamChunks
from .render_spec import RenderSpec, resolve
from .responses import video_response
from .retrying import RetryingHandle
from .schemas import StreamStatus, VideoRequest
from .videos import renderer_identity

log = logging.getLogger("ray.serve")


def stream_status(record: dict) -> StreamStatus:
    return StreamStatus(id=record["id"], status=record["status"], fragments_published=record["published"],
                        fragments_total=record["fragments_total"], duration_s=round(record["duration_s"], 4),
                        codecs=record["codecs"], stats=record.get("stats"), error=record.get("error"))  # fmt: skip


class StreamFlow:
    def __init__(self, ctx: FlowContext, background: Background):
        self.settings, self.h, self.dispatcher = ctx.settings, ctx.handles, ctx.dispatcher
        self.admission, self.metrics, self.personas = ctx.admission, ctx.metrics, ctx.personas
        self.background = background
        # ``open`` is not retried (a lost reply would look like someone else's stream); the rest is idempotent.
        self.registry = RetryingHandle(ctx.handles.streams, ctx.settings.registry_retry_s)

    async def open(self, req: VideoRequest) -> dict:
        """The stream's record; an identical stream already running or done is shared, not re-rendered."""
        t_start = time.perf_counter()
        spec = resolve(req, self.settings, self.personas, stream=True)
        info = await self.dispatcher.renderer()
        shape = {**spec.render_settings(), "chunk_s": spec.chunk_s, "first": self.settings.stream_first_chunk_frames}
        stream_id = request_key("stream", spec.speech_identity(), spec.avatar_identity(), shape, renderer_identity(info))
        opened = await self.h.streams.open.remote(stream_id, self.settings.stream_wait_s)
        if opened["attached"]:
            self.metrics.streams.inc(tags={"outcome": "attached"})
            return opened["record"]
        try:
            slot = self.admission.reserve()
            try:
                spec, avatar, updates = await self._start(spec)
                await self.registry.admit.remote(stream_id)
            except BaseException:
                slot.release()
                raise
        except BaseException:
            await self.registry.discard.remote(stream_id)
            raise
        self.background.spawn(self._run(stream_id, spec, avatar, updates, info, slot, t_start))
        return opened["record"]

    async def status(self, stream_id: str) -> StreamStatus:
        return stream_status(await self.registry.get.remote(stream_id))

    async def _start(self, spec: RenderSpec):
        """Everything that can refuse the request, before it is answered: the avatar, the text
        and voice, the upload's decode (its one update is awaited here)."""
        req = spec.req
        if req.avatar is not None:
            avatar, _ = await self.h.avatars.register.remote(req.avatar, spec.avatar_options)
        else:
            avatar = await self.h.avatars.variant.remote(req.avatar_id, spec.avatar_options)
        spec = spec.with_fps(avatar.summary.get("fps"))
        if req.text is not None:
            await self.h.tts.validate.remote(req.text, spec.voice, spec.rate)
        stream = self.h.media.options(stream=True).speech.remote(req.audio, req.text, spec.voice, spec.rate, spec.fps,
                                                                 spec.enc.audio_bitrate)  # fmt: skip
        first = await stream.__anext__() if req.text is None else None
        return spec, avatar, _chain(first, stream)

    async def _run(self, stream_id: str, spec: RenderSpec, avatar, updates, info: dict, slot: Slot,
                   t_start: float) -> None:  # fmt: skip
        """Render, watching for a cancel request made through any replica; record the outcome."""
        with slot:
            work = asyncio.create_task(self._render(stream_id, spec, avatar, updates, info, t_start))
            outcome, value = await watch(work, self.settings.job_poll_s,
                                         lambda: self.registry.cancel_requested.remote(stream_id))  # fmt: skip
        if outcome == "failed":
            log.warning("stream %s failed: %s", stream_id, value["message"])
        final = "complete" if outcome == "succeeded" else outcome
        self.metrics.streams.inc(tags={"outcome": final})
        await self.registry.finish.remote(stream_id, final, stats=value if outcome == "succeeded" else None,
                                          error=value if outcome == "failed" else None)  # fmt: skip

    async def _render(self, stream_id: str, spec: RenderSpec, avatar, updates, info: dict, t_start: float) -> dict:
        """Chunks go out as soon as their mel windows and AAC frames are final (text: while later
        sentences are still being synthesised); fragments are published in order."""
        grid = aligned_frames(spec.fps)
        planner = StreamChunks(spec.fps, self.settings.stream_first_chunk_frames, spec.chunk_s, grid)
        await self.registry.start.remote(stream_id, max(planner.first, planner.per + grid - 1) / spec.fps)
        dispatch = self.dispatcher.start(spec, avatar, window=self.settings.stream_window, t_start=t_start)
        stages: dict[str, float] = {}

        async def produce() -> tuple[int, dict]:
            try:
                final = await dispatch.feed(updates, planner)

                async def planned(n_frames: int, chunks: int) -> None:
                    await self.registry.plan.remote(stream_id, chunks, n_frames / spec.fps)

                return await dispatch.finish(final, planner, planned), final
            finally:
                dispatch.close()  # the publisher stops after the last chunk; an error surfaces when it awaits us

        t_video = time.perf_counter()
        producer = asyncio.create_task(produce())
        nodes: set[str] = set()
        try:
            async for job, result in dispatch.in_order():  # later chunks may finish first and wait their turn
                await self._publish(stream_id, dispatch, job, result)
                if job.index == 0:
                    stages["first_fragment"] = time.perf_counter() - t_start
                    self.metrics.first_fragment_seconds.observe(stages["first_fragment"])
                nodes.add(result.node_id)
            n_frames, final = await producer
        except BaseException:
            producer.cancel()
            dispatch.cancel()
            raise
        stages.update(final.seconds, render=time.perf_counter() - t_video)
        total = len(dispatch.jobs)
        record = {"chunks": total, "nodes": sorted(nodes), "n_frames": n_frames, "fps": spec.fps}
        t = time.perf_counter()
        await self.h.combiner.finish_stream.remote(stream_id, total, record)
        stages["combine"] = time.perf_counter() - t
        response = video_response(spec, self.settings, info["renderer"], stream_id, n_frames, total, t_start, stages,
                                  dispatch.retries, nodes=sorted(nodes), clipped_samples=final.clipped_samples)  # fmt: skip
        log.info("stream %s: %d fragments, first after %.2f s, all after %.2f s", stream_id, total,
                 stages["first_fragment"], response.stats.total_processing_time)  # fmt: skip
        return response.stats.model_dump()

    async def _publish(self, stream_id: str, dispatch: Dispatch, job, result) -> None:
        """Publish one fragment; one lost with its worker (it died since) is rendered again."""
        duration_s = (job.stop - job.start) / job.fps
        try:
            await self.registry.publish.remote(stream_id, job.index, result.segment, duration_s, result.init)
        except (ObjectLostError, RayTaskError) as exc:
            if not isinstance(exc, ObjectLostError) and not isinstance(getattr(exc, "cause", None), ObjectLostError):
                raise
            log.warning("stream %s: fragment %d lost with its worker; rendering it again", stream_id, job.index)
            result = await dispatch.rerender(job.index)
            await self.registry.publish.remote(stream_id, job.index, result.segment, duration_s, result.init)


async def _chain(first, rest):
    """``first`` (when given), then everything ``rest`` yields."""
    if first is not None:
        yield first
    async for item in rest:
        yield item
