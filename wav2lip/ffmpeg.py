"""The one place that runs the ffmpeg binary.

The binary is the one shipped in the ``imageio-ffmpeg`` wheel unless
``set_ffmpeg_binary`` names another. Every call is an argv list (never a shell
string), reads only files we wrote or a pipe (``-protocol_whitelist file,pipe``),
and turns a failure into ``EncodeError`` carrying the tail of ffmpeg's stderr.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache

from .errors import EncodeError

#: Protocols ffmpeg may open: a crafted playlist cannot reach the network or other files
#: through http/concat/subfile/... ("file" stays: our own temp files are read by path).
INPUT_PROTOCOLS = "file,pipe"
#: Demuxers allowed for user-supplied media: playlists (hls), concat lists, image
#: sequences and other formats that open further files are not among them.
USER_MEDIA_FORMATS = "wav,mp3,flac,ogg,aac,mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,aiff,w64,caf"
_STDERR_TAIL = 2000
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
        raise EncodeError(f"ffmpeg failed while {what}: {tail.strip()[-300:]}", tail)
    return proc.stdout


def probe_duration_s(path: str) -> float | None:
    """The container's declared duration, read from the header without decoding (no ffprobe)."""
    proc = subprocess.run(
        [ffmpeg_binary(), "-nostdin", "-hide_banner", *input_args(path, user_media=True)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30,
    )  # fmt: skip
    match = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", proc.stderr.decode("utf-8", "replace"))
    if not match:
        return None
    h, m, sec = match.groups()
    return int(h) * 3600 + int(m) * 60 + float(sec)


def stderr_tail(data: bytes) -> str:
    return data.decode("utf-8", "replace")[-_STDERR_TAIL:]
