"""What the service answers, as dataclasses (every one keeps the whole JSON in ``raw``)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

FRAME_MAGIC = b"W2LF"  #: frames-mode message tag
_HEADER_LENGTH = struct.Struct(">I")

JOB_DONE = ("succeeded", "failed", "cancelled")
STREAM_DONE = ("complete", "failed", "cancelled", "deleted")


@dataclass
class Video:
    """A rendered video. ``download()`` fetches its MP4 (a coroutine on an ``AsyncClient``)."""

    video_id: str
    url: str
    duration_s: float
    stats: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    raw: dict = field(default_factory=dict, repr=False)
    _client: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict, client: Any = None) -> "Video":
        return cls(video_id=body["video_id"], url=body.get("url") or f"/v1/videos/{body['video_id']}",
                   duration_s=float(body.get("duration_s") or 0.0), stats=body.get("stats") or {},
                   warnings=list(body.get("warnings") or []), raw=body, _client=client)  # fmt: skip

    def download(self):
        if self._client is None:
            raise RuntimeError("this Video is not bound to a client; use client.video_bytes(video_id)")
        return self._client.video_bytes(self.video_id)


@dataclass
class JobStatus:
    """``GET /v1/jobs/{id}``: ``status`` is queued, running, succeeded, failed or cancelled."""

    job_id: str
    status: str
    progress: float = 0.0
    frames_done: int = 0
    frames_total: int = 0
    eta_s: float | None = None
    video_id: str | None = None
    url: str | None = None
    duration_s: float | None = None
    stats: dict | None = None
    error: dict | None = None  #: ``{"error": code, "message": text}`` once failed
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: dict) -> "JobStatus":
        return cls(job_id=body["job_id"], status=body["status"], progress=float(body.get("progress") or 0.0),
                   frames_done=int(body.get("frames_done") or 0), frames_total=int(body.get("frames_total") or 0),
                   eta_s=body.get("eta_s"), video_id=body.get("video_id"), url=body.get("url"),
                   duration_s=body.get("duration_s"), stats=body.get("stats"), error=body.get("error"),
                   raw=body)  # fmt: skip

    @property
    def done(self) -> bool:
        return self.status in JOB_DONE


@dataclass
class StreamInfo:
    """``POST /v1/streams``: where the progressive stream is read (paths on the service)."""

    id: str
    hls: str
    mp4: str
    final: str
    status: str
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: dict) -> "StreamInfo":
        return cls(id=body["id"], hls=body["hls"], mp4=body["mp4"], final=body["final"], status=body["status"],
                   raw=body)  # fmt: skip


@dataclass
class StreamStatus:
    """``GET /v1/streams/{id}/status``: starting, rendering, complete, failed or cancelled."""

    id: str
    status: str
    fragments_published: int = 0
    fragments_total: int = 0
    duration_s: float = 0.0
    codecs: str | None = None
    stats: dict | None = None
    error: dict | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: dict) -> "StreamStatus":
        return cls(id=body["id"], status=body["status"], fragments_published=int(body.get("fragments_published") or 0),
                   fragments_total=int(body.get("fragments_total") or 0),
                   duration_s=float(body.get("duration_s") or 0.0), codecs=body.get("codecs"),
                   stats=body.get("stats"), error=body.get("error"), raw=body)  # fmt: skip

    @property
    def done(self) -> bool:
        return self.status in STREAM_DONE


@dataclass
class SessionStatus:
    """``GET /v1/sessions/{id}``: ``state`` idle, speaking or closed."""

    session_id: str
    state: str
    fps: float = 0.0
    width: int = 0
    height: int = 0
    pts: float = 0.0
    spoken_s: float = 0.0
    queue_s: float = 0.0
    viewers: int = 0
    stats: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: dict) -> "SessionStatus":
        return cls(session_id=body["session_id"], state=body["state"], fps=float(body.get("fps") or 0.0),
                   width=int(body.get("width") or 0), height=int(body.get("height") or 0),
                   pts=float(body.get("pts") or 0.0), spoken_s=float(body.get("spoken_s") or 0.0),
                   queue_s=float(body.get("queue_s") or 0.0), viewers=int(body.get("viewers") or 0),
                   stats=body.get("stats") or {}, raw=body)  # fmt: skip


# ---- what a session socket yields ---------------------------------------------------------
@dataclass
class Event:
    """A JSON event: ``type`` (speech_started, speech_ended, interrupted, behind, stats, error, ...),
    ``pts`` (seconds of the session timeline; None on some errors), ``data`` (the whole event)."""

    type: str
    pts: float | None
    data: dict = field(default_factory=dict)

    @property
    def code(self) -> str | None:
        """An ``error`` event's code (``invalid_message``, ``empty_text``, ``input_too_fast``, ...)."""
        return self.data.get("code")

    @property
    def message(self) -> str | None:
        return self.data.get("message")


@dataclass
class Fragment:
    """fMP4 output: the init segment (``init=True``, first), then media fragments in order."""

    data: bytes = field(repr=False)
    init: bool = False

    def __len__(self) -> int:
        return len(self.data)


@dataclass
class Frame:
    """frames output: one video frame as JPEG and its PCM16LE mono audio at ``sample_rate``."""

    index: int
    pts: float
    jpeg: bytes = field(repr=False)
    pcm: bytes = field(repr=False)
    sample_rate: int = 16000
    header: dict = field(default_factory=dict, repr=False)


class FrameError(ValueError):
    """A binary frames-mode message that is not a valid ``W2LF`` frame message."""


def parse_frame_message(data: bytes) -> tuple[dict, bytes, bytes]:
    """(header, jpeg, pcm16) of a frames-mode message: ``b"W2LF"``, a big-endian u32 header
    length, a UTF-8 JSON header ``{frame, pts, jpeg_bytes, pcm_bytes, sample_rate}``, the JPEG, the PCM."""
    data = bytes(data)
    start = len(FRAME_MAGIC) + _HEADER_LENGTH.size
    if len(data) < start or not data.startswith(FRAME_MAGIC):
        raise FrameError("not a frame message (bad magic)")
    (length,) = _HEADER_LENGTH.unpack_from(data, len(FRAME_MAGIC))
    try:
        header = json.loads(data[start : start + length])
        jpeg_bytes, pcm_bytes = int(header["jpeg_bytes"]), int(header["pcm_bytes"])
    except (ValueError, KeyError, TypeError):
        raise FrameError("the frame message header is not valid JSON with jpeg_bytes and pcm_bytes") from None
    body = start + length
    if min(jpeg_bytes, pcm_bytes) < 0 or body + jpeg_bytes + pcm_bytes != len(data):
        raise FrameError("the frame message lengths do not match its size")
    return header, data[body : body + jpeg_bytes], data[body + jpeg_bytes :]


def frame_from_message(data: bytes) -> Frame:
    header, jpeg, pcm = parse_frame_message(data)
    return Frame(index=int(header.get("frame", 0)), pts=float(header.get("pts", 0.0)), jpeg=jpeg, pcm=pcm,
                 sample_rate=int(header.get("sample_rate", 16000)), header=header)  # fmt: skip


def event_from_text(text: str) -> Event:
    try:
        body = json.loads(text)
    except ValueError:
        return Event(type="unknown", pts=None, data={"text": text})
    if not isinstance(body, dict):
        return Event(type="unknown", pts=None, data={"value": body})
    return Event(type=str(body.get("type", "unknown")), pts=body.get("pts"), data=body)


def frame_message(header: dict, jpeg: bytes, pcm: bytes) -> bytes:
    """Build a frames-mode message (the inverse of ``parse_frame_message``; for tests and fakes)."""
    head = json.dumps({**header, "jpeg_bytes": len(jpeg), "pcm_bytes": len(pcm)}).encode()
    return FRAME_MAGIC + _HEADER_LENGTH.pack(len(head)) + head + jpeg + pcm
