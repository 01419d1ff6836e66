"""Whole videos (``POST /v1/videos``, ``/generate_video``, jobs): speech -> chunks -> combine -> store.

The flow holds only metadata and references: the media deployment decodes and analyses
the speech, the workers render, the combiner joins and stores the video. A repeated
upload is answered from its alias (no decode); the same speech and settings from the
result key; the same render already under way on this replica is joined, not redone.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ray.exceptions import RayActorError

from actors.records import CombineJob, SegmentsLost, SpeechUpdate
from wav2lip.errors import Expired, NotFound, Wav2LipError
from wav2lip.keys import request_key, result_key

from .admission import Lease, Slot
from .dispatch import Dispatch, Progress
from .errors import RenderFailed
from .flow import FlowContext
from .planner import VideoChunks
from .render_spec import RenderSpec, resolve
from .responses import video_response
from .schemas import VideoRequest, VideoResponse

log = logging.getLogger("ray.serve")


def renderer_identity(info: dict) -> dict:
    """The part of what the workers report that changes the frames."""
    return {k: info[k] for k in ("model_id", "renderer", "precision")}


class VideoFlow:
    def __init__(self, ctx: FlowContext):
        self.settings, self.h, self.dispatcher = ctx.settings, ctx.handles, ctx.dispatcher
        self.admission, self.metrics, self.personas = ctx.admission, ctx.metrics, ctx.personas
        self._inflight: dict[str, asyncio.Future] = {}  #: result key -> (n_frames, chunks) once done

    async def generate(self, req: VideoRequest, progress: Progress | None = None, slot: Slot | None = None) -> VideoResponse:
        """Render ``req`` (or answer from the store), holding an admission slot while it renders
        (``slot``: one a job was admitted with)."""
        with Lease(self.admission, slot) as lease:
            response = await self._generate(req, progress, lease)
        stats = response.stats
        self.metrics.observe(stats.total_processing_time, stats.real_time_factor, stats.cache_hit, stats.renderer,
                             stats.chunk_retries)  # fmt: skip
        return response

    async def video_bytes(self, video_id: str) -> bytes:
        stored = await self.h.results.get.remote(video_id)
        if stored is None:
            raise NotFound(f"video {video_id} does not exist (or has expired)")
        return await stored.video.get()

    async def _generate(self, req: VideoRequest, progress: Progress | None, lease: Lease) -> VideoResponse:
        t_start = time.perf_counter()
        spec = resolve(req, self.settings, self.personas)
        info = await self.dispatcher.renderer()
        who = renderer_identity(info)
        alias = None
        if req.text is None:  # the same upload again is answered without a decode
            alias = request_key("alias", spec.speech_identity(), spec.avatar_identity(), spec.render_settings(), who)
            found = await self.h.results.find.remote(alias)
            if found is not None:
                spec = spec.with_fps(found.record["fps"])
                return video_response(spec, self.settings, info["renderer"], found.key, found.record["n_frames"],
                                      found.record["chunks"], t_start, hit=True)  # fmt: skip
        if req.avatar is not None:
            avatar, _ = await self.h.avatars.register.remote(req.avatar, spec.avatar_options)
        else:
            avatar = await self.h.avatars.variant.remote(req.avatar_id, spec.avatar_options)
        spec = spec.with_fps(avatar.summary.get("fps"))
        pipelined = (req.text is not None and self.settings.pipeline_tts and req.enable_parallel
                     and not await self.h.tts.is_cached.remote(req.text, spec.voice, spec.rate))  # fmt: skip
        planner = VideoChunks(spec.fps, spec.chunk_s, req.enable_parallel, self.settings.single_chunk_below_s,
                              self.settings.max_chunks, pipelined)  # fmt: skip
        if pipelined:
            lease.take()  # chunks go out before the result key is known
        dispatch = self.dispatcher.start(spec, avatar, progress=progress, t_start=t_start)
        try:
            updates = self.h.media.options(stream=True).speech.remote(req.audio, req.text, spec.voice, spec.rate,
                                                                      spec.fps)  # fmt: skip
            final = await dispatch.feed(updates, planner)
            key = result_key(avatar.key, final.digest, who, spec.render_settings())
            done = await self._known(spec, info, key, alias, t_start)
            if done is not None:
                dispatch.cancel()
                return done
            lease.take()
            return await self._render(spec, info, dispatch, planner, final, key, alias)
        except BaseException:
            dispatch.cancel()
            raise

    async def _known(self, spec: RenderSpec, info: dict, key: str, alias: str | None, t_start: float):
        """The response from the store, or from the same render under way here; else None."""
        try:
            stored = await self.h.results.get.remote(key)
        except Expired:  # rendered before, retention over: render afresh
            stored = None
        if stored is not None:
            if alias:
                await self.h.results.put_alias.remote(alias, key)
            return video_response(spec, self.settings, info["renderer"], key, stored.record["n_frames"],
                                  stored.record["chunks"], t_start, hit=True)  # fmt: skip
        running = self._inflight.get(key)
        if running is None:
            return None
        try:
            n_frames, chunks = await asyncio.shield(running)
        except (asyncio.CancelledError, Wav2LipError):
            if asyncio.current_task().cancelling():
                raise
            return None  # that render was cancelled or failed: do our own
        return video_response(spec, self.settings, info["renderer"], key, n_frames, chunks, t_start, hit=True)

    async def _render(self, spec: RenderSpec, info: dict, dispatch: Dispatch, planner: VideoChunks,
                      final: SpeechUpdate, key: str, alias: str | None) -> VideoResponse:  # fmt: skip
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[key] = done
        try:
            n_frames = await dispatch.finish(final, planner)
            t_video = time.perf_counter()
            results = await dispatch.results()
            stages = {**final.seconds, "render": time.perf_counter() - t_video}
            worked = dispatch.stats(results)
            stages.update(model=worked["model"], encode=worked["encode"])
            record = {"chunks": len(results), "nodes": worked["nodes"], "n_frames": n_frames, "fps": spec.fps}
            t = time.perf_counter()
            await self._combine(dispatch, results, final, key, record, alias)
            stages["combine"] = time.perf_counter() - t
            if dispatch.first_chunk_s is not None:
                stages["first_chunk"] = dispatch.first_chunk_s
            done.set_result((n_frames, len(results)))
        except BaseException as exc:
            if isinstance(exc, Wav2LipError):
                done.set_exception(exc)
                done.exception()  # retrieved: waiters (if any) see it, no "never retrieved" warning
            else:
                done.cancel()  # waiters render for themselves
            raise
        finally:
            self._inflight.pop(key, None)
        response = video_response(spec, self.settings, info["renderer"], key, n_frames, len(results), dispatch.t_start,
                                  stages, dispatch.retries, nodes=worked["nodes"],
                                  clipped_samples=final.clipped_samples)  # fmt: skip
        log.info("request %s: %d chunks, %.2f s (rtf %.2f)", spec.request_id, len(results),
                 response.stats.total_processing_time, response.stats.real_time_factor)  # fmt: skip
        return response

    async def _combine(self, dispatch: Dispatch, results: list, final: SpeechUpdate, key: str, record: dict,
                       alias: str | None) -> None:  # fmt: skip
        """The combiner joins and stores the video; a combiner replica that dies is retried, and
        segments lost with a dying worker are rendered again; then a clean 502."""
        attempts = self.settings.chunk_retries + 1
        for attempt in range(attempts):
            job = CombineJob(key, [r.segment for r in results], final.samples, dispatch.spec.enc, record, alias)
            try:
                await self.h.combiner.combine.remote(job)
                return
            except SegmentsLost as exc:
                log.warning("request %s: segments %s lost with their worker; rendering them again",
                            dispatch.spec.request_id, exc.indices)  # fmt: skip
                for index in exc.indices:
                    results[index] = await dispatch.rerender(index)
            except (RayActorError, RuntimeError) as exc:
                log.warning("combine failed (attempt %d): %s", attempt + 1, exc)
        raise RenderFailed(f"joining the video failed after {attempts} attempts")
