"""A finished (or cached) render as the API's ``VideoResponse``, with the old VBVA stats."""

from __future__ import annotations

import time

from .render_spec import RenderSpec
from .schemas import Stats, VideoResponse
from .settings import Settings


def video_response(spec: RenderSpec, settings: Settings, renderer: str, key: str, n_frames: int, chunks: int,
                   t_start: float, stages: dict | None = None, retries: int = 0, hit: bool = False,
                   nodes: list[str] | None = None, clipped_samples: int = 0) -> VideoResponse:  # fmt: skip
    stages = stages or {}
    duration_s = n_frames / spec.fps
    total = time.perf_counter() - t_start
    video_s = stages.get("render", 0.0) + stages.get("combine", 0.0)
    target = (settings.target_rtf or 1.0) * duration_s
    stats = Stats(
        total_chunks=chunks, successful_chunks=chunks, failed_chunks=0, chunk_retries=retries,
        parallel_processing=spec.req.enable_parallel and chunks > 1, chunk_duration=spec.chunk_s,
        total_processing_time=round(total, 4), audio_generation_time=round(stages.get("tts", 0.0), 4),
        video_generation_time=round(video_s, 4), optimization_level=spec.enc.name,
        speed_multiplier=round(duration_s / max(total, 1e-9), 3), target_achieved=total <= target,
        real_time_factor=round(total / duration_s, 4), cache_hit=hit, renderer=renderer,
        stages={k: round(v, 4) for k, v in stages.items()}, nodes=nodes or [], clipped_samples=clipped_samples,
    )  # fmt: skip
    return VideoResponse(video_id=key, url=f"/v1/videos/{key}", duration_s=duration_s, stats=stats)
