"""The checksummed disk store under every cache (keys are built in ``wav2lip.keys``).

Entries are written to a temporary name and renamed (a reader never sees half a
file), carry a sha256 of their payload that is checked on every read (a corrupt
entry is deleted and reported as a miss), and are evicted least-recently-used
when the store grows past its byte budget. Disk errors (full, read-only) never
propagate: the store logs a warning and behaves as a miss, so the service keeps
answering without its cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from pathlib import Path

from wav2lip.files import atomic_write

log = logging.getLogger(__name__)

_MAGIC = b"W2LC1"
_DIGEST = 32
_KEY_RE = re.compile(r"^[0-9a-z_\-]{1,128}$")


class DiskStore:
    """A folder of checksummed entries with an LRU byte budget (``max_bytes`` 0 = unbounded)."""

    def __init__(self, root: str | Path, max_bytes: int = 0, suffix: str = ".bin", on_evict=None, expired=None):
        """``expired(key) -> bool`` entries go first when space is needed; ``on_evict(key)``
        hears about every entry evicted for space (so the owner can say so, not fail silently)."""
        self.root = Path(root)
        self.on_evict = on_evict
        self.expired = expired
        self.max_bytes = max_bytes
        self.suffix = suffix
        self._lock = threading.Lock()
        self.enabled = True
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._disable("create", exc)

    def _disable(self, what: str, exc: OSError) -> None:
        log.warning("disk cache %s: cannot %s (%s); continuing without it", self.root, what, exc)
        self.enabled = False

    def path(self, key: str) -> Path:
        if not _KEY_RE.match(key):
            raise ValueError(f"invalid cache key {key!r}")
        return self.root / f"{key}{self.suffix}"

    def get(self, key: str) -> bytes | None:
        """The payload stored under ``key``, or None (missing, corrupt or unreadable)."""
        path = self.path(key)
        if not self.enabled:
            return None
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("disk cache read %s failed: %s", path, exc)
            return None
        head = len(_MAGIC) + _DIGEST
        payload = blob[head:]
        if blob[: len(_MAGIC)] != _MAGIC or hashlib.sha256(payload).digest() != blob[len(_MAGIC) : head]:
            log.warning("disk cache entry %s is corrupt; dropping it", path)
            self.delete(key)
            return None
        try:
            os.utime(path)  # recency for LRU eviction
        except OSError:
            pass
        return payload

    def put(self, key: str, payload: bytes) -> bool:
        """Store ``payload``; False (and a warning) when the disk refuses."""
        if not self.enabled:
            return False
        try:
            atomic_write(self.path(key), _MAGIC + hashlib.sha256(payload).digest() + payload)
        except OSError as exc:
            log.warning("disk cache write %s failed (%s); entry not cached", key, exc)
            return False
        self._evict()
        return True

    def contains(self, key: str) -> bool:
        return self.enabled and self.path(key).is_file()

    def delete(self, key: str) -> bool:
        try:
            self.path(key).unlink()
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("disk cache delete %s failed: %s", key, exc)
            return False

    def entries(self) -> list[tuple[str, int, float]]:
        """(key, bytes, last use) of every entry, oldest use first."""
        out = []
        try:
            for entry in os.scandir(self.root):
                if entry.name.endswith(self.suffix) and not entry.name.startswith("."):
                    st = entry.stat()
                    out.append((entry.name[: -len(self.suffix)], st.st_size, st.st_mtime))
        except OSError:
            return []
        return sorted(out, key=lambda e: e[2])

    def _evict(self) -> None:
        if not self.max_bytes:
            return
        with self._lock:
            entries = self.entries()
            total = sum(size for _, size, _ in entries)
            if total <= self.max_bytes:
                return
            if self.expired is not None:  # expired entries first, then least recently used
                entries.sort(key=lambda e: not self.expired(e[0]))
            for key, size, _ in entries:
                if total <= self.max_bytes:
                    break
                if self.delete(key):
                    total -= size
                    log.info("disk cache evicted %s (%d bytes)", key, size)
                    if self.on_evict is not None:
                        self.on_evict(key)

