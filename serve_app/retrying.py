"""Calls to a state-holding deployment that outlive its replica being replaced.

The stream registry is one replica with its state on disk: when it dies, Serve starts
another, which reloads that state. A call in flight at that moment fails with
``RayActorError``; calling again once the new replica is up succeeds. Only idempotent
methods go through here (publishing fragment n twice, finishing twice and reading are
all harmless).
"""

from __future__ import annotations

import asyncio
import logging

from ray.exceptions import RayActorError

log = logging.getLogger("ray.serve")


class RetryingHandle:
    """``handle.method.remote(...)`` as a coroutine retried for up to ``budget_s`` seconds."""

    def __init__(self, handle, budget_s: float, pause_s: float = 0.5):
        self._handle = handle
        self._budget_s = budget_s
        self._pause_s = pause_s

    def __getattr__(self, name: str) -> _Method:
        return _Method(self, name)


class _Method:
    def __init__(self, owner: RetryingHandle, name: str):
        self._owner = owner
        self._name = name

    async def remote(self, *args, **kwargs):
        owner = self._owner
        waited = 0.0
        while True:
            try:
                return await getattr(owner._handle, self._name).remote(*args, **kwargs)
            except RayActorError as exc:
                if waited >= owner._budget_s:
                    raise
                log.warning("%s failed (%s); retrying while the replica is replaced", self._name, type(exc).__name__)
                await asyncio.sleep(owner._pause_s)
                waited += owner._pause_s
