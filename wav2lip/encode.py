"""Frames -> video segments -> one MP4 (or lossless MKV), all through the ffmpeg binary.

A segment is raw BGR frames piped into ffmpeg's stdin and written as H.264 in MPEG-TS
(90 kHz clock: frame times exact at 25, 12 or 29.97 fps, and each packet's duration
survives the join; NUT lost the last frame's duration at every join in our test) or,
lossless, FFV1 in Matroska. Every H.264 segment starts on an IDR frame and has no
B-frames, so segments join by stream copy (the concat demuxer) with no dropped or
duplicated frame.
The audio is encoded once, at the join, and the MP4 gets faststart.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from .cmaf import FRAGMENT_MOVFLAGS
from .errors import EncodeError
from .ffmpeg import base_args, failure, ffmpeg_binary, input_args, run_ffmpeg, stderr_tail
from .hparams import SAMPLE_RATE
from .options import EncodeOptions



def segment_format(enc: EncodeOptions) -> tuple[str, str]:
    """(ffmpeg muxer, file suffix) of one segment."""
    return ("matroska", ".mkv") if enc.lossless else ("mpegts", ".ts")

_MUX_TIMEOUT_S = 600


def fps_arg(fps: float) -> str:
    """Exact rational for ffmpeg (29.97 -> 30000/1001)."""
    frac = Fraction(fps).limit_denominator(1001)
    return f"{frac.numerator}/{frac.denominator}"


def _video_codec_args(enc: EncodeOptions) -> list[str]:
    if enc.lossless:
        return ["-c:v", "ffv1", "-level", "3", "-pix_fmt", "bgr0"]
    return [
        "-c:v", "libx264", "-preset", enc.x264_preset, "-crf", str(enc.crf),
        "-pix_fmt", "yuv420p", "-bf", "0",  # no B-frames: segments join without reordering
        "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",  # yuv420p needs even dimensions
    ]  # fmt: skip


class SegmentEncoder:
    """ffmpeg reading raw BGR frames from a pipe; ``write`` batches, ``close`` finishes.

    With ``audio`` (a file of ADTS AAC frames: this chunk's slice of the stream's audio)
    the segment is a stand-alone fragmented MP4 carrying both tracks, the audio copied
    as it is (``wav2lip.cmaf`` turns it into a stream fragment).
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float, enc: EncodeOptions,
                 audio: str | Path | None = None):  # fmt: skip
        self.path = Path(path)
        self.frames_written = 0
        video_in = ["-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-r", fps_arg(fps), "-i", "pipe:0"]
        if audio is None:
            audio_in, out = [], ["-an", "-f", segment_format(enc)[0]]
        else:
            if enc.lossless:
                raise EncodeError("streams are H.264 + AAC; lossless output is for whole files only")
            audio_in = input_args(str(audio), "aac")
            out = ["-map", "0:v:0", "-map", "1:a:0", "-c:a", "copy", "-bsf:a", "aac_adtstoasc", "-f", "mp4",
                   "-movflags", FRAGMENT_MOVFLAGS]
        args = base_args() + video_in + audio_in + _video_codec_args(enc) + out + [str(self.path)]
        self._err = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err)
        self._shape = (height, width, 3)

    def write(self, frames: np.ndarray) -> None:
        """Append (b, H, W, 3) uint8 BGR frames."""
        if frames.shape[1:] != self._shape or frames.dtype != np.uint8:
            raise EncodeError(f"frames of shape {frames.shape} {frames.dtype} do not fit the {self._shape} encoder")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frames).data)
        except (BrokenPipeError, OSError):
            self._fail("encoding a segment")
        self.frames_written += len(frames)

    def _fail(self, what: str):
        self._proc.kill()
        self._proc.wait()
        self._err.seek(0)
        tail = stderr_tail(self._err.read())
        self._err.close()
        self.path.unlink(missing_ok=True)
        raise failure(what, tail)

    def close(self) -> Path:
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        if self._proc.wait() != 0:
            self._fail("finishing a segment")
        self._err.close()
        return self.path

    def abort(self) -> None:
        """Stop without a result; the partial file is removed."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._err.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _concat_list(segments: list[Path]) -> str:
    lines = []
    for seg in segments:
        escaped = str(Path(seg).resolve()).replace("'", "'\\''")
        lines.append(f"file '{escaped}'")
    return "\n".join(lines) + "\n"


def combine_segments(segments: list[str | Path], samples: np.ndarray, out_path: str | Path, enc: EncodeOptions) -> Path:
    """Join ``segments`` by stream copy, add ``samples`` (16 kHz float32) as audio, write atomically.

    MP4 (H.264 + AAC, faststart) normally; Matroska (FFV1 + FLAC) when ``enc.lossless``.
    The output appears only when complete (temp name, then rename).
    """
    if not segments:
        raise EncodeError("no segments to combine")
    out_path = Path(out_path)
    audio_codec = ["-c:a", "flac"] if enc.lossless else ["-c:a", "aac", "-b:a", enc.audio_bitrate]
    container = ["-f", "matroska"] if enc.lossless else ["-f", "mp4", "-movflags", "+faststart"]
    with tempfile.TemporaryDirectory(prefix="w2l-mux-") as tmp:
        listing = os.path.join(tmp, "segments.txt")
        with open(listing, "w") as fh:
            fh.write(_concat_list([Path(s) for s in segments]))
        partial = out_path.with_name(f".{out_path.name}.partial")
        args = [
            "-f", "concat", "-safe", "0", *input_args(listing),
            *["-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:0"],
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *audio_codec, *container, str(partial),
        ]  # fmt: skip
        try:
            audio = np.ascontiguousarray(samples, np.float32).tobytes()
            run_ffmpeg(args, "joining segments and muxing audio", stdin=audio, timeout_s=_MUX_TIMEOUT_S)
            os.replace(partial, out_path)
        finally:
            partial.unlink(missing_ok=True)
    return out_path


def read_frames(path: str | Path) -> np.ndarray:
    """(n, H, W, 3) uint8 BGR frames of a video file (tests and tools)."""
    probe = subprocess.run(
        [ffmpeg_binary(), "-nostdin", "-hide_banner", "-i", str(path)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    ).stderr.decode("utf-8", "replace")
    match = re.search(r"Video: .*?, (\d{2,5})x(\d{2,5})", probe)
    if not match:
        raise EncodeError("no video stream in the file", probe[-500:])
    w, h = int(match.group(1)), int(match.group(2))
    raw = run_ffmpeg([*input_args(str(path)), "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"], "decoding video")
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
