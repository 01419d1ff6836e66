"""Live audio: mel windows from a short slice equal the whole-audio windows; client PCM resampled."""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf

from wav2lip.audio import mel_windows, melspectrogram
from wav2lip.errors import InvalidSettings
from wav2lip.hparams import SAMPLE_RATE
from wav2lip.live_audio import PcmResampler, TimelineAudio, frame_sample

FRAGMENT = 5  #: frames per live fragment
STARTS = (0, 1, 7, 113)  #: fragment start frames checked
TOLERANCE = 1e-5
TONE_HZ = 440.0


@pytest.fixture(scope="module")
def speech(data_dir) -> np.ndarray:
    samples, rate = sf.read(data_dir / "speech_9s.wav", dtype="float32")
    assert rate == SAMPLE_RATE and samples.ndim == 1
    return samples


@pytest.fixture(scope="module")
def whole_mel(speech) -> np.ndarray:
    return melspectrogram(speech)


def _pieces(samples: np.ndarray, seed: int):
    """The samples in random-size pieces, as they arrive from a client."""
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(rng.integers(1, 4000, size=len(samples) // 1000))
    return np.split(samples, cuts[cuts < len(samples)])


def test_frame_sample_maps_frames_to_their_first_sample():
    assert [frame_sample(f, 25) for f in (0, 1, 500)] == [0, 640, 320_000]
    assert frame_sample(1, 30) == 533 and frame_sample(3, 30) == 1600


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_windows_from_pieces_equal_the_whole_audio_windows(speech, whole_mel, fps):
    timeline, pending = TimelineAudio(), set(STARTS)
    for piece in _pieces(speech, seed=int(fps)):
        timeline.extend(piece)
        for start in sorted(pending):
            if timeline.end >= TimelineAudio.samples_needed(fps, start + FRAGMENT):
                live = timeline.mel_windows(fps, start, start + FRAGMENT)
                assert live.shape == (FRAGMENT, 80, 16) and live.dtype == np.float32
                expected = mel_windows(whole_mel, fps, start, start + FRAGMENT)
                np.testing.assert_allclose(live, expected, rtol=0, atol=TOLERANCE)
                # ... and equal the windows of only the audio known so far
                known = melspectrogram(speech[: TimelineAudio.samples_needed(fps, start + FRAGMENT)])
                expected = mel_windows(known, fps, start, start + FRAGMENT)
                np.testing.assert_allclose(live, expected, rtol=0, atol=TOLERANCE)
                pending.discard(start)
    assert timeline.end == len(speech) and not pending


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_every_fragment_of_a_session_with_trimming(speech, whole_mel, fps):
    timeline = TimelineAudio()
    timeline.extend(speech)
    start, worst = 0, 0.0
    while TimelineAudio.samples_needed(fps, start + FRAGMENT) <= len(speech):
        timeline.trim(TimelineAudio.keep_from(fps, start))  # what a session may forget
        live = timeline.mel_windows(fps, start, start + FRAGMENT)
        worst = max(worst, float(np.abs(live - mel_windows(whole_mel, fps, start, start + FRAGMENT)).max()))
        pcm = timeline.read(frame_sample(start, fps), frame_sample(start + FRAGMENT, fps))
        np.testing.assert_array_equal(pcm, speech[frame_sample(start, fps) : frame_sample(start + FRAGMENT, fps)])
        start += FRAGMENT
    assert worst <= TOLERANCE and timeline.start > 0


def test_trim_and_read_bounds(speech):
    timeline = TimelineAudio()
    timeline.extend(speech[:32_000])
    timeline.trim(16_000)
    assert (timeline.start, timeline.end) == (16_000, 32_000)
    np.testing.assert_array_equal(timeline.read(20_000, 20_010), speech[20_000:20_010])
    with pytest.raises(ValueError):
        timeline.read(15_999, 16_100)  # trimmed
    with pytest.raises(ValueError):
        timeline.read(31_000, 32_001)  # not there yet
    with pytest.raises(ValueError):
        timeline.mel_windows(25.0, 0, FRAGMENT)  # needs trimmed samples
    with pytest.raises(ValueError):
        timeline.mel_windows(25.0, 45, 45 + FRAGMENT)  # needs audio that has not arrived


def test_mel_windows_of_a_fragment_are_cheap(speech):
    timeline = TimelineAudio()
    timeline.extend(speech)
    repeats = 50
    begin = time.perf_counter()
    for _ in range(repeats):
        timeline.mel_windows(25.0, 100, 100 + FRAGMENT)
    print(f"\nmel_windows: {(time.perf_counter() - begin) / repeats * 1000:.2f} ms per {FRAGMENT}-frame fragment")


# ---- client PCM ------------------------------------------------------------------------
def _tone(rate: int, seconds: float) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * TONE_HZ * t) * 32767).astype("<i2").tobytes()


def _resample_in_pieces(rate: int, data: bytes, seed: int = 0) -> np.ndarray:
    resampler, out, pos = PcmResampler(rate), [], 0
    rng = np.random.default_rng(seed)
    while pos < len(data):
        step = int(rng.integers(1, 5000))  # odd sizes too: a byte waits for its pair
        out.append(resampler.push(data[pos : pos + step]))
        pos += step
    out.append(resampler.flush())
    return np.concatenate(out)


def test_16k_is_an_exact_passthrough():
    data = _tone(SAMPLE_RATE, 0.5)
    expected = np.frombuffer(data, "<i2") / np.float32(32768)
    out = _resample_in_pieces(SAMPLE_RATE, data)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected.astype(np.float32))


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_resampled_tone_keeps_its_frequency_duration_and_phase(rate):
    seconds = 2.0
    out = _resample_in_pieces(rate, _tone(rate, seconds))
    assert out.dtype == np.float32
    assert abs(len(out) - seconds * SAMPLE_RATE) <= SAMPLE_RATE * 0.002  # within 2 ms
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(out) - TONE_HZ) < 1.0
    reference = 0.5 * np.sin(2 * np.pi * TONE_HZ * np.arange(len(out)) / SAMPLE_RATE)
    middle = slice(SAMPLE_RATE // 10, -SAMPLE_RATE // 10)
    assert np.abs(out[middle] - reference[middle]).max() < 0.01  # no delay either


def test_bytes_one_at_a_time_equal_one_push():
    data = _tone(44100, 0.2)
    whole = PcmResampler(44100)
    expected = np.concatenate([whole.push(data), whole.flush()])
    single = PcmResampler(44100)
    out = np.concatenate([single.push(data[i : i + 1]) for i in range(len(data))] + [single.flush()])
    np.testing.assert_allclose(out, expected, atol=1e-6)
    passthrough = PcmResampler(SAMPLE_RATE)
    assert passthrough.push(b"\x01").size == 0
    assert passthrough.push(b"\x40").tolist() == [0x4001 / 32768]


@pytest.mark.parametrize("rate", [0, 7999, 48001, 96000, 16000.5])
def test_rates_out_of_range_are_refused(rate):
    with pytest.raises(InvalidSettings):
        PcmResampler(rate)


def test_look_ahead_is_read_but_not_kept():
    samples = np.random.default_rng(3).uniform(-0.5, 0.5, 16000 * 3).astype(np.float32)
    fps, start, stop = 25.0, 20, 25
    whole = TimelineAudio()
    whole.extend(samples)
    live = TimelineAudio()
    live.extend(samples[: frame_sample(stop, fps)])
    ahead = samples[frame_sample(stop, fps) :]
    got = live.mel_windows(fps, start, stop, ahead=ahead)
    assert np.allclose(got, whole.mel_windows(fps, start, stop), atol=1e-5)
    assert live.end == frame_sample(stop, fps)  # nothing of the look-ahead was appended
    with pytest.raises(ValueError):
        live.mel_windows(fps, start, stop, ahead=ahead[:10])
