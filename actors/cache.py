"""Two-level caches: Ray object store (LRU in bytes) over a checksummed disk store, and
small JSON records kept in memory over the same disk store.

The one cache implementation: results, speech and anything else keyed by content
use it. Values are bytes; the object-store level holds ``ObjectRef``s owned by the
actor that holds this cache, so callers read them by reference. Disk failures turn
the disk level off (the store logs it); the memory level keeps working.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import ray

from wav2lip.storage import DiskStore


class TieredCache:
    def __init__(self, root: str | Path, memory_bytes: int, disk_bytes: int, suffix: str = ".bin"):
        self.disk = DiskStore(root, disk_bytes, suffix)
        self.memory_bytes = memory_bytes
        self._refs: OrderedDict[str, tuple[ray.ObjectRef, int]] = OrderedDict()
        self._held = 0
        self.hits = {"memory": 0, "disk": 0}
        self.misses = 0

    def get(self, key: str) -> ray.ObjectRef | None:
        """An object-store ref to the bytes under ``key``, or None."""
        if key in self._refs:
            self._refs.move_to_end(key)
            self.hits["memory"] += 1
            return self._refs[key][0]
        data = self.disk.get(key)
        if data is None:
            self.misses += 1
            return None
        self.hits["disk"] += 1
        return self._remember(key, data)

    def put(self, key: str, data: bytes) -> ray.ObjectRef:
        self.disk.put(key, data)
        return self._remember(key, data)

    def delete(self, key: str) -> None:
        ref = self._refs.pop(key, None)
        if ref is not None:
            self._held -= ref[1]
        self.disk.delete(key)

    def _remember(self, key: str, data: bytes) -> ray.ObjectRef:
        ref = ray.put(data)
        if len(data) <= self.memory_bytes:
            self._refs[key] = (ref, len(data))
            self._held += len(data)
            while self._held > self.memory_bytes:
                _, (_, size) = self._refs.popitem(last=False)
                self._held -= size
        return ref

    def stats(self) -> dict:
        return {"memory_items": len(self._refs), "memory_bytes": self._held, "hits": dict(self.hits), "misses": self.misses}


class RecordStore:
    """Small JSON records (job states, result and avatar records): memory over disk.

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
