"""``ResultStore`` deployment: finished videos and their records, by result key.

The combiner writes each finished video here itself; the ingress reads one only to
serve a GET. Each entry carries ``expires_at`` (the retention): a URL handed out stays
valid until then. Space is freed from expired videos first; an unexpired one evicted
under disk pressure leaves a tombstone, so its URL answers 410 (not a silent 404).
Deleted videos are forgotten (404).
"""

from __future__ import annotations

import time
from pathlib import Path

from ray import serve

from wav2lip.errors import Expired

from .records import StoredResult
from .store import Store

_ALIAS_MEMORY_SHARE = 256  #: aliases are tiny: 1/256 of the video memory budget


@serve.deployment(name="ResultStore", max_ongoing_requests=64)
class ResultStore:
    def __init__(self, data_dir: str, memory_bytes: int, disk_bytes: int, retention_s: float, clock=time.time):
        root = Path(data_dir) / "results"
        self.videos = Store(root, memory_bytes, disk_bytes, ".mp4", retention_s=retention_s, clock=clock)
        # upload-bytes key -> result key: a repeated upload is answered without decoding it
        self.aliases = Store(root, memory_bytes // _ALIAS_MEMORY_SHARE, 0, ".alias")

    async def get(self, key: str) -> StoredResult | None:
        """The live result; None if unknown; ``Expired`` (410) if it is gone."""
        record = self.videos.record(key)
        video = self.videos.get(key) if record is not None else None
        if video is None:
            return None
        return StoredResult(key, record, video)

    async def find(self, alias: str) -> StoredResult | None:
        """The live result an alias points to (its bytes by reference), or None."""
        ref = self.aliases.get(alias)
        if ref is None:
            return None
        try:
            return await self.get((await ref.get()).decode())
        except Expired:
            return None

    async def put(self, key: str, video: bytes, record: dict, alias: str | None = None) -> None:
        self.videos.put(key, video, kind="video", **record)
        if alias:
            await self.put_alias(alias, key)

    async def put_alias(self, alias: str, key: str) -> None:
        self.aliases.put(alias, key.encode())

    async def delete(self, key: str) -> None:
        """Forget the video (idempotent): later lookups answer 404."""
        self.videos.delete(key)

    def stats(self) -> dict:
        return self.videos.stats()
