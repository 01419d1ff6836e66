"""``ResultCache`` deployment: finished videos and their records, by result key."""

from __future__ import annotations

import json
from pathlib import Path

from ray import serve

from .cache import TieredCache


@serve.deployment(name="ResultCache", max_ongoing_requests=64)
class ResultCache:
    def __init__(self, data_dir: str, memory_bytes: int, disk_bytes: int):
        root = Path(data_dir) / "results"
        self.videos = TieredCache(root, memory_bytes, disk_bytes, suffix=".mp4")
        self.records = TieredCache(root, memory_bytes // 64, 0, suffix=".json")
        # upload-bytes key -> result key: a repeated upload is answered without decoding it
        self.aliases = TieredCache(root, memory_bytes // 256, 0, suffix=".alias")

    async def get(self, key: str) -> dict | None:
        """``{"video": [ref], "record": dict}`` for a cached result, else None."""
        video = self.videos.get(key)
        record = self.records.get(key)
        if video is None or record is None:
            return None
        return {"video": [video], "record": json.loads(await record)}

    async def find(self, alias: str) -> dict | None:
        """``{"key", "record"}`` of the result an alias points to, if it is still cached."""
        ref = self.aliases.get(alias)
        if ref is None:
            return None
        key = (await ref).decode()
        record = self.records.get(key)
        if record is None or self.videos.get(key) is None:  # verified (checksum) on a disk read
            return None
        return {"key": key, "record": json.loads(await record)}

    async def put(self, key: str, video: bytes, record: dict, alias: str | None = None) -> None:
        self.records.put(key, json.dumps(record).encode())
        self.videos.put(key, video)
        if alias:
            await self.put_alias(alias, key)

    async def put_alias(self, alias: str, key: str) -> None:
        self.aliases.put(alias, key.encode())

    async def delete(self, key: str) -> None:
        self.videos.delete(key)
        self.records.delete(key)

    def stats(self) -> dict:
        return self.videos.stats()
