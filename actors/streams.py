"""``StreamRegistry`` deployment: progressive streams, readable from any ingress replica.

A stream is an init segment, media fragments published strictly in order, and a small
state record (status, planned fragment durations, how many are published). The replica
that renders a stream publishes here; every replica serves the playlist, the fragments
and ``live.mp4`` from here, so a viewer may land anywhere. Fragments are written to
disk atomically (checksummed, temp file + rename) before they are listed: a listed
fragment is always whole. Readers wait on an event instead of polling.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ray import serve

from wav2lip import cmaf
from wav2lip.errors import NotFound

from .refs import Ref
from .store import RecordStore, Store

ACTIVE = ("starting", "rendering")


async def _resolve(value: Ref | bytes | None) -> bytes | None:
    return await value.get() if isinstance(value, Ref) else value

_SWEEP_EVERY_S = 60.0  #: how often opening a stream also deletes expired ones
TERMINAL = ("complete", "failed", "cancelled")


@serve.deployment(name="StreamRegistry", max_ongoing_requests=1024)
class StreamRegistry:
    def __init__(self, data_dir: str, retention_s: float, stale_after_s: float, memory_bytes: int = 0,
                 clock=time.time):  # fmt: skip
        root = Path(data_dir) / "streams"
        self.records = RecordStore(root / "state")
        self.media = Store(root / "media", memory_bytes, suffix=".m4s")  # hot fragments served from memory
        self.retention_s = retention_s
        self.stale_after_s = stale_after_s
        self.clock = clock
        self._changed: dict[str, asyncio.Event] = {}
        self._swept_at = float("-inf")
        self._heartbeats: dict[str, float] = {}  #: stream -> when its renderer last asked about cancelling
        self._started_at = clock()  #: renderers could not check in while this replica was being replaced

    # ---- lifecycle (the rendering replica) ---------------------------------------------
    async def open(self, stream_id: str, wait_s: float = 0.0) -> dict:
        """``{"record", "attached"}``: an admitted or finished stream is shared; else a new one starts.

        A stream still being validated by its opener is waited for (up to ``wait_s``): an
        identical request must not get a 201 for a request that turns out invalid.
        """
        self._sweep()
        record = self._fresh(stream_id)
        deadline = time.monotonic() + wait_s
        while record is not None and record["status"] == "starting" and not record.get("admitted"):
            if time.monotonic() >= deadline:
                return {"record": record, "attached": True}
            event = self._changed.setdefault(stream_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                pass
            record = self._fresh(stream_id)
        if record is not None and record["status"] not in ("failed", "cancelled"):
            return {"record": record, "attached": True}
        self._forget(stream_id)
        now = self.clock()
        record = {"id": stream_id, "status": "starting", "published": 0, "durations": [], "target_s": 0.0,
                  "fragments_total": 0, "duration_s": 0.0, "codecs": None, "error": None, "stats": None,
                  "created_at": now, "updated_at": now, "expires_at": now + self.retention_s,
                  "cancel_requested": False}  # fmt: skip
        return {"record": self._save(record), "attached": False}

    async def admit(self, stream_id: str) -> dict:
        """The opener validated the request: identical requests may attach from now on."""
        record = self._load(stream_id)
        record["admitted"] = True
        return self._save(record)

    async def discard(self, stream_id: str) -> None:
        """Drop a stream whose request turned out invalid before anything was published."""
        record = self.records.get(stream_id)
        if record is not None and record["published"] == 0:
            self._forget(stream_id)

    async def start(self, stream_id: str, target_s: float) -> dict:
        """Rendering begins; no fragment will be longer than ``target_s`` (the playlist's header)."""
        record = self._load(stream_id)
        record.update(status="rendering", target_s=target_s)
        return self._save(record)

    async def plan(self, stream_id: str, fragments_total: int, duration_s: float) -> dict:
        """How many fragments and seconds there will be, once the whole speech is known."""
        record = self._load(stream_id)
        record.update(fragments_total=fragments_total, duration_s=duration_s)
        return self._save(record)

    async def publish(self, stream_id: str, index: int, fragment: Ref | bytes, duration_s: float,
                      init: Ref | bytes | None = None) -> dict:  # fmt: skip
        """Append fragment ``index`` (a ``Ref``: fetched from the worker that rendered it); strictly in order.

        The first fragment's init segment is kept; later ones, when given, must match it.
        """
        record = self._load(stream_id)
        if record["status"] not in ACTIVE:
            raise NotFound(f"stream {stream_id} is {record['status']}; nothing more is published")
        if index < record["published"]:
            return record  # a retried call whose first attempt got through
        if index != record["published"]:
            raise ValueError(f"fragment {index} published out of order (next is {record['published']})")
        chunk_init = await _resolve(init)
        if index == 0 and chunk_init is not None:
            self.media.put(f"{stream_id}-init", chunk_init)
            record["codecs"] = cmaf.codecs(chunk_init)
        elif chunk_init is not None:
            cmaf.check_compatible(await self._media(stream_id, "init", True), chunk_init)
        self.media.put(f"{stream_id}-{index}", await _resolve(fragment))
        record["published"] = index + 1
        record["durations"].append(duration_s)
        return self._save(record)

    async def finish(self, stream_id: str, status: str, stats: dict | None = None, error: dict | None = None) -> dict:
        record = self._load(stream_id)
        if record["status"] in TERMINAL:
            return record
        record.update(status=status, stats=stats, error=error)
        return self._save(record)

    async def cancel(self, stream_id: str) -> dict:
        """Ask the rendering replica to stop (it confirms); a finished stream is deleted."""
        record = self._load(stream_id)
        if record["status"] in ACTIVE:
            record["cancel_requested"] = True
            return self._save(record)
        self._forget(stream_id)
        return {**record, "status": "deleted"}

    async def cancel_requested(self, stream_id: str) -> bool:
        """The renderer asks every ``job_poll_s``: that is also its heartbeat."""
        self._heartbeats[stream_id] = self.clock()
        record = self.records.get(stream_id)
        return record is None or record["cancel_requested"]

    # ---- reading (any replica) -----------------------------------------------------------
    async def get(self, stream_id: str) -> dict:
        return self._public(stream_id)

    async def wait(self, stream_id: str, published: int, timeout_s: float) -> dict:
        """The record once more than ``published`` fragments are out, the stream ended, or time is up."""
        return await self._wait_for(stream_id, lambda r: r["published"] > published, timeout_s)

    async def _wait_for(self, stream_id: str, ready, timeout_s: float) -> dict:
        record = self._public(stream_id)
        deadline = time.monotonic() + timeout_s
        while not ready(record) and record["status"] in ACTIVE:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            event = self._changed.setdefault(stream_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), left)
            except asyncio.TimeoutError:
                pass
            record = self._public(stream_id)
        return record

    async def init(self, stream_id: str) -> bytes:
        return await self._media(stream_id, "init", self._public(stream_id)["published"] > 0)

    async def fragment(self, stream_id: str, index: int) -> bytes:
        return await self._media(stream_id, str(index), 0 <= index < self._public(stream_id)["published"])

    async def playlist(self, stream_id: str, timeout_s: float) -> str | None:
        """The HLS playlist, or None while still unplanned after ``timeout_s``: the plan fixes
        its header (the target duration), which must not change once a player has it."""
        record = await self._wait_for(stream_id, lambda r: r["status"] != "starting", timeout_s)
        if record["status"] == "starting":
            return None
        return cmaf.hls_playlist(record["durations"], record["target_s"], record["status"] in TERMINAL)

    # ---- internals -----------------------------------------------------------------------
    def _public(self, stream_id: str) -> dict:
        record = self._fresh(stream_id)
        if record is None:
            raise NotFound(f"stream {stream_id} does not exist (or has expired)")
        return {k: v for k, v in record.items() if k != "cancel_requested"}

    async def _media(self, stream_id: str, part: str, listed: bool) -> bytes:
        data = await self.media.read(f"{stream_id}-{part}") if listed else None
        if data is None:
            raise NotFound(f"stream {stream_id} has no {part} segment (yet)")
        return data

    def _load(self, stream_id: str) -> dict:
        record = self.records.get(stream_id)
        if record is None:
            raise NotFound(f"stream {stream_id} does not exist")
        return record

    def _fresh(self, stream_id: str) -> dict | None:
        """The record, with expiry and a silent renderer (its replica died) applied."""
        record = self.records.get(stream_id)
        if record is None:
            return None
        now = self.clock()
        if now >= record["expires_at"]:
            self._forget(stream_id)
            return None
        last_sign = max(record["updated_at"], self._heartbeats.get(stream_id, self._started_at))
        if record["status"] in ACTIVE and now - last_sign > self.stale_after_s:
            record.update(status="failed", error={"error": "stream_lost",
                                                  "message": "the replica rendering this stream stopped; "
                                                             "ask for it again to render it afresh"})  # fmt: skip
            self._save(record)
        return record

    def _sweep(self) -> None:
        """Delete expired streams (records and fragments), at most every ``_SWEEP_EVERY_S``."""
        now = self.clock()
        if now - self._swept_at >= _SWEEP_EVERY_S:
            self._swept_at = now
            for stream_id in self.records.keys():
                self._fresh(stream_id)

    def _save(self, record: dict) -> dict:
        record["updated_at"] = self.clock()
        self.records.put(record["id"], record)
        event = self._changed.pop(record["id"], None)
        if event is not None:
            event.set()  # wake every reader waiting on this stream; later waits get a new event
        return record

    def _forget(self, stream_id: str) -> None:
        record = self.records.get(stream_id)
        if record is not None:
            for n in range(record["published"]):
                self.media.delete(f"{stream_id}-{n}")
            self.media.delete(f"{stream_id}-init")
            self.records.delete(stream_id)
        self._heartbeats.pop(stream_id, None)
        event = self._changed.pop(stream_id, None)
        if event is not None:
            event.set()
