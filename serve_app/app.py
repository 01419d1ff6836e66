"""The application builder: ``serve run serve_app.app:build_app`` or ``serve_config.yaml``."""

from __future__ import annotations

import os
import shutil

import ray
from ray.serve import Application

from actors.avatars import AvatarRegistry
from actors.combiner import Combiner
from actors.jobs import JobRegistry
from actors.lipsync import LipSyncWorker
from actors.pool import LIVE_WORKER_DEPLOYMENT
from actors.media import MediaWorker
from actors.results import ResultStore
from actors.sessions import SessionHost
from actors.streams import StreamRegistry
from actors.tts import TTSWorker
from wav2lip.errors import InvalidSettings
from wav2lip.media_limits import MediaLimits

from .personas import load_personas
from .handles import Handles
from .ingress import Ingress
from .settings import Settings

APP_NAME = "lipsync"
#: imageio-ffmpeg's own override: every replica runs this binary (the engine reads no environment).
FFMPEG_ENV = "IMAGEIO_FFMPEG_EXE"


def _cluster_gpus() -> float:
    try:
        return float(ray.cluster_resources().get("GPU", 0.0)) if ray.is_initialized() else 0.0
    except Exception:  # no cluster reachable while building: assume none
        return 0.0


def _scaling(replicas: int, max_replicas: int, **autoscaling) -> dict:
    """A fixed pool, or autoscaling between ``replicas`` and ``max_replicas``."""
    if max_replicas > replicas:
        return {"autoscaling_config": {"min_replicas": replicas, "initial_replicas": replicas,
                                       "max_replicas": max_replicas, **autoscaling}}  # fmt: skip
    return {"num_replicas": replicas}


def build_app(args: dict | Settings | None = None) -> Application:
    """Wire the ingress to the worker pool, media, combiner, registries and stores from settings."""
    settings = args if isinstance(args, Settings) else Settings(**(args or {}))
    # Replicas may start in another working directory: hand them absolute paths.
    settings = settings.model_copy(update={"checkpoint_dir": settings.checkpoint_dir.resolve(),
                                           "data_dir": settings.data_dir.resolve(),
                                           "agents_file": settings.agents_file.resolve()})  # fmt: skip
    load_personas(settings.agents_file)  # a broken personas file fails the deploy, not a request
    env = {}
    if settings.ffmpeg_binary:
        found = shutil.which(settings.ffmpeg_binary) if not os.path.isfile(settings.ffmpeg_binary) else settings.ffmpeg_binary
        if not found:
            raise InvalidSettings(f"ffmpeg_binary {settings.ffmpeg_binary!r} not found")
        env = {"runtime_env": {"env_vars": {FFMPEG_ENV: os.path.abspath(found)}}}
    data = str(settings.data_dir)
    gpus = settings.gpus_per_worker(_cluster_gpus())
    small = {"num_cpus": settings.service_cpus, **env}

    worker = LipSyncWorker.options(
        ray_actor_options={"num_cpus": settings.worker_cpus, "num_gpus": gpus, **env},
        max_ongoing_requests=settings.worker_max_ongoing,
        **_scaling(settings.workers, settings.max_workers, target_ongoing_requests=settings.target_ongoing_per_worker,
                   upscale_delay_s=settings.upscale_delay_s, downscale_delay_s=settings.downscale_delay_s),
    ).bind(settings.render.options(settings.torch_threads()), str(settings.checkpoint_dir), settings.checkpoint_name,
           gpus, settings.live_batch_calls, settings.live_batch_wait_s)  # fmt: skip
    tts = TTSWorker.options(ray_actor_options={"num_cpus": settings.tts_cpus},
                            **_scaling(settings.tts_replicas, settings.max_tts_replicas)).bind(
        data, settings.speech_memory_bytes, settings.speech_disk_bytes, settings.tts_max_chars)  # fmt: skip
    media = MediaWorker.options(ray_actor_options={"num_cpus": settings.media_cpus, **env},
                                **_scaling(settings.media_replicas, settings.max_media_replicas)).bind(
        tts, settings.max_audio_s, settings.media_keep_s, settings.media_keep_bytes)  # fmt: skip
    results = ResultStore.options(ray_actor_options=small).bind(
        data, settings.result_memory_bytes, settings.result_disk_bytes, settings.retention_s)
    streams = StreamRegistry.options(ray_actor_options=small).bind(
        data, settings.retention_s, settings.stream_stale_after_s, settings.stream_memory_bytes)
    combiner = Combiner.options(ray_actor_options=small, num_replicas=settings.combiner_replicas).bind(results, streams)
    # Live sessions' model calls have a pool of their own: many small calls in flight per
    # replica (batched into one model call), which would unbalance the chunk routing of
    # whole renders, and which a whole render's chunks must not hold up.
    live = LipSyncWorker.options(
        name=LIVE_WORKER_DEPLOYMENT,
        ray_actor_options={"num_cpus": settings.live_worker_cpus, "num_gpus": gpus, **env},
        max_ongoing_requests=settings.live_batch_calls * 2,  # one batch on the model, the next one gathering
        num_replicas=settings.live_workers,
    ).bind(settings.render.options(settings.torch_threads()), str(settings.checkpoint_dir), settings.checkpoint_name,
           gpus, settings.live_batch_calls, settings.live_batch_wait_s)  # fmt: skip
    # One replica: a session's state lives in it (docs/sessions.md).
    sessions = SessionHost.options(ray_actor_options={"num_cpus": settings.session_cpus, **env}, num_replicas=1).bind(
        live, tts, settings.live(), settings.sessions_per_worker, settings.session_idle_timeout_s,
        settings.retry_after_s, settings.live_workers, settings.webrtc())  # fmt: skip
    handles = Handles(
        worker=worker, media=media, combiner=combiner, results=results, tts=tts, streams=streams, sessions=sessions,
        avatars=AvatarRegistry.options(ray_actor_options=small).bind(
            data, settings.avatar_memory_items, settings.avatar_disk_bytes, settings.retention_s,
            MediaLimits(max_frames=settings.avatar_max_frames, max_video_pixels=settings.avatar_max_video_pixels)),
        jobs=JobRegistry.options(ray_actor_options=small).bind(data, settings.job_stale_after_s),
    )  # fmt: skip
    return Ingress.options(
        ray_actor_options=small,
        num_replicas=settings.ingress_replicas,
        # live.mp4 viewers hold a request open for the whole render; they do not count as renders.
        # The queue is as large: overload is answered by the replica's own admission (JSON 503 with
        # Retry-After), not by Serve's plain-text backpressure 503 while replicas are (re)starting.
        max_ongoing_requests=settings.max_pending_requests * 4 + settings.max_stream_viewers,
        max_queued_requests=settings.max_pending_requests * 4 + settings.max_stream_viewers,
    ).bind(settings, handles)
