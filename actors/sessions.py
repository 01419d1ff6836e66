"""``SessionHost`` deployment: where live sessions run, reachable from every ingress replica.

Each session is a ``LiveSession`` (its real-time loop, queue, encoder and viewers) on
this replica; ingress replicas only relay a socket's input here and its output back, so
a client whose socket (or ingress replica) drops reconnects anywhere and continues at
the live edge. The host admits ``sessions_per_worker`` sessions per running live-worker
replica (503 beyond), and ends sessions nobody watches or speaks to for
``idle_timeout_s``. One replica holds every session (see docs/sessions.md for scale).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import OrderedDict
from typing import AsyncIterator

from ray import serve

from wav2lip.avatar import Avatar
from wav2lip.errors import NotFound, RetryLater
from wav2lip.hparams import SAMPLE_RATE

from .broadcast import OUTPUTS
from .live_session import LiveSession
from .speech_input import LiveSettings
from .pool import LIVE_WORKER_DEPLOYMENT, running_workers
from .records import SessionSpec
from .webrtc import WebRTCPeers, WebRTCSettings

log = logging.getLogger("ray.serve")
_AVATARS_KEPT = 16  #: decoded avatars kept (sessions of one persona share one)
_SWEEP_EVERY_S = 5.0  #: how often idle sessions are looked for
_WORKERS_TTL_S = 5.0  #: how long the running-worker count (capacity) is trusted


class SessionsFull(RetryLater):
    """Every worker's share of live sessions is taken; retry after ``retry_after_s``."""

    code = "sessions_full"


@serve.deployment(name="SessionHost", max_ongoing_requests=100_000)
class SessionHost:
    def __init__(self, worker, tts, settings: LiveSettings, sessions_per_worker: int, idle_timeout_s: float,
                 retry_after_s: int, workers: int, webrtc: WebRTCSettings = WebRTCSettings()):  # fmt: skip
        self.worker, self.tts, self.settings = worker, tts, settings
        self.peers = WebRTCPeers(webrtc)
        self.sessions_per_worker, self.idle_timeout_s = sessions_per_worker, idle_timeout_s
        self.retry_after_s, self.workers = retry_after_s, workers
        self.sessions: dict[str, LiveSession] = {}
        self._avatars: OrderedDict[str, Avatar] = OrderedDict()
        self._sweeper: asyncio.Task | None = None
        self._opening = 0  #: opens admitted and not yet in ``sessions`` (they count against capacity)
        self._workers, self._workers_at = workers, float("-inf")

    async def capacity(self) -> int:
        """Sessions admitted: per running worker (asked of the controller off the event loop, cached)."""
        if time.monotonic() - self._workers_at > _WORKERS_TTL_S:
            self._workers = await asyncio.to_thread(running_workers, self.workers, LIVE_WORKER_DEPLOYMENT)
            self._workers_at = time.monotonic()
        return self.sessions_per_worker * max(1, self._workers)

    async def open(self, spec: SessionSpec) -> dict:
        """A new session (idle until spoken to); its status."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep())
        capacity = await self.capacity()
        if len(self.sessions) + self._opening >= capacity:
            raise SessionsFull(f"{len(self.sessions)} live sessions are open, the most the workers take; "
                               f"retry in {self.retry_after_s} s", self.retry_after_s)  # fmt: skip
        self._opening += 1
        try:
            avatar = await self._avatar(spec)
            session_id = uuid.uuid4().hex
            self.sessions[session_id] = LiveSession(session_id, spec, avatar, self.settings, self.worker, self.tts)
        finally:
            self._opening -= 1
        log.info("session %s opened (%d open): %dx%d at %g fps", session_id, len(self.sessions), avatar.width,
                 avatar.height, spec.fps)  # fmt: skip
        return self.sessions[session_id].status()

    async def _avatar(self, spec: SessionSpec) -> Avatar:
        key = spec.avatar.key
        if key not in self._avatars:
            self._avatars[key] = await asyncio.to_thread(Avatar.from_bytes, await spec.avatar.ref.get())
            while len(self._avatars) > _AVATARS_KEPT:
                self._avatars.popitem(last=False)
        self._avatars.move_to_end(key)
        return self._avatars[key]

    def _get(self, session_id: str) -> LiveSession:
        session = self.sessions.get(session_id)
        if session is None or session.closed:
            raise NotFound(f"session {session_id} does not exist (or has ended)")
        return session

    def status(self, session_id: str) -> dict:
        return self._get(session_id).status()

    def check(self, session_id: str) -> None:
        """Raise ``NotFound`` unless the session is open (a socket asks before it upgrades)."""
        self._get(session_id)

    async def input(self, session_id: str, items: list[tuple], sample_rate: int) -> list[dict]:
        """Apply one socket's messages in order; error events for that socket."""
        session = self._get(session_id)
        errors = await session.input(items, sample_rate)
        if session.closed:  # a close message: its slot is free at once
            self.sessions.pop(session_id, None)
        return errors

    async def watch(self, session_id: str, output: str) -> AsyncIterator[bytes | str]:
        """The session's output from the live edge (``OUTPUTS``): ends when it closes or the viewer leaves."""
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}")
        session = self._get(session_id)
        async for message in session.broadcast.follow(output, session.ready(output)):
            yield message

    async def webrtc(self, session_id: str, sdp: str, kind: str) -> dict:
        """Answer a browser's SDP offer: a peer connection here that shows the session (``actors/webrtc.py``)."""
        session = self._get(session_id)
        return await self.peers.answer(session_id, session.broadcast, session.fps, sdp, kind)

    async def close(self, session_id: str) -> dict:
        session = self._get(session_id)
        await session.close()
        self.sessions.pop(session_id, None)
        log.info("session %s closed after %.1f s spoken", session_id, session.spoken_samples / SAMPLE_RATE)
        return session.status()

    async def stats(self) -> dict:
        return {"open": len(self.sessions), "capacity": await self.capacity(), "pid": os.getpid(),
                "viewers": sum(s.broadcast.viewers for s in self.sessions.values()),
                "webrtc_peers": len(self.peers.peers)}  # fmt: skip

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(_SWEEP_EVERY_S, self.idle_timeout_s / 3))
            now = time.monotonic()
            for session_id, session in list(self.sessions.items()):
                quiet_since = max(session.last_input_at, session.broadcast.last_viewer_left_at)
                idle = session.broadcast.viewers == 0 and now - quiet_since > self.idle_timeout_s
                if session.closed or idle:
                    await session.close()
                    self.sessions.pop(session_id, None)
                    log.info("session %s ended: %s", session_id, "closed" if not idle else "idle")
