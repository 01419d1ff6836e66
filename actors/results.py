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

    async def get(self, key: str) -> dict | None:
        """``{"video": [ref], "record": dict}`` for a cached result, else None."""
        video = self.videos.get(key)
        record = self.records.get(key)
        if video is None or record is None:
            return None
        return {"video": [video], "record": json.loads(await record)}

    async def put(self, key: str, video: bytes, record: dict) -> None:
        self.records.put(key, json.dumps(record).encode())
        self.videos.put(key, video)

    async def delete(self, key: str) -> None:
        self.videos.delete(key)
        self.records.delete(key)

    def stats(self) -> dict:
        return self.videos.stats()
