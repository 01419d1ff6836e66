"""Admission control: a render holds a slot from the moment it is accepted until it ends.

Taking the slot is the check (no gap between "is there room?" and "count me"), so a
burst can never be accepted beyond ``max_pending_requests``; a job or a stream keeps
the slot it was admitted with while it runs in the background.
"""

from __future__ import annotations

from .errors import Overloaded
from .metrics import ServiceMetrics


class Slot:
    """One admitted render; ``release`` (or leaving the ``with``) frees it, once."""

    def __init__(self, admission: Admission):
        self._admission = admission
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._admission._release()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Lease:
    """A render's claim on a slot, taken only once it is known to render (``take``): a request
    answered from the store, or joining the same render under way, never takes one."""

    def __init__(self, admission: Admission, slot: Slot | None = None):
        self.admission = admission
        self.slot = slot

    def take(self) -> None:
        if self.slot is None:
            self.slot = self.admission.reserve()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        if self.slot is not None:
            self.slot.release()


class Admission:
    def __init__(self, limit: int, retry_after_s: int, metrics: ServiceMetrics):
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self.pending = 0

    def reserve(self) -> Slot:
        """A slot for one render, or ``Overloaded`` (503 + Retry-After) when all are taken."""
        if self.pending >= self.limit:
            self.metrics.rejected.inc()
            raise Overloaded(f"{self.pending} renders in progress on this replica; retry in {self.retry_after_s} s",
                             self.retry_after_s)  # fmt: skip
        self.pending += 1
        self.metrics.pending.set(self.pending)
        return Slot(self)

    def _release(self) -> None:
        self.pending -= 1
        self.metrics.pending.set(self.pending)
