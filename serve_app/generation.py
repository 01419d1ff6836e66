"""The request flow: validate -> cache -> audio + mel once -> plan -> chunks -> combine -> cache.

Plain async code over deployment handles, used by the ingress deployment; it holds
no HTTP concepts, so the Python-handle and HTTP paths run the same code.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import asdict

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError

from actors.lipsync import ChunkJob, ChunkResult
from wav2lip.audio import frame_count, load_audio, melspectrogram
from wav2lip.errors import InputError, NotFound
from wav2lip.hparams import SAMPLE_RATE
from wav2lip.options import AvatarOptions, preset
from wav2lip.storage import content_key

from .errors import Overloaded, RenderFailed
from .planner import plan_chunks
from .schemas import Stats, VideoRequest, VideoResponse
from .settings import Settings

log = logging.getLogger("ray.serve")
_RESULT_VERSION = 1  #: bump when the output for the same inputs changes


class VideoGenerator:
    def __init__(self, settings: Settings, worker, combiner, avatars, results):
        self.settings = settings
        self.worker = worker
        self.combiner = combiner
        self.avatars = avatars
        self.results = results
        self.worker_info: dict | None = None
        self._pending = 0

    async def info(self) -> dict:
        if self.worker_info is None:
            self.worker_info = await self.worker.info.remote()
        return self.worker_info

    async def generate(self, req: VideoRequest, audio: np.ndarray | None = None, tts_s: float = 0.0) -> VideoResponse:
        """Render ``req`` (or answer from the cache). ``audio``: samples already made (TTS)."""
        if self._pending >= self.settings.max_pending_requests:
            raise Overloaded(
                f"{self._pending} renders in progress on this replica; retry in {self.settings.retry_after_s} s",
                self.settings.retry_after_s,
            )
        self._pending += 1
        try:
            return await self._generate(req, audio, tts_s)
        finally:
            self._pending -= 1

    async def _generate(self, req: VideoRequest, samples: np.ndarray | None, tts_s: float) -> VideoResponse:
        t_start = time.perf_counter()
        stages: dict[str, float] = {}
        enc = preset(req.preset or self.settings.default_preset, lossless=req.lossless or None)
        avatar_opts = AvatarOptions(
            pads=req.pads or AvatarOptions().pads, box=req.box, smooth=not req.nosmooth, resize_factor=enc.resize_factor
        )
        if samples is None:
            if not req.audio:
                raise InputError("send an audio file (field 'audio') or text")
            t = time.perf_counter()
            samples = await asyncio.to_thread(load_audio, req.audio, self.settings.max_audio_s)
            stages["decode"] = time.perf_counter() - t
        if req.avatar is not None:
            variant = await self.avatars.register.remote(req.avatar, avatar_opts)
        else:
            variant = await self.avatars.variant.remote(req.avatar_id, avatar_opts)
        summary = variant["summary"]
        fps = output_fps_from_summary(summary, enc.fps, req.fps)
        info = await self.info()
        key = content_key(
            "video", _RESULT_VERSION, variant["key"], samples.tobytes(), info["model_id"], info["renderer"],
            info["precision"], fps, req.loop, asdict(enc),
        )  # fmt: skip
        n_frames = frame_count(len(samples), fps)
        duration_s = n_frames / fps
        chunk_s = req.chunk_duration or self.settings.chunk_duration_s
        cached = await self.results.get.remote(key)
        if cached is not None:
            total = time.perf_counter() - t_start + tts_s
            stats = self._stats(cached["record"]["chunks"], 0, req.enable_parallel, chunk_s, total, tts_s, 0.0,
                                enc.name, duration_s, True, info["renderer"], stages)  # fmt: skip
            return VideoResponse(video_id=key, url=f"/v1/videos/{key}", duration_s=duration_s, stats=stats)

        t = time.perf_counter()
        mel = melspectrogram(samples)
        stages["mel"] = time.perf_counter() - t
        chunks = plan_chunks(n_frames, fps, chunk_s, req.enable_parallel, self.settings.single_chunk_below_s,
                             self.settings.max_chunks)  # fmt: skip
        request_id = uuid.uuid4().hex[:12]
        mel_ref, samples_ref = ray.put(mel), ray.put(samples)
        t_video = time.perf_counter()
        jobs = [
            ChunkJob(request_id, i, a, b, fps, req.loop, enc, variant["key"], variant["ref"], [mel_ref])
            for i, (a, b) in enumerate(chunks)
        ]
        outcomes = await asyncio.gather(*(self._render_with_retries(job) for job in jobs))
        results = [r for r, _ in outcomes]
        retries = sum(n for _, n in outcomes)
        stages["render"] = max(r.seconds.get("wall", 0.0) for r in results)
        stages["model"] = sum(r.seconds.get("model", 0.0) for r in results)
        stages["encode"] = sum(r.seconds.get("encode", 0.0) for r in results)
        t = time.perf_counter()
        video = await self.combiner.combine.remote([r.segment for r in results], [samples_ref], enc)
        stages["combine"] = time.perf_counter() - t
        video_s = time.perf_counter() - t_video
        record = {"chunks": len(chunks), "duration_s": duration_s, "fps": fps, "renderer": info["renderer"],
                  "nodes": sorted({r.node_id for r in results}), "replicas": sorted({r.replica for r in results})}  # fmt: skip
        await self.results.put.remote(key, video, record)
        total = time.perf_counter() - t_start + tts_s
        stats = self._stats(len(chunks), retries, req.enable_parallel, chunk_s, total, tts_s, video_s, enc.name,
                            duration_s, False, info["renderer"], stages)  # fmt: skip
        stats.nodes = record["nodes"]
        log.info("request %s: %d frames in %d chunks, %.2f s (rtf %.2f)", request_id, n_frames, len(chunks), total,
                 stats.real_time_factor)  # fmt: skip
        return VideoResponse(video_id=key, url=f"/v1/videos/{key}", duration_s=duration_s, stats=stats)

    async def _render_with_retries(self, job: ChunkJob) -> tuple[ChunkResult, int]:
        """A chunk's result and how many retries it took; input errors are not retried."""
        attempts = self.settings.chunk_retries + 1
        last: BaseException | None = None
        for attempt in range(attempts):
            response = self.worker.render_chunk.remote(job)
            try:
                return await asyncio.wait_for(response, self.settings.chunk_timeout_s), attempt
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
        raise RenderFailed(f"chunk {job.index} failed after {attempts} attempts: {str(last)[:300]}")

    def _stats(self, chunks, retries, parallel, chunk_s, total, tts_s, video_s, preset_name, duration_s, hit,
               renderer, stages) -> Stats:  # fmt: skip
        target = (self.settings.target_rtf or 1.0) * duration_s
        return Stats(
            total_chunks=chunks, successful_chunks=chunks, failed_chunks=0, chunk_retries=retries,
            parallel_processing=parallel and chunks > 1, chunk_duration=chunk_s, total_processing_time=round(total, 4),
            audio_generation_time=round(tts_s, 4), video_generation_time=round(video_s, 4),
            optimization_level=preset_name, speed_multiplier=round(duration_s / max(total, 1e-9), 3),
            target_achieved=total <= target, real_time_factor=round(total / duration_s, 4), cache_hit=hit,
            renderer=renderer, stages={k: round(v, 4) for k, v in stages.items()},
        )  # fmt: skip

    async def video_bytes(self, video_id: str) -> bytes:
        cached = await self.results.get.remote(video_id)
        if cached is None:
            raise NotFound(f"video {video_id} does not exist (or has expired)")
        return await cached["video"][0]


def output_fps_from_summary(summary: dict, preset_fps: float, requested: float | None) -> float:
    """``wav2lip.output_fps`` on an avatar record: explicit, else the video's, else the preset's."""
    if requested:
        return float(requested)
    return float(summary["fps"]) if summary.get("fps") else preset_fps
