"""Fractional replicas without Ray: N engine processes sharing one device.

    python -m bench.fractional [--device cpu|cuda] [--processes 1,2,4] [--seconds 20] [--quick]

What a worker pool of ``num_gpus = 1/N`` replicas does on one GPU, measured where Ray is
not installed (the lent GPU machine): N processes, each with its CUDA memory capped to
1/N (``torch.cuda.set_per_process_memory_fraction``), each rendering the 9 s fixture
(random official-format checkpoint, auto precision) again and again for a fixed time.
Reports total frames/s and the concurrent real-time 25 fps streams that equals. Label:
"N engine processes sharing the device", not a Ray measurement.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

from .common import DATA_DIR, machine_info, print_table, resolve_device, write_result

AUDIO = DATA_DIR / "speech_9s.wav"
STREAM_FPS = 25.0


def _worker(rank: int, n: int, device: str, checkpoint: str, seconds: float, threads: int, out) -> None:
    import torch

    import wav2lip

    if device == "cuda" and n > 1:
        torch.cuda.set_per_process_memory_fraction(1.0 / n)
    model = wav2lip.load_checkpoint(checkpoint)
    samples = wav2lip.load_audio(AUDIO)
    avatar = wav2lip.prepare_avatar(wav2lip.DEFAULT_AVATAR_PATH)
    render = wav2lip.RenderOptions(device=device, threads=threads if device == "cpu" else 0)
    with tempfile.TemporaryDirectory() as tmp:
        wav2lip.lip_sync(samples, Path(tmp) / "warm.mp4", avatar, generator=model, render=render)  # warm
        frames, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            frames += wav2lip.lip_sync(samples, Path(tmp) / "o.mp4", avatar, generator=model, render=render).n_frames
        out.put((rank, frames, time.perf_counter() - start))


def measure(n: int, device: str, checkpoint: str, seconds: float, cores: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    threads = max(1, cores // n)
    procs = [ctx.Process(target=_worker, args=(r, n, device, checkpoint, seconds, threads, queue)) for r in range(n)]
    for p in procs:
        p.start()
    done = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    fps = sum(frames / wall for _, frames, wall in done)
    return {"processes": n, "frames_per_s": fps, "realtime_streams": fps / STREAM_FPS, "threads_each": threads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fractional")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    counts = [1, 2] if args.quick else [int(x) for x in args.processes.split(",")]
    seconds = 6.0 if args.quick else args.seconds
    import os

    import wav2lip

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = str(wav2lip.save_official_checkpoint(wav2lip.random_state_dict(0), Path(tmp) / "wav2lip.pth"))
        rows = [measure(n, device, checkpoint, seconds, os.cpu_count() or 1) for n in counts]
    print_table(f"N engine processes sharing the {device} (not Ray)", ["processes", "threads each", "frames/s",
                "real-time 25 fps streams"], [[r["processes"], r["threads_each"], r["frames_per_s"],
                                               r["realtime_streams"]] for r in rows])  # fmt: skip
    path = write_result("fractional", device, {"label": "N engine processes sharing one device", "rows": rows,
                                               "seconds_each": seconds}, machine_info(device))  # fmt: skip
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
