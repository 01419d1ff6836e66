"""The one store: Ray object store (LRU in bytes) over a checksummed atomic disk, with
retention and tombstones; plus small JSON records kept in memory over the same disk.

Results, avatars, speech and streams all keep their bytes in a ``Store``. Values are
bytes; the object-store level holds refs owned by the deployment that holds the store,
so callers read values by reference. With a ``retention_s``, every entry expires that
long after it was put; the disk frees expired entries first, and an unexpired entry
evicted for space (or expired) leaves a tombstone, so asking for it says *why* it is
gone (410) instead of a silent "unknown" (404). Disk failures turn the disk level off
(logged); memory keeps working.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from pathlib import Path

import ray

from wav2lip.errors import Expired

from .disk import DiskStore
from .refs import Ref

EXPIRED = "its retention period ended"
EVICTED = "evicted to free disk space"


class RecordStore:
    """Small JSON records (job and stream states, entry metadata): memory over disk.

    Memory is the truth while the replica lives (so a refusing disk loses nothing until a
    restart); the disk brings records back after one.
    """

    def __init__(self, root: str | Path, suffix: str = ".json"):
        self.disk = DiskStore(root, suffix=suffix)
        self._memory: dict[str, dict] = {}

    def get(self, key: str) -> dict | None:
        if key not in self._memory:
            data = self.disk.get(key)
            if data is None:
                return None
            self._memory[key] = json.loads(data)
        return self._memory[key]

    def put(self, key: str, record: dict) -> dict:
        self._memory[key] = record
        self.disk.put(key, json.dumps(record).encode())
        return record

    def delete(self, key: str) -> None:
        self._memory.pop(key, None)
        self.disk.delete(key)

    def keys(self) -> set[str]:
        return {key for key, _, _ in self.disk.entries()} | set(self._memory)


class Store:
    """Bytes by key: object-store LRU over disk; optional retention with tombstones."""

    def __init__(self, root: str | Path, memory_bytes: int, disk_bytes: int = 0, suffix: str = ".bin",
                 retention_s: float | None = None, clock=time.time):  # fmt: skip
        self.root = Path(root)
        self.memory_bytes = memory_bytes
        self.retention_s = retention_s
        self.clock = clock
        self.meta = RecordStore(self.root, suffix=f"{suffix}.meta") if retention_s else None
        self.disk = DiskStore(self.root, disk_bytes, suffix, on_evict=self._evicted if self.meta else None,
                              expired=self._expired if self.meta else None)  # fmt: skip
        self._refs: OrderedDict[str, tuple[ray.ObjectRef, int]] = OrderedDict()
        self._held = 0
        self.hits = {"memory": 0, "disk": 0}
        self.misses = 0

    # ---- bytes -------------------------------------------------------------------------
    def get(self, key: str) -> Ref | None:
        """A ref to the bytes under ``key``; None if unknown; ``Expired`` if it is gone."""
        if self.meta is not None and self.record(key) is None:
            self.misses += 1
            return None
        if key in self._refs:
            self._refs.move_to_end(key)
            self.hits["memory"] += 1
            return Ref(self._refs[key][0])
        data = self.disk.get(key)
        if data is None:
            self.misses += 1
            return None
        self.hits["disk"] += 1
        return self._remember(key, data)

    async def read(self, key: str) -> bytes | None:
        """The bytes under ``key`` in this process (memory level first), or None."""
        ref = self.get(key) if self.memory_bytes else None
        if ref is not None:
            return await ref.get()
        if self.meta is not None and self.record(key) is None:
            return None
        return self.disk.get(key)

    def put(self, key: str, data: bytes, **meta) -> Ref | None:
        """Keep ``data`` (on disk when it takes it); ``meta`` is stored beside it (retention).

        A ref to it in the object store, or None for a store without a memory level."""
        if self.meta is not None:
            now = self.clock()
            self.meta.put(key, {**meta, "created_at": now, "expires_at": now + self.retention_s})
        self.disk.put(key, data)
        return self._remember(key, data) if self.memory_bytes else None

    def contains(self, key: str) -> bool:
        return key in self._refs or self.disk.contains(key)

    def delete(self, key: str, tombstone: str | None = None) -> None:
        """Forget ``key`` (a later ``get`` is a miss), or leave a tombstone saying why it went."""
        held = self._refs.pop(key, None)
        if held is not None:
            self._held -= held[1]
        self.disk.delete(key)
        if self.meta is not None:
            if tombstone:
                self.meta.put(key, {**(self.meta.get(key) or {}), "gone": tombstone})
            else:
                self.meta.delete(key)

    # ---- retention ---------------------------------------------------------------------
    def record(self, key: str) -> dict | None:
        """The live entry's metadata; None if unknown; ``Expired`` once its time is over or it was evicted."""
        record = self.meta.get(key) if self.meta is not None else None
        if record is None:
            return None
        if "gone" not in record and self.clock() >= record.get("expires_at", float("inf")):
            self.delete(key, EXPIRED)
            record = self.meta.get(key)
        if "gone" in record:
            raise Expired(f"{record.get('kind', 'item')} {key} is gone: {record['gone']}")
        return record

    def live_keys(self) -> list[str]:
        """Keys whose entries are neither expired nor evicted (checked now)."""
        keys = []
        for key in sorted(self.meta.keys() if self.meta is not None else ()):
            try:
                if self.record(key) is not None:
                    keys.append(key)
            except Expired:
                continue
        return keys

    def _expired(self, key: str) -> bool:
        record = self.meta.get(key)
        return record is None or self.clock() >= record.get("expires_at", 0)

    def _evicted(self, key: str) -> None:
        held = self._refs.pop(key, None)
        if held is not None:
            self._held -= held[1]
        self.meta.put(key, {**(self.meta.get(key) or {}), "gone": EXPIRED if self._expired(key) else EVICTED})

    def _remember(self, key: str, data: bytes) -> Ref:
        ref = ray.put(data)
        if len(data) <= self.memory_bytes:
            self._refs[key] = (ref, len(data))
            self._held += len(data)
            while self._held > self.memory_bytes:
                _, (_, size) = self._refs.popitem(last=False)
                self._held -= size
        return Ref(ref)

    def stats(self) -> dict:
        return {"memory_items": len(self._refs), "memory_bytes": self._held, "hits": dict(self.hits), "misses": self.misses}
