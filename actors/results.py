"""``ResultCache`` deployment: finished videos and their records, by result key.

Each record carries ``expires_at`` (the retention): a URL handed out stays valid until
then. Space is freed from expired videos first; an unexpired one evicted under disk
pressure leaves a tombstone, so its URL answers 410 (not a silent 404). Deleted
videos are forgotten (404).
"""

from __future__ import annotations

import time
from pathlib import Path

from ray import serve

from wav2lip.errors import Expired

from .cache import RecordStore, TieredCache


@serve.deployment(name="ResultCache", max_ongoing_requests=64)
class ResultCache:
    def __init__(self, data_dir: str, memory_bytes: int, disk_bytes: int, retention_s: float, clock=time.time):
        root = Path(data_dir) / "results"
        self.clock = clock
        self.retention_s = retention_s
        self.records = RecordStore(root)
        self.videos = TieredCache(root, memory_bytes, disk_bytes, suffix=".mp4")
        self.videos.disk.expired = self._expired
        self.videos.disk.on_evict = lambda key: self._tombstone(
            key, "its retention period ended" if self._expired(key) else "evicted to free disk space"
        )
        # upload-bytes key -> result key: a repeated upload is answered without decoding it
        self.aliases = TieredCache(root, memory_bytes // 256, 0, suffix=".alias")

    def _expired(self, key: str) -> bool:
        record = self.records.get(key)
        return record is None or self.clock() >= record.get("expires_at", 0)

    def _tombstone(self, key: str, reason: str) -> None:
        self.records.put(key, {**(self.records.get(key) or {}), "gone": reason})

    def _check(self, key: str) -> dict | None:
        """The live record, None if unknown, ``Expired`` if its time is over or it was evicted."""
        record = self.records.get(key)
        if record is None:
            return None
        if "gone" not in record and self.clock() >= record.get("expires_at", float("inf")):
            self.videos.delete(key)
            self._tombstone(key, "its retention period ended")
            record = self.records.get(key)
        if "gone" in record:
            raise Expired(f"video {key} is gone: {record['gone']}; render it again")
        return record

    async def get(self, key: str) -> dict | None:
        """``{"video": [ref], "record": dict}`` for a live result; None if unknown; 410 if gone."""
        record = self._check(key)
        if record is None:
            return None
        video = self.videos.get(key)
        if video is None:
            return None
        return {"video": [video], "record": record}

    async def find(self, alias: str) -> dict | None:
        """``{"key", "record"}`` of the live result an alias points to."""
        ref = self.aliases.get(alias)
        if ref is None:
            return None
        key = (await ref).decode()
        try:
            record = self._check(key)
        except Expired:
            return None
        if record is None or self.videos.get(key) is None:  # verified (checksum) on a disk read
            return None
        return {"key": key, "record": record}

    async def put(self, key: str, video: bytes, record: dict, alias: str | None = None) -> None:
        self.records.put(key, {**record, "created_at": self.clock(), "expires_at": self.clock() + self.retention_s})
        self.videos.put(key, video)
        if alias:
            await self.put_alias(alias, key)

    async def put_alias(self, alias: str, key: str) -> None:
        self.aliases.put(alias, key.encode())

    async def delete(self, key: str) -> None:
        """Forget the video (idempotent): later lookups answer 404."""
        self.videos.delete(key)
        self.records.delete(key)

    def stats(self) -> dict:
        return self.videos.stats()
