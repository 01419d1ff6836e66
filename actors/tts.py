"""``TTSWorker`` deployment: Piper voices preloaded on CPU, speech cached by text + settings.

The speech cache is the same store as results (``Store``: object store over disk). ``stream``
yields one array per sentence so the ingress can start rendering before the whole
text is spoken; the concatenation is exactly what ``speech`` returns.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import AsyncIterator

import numpy as np
from ray import serve

from wav2lip.keys import speech_key
from wav2lip.tts import DEFAULT_VOICE, SpeechSynthesizer, list_voices

from .store import Store


@serve.deployment(name="TTSWorker", max_ongoing_requests=4)
class TTSWorker:
    def __init__(self, data_dir: str, memory_bytes: int, disk_bytes: int, max_chars: int, preload: str = DEFAULT_VOICE):
        self.cache = Store(Path(data_dir) / "speech", memory_bytes, disk_bytes, ".f32")
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
        return speech_key(text, self._voice(voice).settings_key(rate))

    def validate(self, text: str, voice: str, rate: float) -> None:
        """Raise what speaking this would raise (empty, too long, unknown voice), before any work."""
        self._voice(voice).sentences(text)

    def is_cached(self, text: str, voice: str, rate: float) -> bool:
        """Whether this speech is stored (checked after ``validate``): then it arrives as one piece."""
        self.validate(text, voice, rate)
        return self.cache.contains(self._key(text, voice, rate))

    async def stream(self, text: str, voice: str, rate: float) -> AsyncIterator[np.ndarray]:
        """Per-sentence float32 16 kHz arrays (with the fixed pauses); cached when complete."""
        synth = self._voice(voice)
        synth.sentences(text)
        key = self._key(text, voice, rate)
        ref = self.cache.get(key)
        if ref is not None:
            yield np.frombuffer(await ref.get(), np.float32)
            return
        parts = []
        speech = synth.iter_speech(text, rate)
        while (part := await asyncio.to_thread(next, speech, None)) is not None:
            parts.append(part)
            yield part
        self.cache.put(key, np.concatenate(parts).astype(np.float32).tobytes())
