"""``AvatarRegistry`` deployment: prepares each face once, shares it by reference.

Face detection runs here, on a CPU replica, never on a GPU worker. Uploaded media is
kept by content hash (its id); each preparation variant (pads, box, resize factor)
is prepared on first use, stored on disk, and held in the object store, so workers
fetch it by reference instead of receiving a copy with every chunk.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from pathlib import Path

from ray import serve

from wav2lip.avatar import DEFAULT_AVATAR_ID, DEFAULT_AVATAR_PATH, avatar_key, prepare_avatar
from wav2lip.errors import Expired, NotFound
from wav2lip.options import AvatarOptions
from wav2lip.storage import DiskStore

from .cache import RecordStore, TieredCache


def media_id(media: bytes) -> str:
    return hashlib.sha256(media).hexdigest()


@serve.deployment(name="AvatarRegistry", max_ongoing_requests=32)
class AvatarRegistry:
    def __init__(self, data_dir: str, memory_items: int, retention_s: float, clock=time.time):
        root = Path(data_dir) / "avatars"
        self.clock = clock
        self.retention_s = retention_s
        self.media = DiskStore(root, suffix=".media")
        # Per uploaded avatar: expiry and the prepared variants to delete with it.
        self.owners = RecordStore(root, suffix=".owner")
        self.summaries = RecordStore(root)  # per prepared variant: its API summary
        # Prepared avatars: object store LRU by count (~1 MB each for an image) over disk.
        self.prepared = TieredCache(root, memory_items * 8 * 1024 * 1024, 0, suffix=".npz")
        self._unsaved: OrderedDict[str, bytes] = OrderedDict()
        self._memory_items = memory_items
        self._lock = asyncio.Lock()
        self._default_media = DEFAULT_AVATAR_PATH.read_bytes()

    def _media(self, avatar_id: str) -> bytes:
        if avatar_id == DEFAULT_AVATAR_ID:
            return self._default_media
        owner = self.owners.get(avatar_id)
        if owner is None:
            raise NotFound(f"avatar {avatar_id} does not exist (upload it with POST /v1/avatars)")
        if "gone" not in owner and self.clock() >= owner["expires_at"]:
            self._forget(avatar_id, tombstone="its retention period ended")
            owner = self.owners.get(avatar_id)
        if "gone" in owner:
            raise Expired(f"avatar {avatar_id} is gone: {owner['gone']}; upload it again")
        data = self.media.get(avatar_id) or self._unsaved.get(avatar_id)
        if data is None:
            raise NotFound(f"avatar {avatar_id} does not exist (upload it with POST /v1/avatars)")
        return data

    def _forget(self, avatar_id: str, tombstone: str | None = None) -> None:
        """Remove the media and every prepared variant; keep a tombstone for a 410 if given."""
        owner = self.owners.get(avatar_id) or {}
        for key in owner.get("variants", ()):
            self.prepared.delete(key)
            self.summaries.delete(key)
        self.media.delete(avatar_id)
        self._unsaved.pop(avatar_id, None)
        if tombstone:
            self.owners.put(avatar_id, {"gone": tombstone})
        else:
            self.owners.delete(avatar_id)

    async def delete(self, avatar_id: str) -> None:
        """Delete an uploaded avatar from memory, object store and disk (idempotent)."""
        self._forget(avatar_id)

    async def variant(self, avatar_id: str, options: AvatarOptions) -> dict:
        """``{"key", "ref": [ObjectRef to Avatar bytes], "summary"}`` for this id and settings."""
        return await self._prepare(self._media(avatar_id), options, avatar_id)

    async def register(self, media: bytes, options: AvatarOptions = AvatarOptions()) -> dict:
        """Prepare uploaded media once (a face must be found) and keep it; same bytes, same id.

        Returns the variant (as ``variant``) plus ``record``, the API's avatar record.
        """
        avatar_id = media_id(media)
        prepared = await self._prepare(media, options)
        owner = self.owners.get(avatar_id)
        variants = [] if owner is None or "gone" in owner else owner["variants"]
        self.owners.put(avatar_id, {"created_at": self.clock(), "expires_at": self.clock() + self.retention_s,
                                     "variants": sorted(set(variants) | {prepared["key"]})})  # fmt: skip
        if not self.media.contains(avatar_id) and not self.media.put(avatar_id, media):
            self._unsaved[avatar_id] = media  # the disk refused it: keep serving it from memory
            while len(self._unsaved) > self._memory_items:
                self._unsaved.popitem(last=False)
        return {**prepared, "record": self._record(avatar_id, prepared["summary"])}

    async def _prepare(self, media: bytes, options: AvatarOptions, avatar_id: str | None = None) -> dict:
        key = avatar_key(media, options)
        owner = self.owners.get(avatar_id) if avatar_id else None
        if owner is not None and key not in owner["variants"]:  # so deleting the avatar finds it
            self.owners.put(avatar_id, {**owner, "variants": sorted({*owner["variants"], key})})
        ref = self.prepared.get(key)
        if ref is None:
            async with self._lock:  # one preparation at a time; a second asker reuses it
                ref = self.prepared.get(key)
                if ref is None:
                    avatar = await asyncio.to_thread(prepare_avatar, media, options, key)
                    self.summaries.put(key, avatar.summary())
                    ref = self.prepared.put(key, await asyncio.to_thread(avatar.to_bytes))
        summary = self.summaries.get(key)
        if summary is None:  # summary lost: prepare again (cheap for the rare case)
            self.prepared.delete(key)
            return await self._prepare(media, options, avatar_id)
        return {"key": key, "ref": [ref], "summary": summary}

    async def describe(self, avatar_id: str) -> dict:
        return self._record(avatar_id, (await self.variant(avatar_id, AvatarOptions()))["summary"])

    async def list(self) -> list[dict]:
        live = [i for i in sorted(self.owners.keys()) if "gone" not in (self.owners.get(i) or {"gone": 1})]
        out = [await self.describe(DEFAULT_AVATAR_ID)]
        for avatar_id in live:
            try:
                out.append(await self.describe(avatar_id))
            except NotFound:  # expired (or lost) since listed
                continue
        return out

    @staticmethod
    def _record(avatar_id: str, summary: dict) -> dict:
        return {**summary, "avatar_id": avatar_id}
