"""Audio front end: FFmpeg decoding, the official log-mel (golden files) and mel windows per frame."""

from __future__ import annotations

import json
import subprocess
import wave

import numpy as np
import pytest

from wav2lip import (
    AudioDecodeError,
    InputTooLarge,
    UnsupportedMedia,
    frame_count,
    load_audio,
    mel_windows,
    melspectrogram,
    official_frame_count,
    window_starts,
)
from wav2lip.ffmpeg import ffmpeg_binary

pytestmark = pytest.mark.timeout(120)

SPEECH_SAMPLES = 140_806


def write_wav(path, samples: np.ndarray, rate: int = 16_000):
    """PCM16 WAV of float samples in [-1, 1], shape (n,) or (n, channels)."""
    samples = np.asarray(samples, np.float64)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(channels)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(np.round(np.clip(samples, -1, 32767 / 32768) * 32768).astype("<i2").tobytes())
    return path


def official_starts(n_mel: int, fps: float) -> list[int]:
    """The official inference loop, literally."""
    starts, i = [], 0
    while True:
        s = int(i * 80.0 / fps)
        if s + 16 > n_mel:
            starts.append(n_mel - 16)
            return starts
        starts.append(s)
        i += 1


@pytest.mark.parametrize("name", ["speech_9s", "tone_noise_1s"])
def test_mel_matches_golden(data_dir, name):
    golden = np.load(data_dir / f"{name}_mel.npy")
    mel = melspectrogram(load_audio(data_dir / f"{name}.wav"))
    assert mel.dtype == np.float32
    assert mel.shape == golden.shape
    assert float(np.abs(mel - golden).max()) <= 1e-4


@pytest.mark.parametrize("name", ["speech_9s", "tone_noise_1s"])
def test_window_starts_match_golden(data_dir, name):
    meta = json.loads((data_dir / f"{name}_windows.json").read_text())
    samples = load_audio(data_dir / f"{name}.wav")
    assert len(samples) == meta["num_samples"]
    n_mel = melspectrogram(samples).shape[1]
    assert n_mel == meta["num_mel_frames"]
    n = official_frame_count(n_mel, meta["fps"])
    assert n == meta["num_frames"] == len(meta["start_indices"])
    assert window_starts(n_mel, meta["fps"], 0, n).tolist() == meta["start_indices"]


@pytest.mark.parametrize("fps", [25, 24, 30, 29.97, 50, 60, 12])
def test_window_starts_equal_official_loop(fps):
    for n_mel in range(16, 420, 7):
        expected = official_starts(n_mel, fps)
        assert official_frame_count(n_mel, fps) == len(expected), (n_mel, fps)
        assert window_starts(n_mel, fps, 0, len(expected)).tolist() == expected, (n_mel, fps)


def test_frame_count():
    assert frame_count(SPEECH_SAMPLES, 25) == 220  # 8.800375 s: the trailing 0.375 ms adds no frame
    assert frame_count(16_000, 25) == 25
    assert frame_count(24_000, 25) == 38
    assert frame_count(16_000, 12) == 12
    assert frame_count(1, 25) == 1


def test_mel_windows_any_range_equals_full(speech_samples):
    mel = melspectrogram(speech_samples)
    n = frame_count(len(speech_samples), 25)
    full = mel_windows(mel, 25, 0, n)
    assert full.shape == (n, 80, 16) and full.dtype == np.float32
    for a, b in [(0, 13), (13, 100), (100, n), (216, n), (5, 6), (0, n)]:
        assert np.array_equal(mel_windows(mel, 25, a, b), full[a:b]), (a, b)
    for i, s in enumerate(window_starts(mel.shape[1], 25, 0, n)):
        assert np.array_equal(full[i], mel[:, s : s + 16])


def test_frames_past_official_count_use_tail_window(speech_samples):
    mel = melspectrogram(speech_samples)
    n_official = official_frame_count(mel.shape[1], 25)
    assert n_official == 217
    windows = mel_windows(mel, 25, 0, 220)
    tail = mel[:, -16:]
    for i in range(n_official - 1, 220):  # the official tail frame and the 3 frames after it
        assert np.array_equal(windows[i], tail), i
    assert not np.array_equal(windows[n_official - 2], tail)


def test_bytes_equal_path(data_dir, speech_samples):
    from_bytes = load_audio((data_dir / "speech_9s.wav").read_bytes())
    assert np.array_equal(from_bytes, speech_samples)
    assert speech_samples.dtype == np.float32 and len(speech_samples) == SPEECH_SAMPLES


def test_pcm16_wav_decodes_exactly(data_dir, speech_samples):
    with wave.open(str(data_dir / "speech_9s.wav")) as fh:
        raw = np.frombuffer(fh.readframes(fh.getnframes()), "<i2")
    assert np.array_equal(speech_samples, raw.astype(np.float32) / 32768)


@pytest.mark.parametrize("ext", ["flac", "mp3", "ogg", "m4a"])
def test_compressed_formats(tmp_path, data_dir, speech_samples, ext):
    path = tmp_path / f"speech.{ext}"
    proc = subprocess.run([ffmpeg_binary(), "-nostdin", "-v", "error", "-y", "-i", str(data_dir / "speech_9s.wav"), str(path)],
                          capture_output=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    samples = load_audio(path)
    assert samples.dtype == np.float32
    assert abs(len(samples) - SPEECH_SAMPLES) <= 160  # within 10 ms (encoder delay is trimmed)
    if ext == "flac":
        assert np.array_equal(samples, speech_samples)
    n = min(len(samples), SPEECH_SAMPLES)
    # Time-aligned (no encoder delay left): the mel below ~3 kHz (bins 0-55; lossy codecs cut the
    # top) stays close to the original's (measured: mp3 0.14, ogg 0.08, m4a 0.03 mean abs).
    low_band = np.abs(melspectrogram(samples[:n]) - melspectrogram(speech_samples[:n]))[:56]
    assert low_band.mean() <= 0.2


def test_stereo_44k_becomes_16k_mono_mean(tmp_path):
    rate, n = 44_100, 44_100 * 2
    t = np.arange(n) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    mono = load_audio(write_wav(tmp_path / "mono.wav", tone, rate))
    both = load_audio(write_wav(tmp_path / "both.wav", np.stack([tone, tone], 1), rate))
    left = load_audio(write_wav(tmp_path / "left.wav", np.stack([tone, np.zeros(n)], 1), rate))
    assert abs(len(mono) - 32_000) <= 1
    assert len(both) == len(left) == len(mono)
    # The official loader averages the channels (librosa to_mono): L = R gives the channel itself,
    # L alone gives half of it (not the 0.707 of FFmpeg's default downmix).
    assert np.abs(both - mono).max() < 1e-4
    assert np.abs(left - 0.5 * mono).max() < 1e-4
    assert 0.49 < np.abs(mono[1000:-1000]).max() < 0.51
    spectrum = np.abs(np.fft.rfft(mono[:16_000]))
    assert np.argmax(spectrum) == 440  # 1 Hz bins over one second at 16 kHz


def test_stereo_16k_is_exact_channel_mean(tmp_path):
    pcm = np.random.default_rng(0).integers(-20_000, 20_000, (8000, 2))
    samples = load_audio(write_wav(tmp_path / "st.wav", pcm / 32768))
    assert np.array_equal(samples, (pcm.astype(np.float32) / 32768).mean(1))


def test_not_audio(tmp_path, data_dir):
    # Text and images are refused, as undecodable audio or, where FFmpeg's demuxer for them is not
    # on the user-media whitelist (a .txt path, a PNG), as unsupported media: both are InputErrors.
    not_audio = (AudioDecodeError, UnsupportedMedia)
    text = tmp_path / "notes.txt"
    text.write_text("this is not audio\n" * 50)
    with pytest.raises(not_audio):
        load_audio(text)
    with pytest.raises(not_audio):
        load_audio(text.read_bytes())
    with pytest.raises(not_audio):
        load_audio((data_dir / "avatar.png").read_bytes())
    with pytest.raises(AudioDecodeError, match="no audio stream"):
        load_audio(data_dir / "avatar_2s.mp4")  # a video without sound
    with pytest.raises(AudioDecodeError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")


def test_empty_bytes():
    with pytest.raises(AudioDecodeError, match="empty"):
        load_audio(b"")


def test_silence_decodes_and_mel_is_floor(tmp_path):
    samples = load_audio(write_wav(tmp_path / "silence.wav", np.zeros(16_000)))
    assert len(samples) == 16_000 and not samples.any()
    mel = melspectrogram(samples)
    assert mel.shape == (80, 81)
    assert np.all(mel == -4.0)


def test_too_long(data_dir):
    with pytest.raises(InputTooLarge, match="5 s"):
        load_audio(data_dir / "speech_9s.wav", max_seconds=5)
    assert len(load_audio(data_dir / "speech_9s.wav", max_seconds=9)) == SPEECH_SAMPLES


def test_very_short_audio_still_has_a_window(tmp_path, speech_samples):
    samples = load_audio(write_wav(tmp_path / "blip.wav", speech_samples[40_000:40_800]))  # 0.05 s
    assert len(samples) == 800
    mel = melspectrogram(samples)
    assert mel.shape[0] == 80 and mel.shape[1] >= 16
    n = frame_count(len(samples), 25)
    assert n == 2
    windows = mel_windows(mel, 25, 0, n)
    assert windows.shape == (2, 80, 16)
    assert np.isfinite(windows).all() and windows.max() > -4  # the speech is in there
