"""The speech-backend interface: what a TTS engine must provide to speak for the service.

A backend synthesises one normalised sentence at a time (16 kHz float32) and names the
settings that decide its samples (for cache keys); splitting, pauses and validation are
shared here, so every backend speaks the same sentences with the same pauses, and
``iter_speech`` joined equals ``synthesize``. Piper (``piper.py``) is one backend.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from typing import Iterator

import numpy as np

from ..errors import EmptyText, InputError, InputTooLarge, InvalidSettings
from ..hparams import SAMPLE_RATE
from .text import cut_long, normalize_text, split_sentences

SENTENCE_PAUSE_S = 0.25  #: fixed silence between sentences
MIN_RATE, MAX_RATE = 0.5, 2.0


def resample(x: np.ndarray, rate: int) -> np.ndarray:
    """Polyphase resample to SAMPLE_RATE, clipped to [-1, 1], float32."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if rate != SAMPLE_RATE and x.size:
        from scipy.signal import resample_poly

        g = math.gcd(SAMPLE_RATE, rate)
        x = resample_poly(x, SAMPLE_RATE // g, rate // g)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not (MIN_RATE <= rate <= MAX_RATE):
        raise InvalidSettings(f"speaking rate must be a number in [{MIN_RATE}, {MAX_RATE}], got {rate!r}")
    return float(rate)


class SpeechBackend(ABC):
    """Text -> 16 kHz float32 speech, sentence by sentence."""

    max_chars: int

    @abstractmethod
    def synthesize_sentence(self, sentence: str, rate: float = 1.0) -> np.ndarray:
        """Samples of one (already normalised) sentence: float32, 16 kHz, no pause."""

    @abstractmethod
    def settings_key(self, rate: float) -> str:
        """Everything besides the text that decides the samples, for cache keys."""

    def sentences(self, text: str) -> list[str]:
        """Validate, normalise and split; the units :meth:`iter_speech` synthesises."""
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        if not text.strip():
            raise EmptyText("text is empty")
        if len(text) > self.max_chars:
            raise InputTooLarge(f"text is {len(text)} characters; the limit is {self.max_chars}")
        out = [part for s in split_sentences(normalize_text(text)) for part in cut_long(s)]
        if not out:
            raise EmptyText("text holds nothing speakable")
        return out

    def iter_speech(self, text: str, rate: float = 1.0) -> Iterator[np.ndarray]:
        """Per sentence: its samples, then the fixed pause (not after the last one)."""
        check_rate(rate)
        sentences = self.sentences(text)
        pause = np.zeros(int(round(SENTENCE_PAUSE_S * SAMPLE_RATE)), np.float32)
        spoken = 0
        for i, sentence in enumerate(sentences):
            audio = self.synthesize_sentence(sentence, rate)
            spoken += audio.size
            if i < len(sentences) - 1:
                yield np.concatenate([audio, pause])
            elif not spoken:
                raise EmptyText("the voice produced no audio for this text")
            else:
                yield audio

    def synthesize(self, text: str, rate: float = 1.0) -> np.ndarray:
        """The whole text as one float32 16 kHz array (identical to joined iter_speech)."""
        return np.concatenate(list(self.iter_speech(text, rate)))
