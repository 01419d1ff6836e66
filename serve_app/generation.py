"""The request flow: validate -> cache -> audio + mel once -> plan -> chunks -> combine -> cache.

Plain async code over deployment handles, used by the ingress deployment; it holds
no HTTP concepts, so the Python-handle and HTTP paths run the same code.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError

from actors.lipsync import ChunkJob, ChunkResult
from wav2lip.audio import frame_count, load_audio, melspectrogram, official_frame_count
from wav2lip.errors import Expired, InputError, NotFound, Wav2LipError
from wav2lip.hparams import HOP_LENGTH, MEL_STEP, N_FFT
from wav2lip.options import AvatarOptions, EncodeOptions, preset
from wav2lip.storage import content_key

from .agents import Persona, Personas
from .errors import Overloaded, RenderFailed
from .metrics import ServiceMetrics
from .planner import plan_chunks
from .schemas import Stats, VideoRequest, VideoResponse
from .settings import Settings

log = logging.getLogger("ray.serve")
_RESULT_VERSION = 3  #: bump when the output for the same inputs changes
_INFO_TTL_S = 30.0


@dataclass
class RenderState:
    """One request's render in progress: its settings and the chunks dispatched so far."""

    req: VideoRequest
    enc: EncodeOptions
    variant: dict
    fps: float
    info: dict
    chunk_s: float
    t_start: float
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    stages: dict = field(default_factory=dict)
    tasks: list = field(default_factory=list)
    first_chunk_s: float | None = None
    alias: str | None = None  #: result key by the upload's bytes (audio requests)
    job_id: str | None = None  #: set for asynchronous jobs: progress goes to the job registry
    frames_total: int = 0
    frames_done: int = 0

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()

    def dispatch(self, gen: VideoGenerator, mel: np.ndarray, start: int, stop: int) -> None:
        """Send frames [start, stop) as chunks; ``mel`` must hold their final windows."""
        if stop <= start:
            return
        mel_ref = [ray.put(mel)]
        settings = gen.settings
        chunks = plan_chunks(stop - start, self.fps, self.chunk_s, self.req.enable_parallel,
                             settings.single_chunk_below_s, settings.max_chunks)  # fmt: skip
        self.frames_total = max(self.frames_total, stop)
        for a, b in chunks:
            job = ChunkJob(self.request_id, len(self.tasks), start + a, start + b, self.fps, self.req.loop, self.enc,
                           self.variant["key"], self.variant["ref"], mel_ref)  # fmt: skip
            self.tasks.append(asyncio.ensure_future(gen.render_chunk(job, self)))


def final_frames(known_samples: int, fps: float) -> int:
    """Frames whose mel windows are final once ``known_samples`` of the speech are known.

    A mel column is final once every sample it sees (n_fft/2 either side) is known, so a
    frame whose 16-column window lies in final columns renders exactly as it would from
    the whole audio; the official tail frame waits for the end.
    """
    final_cols = (known_samples - N_FFT // 2) // HOP_LENGTH + 1
    return official_frame_count(final_cols, fps) - 1 if final_cols >= MEL_STEP else 0


class VideoGenerator:
    def __init__(self, settings: Settings, worker, combiner, avatars, results, tts, jobs, personas: Personas):
        self.settings = settings
        self.worker = worker
        self.combiner = combiner
        self.avatars = avatars
        self.results = results
        self.tts = tts
        self.jobs = jobs
        self.personas = personas
        self._inflight: dict[str, asyncio.Future] = {}  # result key -> (n_frames, chunks) when done
        self.worker_info: dict | None = None
        self._info_at = 0.0
        self.metrics = ServiceMetrics()
        self._pending = 0

    async def info(self) -> dict:
        """What the workers render with (model id, renderer, precision): part of every cache key.

        Re-read every ``_INFO_TTL_S`` so a redeploy with new weights is noticed.
        """
        now = time.monotonic()
        if self.worker_info is None or now - self._info_at > _INFO_TTL_S:
            self.worker_info, self._info_at = await self.worker.info.remote(), now
        return self.worker_info

    def admit(self) -> None:
        if self._pending >= self.settings.max_pending_requests:
            self.metrics.rejected.inc()
            raise Overloaded(
                f"{self._pending} renders in progress on this replica; retry in {self.settings.retry_after_s} s",
                self.settings.retry_after_s,
            )

    @contextmanager
    def busy(self):
        """Count a render in progress on this replica (what admission control limits)."""
        self._pending += 1
        self.metrics.pending.set(self._pending)
        try:
            yield
        finally:
            self._pending -= 1
            self.metrics.pending.set(self._pending)

    async def generate(self, req: VideoRequest, job_id: str | None = None) -> VideoResponse:
        """Render ``req`` (or answer from the cache); ``job_id``: report progress to that job."""
        self.admit()
        with self.busy():
            response = await self._generate(req, job_id)
        stats = response.stats
        self.metrics.observe(stats.total_processing_time, stats.real_time_factor, stats.cache_hit, stats.renderer,
                             stats.chunk_retries)  # fmt: skip
        return response

    def prepare(self, req: VideoRequest) -> tuple[VideoRequest, Persona | None]:
        """The request checked for one speech source, with its persona's defaults filled in."""
        if req.text is not None and req.audio is not None:
            raise InputError("send either an audio file or text, not both")
        if req.text is None and not req.audio:
            raise InputError("send an audio file (field 'audio') or text (field 'text')")
        persona = self.personas.get(req.agent_type) if req.text is not None or req.agent_type else None
        if persona is not None:
            updates = {"preset": req.preset or persona.preset}
            if req.avatar is None and req.avatar_id == "default":
                updates["avatar_id"] = persona.avatar
            req = req.model_copy(update=updates)
        return req, persona

    async def _generate(self, req: VideoRequest, job_id: str | None) -> VideoResponse:
        t_start = time.perf_counter()
        req, persona = self.prepare(req)
        enc, opts = self.settings_of(req)
        alias = None
        if req.text is None:  # the same upload again is answered without the registry or a decode
            alias = await self._alias(req, enc, opts)
            found = await self.results.find.remote(alias)
            if found is not None:
                record = found["record"]
                hit = RenderState(req, enc, {}, record["fps"], await self.info(), self._chunk_s(req), t_start)
                return self.response_for(hit, found["key"], record["n_frames"], record["chunks"], 0, True)
        render = await self.start_render(req, enc, opts, t_start)
        render.job_id, render.alias = job_id, alias
        if req.text is None:
            t = time.perf_counter()
            samples = await asyncio.to_thread(load_audio, req.audio, self.settings.max_audio_s)
            render.stages["decode"] = time.perf_counter() - t
            return await self._render_audio(render, samples)
        voice, rate = req.voice or persona.voice, req.rate or persona.rate
        t = time.perf_counter()
        if self.settings.pipeline_tts and req.enable_parallel and not await self.tts.is_cached.remote(req.text, voice, rate):
            return await self._render_streaming_text(render, voice, rate)
        speech = await self.tts.speech.remote(req.text, voice, rate)
        samples = np.frombuffer(await speech["ref"][0], np.float32)
        render.stages["tts"] = time.perf_counter() - t
        return await self._render_audio(render, samples)

    def settings_of(self, req: VideoRequest) -> tuple[EncodeOptions, AvatarOptions]:
        enc = preset(req.preset or self.settings.default_preset, lossless=req.lossless or None)
        opts = AvatarOptions(pads=req.pads or AvatarOptions().pads, box=req.box, smooth=not req.nosmooth,
                             resize_factor=enc.resize_factor)  # fmt: skip
        return enc, opts

    def _chunk_s(self, req: VideoRequest) -> float:
        return req.chunk_duration or self.settings.chunk_duration_s

    async def _alias(self, req: VideoRequest, enc: EncodeOptions, opts: AvatarOptions) -> str:
        """Result key by what the request says (upload digests, ids, settings), before any work."""
        info = await self.info()
        avatar = hashlib.sha256(req.avatar).hexdigest() if req.avatar is not None else req.avatar_id
        return content_key("alias", _RESULT_VERSION, hashlib.sha256(req.audio).digest(), avatar, asdict(opts),
                           req.fps, req.loop, asdict(enc), info["model_id"], info["renderer"], info["precision"])  # fmt: skip

    async def start_render(self, req: VideoRequest, enc: EncodeOptions, opts: AvatarOptions, t_start: float) -> RenderState:
        if req.avatar is not None:
            variant = await self.avatars.register.remote(req.avatar, opts)
        else:
            variant = await self.avatars.variant.remote(req.avatar_id, opts)
        summary = variant["summary"]
        fps = float(req.fps or summary.get("fps") or enc.fps)  # explicit, else the video's, else the preset's
        return RenderState(req, enc, variant, fps, await self.info(), self._chunk_s(req), t_start)

    def _key(self, r: RenderState, samples: np.ndarray) -> str:
        """Result key: avatar variant, audio samples, model, settings."""
        return content_key(
            "video", _RESULT_VERSION, r.variant["key"], samples.tobytes(), r.info["model_id"], r.info["renderer"],
            r.info["precision"], r.fps, r.req.loop, asdict(r.enc),
        )  # fmt: skip

    async def _render_audio(self, r: RenderState, samples: np.ndarray) -> VideoResponse:
        key = self._key(r, samples)
        try:
            cached = await self.results.get.remote(key)
        except Expired:  # rendered before, retention over: render afresh
            cached = None
        if cached is not None:
            if r.alias:
                await self.results.put_alias.remote(r.alias, key)
            return self.response_for(r, key, cached["record"]["n_frames"], cached["record"]["chunks"], 0, True)
        running = self._inflight.get(key)
        if running is not None:  # the same render is under way on this replica: attach to it
            try:
                n_frames, chunks = await asyncio.shield(running)
                return self.response_for(r, key, n_frames, chunks, 0, True)
            except (asyncio.CancelledError, Wav2LipError):
                if asyncio.current_task().cancelling():
                    raise
                # that render was cancelled or failed: do our own below
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[key] = done
        try:
            t = time.perf_counter()
            mel = await asyncio.to_thread(melspectrogram, samples)
            r.stages["mel"] = time.perf_counter() - t
            r.dispatch(self, mel, 0, frame_count(len(samples), r.fps))
            response = await self._finish(r, key, samples)
            done.set_result((round(response.duration_s * r.fps), response.stats.total_chunks))
            return response
        except BaseException as exc:
            if isinstance(exc, Wav2LipError):
                done.set_exception(exc)
                done.exception()  # mark it retrieved: waiters (if any) see it, no "never retrieved" warning
            else:
                done.cancel()  # waiters render for themselves
            raise
        finally:
            self._inflight.pop(key, None)

    async def _render_streaming_text(self, r: RenderState, voice: str, rate: float) -> VideoResponse:
        """Speech arrives per sentence; frames whose mel windows are final (``final_frames``)
        are rendered at once, so the result equals the unpipelined one frame for frame."""
        t_tts = time.perf_counter()
        parts: list[np.ndarray] = []
        known = 0
        sent = 0
        chunk_frames = max(1, round(r.chunk_s * r.fps))
        try:
            async for part in self.tts.options(stream=True).stream.remote(r.req.text, voice, rate):
                parts.append(part)
                known += len(part)
                safe = final_frames(known, r.fps)
                ready = sent + (safe - sent) // chunk_frames * chunk_frames
                if ready > sent:
                    r.dispatch(self, await asyncio.to_thread(melspectrogram, np.concatenate(parts)), sent, ready)
                    sent = ready
        except BaseException:
            r.cancel()
            raise
        r.stages["tts"] = time.perf_counter() - t_tts
        samples = np.concatenate(parts)
        t = time.perf_counter()
        mel = await asyncio.to_thread(melspectrogram, samples)
        r.stages["mel"] = time.perf_counter() - t
        r.dispatch(self, mel, sent, frame_count(len(samples), r.fps))
        return await self._finish(r, self._key(r, samples), samples)

    async def _finish(self, r: RenderState, key: str, samples: np.ndarray) -> VideoResponse:
        t_video = time.perf_counter()
        try:
            outcomes = await asyncio.gather(*r.tasks)
        except BaseException:
            r.cancel()
            raise
        results = [res for res, _ in outcomes]
        retries = sum(n for _, n in outcomes)
        r.stages["render"] = time.perf_counter() - t_video
        r.stages["model"] = sum(res.seconds.get("model", 0.0) for res in results)
        r.stages["encode"] = sum(res.seconds.get("encode", 0.0) for res in results)
        t = time.perf_counter()
        video = await self._combine([res.segment for res in results], samples, r.enc)
        r.stages["combine"] = time.perf_counter() - t
        if r.first_chunk_s is not None:
            r.stages["first_chunk"] = r.first_chunk_s
        nodes = sorted({res.node_id for res in results})
        n_frames = frame_count(len(samples), r.fps)
        record = {"chunks": len(results), "nodes": nodes, "n_frames": n_frames, "fps": r.fps}
        await self.results.put.remote(key, video, record, r.alias)
        response = self.response_for(r, key, n_frames, len(results), retries, False, nodes)
        log.info("request %s: %d chunks, %.2f s (rtf %.2f)", r.request_id, len(results),
                 response.stats.total_processing_time, response.stats.real_time_factor)  # fmt: skip
        return response

    async def _combine(self, segments: list[bytes], samples: np.ndarray, enc: EncodeOptions) -> bytes:
        """The joined video; a combiner replica that dies is retried, then a clean 502."""
        samples_ref = [ray.put(samples)]
        attempts = self.settings.chunk_retries + 1
        for attempt in range(attempts):
            try:
                return await self.combiner.combine.remote(segments, samples_ref, enc)
            except (RayActorError, RuntimeError) as exc:
                log.warning("combine failed (attempt %d): %s", attempt + 1, exc)
                last = exc
        raise RenderFailed(f"joining the video failed after {attempts} attempts: {str(last)[:300]}")

    async def render_chunk(self, job: ChunkJob, r: RenderState) -> tuple[ChunkResult, int]:
        """A chunk's result and how many retries it took; input errors are not retried."""
        attempts = self.settings.chunk_retries + 1
        last: BaseException | None = None
        inject = self.settings.inject_chunk_delay_s
        for attempt in range(attempts):
            delayed = inject and (not self.settings.inject_delay_attempts or attempt < self.settings.inject_delay_attempts)
            response = self.worker.render_chunk.remote(replace(job, attempt=attempt, delay_s=inject if delayed else 0.0))
            try:
                result = await asyncio.wait_for(response, self.settings.chunk_timeout_s)
            except asyncio.CancelledError:  # request cancelled or client gone: stop the worker too
                response.cancel()
                raise
            except InputError:
                raise
            except BackPressureError:
                raise Overloaded("all lip-sync workers are busy; retry shortly", self.settings.retry_after_s) from None
            except asyncio.TimeoutError as exc:
                response.cancel()
                last = exc
                log.warning("chunk %s/%d timed out after %.0f s (attempt %d)", job.request_id, job.index,
                            self.settings.chunk_timeout_s, attempt + 1)  # fmt: skip
            except (RayActorError, RayTaskError, RuntimeError) as exc:
                last = exc
                log.warning("chunk %s/%d failed (attempt %d): %s", job.request_id, job.index, attempt + 1, exc)
            else:
                if r.first_chunk_s is None:
                    r.first_chunk_s = time.perf_counter() - r.t_start
                r.frames_done += result.n_frames
                if r.job_id:
                    await self.jobs.update.remote(r.job_id, status="running", frames_done=r.frames_done,
                                                  frames_total=r.frames_total)  # fmt: skip
                return result, attempt
        raise RenderFailed(f"chunk {job.index} failed after {attempts} attempts: {str(last)[:300]}")

    def response_for(self, r: RenderState, key: str, n_frames: int, chunks: int, retries: int, hit: bool,
                  nodes: list[str] | None = None) -> VideoResponse:  # fmt: skip
        duration_s = n_frames / r.fps
        total = time.perf_counter() - r.t_start
        video_s = r.stages.get("render", 0.0) + r.stages.get("combine", 0.0)
        target = (self.settings.target_rtf or 1.0) * duration_s
        stats = Stats(
            total_chunks=chunks, successful_chunks=chunks, failed_chunks=0, chunk_retries=retries,
            parallel_processing=r.req.enable_parallel and chunks > 1, chunk_duration=r.chunk_s,
            total_processing_time=round(total, 4), audio_generation_time=round(r.stages.get("tts", 0.0), 4),
            video_generation_time=round(video_s, 4), optimization_level=r.enc.name,
            speed_multiplier=round(duration_s / max(total, 1e-9), 3), target_achieved=total <= target,
            real_time_factor=round(total / duration_s, 4), cache_hit=hit, renderer=r.info["renderer"],
            stages={k: round(v, 4) for k, v in r.stages.items()}, nodes=nodes or [],
        )  # fmt: skip
        return VideoResponse(video_id=key, url=f"/v1/videos/{key}", duration_s=duration_s, stats=stats)

    async def video_bytes(self, video_id: str) -> bytes:
        cached = await self.results.get.remote(video_id)
        if cached is None:
            raise NotFound(f"video {video_id} does not exist (or has expired)")
        return await cached["video"][0]
