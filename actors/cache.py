"""Two-level cache: Ray object store (LRU in bytes) over a checksummed disk store.

The one cache implementation: results, speech and anything else keyed by content
use it. Values are bytes; the object-store level holds ``ObjectRef``s owned by the
actor that holds this cache, so callers read them by reference. Disk failures turn
the disk level off (the store logs it); the memory level keeps working.
"""

from __future__ import annotations

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
