"""``MediaWorker`` deployment: speech in, what the lip-sync workers need out.

Decoding uploads (FFmpeg), mel spectrograms and a stream's AAC encode happen here, on
CPU replicas of their own, never in the HTTP front door. ``speech`` yields what is
known of a request's speech as it becomes known: an upload at once, text sentence by
sentence from the TTS deployment. Arrays go into the object store; the caller gets
``SpeechUpdate`` records holding ``Ref``s, which it hands on to the workers unread.

Where this work lives was measured (``python -m bench ingress``, docs/scaling.md):
decode + mel once per request here is cheaper than per chunk in every worker, and the
AAC of a stream must be one encode (cut between frames) to have no seams.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import AsyncIterator

import numpy as np
from ray import serve

from wav2lip.aac import AacEncoder, aac_frame_at
from wav2lip.audio import decode_audio, final_frames, melspectrogram
from wav2lip.errors import InputTooLarge
from wav2lip.hparams import SAMPLE_RATE
from wav2lip.keys import digest

from .records import SpeechUpdate
from .refs import Ref

_AAC_CATCH_UP_S = 2.0  #: the AAC encoder runs a few frames behind what it was fed; wait this long at most


class KeepAlive:
    """Holds the refs this replica put for a while, oldest dropped first past a byte budget.

    The arrays travel inside streamed ``SpeechUpdate``s; Ray's reference counting does not
    always count the callers that borrow a ref nested in a streamed item, so the owner
    keeps its own reference until the workers have surely fetched them.
    """

    def __init__(self, keep_s: float, max_bytes: int, clock=time.monotonic):
        self.keep_s, self.max_bytes, self.clock = keep_s, max_bytes, clock
        self._held: deque[tuple[float, int, Ref]] = deque()
        self._bytes = 0

    def put(self, value, nbytes: int) -> Ref:
        ref = Ref.put(value)
        now = self.clock()
        self._held.append((now + self.keep_s, nbytes, ref))
        self._bytes += nbytes
        while self._held and (self._held[0][0] <= now or self._bytes > self.max_bytes):
            self._bytes -= self._held.popleft()[1]
        return ref


@serve.deployment(name="MediaWorker", max_ongoing_requests=16)
class MediaWorker:
    def __init__(self, tts, max_audio_s: float, keep_s: float, keep_bytes: int):
        self.tts = tts
        self.max_audio_s = max_audio_s
        self.kept = KeepAlive(keep_s, keep_bytes)

    async def speech(self, audio: bytes | None, text: str | None, voice: str | None, rate: float | None,
                     fps: float, aac_bitrate: str | None = None) -> AsyncIterator[SpeechUpdate]:  # fmt: skip
        """Updates as the speech becomes known; the last one is ``final``.

        ``aac_bitrate``: also encode the audio to AAC (streams); an update then only
        claims the AAC frames the encoder has caught up with.
        """
        seconds: dict[str, float] = {}
        clipped = [0]  #: samples the decode clipped to [-1, 1] (uploads)
        aac = AacEncoder(aac_bitrate) if aac_bitrate else None
        try:
            parts: list[np.ndarray] = []
            async for part in self._parts(audio, text, voice, rate, seconds, clipped):
                parts.append(part)
                if aac is not None:
                    await asyncio.to_thread(aac.feed, part)
                if audio is None:  # text: say what is settled so far (the upload's one part is final)
                    known = sum(len(p) for p in parts)
                    yield await self._update(np.concatenate(parts), aac, fps, final_frames(known, fps), seconds)
            samples = np.concatenate(parts)
            if aac is not None:
                await asyncio.to_thread(aac.close)
            update = await self._update(samples, aac, fps, None, seconds)
            yield SpeechUpdate(update.known_samples, update.mel, True, update.aac, update.aac_frames,
                               self.kept.put(samples, samples.nbytes), digest(samples.tobytes()),
                               clipped_samples=clipped[0], seconds=dict(seconds))  # fmt: skip
        finally:
            if aac is not None:
                await asyncio.to_thread(aac.abort)

    async def _parts(self, audio, text, voice, rate, seconds: dict, clipped: list) -> AsyncIterator[np.ndarray]:
        t = time.perf_counter()
        if audio is not None:  # non-finite samples are refused here; out-of-range ones clipped and counted
            decoded = await asyncio.to_thread(decode_audio, audio, self.max_audio_s)
            seconds["decode"] = time.perf_counter() - t
            clipped[0] = decoded.clipped_samples
            yield decoded.samples
            return
        spoken = 0
        async for part in self.tts.options(stream=True).stream.remote(text, voice, rate):
            spoken += len(part)
            if spoken > self.max_audio_s * SAMPLE_RATE:  # text is capped by characters; its speech by this
                raise InputTooLarge(f"the speech of this text lasts over {self.max_audio_s:g} s, the limit; "
                                    "send a shorter text")  # fmt: skip
            yield part
        seconds["tts"] = time.perf_counter() - t

    async def _update(self, samples: np.ndarray, aac, fps: float, safe_frames: int | None, seconds: dict) -> SpeechUpdate:
        t = time.perf_counter()
        mel = await asyncio.to_thread(melspectrogram, samples)
        seconds["mel"] = seconds.get("mel", 0.0) + time.perf_counter() - t
        frames = []
        if aac is not None:
            if safe_frames is not None:  # the frames a chunk ending at the settled video needs
                await asyncio.to_thread(aac.wait_for, aac_frame_at(safe_frames / fps), _AAC_CATCH_UP_S)
            frames = aac.frames()
        aac_ref = self.kept.put(frames, sum(map(len, frames))) if aac is not None else None
        return SpeechUpdate(len(samples), self.kept.put(mel, mel.nbytes), aac=aac_ref, aac_frames=len(frames),
                            seconds=dict(seconds))  # fmt: skip
