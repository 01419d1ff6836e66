"""Shared benchmark helpers: machine description, JSON results and plain-text tables.

Results go to ``bench/results/<suite>-<device>-<UTC timestamp>.json``: the suite's own
numbers under ``"results"`` plus ``"machine"`` (CPU model, cores, GPU, library versions,
Python, the command line, git commit) and the ISO date, so a number can always be
traced to the machine and code that produced it.
"""

from __future__ import annotations

import argparse

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
DATA_DIR = ROOT / "tests" / "data"


def resolve_device(device: str | None) -> str:
    """"cpu" or "cuda"; None picks CUDA when present. Asking for a missing GPU is an error."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench: --device cuda was asked for but torch sees no CUDA GPU")
    return device


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, timeout=5)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _ffmpeg_version() -> str | None:
    try:
        from wav2lip.ffmpeg import ffmpeg_binary

        out = subprocess.run([ffmpeg_binary(), "-version"], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0] if out else None
    except Exception:  # noqa: BLE001 - informational only
        return None


def machine_info(device: str) -> dict:
    """Where and with what a benchmark ran."""
    import cv2
    import numpy as np
    import torch

    info = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,  #: other work on the box
        "cpu_capability": getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: None)(),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "cuda": torch.version.cuda if device == "cuda" else None,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "ffmpeg": _ffmpeg_version(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": " ".join(getattr(sys, "orig_argv", sys.argv)),
        "git_commit": _git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import imageio_ffmpeg

        info["imageio_ffmpeg"] = imageio_ffmpeg.__version__
    except ImportError:
        info["imageio_ffmpeg"] = None
    return info


def write_result(suite: str, device: str, results: dict, machine: dict | None = None) -> Path:
    """Write ``results`` with the machine description to ``bench/results/`` (atomically); the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    machine = machine or machine_info(device)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{suite}-{device}-{stamp}.json"
    payload = {"suite": suite, "device": device, "date": machine["date"], "machine": machine, "results": results}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
    return path


def _cell(value) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
    return "-" if value is None else str(value)


def format_table(title: str, headers: list[str], rows: list[list]) -> str:
    """A plain-text table: left-aligned text, right-aligned numbers (also valid Markdown)."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(len(headers))]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "| " + " | ".join(parts) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([f"\n**{title}**\n", line(headers), sep, *(line(r) for r in cells)])


def print_table(title: str, headers: list[str], rows: list[list]) -> None:
    print(format_table(title, headers, rows), flush=True)


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self):
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        return False


def service_suite_args(suite: str, argv: list[str] | None) -> argparse.Namespace:
    """Arguments of a suite that runs the Serve app (CPU only: the GPU machine has no Ray)."""
    parser = argparse.ArgumentParser(prog=f"python -m bench {suite}")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true")
    return parser.parse_args(argv)


def source_line(data: dict) -> str:
    """The italic line under a report section: which result file, machine, command, date, commit."""
    m = data["machine"]
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    return (f"*Source: `bench/results/{data['file']}` — {m['cpu']} ({m['cpu_cores']} cores{gpu}), "
            f"torch {m['torch']}, `{m['command']}`, {data['date']}, commit {m.get('git_commit')}.*")  # fmt: skip
