"""``AvatarRegistry`` deployment: prepares each face once, shares it by reference.

Face detection runs here, on a CPU replica, never on a GPU worker. Uploaded media is
kept by content hash (its id) with the retention of uploads; each preparation variant
(pads, box, resize factor) is prepared on first use and kept in the store (object
store over disk, with a disk budget), so workers fetch it by reference instead of
receiving a copy with every chunk.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ray import serve

from wav2lip.avatar import DEFAULT_AVATAR_ID, DEFAULT_AVATAR_PATH, prepare_avatar
from wav2lip.errors import NotFound
from wav2lip.keys import avatar_key, digest
from wav2lip.media_limits import MediaLimits
from wav2lip.options import AvatarOptions

from .records import AvatarVariant
from .store import RecordStore, Store

_PREPARED_BYTES_PER_ITEM = 8 * 1024 * 1024  #: object-store budget per prepared avatar (an image is ~1 MB)


@serve.deployment(name="AvatarRegistry", max_ongoing_requests=32)
class AvatarRegistry:
    def __init__(self, data_dir: str, memory_items: int, disk_bytes: int, retention_s: float,
                 limits: MediaLimits = MediaLimits(), clock=time.time):  # fmt: skip
        root = Path(data_dir) / "avatars"
        memory = memory_items * _PREPARED_BYTES_PER_ITEM
        # Uploads, by id: expiry, tombstones, and the prepared variants to delete with them.
        self.media = Store(root, memory, disk_bytes, ".media", retention_s=retention_s, clock=clock)
        self.summaries = RecordStore(root)  # per prepared variant: its API summary
        self.prepared = Store(root, memory, disk_bytes, ".npz")
        self.limits = limits  #: pixels per frame, frames x pixels, frame rate: checked before decoding
        self._lock = asyncio.Lock()
        self._default_media = DEFAULT_AVATAR_PATH.read_bytes()

    async def _media(self, avatar_id: str) -> bytes:
        if avatar_id == DEFAULT_AVATAR_ID:
            return self._default_media
        ref = self.media.get(avatar_id)  # Expired (410) once its retention ended or it was evicted
        if ref is None:
            raise NotFound(f"avatar {avatar_id} does not exist (upload it with POST /v1/avatars)")
        return await ref.get()

    async def delete(self, avatar_id: str) -> None:
        """Delete an uploaded avatar and its prepared variants (idempotent)."""
        record = self.media.meta.get(avatar_id) or {}
        for key in record.get("variants", ()):
            self.prepared.delete(key)
            self.summaries.delete(key)
        self.media.delete(avatar_id)

    async def variant(self, avatar_id: str, options: AvatarOptions) -> AvatarVariant:
        """The prepared avatar for this id and these settings."""
        variant = await self._prepare(await self._media(avatar_id), options)
        if avatar_id != DEFAULT_AVATAR_ID:
            self._remember_variant(avatar_id, variant.key)
        return variant

    async def register(self, media: bytes, options: AvatarOptions = AvatarOptions()) -> tuple[AvatarVariant, dict]:
        """Prepare uploaded media once (a face must be found) and keep it; same bytes, same id.

        The variant and the API's avatar record.
        """
        avatar_id = digest(media)
        variant = await self._prepare(media, options)
        try:
            known = self.media.record(avatar_id)
        except NotFound:  # gone (expired or evicted): uploaded again, so alive again
            known = None
        variants = sorted(set((known or {}).get("variants", [])) | {variant.key})
        summary = variant.summary if options == AvatarOptions() else (known or {}).get("summary")
        self.media.put(avatar_id, media, kind="avatar", variants=variants, summary=summary)
        return variant, self._record(avatar_id, variant.summary)

    def _remember_variant(self, avatar_id: str, key: str) -> None:
        """So that deleting the avatar finds every variant prepared from it."""
        record = self.media.meta.get(avatar_id)
        if record is not None and key not in record.get("variants", []):
            self.media.meta.put(avatar_id, {**record, "variants": sorted({*record.get("variants", []), key})})

    async def _prepare(self, media: bytes, options: AvatarOptions) -> AvatarVariant:
        key = avatar_key(media, options)
        ref = self.prepared.get(key)
        summary = self.summaries.get(key)
        if ref is None or summary is None:
            async with self._lock:  # one preparation at a time; a second asker reuses it
                ref, summary = self.prepared.get(key), self.summaries.get(key)
                if ref is None or summary is None:
                    avatar = await asyncio.to_thread(prepare_avatar, media, options, key, self.limits)
                    summary = self.summaries.put(key, avatar.summary())
                    ref = self.prepared.put(key, await asyncio.to_thread(avatar.to_bytes))
        return AvatarVariant(key, ref, summary)

    async def describe(self, avatar_id: str) -> dict:
        return self._record(avatar_id, (await self.variant(avatar_id, AvatarOptions())).summary)

    async def list(self) -> list[dict]:
        """Every live avatar, from the summaries kept with the uploads (no avatar is loaded)."""
        out = [await self.describe(DEFAULT_AVATAR_ID)]
        for avatar_id in self.media.live_keys():
            summary = (self.media.meta.get(avatar_id) or {}).get("summary")
            try:
                out.append(self._record(avatar_id, summary) if summary else await self.describe(avatar_id))
            except NotFound:  # expired (or lost) since listed
                continue
        return out

    @staticmethod
    def _record(avatar_id: str, summary: dict) -> dict:
        return {**summary, "avatar_id": avatar_id}
