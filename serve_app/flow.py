"""What the ingress's flows (whole videos, jobs, streams) share: one record, built once."""

from __future__ import annotations

from dataclasses import dataclass

from .admission import Admission
from .personas import Personas
from .dispatch import ChunkDispatcher
from .handles import Handles
from .metrics import ServiceMetrics
from .settings import Settings


@dataclass(frozen=True)
class FlowContext:
    settings: Settings
    handles: Handles
    dispatcher: ChunkDispatcher  #: the one way chunks reach the workers
    admission: Admission  #: this replica's render slots
    metrics: ServiceMetrics
    personas: Personas
