"""Request and response models shared by the HTTP routes and the Python handles."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wav2lip.options import PRESETS

#: An avatar id is the sha256 of its media, or "default" (validated before any lookup).
AVATAR_ID_PATTERN = r"^(default|[0-9a-f]{64})$"
VIDEO_ID_PATTERN = r"^[0-9a-f]{64}$"
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
STREAM_ID_PATTERN = VIDEO_ID_PATTERN


def parse_quad(value) -> tuple[int, int, int, int] | None:
    """Four integers from "a b c d", "a,b,c,d" or a list; None for empty."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        parts = [p for p in re.split(r"[\s,]+", value.strip()) if p]
    else:
        parts = list(value)
    try:
        quad = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError("must be four integers separated by spaces or commas") from None
    if len(quad) != 4:
        raise ValueError(f"must be four integers, got {len(quad)}")
    return quad


def known_preset(value: str | None) -> str | None:
    """A preset name (or None), refused with the list of presets when unknown."""
    if value is not None and value not in PRESETS:
        raise ValueError(f"unknown preset {value!r}; choose one of {sorted(PRESETS)}")
    return value


def valid_unicode(value: str | None) -> str | None:
    """Text that can be spoken: no lone UTF-16 surrogates (they cannot be encoded)."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"the text holds a character that is not valid Unicode at position {exc.start} "
                             "(a lone surrogate)") from None  # fmt: skip
    return value


class VideoRequest(BaseModel):
    """One lip-sync render. Audio bytes (or text, with the TTS), plus an avatar."""

    model_config = ConfigDict(extra="forbid")

    audio: bytes | None = Field(None, repr=False, description="speech file bytes (wav, mp3, m4a, ogg, flac)")
    text: str | None = Field(None, description="text to speak instead of audio (offline TTS)")
    agent_type: str | None = Field(None, description="persona from agents.yaml: avatar, voice, rate, preset")
    voice: str | None = Field(None, description="TTS voice (GET /v1/voices); default: the persona's")
    rate: float | None = Field(None, ge=0.5, le=2.0, description="speaking rate; default: the persona's")
    avatar_id: str = Field("default", pattern=AVATAR_ID_PATTERN)
    avatar: bytes | None = Field(None, repr=False, description="face image or video bytes (instead of avatar_id)")
    fps: float | None = Field(None, ge=1, le=60)
    preset: str | None = Field(None, description=f"one of {sorted(PRESETS)}")
    chunk_duration: float | None = Field(None, gt=0, le=60, description="seconds of output per parallel chunk")
    enable_parallel: bool = True
    pads: tuple[int, int, int, int] | None = Field(None, description="top bottom left right")
    box: tuple[int, int, int, int] | None = Field(None, description="fixed face box y1 y2 x1 x2")
    nosmooth: bool = False
    loop: Literal["pingpong", "wrap"] = "pingpong"
    lossless: bool = Field(False, description="FFV1/Matroska output (Python API only)")

    @field_validator("text")
    @classmethod
    def _text(cls, value):
        return valid_unicode(value)

    @field_validator("pads", "box", mode="before")
    @classmethod
    def _quad(cls, value):
        return parse_quad(value)

    @field_validator("preset")
    @classmethod
    def _preset(cls, value):
        return known_preset(value)


class GenerateVideoRequest(BaseModel):
    """The old VBVA service's body for ``POST /generate_video``, unchanged."""

    message: str = Field(description="what the agent says")
    agent_type: str = "general"
    enable_parallel: bool = True
    chunk_duration: float = Field(6, gt=0, le=60)
    use_ultra_fast: bool = Field(False, description="the ultra_fast preset: 12 fps, quarter resolution")
    run_async: bool = Field(False, alias="async", description="answer 202 with a job id at once")

    #: unknown fields are kept aside (not refused: old clients send them) and named in ``warnings``
    model_config = ConfigDict(populate_by_name=True, extra="allow")

    @field_validator("message")
    @classmethod
    def _message(cls, value):
        return valid_unicode(value)

    def to_video_request(self) -> VideoRequest:
        return VideoRequest(
            text=self.message, agent_type=self.agent_type, enable_parallel=self.enable_parallel,
            chunk_duration=self.chunk_duration, preset="ultra_fast" if self.use_ultra_fast else None,
        )  # fmt: skip


class ErrorBody(BaseModel):
    error: str = Field(description="snake_case error code")
    message: str = Field(description="what went wrong and how to fix it")


class AgentInfo(BaseModel):
    agent_type: str
    description: str
    avatar: str
    voice: str
    rate: float
    preset: str
    default: bool


class VoiceRecord(BaseModel):
    name: str
    language: str
    sample_rate: int
    package: str
    license: str


class Stats(BaseModel):
    """Processing statistics: every key of the old VBVA dict, plus ours."""

    total_chunks: int
    successful_chunks: int
    failed_chunks: int
    chunk_retries: int = 0
    parallel_processing: bool
    chunk_duration: float
    total_processing_time: float
    audio_generation_time: float = 0.0
    video_generation_time: float
    optimization_level: str
    speed_multiplier: float
    target_achieved: bool
    real_time_factor: float
    cache_hit: bool
    renderer: str
    stages: dict[str, float] = Field(
        default_factory=dict, description="seconds: tts, decode, mel, render, model, encode, combine, first_chunk"
    )
    nodes: list[str] = Field(default_factory=list, description="Ray node ids whose workers rendered the chunks")
    clipped_samples: int = Field(0, description="audio samples outside [-1, 1] that were clipped, as a player would")


class JobAccepted(BaseModel):
    job_id: str
    status_url: str
    warnings: list[str] = Field(default_factory=list, description="/generate_video: unknown fields that were ignored")


class JobStatus(BaseModel):
    job_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float = Field(ge=0, le=1)
    frames_done: int
    frames_total: int
    eta_s: float | None = None
    video_id: str | None = None
    url: str | None = None
    duration_s: float | None = None
    stats: Stats | None = Field(None, description="the render's statistics, once it succeeded")
    error: ErrorBody | None = None


class StreamCreated(BaseModel):
    """Where a progressive stream is read: HLS, one chunked fMP4, the final MP4, the status."""

    id: str
    hls: str = Field(description="HLS EVENT playlist (fMP4 segments), ends with #EXT-X-ENDLIST")
    mp4: str = Field(description="one fragmented MP4 sent as fragments finish (Media Source Extensions)")
    final: str = Field(description="the finished MP4 (faststart): valid once status is complete")
    status: str = Field(description="this stream's status")


class StreamStatus(BaseModel):
    id: str
    status: Literal["starting", "rendering", "complete", "failed", "cancelled", "deleted"]
    fragments_published: int
    fragments_total: int = Field(description="0 until the whole speech is known")
    duration_s: float = Field(description="seconds of video (0 until the whole speech is known)")
    codecs: str | None = Field(None, description="RFC 6381 codecs, e.g. for MediaSource.isTypeSupported")
    stats: Stats | None = Field(None, description="the render's statistics, once complete")
    error: ErrorBody | None = None


class VideoResponse(BaseModel):
    video_id: str
    url: str
    duration_s: float
    stats: Stats
    warnings: list[str] = Field(default_factory=list, description="/generate_video: unknown fields that were ignored")


class AvatarRecord(BaseModel):
    avatar_id: str
    frames: int
    fps: float | None
    width: int
    height: int
    face_box: list[int] = Field(description="y1 y2 x1 x2 of the first frame (official order)")
    kind: Literal["image", "video"]


class Health(BaseModel):
    status: Literal["ok"]
    model_loaded: bool
    renderer: str
    model_id: str
    device: str
    precision: str
    workers: int
    selection: dict | None = Field(None, description="how the precision and batch size were chosen: measured "
                                   "figures, the reason, any mode refused (int8 below its floor)")
