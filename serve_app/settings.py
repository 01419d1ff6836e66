"""The service's one settings object: env vars (``W2L_*``) and Serve config ``args``.

Values given to ``Settings(...)`` (the ``args:`` block of ``serve_config.yaml``, or a
test) win over environment variables, which win over the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wav2lip.media_limits import MAX_VIDEO_FRAMES, MAX_VIDEO_PIXELS
from wav2lip.options import (
    ACCURACY_FLOOR_DB,
    DEFAULT_PRESET,
    INT8_FLOOR_DB,
    PRECISIONS,
    PRESETS,
    SELECTION_BUDGET_S,
    SELECTION_DIR,
    RenderOptions,
)


class IceServer(BaseModel):
    """A STUN or TURN server for WebRTC peers (as in the browser's ``RTCIceServer``)."""

    urls: str | list[str]  #: e.g. "stun:stun.example.org:3478" or "turn:turn.example.org:3478?transport=udp"
    username: str | None = None
    credential: str | None = Field(None, repr=False)


class RenderSettings(BaseModel):
    """How each lip-sync worker runs the model (becomes ``wav2lip.RenderOptions``)."""

    device: str = "auto"  #: auto = CUDA when the replica was given a GPU, else CPU
    precision: str = "auto"  #: auto = the fastest mode measured accurate; fp32 = exact (PRECISIONS)
    batch_size: int = Field(0, ge=0, le=4096)  #: 0 = measured with the mode
    threads: int = Field(0, ge=0, le=256)  #: torch threads per CPU worker; 0 = cores / workers
    accuracy_floor_db: float = Field(ACCURACY_FLOOR_DB, gt=0)  #: auto keeps only modes this close to fp32 (PSNR)
    int8_floor_db: float = Field(INT8_FLOOR_DB, gt=0)  #: int8 below this is refused (the worker uses auto)
    selection_budget_s: float = Field(SELECTION_BUDGET_S, gt=0)  #: bound on the measurement behind auto
    selection_dir: str = SELECTION_DIR  #: where verdicts are kept, shared by every worker on the machine

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str) -> str:
        if value not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")
        return value

    def options(self, threads: int) -> RenderOptions:
        """A refused mode (int8 below its floor) never stops a worker: it logs why and uses auto."""
        return RenderOptions(self.device, self.precision, self.batch_size, self.threads or threads,
                             accuracy_floor_db=self.accuracy_floor_db, selection_budget_s=self.selection_budget_s,
                             selection_dir=self.selection_dir, int8_floor_db=self.int8_floor_db,
                             on_refusal="next")  # fmt: skip


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="W2L_", env_nested_delimiter="__", extra="forbid")

    # Model
    checkpoint_dir: Path = Path("checkpoints")  #: official wav2lip_gan.pth / wav2lip.pth go here
    checkpoint_name: str | None = None  #: force one file in checkpoint_dir (default: GAN first)
    render: RenderSettings = RenderSettings()
    ffmpeg_binary: str | None = None  #: a system ffmpeg instead of the imageio-ffmpeg one

    # Lip-sync worker pool
    workers: int = Field(1, ge=1, le=1024)  #: initial (and minimum) worker replicas
    max_workers: int = Field(0, ge=0, le=1024)  #: autoscaling ceiling; 0 = no autoscaling
    worker_gpus: float | None = Field(None, ge=0, le=8)  #: GPU share per worker; None = 0.25 when GPUs exist
    worker_cpus: float = Field(0.5, gt=0, le=64)  #: logical CPUs reserved per worker
    worker_max_ongoing: int = Field(2, ge=1, le=64)  #: one chunk rendering, one fetched and waiting
    target_ongoing_per_worker: float = Field(1.0, gt=0)  #: autoscaling target
    upscale_delay_s: float = Field(5.0, ge=0)  #: sustained load before adding a worker
    downscale_delay_s: float = Field(60.0, ge=0)  #: idle time before removing one
    service_cpus: float = Field(0.1, gt=0, le=64)  #: logical CPUs of ingress, combiner, registries, stores
    combiner_replicas: int = Field(1, ge=1)  #: each muxes whole requests; add more as traffic grows

    # Media (audio decode, mel, a stream's AAC encode): CPU replicas of their own
    media_replicas: int = Field(1, ge=1)  #: MediaWorker replicas (the minimum when autoscaling)
    max_media_replicas: int = Field(0, ge=0)  #: autoscaling ceiling; 0 = fixed
    media_keep_s: float = Field(900.0, gt=0)  #: how long a request's samples, mel and AAC stay pinned for the workers
    media_keep_bytes: int = Field(1024**3, gt=0)  #: at most this much of them per MediaWorker replica (oldest go first)
    media_cpus: float = Field(0.1, gt=0, le=64)  #: logical CPUs reserved per MediaWorker replica (its work is short: decode, mel, AAC)

    # Requests
    chunk_duration_s: float = Field(3.0, gt=0, le=60)  #: seconds of output per chunk
    single_chunk_below_s: float = Field(2.0, ge=0)  #: shorter outputs render as one chunk
    max_chunks: int = Field(64, ge=1)  #: ceiling on chunks per request
    chunk_timeout_s: float = Field(300.0, gt=0)  #: a chunk taking longer is cancelled and retried
    chunk_retries: int = Field(2, ge=0, le=10)  #: attempts after the first, on another replica when possible
    default_preset: str = DEFAULT_PRESET  #: ultra_fast, balanced or quality
    max_upload_bytes: int = Field(50 * 1024 * 1024, gt=0)  #: request body limit, enforced while it arrives
    upload_timeout_s: float = Field(60.0, gt=0)  #: a request body must arrive within this (slow clients get 408)
    max_uploads: int = Field(64, ge=1)  #: request bodies received at once per ingress replica; more get 503
    max_audio_s: float = Field(600.0, gt=0)  #: longer audio gets 413
    max_pending_requests: int = Field(16, ge=1)  #: renders admitted per ingress replica; more get 503
    retry_after_s: int = Field(2, ge=1)  #: Retry-After of a 503
    target_rtf: float | None = Field(None, gt=0)  #: target_achieved = time <= target_rtf x duration (None: 1.0)
    ingress_replicas: int = Field(1, ge=1)  #: HTTP front-door replicas

    # Progressive streams (POST /v1/streams)
    stream_first_chunk_frames: int = Field(16, ge=1, le=1000)  #: a short first chunk: the first frame sooner
    stream_chunk_duration_s: float = Field(2.0, gt=0, le=60)  #: later chunks (rounded to the A/V grid)
    stream_window: int = Field(4, ge=1, le=64)  #: chunks of one stream in flight at once
    stream_wait_s: float = Field(10.0, gt=0)  #: a live.mp4 reader's wait for the next fragment, per call
    max_stream_viewers: int = Field(256, ge=1)  #: open live.mp4 responses per ingress replica
    stream_stale_after_s: float = Field(30.0, gt=0)  #: a stream whose renderer is silent this long has failed
    registry_retry_s: float = Field(30.0, ge=0)  #: how long stream-registry calls are retried while its replica restarts
    stream_memory_bytes: int = Field(64 * 1024 * 1024, ge=0)  #: fragments the stream registry serves from memory

    # Live sessions (POST /v1/sessions): one real-time stream per user
    live_workers: int = Field(1, ge=1, le=1024)  #: LiveWorker replicas: the model for live sessions, a pool of its own
    live_worker_cpus: float = Field(0.0, ge=0, le=64)  #: logical CPUs reserved per LiveWorker (0: none; set on a cluster)
    sessions_per_worker: int = Field(4, ge=1, le=1000)  #: sessions admitted per running LiveWorker replica; more get 503 (4 kept real time on a 2-core CPU: docs/benchmarks.md)
    session_fragment_frames: int = Field(5, ge=1, le=50)  #: frames per fragment (one model call per session each)
    session_lead_s: float = Field(0.2, ge=0, le=5)  #: a fragment is rendered this long before it is due
    session_lookahead_wait_s: float = Field(0.1, ge=0, le=5)  #: input pause after which queued speech starts anyway
    session_max_queue_s: float = Field(30.0, gt=0, le=3600)  #: speech queued at most; more is dropped (input_too_fast)
    session_max_input_rate: float = Field(2.0, ge=1, le=100)  #: sustained client audio faster than this x real time is dropped
    session_max_pending_texts: int = Field(8, ge=1, le=1000)  #: texts waiting to be spoken; more are refused
    session_idle_timeout_s: float = Field(300.0, gt=0)  #: a session nobody watches or speaks to ends after this
    session_behind_after_s: float = Field(0.5, gt=0)  #: a fragment this late sends a ``behind`` event
    session_stats_every_s: float = Field(2.0, gt=0)  #: how often viewers get a ``stats`` event
    session_jpeg_quality: int = Field(80, ge=1, le=100)  #: frames output: JPEG quality
    session_crf: int = Field(28, ge=0, le=51)  #: H.264 quality of the session video (lower is better, larger)
    session_x264_preset: str = "ultrafast"  #: x264 speed preset (always tune=zerolatency)
    session_audio_bitrate: int = Field(32000, ge=6000, le=510000)  #: Opus bits per second
    session_render_attempts: int = Field(3, ge=1, le=10)  #: worker calls per fragment before it is shown unsynced
    session_render_timeout_s: float = Field(2.0, gt=0)  #: one worker call's limit
    session_keep_fragments: int = Field(16, ge=1, le=1000)  #: fragments kept for slow viewers (then they skip ahead)
    session_cpus: float = Field(0.0, ge=0, le=64)  #: logical CPUs reserved for the SessionHost replica (0: none; raise it with many sessions)
    live_batch_calls: int = Field(16, ge=1, le=1024)  #: live fragments a worker joins into one model call
    live_batch_wait_s: float = Field(0.005, ge=0, le=1)  #: how long a worker waits for more fragments to join
    # WebRTC viewers of sessions (POST /v1/sessions/{id}/webrtc): peer connections in the SessionHost replica
    webrtc_max_peers: int = Field(32, ge=1, le=10000)  #: peer connections the SessionHost holds; more get 503
    webrtc_connect_timeout_s: float = Field(15.0, gt=0)  #: a peer not connected by then is closed
    webrtc_ice_servers: list[IceServer] = Field(default_factory=list)  #: STUN/TURN for hosts behind NAT (none: host addresses only)
    webrtc_video_codec: Literal["H264", "VP8"] = "H264"  #: preferred video codec (the other stays a fallback)
    webrtc_jitter_s: float = Field(0.1, ge=0, le=2)  #: playout delay that absorbs uneven fragment arrival

    # Text to speech
    agents_file: Path = Path("agents.yaml")  #: agent personas (avatar, voice, rate, preset)
    tts_max_chars: int = Field(5000, ge=1)  #: longer text gets 413
    tts_replicas: int = Field(1, ge=1)  #: CPU TTS replicas (the minimum when autoscaling)
    tts_cpus: float = Field(0.25, gt=0, le=64)  #: logical CPUs reserved per TTS replica
    max_tts_replicas: int = Field(0, ge=0)  #: autoscaling ceiling; 0 = fixed
    pipeline_tts: bool = True  #: render the first sentences while later ones are synthesised
    speech_memory_bytes: int = Field(64 * 1024 * 1024, ge=0)  #: object-store LRU for speech
    speech_disk_bytes: int = Field(512 * 1024 * 1024, ge=0)  #: disk LRU for speech

    # Jobs (async renders)
    job_poll_s: float = Field(0.5, gt=0)  #: how often a running job looks for a cancel request
    job_stale_after_s: float = Field(600.0, gt=0)  #: a running job silent this long is marked failed

    # Edge
    api_key: str | None = Field(None, repr=False)  #: when set, every route but /healthz needs "Authorization: Bearer <key>"
    cors_origins: list[str] = Field(default_factory=list)  #: origins allowed by CORS (empty = CORS off)

    # Fault injection (tests and demos only): delay each chunk's first attempts
    inject_chunk_delay_s: float = Field(0.0, ge=0)  #: seconds a worker waits before rendering a chunk
    inject_delay_attempts: int = Field(0, ge=0)  #: attempts delayed per chunk (0 = every attempt)

    # Retention: uploaded avatars and rendered videos (their URLs stay valid until then)
    retention_s: float = Field(24 * 3600.0, gt=0)

    # Caches
    data_dir: Path = Path("data")  #: avatars/, results/ (a shared mount in a cluster)
    result_memory_bytes: int = Field(256 * 1024 * 1024, ge=0)  #: object-store LRU budget
    result_disk_bytes: int = Field(2 * 1024**3, ge=0)  #: disk LRU budget (0 = unbounded)
    avatar_memory_items: int = Field(32, ge=1)  #: prepared avatars held in the object store
    avatar_max_video_pixels: int = Field(MAX_VIDEO_PIXELS, gt=0)  #: an avatar video's frames x pixels (decoded memory)
    avatar_max_frames: int = Field(MAX_VIDEO_FRAMES, gt=0)  #: frames kept of an avatar video
    avatar_disk_bytes: int = Field(2 * 1024**3, ge=0)  #: disk budget of uploads and prepared avatars, each (0 = unbounded)

    @model_validator(mode="after")
    def _check(self):
        if self.default_preset not in PRESETS:
            raise ValueError(f"default_preset must be one of {sorted(PRESETS)}")
        if self.stream_stale_after_s <= 4 * self.job_poll_s:
            raise ValueError("stream_stale_after_s must exceed 4 x job_poll_s (the renderer's heartbeat)")
        if self.max_workers and self.max_workers < self.workers:
            raise ValueError("max_workers must be 0 or at least workers")
        return self

    def live(self):
        """How every live session runs (``actors.speech_input.LiveSettings``)."""
        from actors.speech_input import LiveSettings

        return LiveSettings(
            fragment_frames=self.session_fragment_frames, lead_s=self.session_lead_s,
            lookahead_wait_s=self.session_lookahead_wait_s, max_queue_s=self.session_max_queue_s,
            max_input_rate=self.session_max_input_rate, max_pending_texts=self.session_max_pending_texts,
            behind_after_s=self.session_behind_after_s, stats_every_s=self.session_stats_every_s,
            jpeg_quality=self.session_jpeg_quality, crf=self.session_crf, x264_preset=self.session_x264_preset,
            audio_bitrate=self.session_audio_bitrate, render_attempts=self.session_render_attempts,
            render_timeout_s=self.session_render_timeout_s, keep_fragments=self.session_keep_fragments,
        )  # fmt: skip

    def webrtc(self):
        """How the SessionHost's WebRTC peers run (``actors.webrtc.WebRTCSettings``)."""
        from actors.webrtc import WebRTCSettings

        return WebRTCSettings(max_peers=self.webrtc_max_peers, connect_timeout_s=self.webrtc_connect_timeout_s,
                              ice_servers=tuple(s.model_dump(exclude_none=True) for s in self.webrtc_ice_servers),
                              video_codec=self.webrtc_video_codec, jitter_s=self.webrtc_jitter_s,
                              retry_after_s=self.retry_after_s)  # fmt: skip

    def gpus_per_worker(self, cluster_gpus: float) -> float:
        if self.worker_gpus is not None:
            return self.worker_gpus
        return 0.25 if cluster_gpus > 0 else 0.0

    def torch_threads(self) -> int:
        """Threads per CPU worker so that threads x workers <= cores."""
        if self.render.threads:
            return self.render.threads
        return max(1, (os.cpu_count() or 1) // max(1, self.workers))
