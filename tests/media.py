"""Media checks shared by engine and service tests (no ffprobe in imageio-ffmpeg)."""

from __future__ import annotations

import subprocess
from fractions import Fraction

from wav2lip.ffmpeg import ffmpeg_binary


def framemd5(path) -> str:
    """ffmpeg's per-packet listing (stream, dts, pts, duration, size, MD5), by stream copy."""
    return subprocess.run([ffmpeg_binary(), "-hide_banner", "-i", str(path), "-c", "copy", "-f", "framemd5", "-"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


def packet_times(path) -> dict[int, list[tuple[float, float]]]:
    """(pts, duration) in seconds of every packet, per stream, read by stream copy (no decode)."""
    bases, found = {}, {}
    for line in framemd5(path).splitlines():
        if line.startswith("#tb "):
            stream, tb = line[4:].split(": ")
            bases[int(stream)] = Fraction(tb)
        elif line and not line.startswith("#"):
            stream, _dts, pts, duration = (int(x) for x in line.split(",")[:4])
            found.setdefault(stream, []).append((float(pts * bases[stream]), float(duration * bases[stream])))
    return found
