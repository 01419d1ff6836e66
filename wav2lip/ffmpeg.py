"""The one place that runs the ffmpeg binary.

The binary is the one shipped in the ``imageio-ffmpeg`` wheel unless
``set_ffmpeg_binary`` names another. Every call is an argv list (never a shell
string), reads only files we wrote or a pipe (``-protocol_whitelist file,pipe``),
and turns a failure into ``EncodeError``: its message says what failed and never
quotes ffmpeg (stderr holds memory addresses and temp paths); the stderr tail is
kept in ``stderr_tail`` for logs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

from .errors import EncodeError, MediaDecodeError

#: Protocols ffmpeg may open: a crafted playlist cannot reach the network or other files
#: through http/concat/subfile/... ("file" stays: our own temp files are read by path).
INPUT_PROTOCOLS = "file,pipe"
#: Demuxers allowed for user-supplied media: playlists (hls), concat lists, image
#: sequences and other formats that open further files are not among them.
USER_MEDIA_FORMATS = "wav,mp3,flac,ogg,aac,mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,aiff,w64,caf"
_STDERR_TAIL = 2000
_PROBE_TIMEOUT_S = 30
#: ffmpeg's own words when the duration is a guess from the bitrate (VBR MP3 without a
#: Xing header, raw ADTS AAC), not a figure from the container.
_ESTIMATED_DURATION = re.compile(r"^\[[^\]\n]*\] Estimating duration from bitrate", re.M)
_OVER_MAX_PIXELS = "exceeds specified max pixel count"
_binary: str | None = None


def set_ffmpeg_binary(path: str | None) -> None:
    """Use ``path`` (e.g. a system ``/usr/bin/ffmpeg``) instead of the bundled binary."""
    global _binary
    if path is not None and not (os.path.isfile(path) or shutil.which(path)):
        raise EncodeError(f"ffmpeg binary {path!r} not found")
    _binary = path
    ffmpeg_binary.cache_clear()


@lru_cache(maxsize=1)
def ffmpeg_binary() -> str:
    if _binary:
        return _binary
    try:
        import imageio_ffmpeg
    except ImportError:
        found = shutil.which("ffmpeg")
        if not found:
            raise EncodeError("no ffmpeg binary: pip install imageio-ffmpeg, or install ffmpeg") from None
        return found
    return imageio_ffmpeg.get_ffmpeg_exe()


def base_args() -> list[str]:
    """argv prefix of every call: quiet, never prompts, restricted input protocols."""
    return [ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]


def input_args(path: str, fmt: str | None = None, user_media: bool = False) -> list[str]:
    """``-i`` for a file we wrote, with the protocol whitelist (which is per input).

    ``user_media``: the bytes came from a user, so only plain media demuxers may open it.
    """
    allowed = ["-format_whitelist", USER_MEDIA_FORMATS] if user_media else []
    return [*(["-f", fmt] if fmt else []), *allowed, "-protocol_whitelist", INPUT_PROTOCOLS, "-i", path]


def run_ffmpeg(args: list[str], what: str, stdin: bytes | None = None, timeout_s: float | None = None) -> bytes:
    """Run ffmpeg with ``args`` (after the base argv); stdout bytes, or ``EncodeError``."""
    try:
        proc = subprocess.run(
            base_args() + args, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise EncodeError(f"ffmpeg timed out while {what} (after {timeout_s} s)") from None
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace")[-_STDERR_TAIL:]
        raise failure(what, tail)
    return proc.stdout


def failure(what: str, tail: str) -> EncodeError:
    """The ``EncodeError`` for a failed run: a message fit for users, stderr kept apart."""
    return EncodeError(f"ffmpeg failed while {what}", tail)


@dataclass(frozen=True)
class MediaInfo:
    """What ffmpeg's demuxer says about a file before any frame is decoded."""

    duration_s: float | None  #: None when the container gives none
    duration_estimated: bool  #: True: a guess from the bitrate, never a reason to refuse
    width: int | None = None  #: frame size of the largest video stream, None without video
    height: int | None = None
    fps: float | None = None  #: first video stream's frame rate
    too_many_pixels: bool = False  #: a frame is over ``max_pixels`` (its size may be unknown)

    @property
    def reliable_duration_s(self) -> float | None:
        """The duration when the container states it, else None."""
        return None if self.duration_estimated else self.duration_s


# Anchored at the line start: a metadata value (a title) is printed after "key : " and so
# cannot forge a Duration or Stream line.
_DURATION_RE = re.compile(r"^\s*Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", re.M)
_VIDEO_RE = re.compile(r"^\s*Stream #\d+:\d+\S*: Video: (.*)", re.M)
_SIZE_RE = re.compile(r"(?:^|[ ,])(\d{1,6})x(\d{1,6})(?:[ ,\[]|$)")
_RATE_RE = re.compile(r"([\d.]+)(k?) (fps|tbr)")


def probe_media(path: str, max_pixels: int | None = None) -> MediaInfo:
    """Duration, the largest video stream's size and the first one's rate, from ffmpeg's header probe.

    ``max_pixels`` bounds every frame ffmpeg decodes while probing (``-max_pixels``),
    so a crafted header cannot make the probe itself allocate a huge picture.
    """
    limit = ["-max_pixels", str(int(max_pixels))] if max_pixels else []
    try:
        proc = subprocess.run(
            [ffmpeg_binary(), "-nostdin", "-hide_banner", *limit, *input_args(path, user_media=True)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=_PROBE_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        # a header ffmpeg cannot read in time: the file's fault (422), not ours (500)
        raise MediaDecodeError(f"reading the file's header took over {_PROBE_TIMEOUT_S} s") from None
    text = proc.stderr.decode("utf-8", "replace")
    duration = None
    if match := _DURATION_RE.search(text):
        h, m, sec = match.groups()
        duration = int(h) * 3600 + int(m) * 60 + float(sec)
    width = height = fps = None
    for k, video in enumerate(_VIDEO_RE.finditer(text)):  # the largest video stream: a decoder may pick any
        if k == 0:
            rates = {kind: float(v) * (1000 if m else 1) for v, m, kind in _RATE_RE.findall(video.group(1))}
            fps = rates.get("fps") or rates.get("tbr")
        if (size := _SIZE_RE.search(video.group(1))) and int(size.group(1)) * int(size.group(2)) > (width or 0) * (height or 0):
            width, height = int(size.group(1)), int(size.group(2))
    return MediaInfo(duration, bool(_ESTIMATED_DURATION.search(text)), width, height, fps, _OVER_MAX_PIXELS in text)


def probe_duration_s(path: str) -> float | None:
    """The container's declared duration, read from the header without decoding (no ffprobe);
    None when there is none or it is only ffmpeg's estimate from the bitrate."""
    return probe_media(path).reliable_duration_s


def stderr_tail(data: bytes) -> str:
    return data.decode("utf-8", "replace")[-_STDERR_TAIL:]
