"""The deployment graph as one named record (``build_app`` hands it to the ingress), and
what every flow of the ingress shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Handles:
    """Handles to every deployment the ingress's flows call (Serve fills them in at bind)."""

    worker: Any  #: LipSyncWorker pool
    media: Any  #: MediaWorker: decode, mel, AAC
    combiner: Any  #: Combiner: joins segments, writes results
    avatars: Any  #: AvatarRegistry
    results: Any  #: ResultStore
    tts: Any  #: TTSWorker
    jobs: Any  #: JobRegistry
    streams: Any  #: StreamRegistry
    sessions: Any  #: SessionHost: live sessions
