"""The application builder: ``serve run serve_app.app:build_app`` or ``serve_config.yaml``."""

from __future__ import annotations

import ray
from ray.serve import Application

from actors.avatars import AvatarRegistry
from actors.combiner import Combiner
from actors.jobs import JobRegistry
from actors.lipsync import LipSyncWorker
from actors.results import ResultCache
from actors.streams import StreamRegistry
from actors.tts import TTSWorker

from .agents import load_personas
from .ingress import Ingress
from .settings import Settings

APP_NAME = "lipsync"


def _cluster_gpus() -> float:
    try:
        return float(ray.cluster_resources().get("GPU", 0.0)) if ray.is_initialized() else 0.0
    except Exception:  # no cluster reachable while building: assume none
        return 0.0


def build_app(args: dict | Settings | None = None) -> Application:
    """Wire ingress -> worker pool + combiner + avatar registry + result cache from settings."""
    settings = args if isinstance(args, Settings) else Settings(**(args or {}))
    # Replicas may start in another working directory: hand them absolute paths.
    settings = settings.model_copy(update={"checkpoint_dir": settings.checkpoint_dir.resolve(),
                                           "data_dir": settings.data_dir.resolve(),
                                           "agents_file": settings.agents_file.resolve()})  # fmt: skip
    load_personas(settings.agents_file)  # a broken personas file fails the deploy, not a request
    gpus = settings.gpus_per_worker(_cluster_gpus())
    small = {"num_cpus": settings.service_cpus}
    scaling = (
        {"autoscaling_config": {
            "min_replicas": settings.workers, "initial_replicas": settings.workers, "max_replicas": settings.max_workers,
            "target_ongoing_requests": settings.target_ongoing_per_worker,
            "upscale_delay_s": settings.upscale_delay_s, "downscale_delay_s": settings.downscale_delay_s}}
        if settings.max_workers > settings.workers else {"num_replicas": settings.workers}
    )  # fmt: skip
    worker = LipSyncWorker.options(
        ray_actor_options={"num_cpus": settings.worker_cpus, "num_gpus": gpus},
        max_ongoing_requests=settings.worker_max_ongoing,
        **scaling,
    ).bind(settings.render.options(settings.torch_threads()), str(settings.checkpoint_dir), settings.checkpoint_name,
           settings.ffmpeg_binary, gpus)  # fmt: skip
    combiner = Combiner.options(ray_actor_options=small, num_replicas=settings.combiner_replicas).bind(
        settings.ffmpeg_binary
    )
    avatars = AvatarRegistry.options(ray_actor_options=small).bind(
        str(settings.data_dir), settings.avatar_memory_items, settings.retention_s
    )
    results = ResultCache.options(ray_actor_options=small).bind(
        str(settings.data_dir), settings.result_memory_bytes, settings.result_disk_bytes, settings.retention_s
    )
    tts_scaling = (
        {"autoscaling_config": {"min_replicas": settings.tts_replicas, "max_replicas": settings.max_tts_replicas}}
        if settings.max_tts_replicas > settings.tts_replicas else {"num_replicas": settings.tts_replicas}
    )
    tts = TTSWorker.options(ray_actor_options={"num_cpus": settings.tts_cpus}, **tts_scaling).bind(
        str(settings.data_dir), settings.speech_memory_bytes, settings.speech_disk_bytes, settings.tts_max_chars
    )
    jobs = JobRegistry.options(ray_actor_options=small).bind(str(settings.data_dir), settings.job_stale_after_s)
    streams = StreamRegistry.options(ray_actor_options=small).bind(
        str(settings.data_dir), settings.retention_s, settings.stream_stale_after_s
    )
    return Ingress.options(
        ray_actor_options=small,
        num_replicas=settings.ingress_replicas,
        # live.mp4 viewers hold a request open for the whole render; they do not count as renders.
        # The queue is as large: overload is answered by the replica's own admission (JSON 503 with
        # Retry-After), not by Serve's plain-text backpressure 503 while replicas are (re)starting.
        max_ongoing_requests=settings.max_pending_requests * 4 + settings.max_stream_viewers,
        max_queued_requests=settings.max_pending_requests * 4 + settings.max_stream_viewers,
    ).bind(settings, worker, combiner, avatars, results, tts, jobs, streams)
