"""Typed records that travel between deployments (dataclasses: they pickle across actors).

Arrays and bytes travel inside them as ``Ref``s, fetched only by the deployment that
uses them; everything else is small metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wav2lip.options import EncodeOptions

from .refs import Ref


@dataclass(frozen=True)
class AvatarVariant:
    """A prepared avatar (one face, one set of preparation options)."""

    key: str  #: content key of the preparation (part of result keys)
    ref: Ref  #: the ``Avatar.to_bytes()`` payload
    summary: dict  #: frames, fps, width, height, face_box, kind


@dataclass(frozen=True)
class SpeechUpdate:
    """What is known of a request's speech so far (a stream of these ends with ``final``).

    ``mel`` covers every sample known so far; ``aac`` (streams only) holds every AAC
    frame encoded so far. The final update adds the samples, their digest and length.
    """

    known_samples: int
    mel: Ref  #: (80, T) float32 over the known samples
    final: bool = False
    aac: Ref | None = None  #: list[bytes] of ADTS AAC frames
    aac_frames: int = 0
    samples: Ref | None = None  #: final: (n,) float32 16 kHz
    digest: str | None = None  #: final: sha256 of the samples (result keys)
    clipped_samples: int = 0  #: samples outside [-1, 1] that decoding clipped
    seconds: dict = field(default_factory=dict)  #: decode / tts / mel seconds


@dataclass(frozen=True)
class ChunkJob:
    """One chunk of a render: output frames [start, stop), with what the worker needs."""

    request_id: str
    index: int
    start: int
    stop: int
    fps: float
    loop: str
    enc: EncodeOptions
    avatar: AvatarVariant
    mel: Ref  #: covers every window of [start, stop)
    aac: Ref | None = None  #: streams: the AAC frames so far; the chunk takes [aac_start, aac_stop)
    aac_start: int = 0
    aac_stop: int = 0
    attempt: int = 0
    delay_s: float = 0.0  #: injected wait before rendering (fault-injection setting; 0 in production)

    @property
    def fragment(self) -> bool:
        """A CMAF fragment (with its AAC slice) rather than a plain segment."""
        return self.aac is not None


@dataclass(frozen=True)
class ChunkResult:
    """A rendered chunk: the encoded bytes stay in the worker's object store."""

    index: int
    n_frames: int
    segment: Ref  #: the encoded segment, or the CMAF media fragment (moof+mdat)
    init: Ref | None = None  #: CMAF: this fragment's init segment
    seconds: dict = field(default_factory=dict)
    node_id: str = ""
    replica: str = ""


@dataclass(frozen=True)
class StoredResult:
    """A finished video in the result store."""

    key: str
    record: dict  #: n_frames, fps, chunks, nodes, created_at, expires_at
    video: Ref


@dataclass(frozen=True)
class CombineJob:
    """Join ``segments`` (in order), mux the audio once, store the video under ``key``."""

    key: str
    segments: list[Ref]
    samples: Ref
    enc: EncodeOptions
    record: dict
    alias: str | None = None


@dataclass
class JobRecord:
    """An asynchronous render's state in the job registry (the API's ``JobStatus`` is built from it)."""

    job_id: str
    status: str = "queued"  #: queued, running, succeeded, failed, cancelled
    progress: float = 0.0
    frames_done: int = 0
    frames_total: int = 0
    eta_s: float | None = None
    video_id: str | None = None
    duration_s: float | None = None
    stats: dict | None = None
    error: dict | None = None
    created_at: float = 0.0
    started_at: float | None = None
    updated_at: float = 0.0
    cancel_requested: bool = False


class SegmentsLost(Exception):
    """Rendered segments vanished with the worker replica that held them; render them again."""

    def __init__(self, indices: list[int]):
        super().__init__(f"segments {indices} were lost with their worker")
        self.indices = indices

    def __reduce__(self):
        return SegmentsLost, (self.indices,)


@dataclass(frozen=True)
class LiveFrames:
    """One live fragment's model inputs; the worker batches many sessions' into one call."""

    crops: np.ndarray  #: (n, 96, 96, 3) uint8 face crops
    windows: np.ndarray  #: (n, 80, 16) float32 mel windows
    positions: np.ndarray  #: (n,) int64 frames of the session timeline (blinks, head motion)


@dataclass(frozen=True)
class SessionSpec:
    """What a live session renders with, resolved by the ingress when it opens."""

    avatar: AvatarVariant
    voice: str  #: the TTS voice of text messages
    rate: float  #: its speaking rate
    fps: float
    persona: str | None = None  #: the agent it was opened for, if any
    #: Idle a video avatar through the model on silence (the real model's own closed mouth);
    #: False for the weights-free renderer, whose video avatar idles as recorded.
    idle_through_model: bool = True
