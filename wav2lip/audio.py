"""Audio front end: decode with FFmpeg, the official log-mel, and mel windows per frame.

The mel is computed with numpy alone (``numpy.fft.rfft`` for the STFT and the Slaney
filterbank written out from its definition): librosa is not installed on every machine
the engine runs on, numpy is, and the result matches the official librosa-0.7 output
to ~1e-6 (tests compare with golden files).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import AudioDecodeError, EncodeError, InputTooLarge, MediaDecodeError, UnsupportedMedia
from .ffmpeg import input_args, probe_media, run_ffmpeg
from .hparams import (
    FMAX_HZ,
    FMIN_HZ,
    HOP_LENGTH,
    MAX_ABS_VALUE,
    MEL_FLOOR_VALUE,
    MEL_FRAMES_PER_S,
    MEL_STEP,
    MIN_LEVEL_DB,
    N_FFT,
    N_MELS,
    PREEMPHASIS,
    REF_LEVEL_DB,
    SAMPLE_RATE,
    WIN_LENGTH,
)

log = logging.getLogger(__name__)
_AMP_FLOOR = np.float32(np.exp(MIN_LEVEL_DB / 20 * np.log(10)))
_STFT_BLOCK = 4096  #: STFT frames per block, bounds memory for long audio
MIN_AUDIO_S = 0.05  #: shorter audio is refused: not even two video frames
TRUNCATED_FRACTION = 0.9  #: decoding less than this share of the declared duration means a cut file
FULL_SCALE = 1.0  #: float samples beyond +-this are clipped (what any player does)


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded speech, ready for the mel and the muxer."""

    samples: np.ndarray  #: (n,) float32 mono 16 kHz, every sample finite and in [-1, 1]
    clipped_samples: int = 0  #: samples that were outside [-1, 1] and were clipped to it

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def load_audio(source: str | Path | bytes, max_seconds: float | None = None) -> np.ndarray:
    """(n,) float32 mono 16 kHz samples of any FFmpeg-readable audio: ``decode_audio(...).samples``."""
    return decode_audio(source, max_seconds).samples


def decode_audio(source: str | Path | bytes, max_seconds: float | None = None) -> DecodedAudio:
    """Decode any FFmpeg-readable audio to 16 kHz mono float32, checked and clipped.

    Bytes are written to a private temp file first (ffmpeg only reads files we wrote;
    MP4/M4A need a seekable input), and only plain media demuxers may open them.
    With ``max_seconds``: a duration the container states is checked before decoding
    (longer is ``InputTooLarge``, much shorter once decoded is a truncated file); a
    duration ffmpeg only estimates from the bitrate (VBR MP3 without a Xing header,
    raw ADTS AAC) is never a reason to refuse, so the decoded length decides. Either
    way at most ``max_seconds`` + 1 s is decoded. NaN or infinite samples are an
    ``AudioDecodeError``; finite samples outside [-1, 1] are clipped, as a player
    would, and counted in ``clipped_samples``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioDecodeError("the audio is empty (0 bytes)")
        with tempfile.TemporaryDirectory(prefix="w2l-audio-") as tmp:
            path = os.path.join(tmp, "input")
            with open(path, "wb") as fh:
                fh.write(source)
            return decode_audio(path, max_seconds)
    path = str(source)
    if not os.path.isfile(path):
        raise AudioDecodeError(f"audio file {path} does not exist")
    try:
        declared = probe_media(path).reliable_duration_s if max_seconds else None
    except MediaDecodeError as exc:  # a header ffmpeg cannot read in time: the audio's fault
        raise AudioDecodeError(f"could not decode the audio: {exc.message}") from None
    if declared is not None and max_seconds and declared > max_seconds + 1:  # refuse from the header
        raise InputTooLarge(f"the audio lasts {declared:.0f} s; the limit is {max_seconds:g} s")
    samples = _decode(path, max_seconds)
    if samples.size == 0:
        raise AudioDecodeError("the audio holds no samples (no audio stream, or zero length)")
    if max_seconds and samples.size > max_seconds * SAMPLE_RATE:
        raise InputTooLarge(f"the audio is longer than the limit of {max_seconds:g} s")
    seconds = samples.size / SAMPLE_RATE
    if declared is not None and seconds < min(declared, max_seconds or declared) * TRUNCATED_FRACTION:
        raise AudioDecodeError(f"the audio is truncated: its header says {declared:.2f} s, only {seconds:.2f} s decode")
    if seconds < MIN_AUDIO_S:
        raise AudioDecodeError(f"the audio lasts {seconds * 1000:.0f} ms; at least {MIN_AUDIO_S * 1000:.0f} ms is needed")
    return sanitize_samples(samples)


def _decode(path: str, max_seconds: float | None) -> np.ndarray:
    """(n,) float32 samples as ffmpeg decodes them (no checks), at most ``max_seconds`` + 1 s."""
    limit = ["-t", f"{max_seconds + 1:.3f}"] if max_seconds else []
    try:
        raw = run_ffmpeg(
            [*input_args(path, user_media=True), *limit, "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE),
             # rows of the downmix matrix sum to 1: stereo -> (L + R) / 2, the official mean (not 0.707 each)
             "-rematrix_maxval", "1", "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"],
            "decoding audio",
        )
    except EncodeError as exc:
        if "does not contain any stream" in exc.stderr_tail or "matches no streams" in exc.stderr_tail:
            raise AudioDecodeError("the file holds no audio stream") from None
        if "not on whitelist" in exc.stderr_tail:
            raise UnsupportedMedia(
                "the file is not in a supported audio format (wav, mp3, m4a/aac, ogg/opus, flac, webm, mp4); "
                "playlists and file lists are refused"
            ) from None
        log.info("audio decode failed: %s", exc.stderr_tail.strip()[-300:])
        raise AudioDecodeError("could not decode the audio: not an audio file, or truncated") from None
    return np.frombuffer(raw, dtype=np.float32).copy()


def sanitize_samples(samples: np.ndarray) -> DecodedAudio:
    """Refuse NaN/inf samples (``AudioDecodeError``); clip finite ones to [-1, 1] and count them.

    For float PCM that did not come through ``decode_audio`` (e.g. pieces of a live session).
    """
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if not np.isfinite(samples).all():
        raise AudioDecodeError("the audio holds NaN or infinite samples")
    over = np.abs(samples) > FULL_SCALE
    clipped = int(np.count_nonzero(over))
    if clipped:
        samples = np.clip(samples, -FULL_SCALE, FULL_SCALE)  # a new array: the caller's is left alone
        log.info("audio: %d samples outside [-1, 1] clipped", clipped)
    return DecodedAudio(samples, clipped)


def _hz_to_mel(hz):
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = np.log(6.4) / 27.0
    lin = hz / f_sp
    return np.where(hz >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, lin)


def _mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
    """(80, 401) float32 Slaney-normalised triangular filterbank, as librosa's ``filters.mel``."""
    fft_hz = np.linspace(0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(FMIN_HZ), _hz_to_mel(FMAX_HZ), N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _filter_taps() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Per mel filter, its non-zero FFT bins and their weights (each filter spans a few bins)."""
    return tuple((np.flatnonzero(row), row[np.flatnonzero(row)]) for row in mel_basis())


def _apply_filterbank(magnitudes: np.ndarray) -> np.ndarray:
    """(n, 401) float32 STFT magnitudes -> (80, n) float32 mel energies, ``mel_basis() @ magnitudes.T``.

    Each column is summed from its own spectrum alone, bin by bin in a fixed order, so it is
    bit-identical whatever else is computed with it. A BLAS matmul is not: sgemm's rounding
    changes with the matrix width and the thread count, so a column would differ by an ulp
    between the whole audio and a prefix of it (a pipelined render's early chunks), or
    between processes (a worker with one BLAS thread, the CLI with several).
    """
    spectra = np.ascontiguousarray(magnitudes.T)
    out = np.zeros((N_MELS, spectra.shape[1]), dtype=np.float32)
    for row, (bins, weights) in zip(out, _filter_taps()):
        for k, weight in zip(bins, weights):
            row += weight * spectra[k]
    return out


def melspectrogram(samples: np.ndarray) -> np.ndarray:
    """(80, T) float32 normalised log-mel in [-4, 4], T = 1 + len // 200 (official recipe)."""
    x = np.asarray(samples, dtype=np.float64)
    emphasised = x.copy()
    emphasised[1:] -= PREEMPHASIS * x[:-1]
    padded = np.pad(emphasised, N_FFT // 2, mode="reflect")
    n_frames = 1 + len(x) // HOP_LENGTH
    frames = np.lib.stride_tricks.sliding_window_view(padded, WIN_LENGTH)[::HOP_LENGTH][:n_frames]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN_LENGTH) / WIN_LENGTH)  # periodic Hann
    mel = np.empty((N_MELS, n_frames), dtype=np.float32)
    for start in range(0, n_frames, _STFT_BLOCK):
        spec = np.fft.rfft(frames[start : start + _STFT_BLOCK] * window, n=N_FFT, axis=1).astype(np.complex64)
        mel[:, start : start + _STFT_BLOCK] = _apply_filterbank(np.abs(spec))
    db = 20 * np.log10(np.maximum(_AMP_FLOOR, mel)) - np.float32(REF_LEVEL_DB)
    scaled = 2 * MAX_ABS_VALUE * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    out = np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)
    if out.shape[1] < MEL_STEP:  # under 200 ms: pad with silence so one window exists
        out = np.pad(out, ((0, 0), (0, MEL_STEP - out.shape[1])), constant_values=MEL_FLOOR_VALUE)
    return out


#: Audio past the last whole frame shorter than this adds no frame (8.800375 s -> 220 at 25 fps).
END_SLACK_S = 0.001


def frame_count(n_samples: int, fps: float) -> int:
    """Output frames so video and audio end together: ceil(seconds x fps), within 1 ms."""
    return max(1, math.ceil((n_samples / SAMPLE_RATE - END_SLACK_S) * fps))


def official_frame_count(n_mel_frames: int, fps: float) -> int:
    """Frames the official inference makes: regular windows that fit, plus the tail."""
    step = MEL_FRAMES_PER_S / fps
    last = n_mel_frames - MEL_STEP
    # int(i*step) <= last  <=>  i*step < last + 1; count i from 0.
    n = math.ceil((last + 1) / step)
    while n > 0 and int((n - 1) * step) > last:  # float guard
        n -= 1
    while int(n * step) <= last:
        n += 1
    return n + 1


def final_frames(known_samples: int, fps: float) -> int:
    """Frames whose mel windows are final once ``known_samples`` of the speech are known.

    A mel column is final once every sample it sees (n_fft/2 either side) is known, so a
    frame whose 16-column window lies in final columns renders exactly as it would from
    the whole audio; the official tail frame waits for the end.
    """
    final_cols = (known_samples - N_FFT // 2) // HOP_LENGTH + 1
    return official_frame_count(final_cols, fps) - 1 if final_cols >= MEL_STEP else 0


def window_starts(n_mel_frames: int, fps: float, start: int, stop: int) -> np.ndarray:
    """(stop - start,) int64 first mel column of each output frame in [start, stop).

    Frames before the official tail use int(i * 80 / fps) exactly as the official loop;
    the official tail frame and every frame after it use the tail window.
    """
    tail = n_mel_frames - MEL_STEP
    n_regular = official_frame_count(n_mel_frames, fps) - 1
    idx = np.arange(start, stop, dtype=np.int64)
    starts = (idx * (MEL_FRAMES_PER_S / fps)).astype(np.int64)
    return np.where(idx < n_regular, starts, tail)


def mel_windows(mel: np.ndarray, fps: float, start: int, stop: int) -> np.ndarray:
    """(stop - start, 80, 16) float32 model audio input for output frames [start, stop)."""
    starts = window_starts(mel.shape[1], fps, start, stop)
    return np.ascontiguousarray(mel[:, starts[:, None] + np.arange(MEL_STEP)].transpose(1, 0, 2))
