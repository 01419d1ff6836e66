"""Hostile avatars (issue #20): seconds to refuse them, and peak memory of preparing a real clip.

``python -m bench.hostile [--before REF] [--quick]``. Every measurement runs in a fresh
child process that imports the engine from a folder (this checkout, or ``REF``'s
``wav2lip/`` exported by ``git archive``), so the peak RSS (``VmHWM``) is that of one
preparation alone and "before" and "after" run the same script. Figures are measured,
never asserted; inputs are made here (ffmpeg, hand-written headers).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from bench.common import ROOT, machine_info, print_table, write_result

CLIP_S = 24  #: the issue's clip: 24 s of 720p at 25 fps
CLIP_SIZE = (1280, 720)
QUICK_CLIP_S = 6
_CHILD_TIMEOUT_S = 600

_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import wav2lip
from wav2lip import prepare_avatar
data = open(sys.argv[2], "rb").read()
t = time.perf_counter()
try:
    avatar = prepare_avatar(data)
    outcome = f"prepared {avatar.n_frames} frames at {avatar.fps:g} fps" if avatar.fps else "prepared an image"
    if sys.argv[3] == "payload":
        outcome += f", payload {len(avatar.to_bytes()) / 1e6:.0f} MB"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
seconds = time.perf_counter() - t
hwm_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": seconds, "peak_rss_mb": hwm_kb / 1024, "outcome": outcome[:160]}))
"""


def _ffmpeg() -> str:
    sys.path.insert(0, str(ROOT))
    from wav2lip.ffmpeg import ffmpeg_binary

    return ffmpeg_binary()


def make_clip(path: Path, seconds: int) -> Path:
    """A 720p talking-head-like clip: the default avatar's face, moving noise so frames differ."""
    face = ROOT / "wav2lip" / "assets" / "default_avatar.png"
    w, h = CLIP_SIZE
    subprocess.run([_ffmpeg(), "-nostdin", "-loglevel", "error", "-y", "-loop", "1", "-i", str(face), "-t", str(seconds),
                    "-r", "25", "-vf", f"scale={h}:{h},pad={w}:{h}:{(w - h) // 2}:0,noise=alls=12:allf=t",
                    "-c:v", "libx264", "-crf", "30", "-pix_fmt", "yuv420p", str(path)], check=True)  # fmt: skip
    return path


def hostile_inputs(folder: Path) -> dict[str, Path]:
    """The issue's examples: a 1 kB RLE BMP of 30000x30000, an 8K WebP header, a 20 MP MJPEG frame."""
    palette, pixels = bytes(1024), b"\x00\x01"
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, 30000, 30000, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    bmp = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels
    vp8x = b"\x00" * 4 + (7679).to_bytes(3, "little") + (4319).to_bytes(3, "little")
    webp = b"RIFF" + struct.pack("<I", 4 + 18 + 32) + b"WEBP" + b"VP8X" + struct.pack("<I", 10) + vp8x + bytes(32)
    paths = {"rle_bmp_30000x30000": folder / "bomb.bmp", "webp_8k_header": folder / "8k.webp"}
    paths["rle_bmp_30000x30000"].write_bytes(bmp)
    paths["webp_8k_header"].write_bytes(webp)
    paths["mjpeg_avi_5000x4000"] = folder / "big.avi"
    subprocess.run([_ffmpeg(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=size=5000x4000:d=0.04",
                    "-frames:v", "1", "-c:v", "mjpeg", str(paths["mjpeg_avi_5000x4000"])], check=True)  # fmt: skip
    return paths


def export_engine(ref: str, folder: Path) -> Path:
    """``ref``'s ``wav2lip/`` package, exported into ``folder`` (nothing in the checkout changes)."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "wav2lip"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as archive:
        archive.extractall(folder, filter="data")
    return folder


def measure(engine_root: Path, media: Path, payload: bool = False) -> dict:
    """Seconds, peak RSS and outcome of ``prepare_avatar(media)`` in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(engine_root), str(media), "payload" if payload else "-"],
                          capture_output=True, text=True, timeout=_CHILD_TIMEOUT_S, env={**os.environ, "OMP_NUM_THREADS": "2"})  # fmt: skip
    if proc.returncode != 0:
        return {"seconds": None, "peak_rss_mb": None, "outcome": f"exit {proc.returncode}: {proc.stderr.strip()[-160:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--before", default=None, help="git ref whose engine to compare with (e.g. main)")
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_CLIP_S} s clip instead of {CLIP_S} s")
    parser.add_argument("--device", default="cpu", help="ignored: this suite is CPU only")
    args = parser.parse_args(argv)
    engines = {"after": ROOT}
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="w2l-hostile-") as tmp:
        tmp = Path(tmp)
        if args.before:
            engines = {"before": export_engine(args.before, tmp / "before"), **engines}
        inputs = hostile_inputs(tmp)
        seconds = QUICK_CLIP_S if args.quick else CLIP_S
        inputs[f"h264_720p_{seconds}s"] = make_clip(tmp / "clip.mp4", seconds)
        for label, root in engines.items():
            for name, path in inputs.items():
                figures = measure(root, path, payload=name.startswith("h264"))
                results[f"{label}/{name}"] = {**figures, "input_bytes": path.stat().st_size}
                rows.append([label, name, path.stat().st_size, figures["seconds"], figures["peak_rss_mb"], figures["outcome"]])
    print_table("hostile avatars: prepare_avatar in a fresh process", ["engine", "input", "bytes", "seconds", "peak RSS MB", "outcome"], rows)
    write_result("hostile", "cpu", results, machine_info("cpu"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
