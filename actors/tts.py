"""``TTSWorker`` deployment: Piper voices preloaded on CPU, speech cached by text + settings.

The speech cache is the same two-level cache as results (``TieredCache``). ``stream``
yields one array per sentence so the ingress can start rendering before the whole
text is spoken; the concatenation is exactly what ``speech`` returns.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from pathlib import Path
from typing import AsyncIterator

import numpy as np
from ray import serve

from wav2lip.storage import content_key
from wav2lip.tts import DEFAULT_VOICE, SpeechSynthesizer, list_voices

from .cache import TieredCache



@serve.deployment(name="TTSWorker", max_ongoing_requests=4)
class TTSWorker:
    def __init__(self, data_dir: str, memory_bytes: int, disk_bytes: int, max_chars: int, preload: str = DEFAULT_VOICE):
        self.cache = TieredCache(Path(data_dir) / "speech", memory_bytes, disk_bytes, suffix=".f32")
        self.max_chars = max_chars
        self._voices: dict[str, SpeechSynthesizer] = {}
        self._voice(preload)

    def _voice(self, name: str) -> SpeechSynthesizer:
        if name not in self._voices:
            self._voices[name] = SpeechSynthesizer(name, max_chars=self.max_chars)  # 1 thread: deterministic
        return self._voices[name]

    def voices(self) -> list[dict]:
        return [asdict(v) for v in list_voices()]

    def _key(self, text: str, voice: str, rate: float) -> str:
        return content_key("speech", text, self._voice(voice).settings_key(rate))

    def is_cached(self, text: str, voice: str, rate: float) -> bool:
        self._voice(voice).sentences(text)  # validate first: bad text fails here, not mid-stream
        return self.cache.get(self._key(text, voice, rate)) is not None

    async def speech(self, text: str, voice: str, rate: float) -> dict:
        """``{"ref": [ObjectRef to float32 bytes], "seconds", "cached"}`` for the whole text."""
        synth = self._voice(voice)
        synth.sentences(text)  # validates (empty, too long) before any cache lookup
        key = self._key(text, voice, rate)
        ref = self.cache.get(key)
        if ref is not None:
            return {"ref": [ref], "seconds": 0.0, "cached": True}
        t0 = time.perf_counter()
        samples = await asyncio.to_thread(synth.synthesize, text, rate)
        ref = self.cache.put(key, samples.astype(np.float32).tobytes())
        return {"ref": [ref], "seconds": time.perf_counter() - t0, "cached": False}

    async def stream(self, text: str, voice: str, rate: float) -> AsyncIterator[np.ndarray]:
        """Per-sentence float32 16 kHz arrays (with the fixed pauses); cached when complete."""
        synth = self._voice(voice)
        synth.sentences(text)
        key = self._key(text, voice, rate)
        ref = self.cache.get(key)
        if ref is not None:
            yield np.frombuffer(await ref, np.float32)
            return
        parts = []
        speech = synth.iter_speech(text, rate)
        while (part := await asyncio.to_thread(next, speech, None)) is not None:
            parts.append(part)
            yield part
        self.cache.put(key, np.concatenate(parts).astype(np.float32).tobytes())
