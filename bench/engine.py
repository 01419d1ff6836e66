"""Engine benchmark: where the time of one render goes, per precision, plus model-only sweeps.

    python -m bench engine [--device cpu|cuda] [--quick]      (or: python -m bench.engine ...)

Renders the 9 s fixture (tests/data/speech_9s.wav: 8.80 s, 220 frames at 25 fps) on the
shipped default avatar (512x512) at full resolution with a random official-format
checkpoint written to a temp dir (same architecture and cost as the real weights), and
reports, per configuration:

* seconds per stage: decode, mel, avatar detection, avatar cache load (``Avatar.from_bytes``,
  what a request with a cached avatar pays instead of detection), model, paste, encode
  (time spent handing frames to ffmpeg, overlapped with the model), combine, total;
* frames/s, real-time factor (total / audio seconds; < 1 is faster than real time) and
  the share of the total not spent in the model;
* a model-only sweep (``Renderer.predict`` on prepared crops and windows: frames/s vs batch
  size) with a plain batch-128 float32 loop written like the official inference as baseline;
* the same render with no overlap (render all frames into a list, then encode, then
  combine: stages summed) against the normal overlapped pipeline.

Only torch, numpy, OpenCV and imageio-ffmpeg are needed (no Ray, no pydantic).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import wav2lip
from wav2lip import aac as aac_stream, cmaf
from wav2lip import (
    Avatar,
    EncodeOptions,
    RenderOptions,
    Renderer,
    combine_segments,
    frame_count,
    lip_sync,
    load_audio,
    load_checkpoint,
    mel_windows,
    melspectrogram,
    prepare_avatar,
    render_segment,
)
from wav2lip.encode import SegmentEncoder, segment_format
from wav2lip.fallback import FallbackGenerator
from wav2lip.render import DEFAULT_BATCH

from . import engine_report
from .official_loop import official_style_fps
from . import modes as mode_bench
from .common import DATA_DIR, Stopwatch, machine_info, resolve_device, write_result

AUDIO = DATA_DIR / "speech_9s.wav"
FPS = 25.0
SEED = 0

#: (renderer, precision) rendered end to end; "auto" is what the engine picks on the device.
CONFIGS = {
    "cpu": [("wav2lip", "fp32"), ("wav2lip", "bf16"), ("fallback", "fp32")],
    "cuda": [("wav2lip", "fp32"), ("wav2lip", "fp16"), ("wav2lip", "bf16"), ("fallback", "fp32")],
}
QUICK_CONFIGS = [("wav2lip", "auto"), ("fallback", "fp32")]
SWEEP_PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}
SWEEP_BATCHES = {"cpu": (8, 16, 32, 64, 128), "cuda": (32, 64, 128, 256, 512)}
QUICK_SWEEP_BATCHES = {"cpu": (16, 64), "cuda": (64, 256)}
SWEEP_MIN_FRAMES = {"cpu": 64, "cuda": 1024}  #: frames timed per sweep point (at least 2 batches on cuda)
BASELINE_BATCH = 128  #: the official --wav2lip_batch_size default
STAGES = ("decode", "mel", "avatar", "cache_load", "model", "paste", "encode", "combine", "total")


def _generator(kind: str, checkpoint: Path) -> torch.nn.Module:
    """A fresh generator per configuration: Renderer converts the module in place (layout, fp16)."""
    return load_checkpoint(checkpoint) if kind == "wav2lip" else FallbackGenerator()


def _inputs(avatar: Avatar, mel: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 96, 96, 3) crops and (n, 80, 16) windows, as the renderer feeds the model."""
    crops = avatar.crops[avatar.frame_indices(0, n)]
    windows = mel_windows(mel, FPS, 0, n)
    return np.ascontiguousarray(crops), windows


def _warm_up(renderer: Renderer, crops: np.ndarray, windows: np.ndarray, sizes) -> None:
    """One call per batch size first: kernel selection and allocator growth are not the render."""
    for size in sorted(set(s for s in sizes if s > 0)):
        renderer.predict(crops[:size], windows[:size])


def full_render(kind, precision, device, checkpoint, avatar, mel, n_frames, tmp: Path, repeats: int) -> dict:
    generator = _generator(kind, checkpoint)
    options = RenderOptions(device=device, precision=precision)
    renderer = Renderer(generator, options)  # moves/converts the generator once, before timing
    crops, windows = _inputs(avatar, mel, renderer.batch_size)
    _warm_up(renderer, crops, windows, (renderer.batch_size, n_frames % renderer.batch_size))
    best = None
    for i in range(repeats):
        result = lip_sync(AUDIO, tmp / f"{kind}-{precision}-{i}.mp4", None, generator=generator, render=options,
                          enc=EncodeOptions(fps=FPS), fps=FPS)  # fmt: skip
        assert result.n_frames == n_frames, (result.n_frames, n_frames)
        if best is None or result.total_s < best.total_s:
            best = result
    s = best.seconds
    return {
        "renderer": best.renderer,
        "precision": best.precision,
        "batch_size": renderer.batch_size,
        "frames": best.n_frames,
        "audio_s": best.audio_s,
        "seconds": {k: round(v, 4) for k, v in s.items()},
        "frames_per_s": best.n_frames / s["total"],
        "model_frames_per_s": best.n_frames / s["model"] if s.get("model") else None,
        "real_time_factor": s["total"] / best.audio_s,
        "non_model_share": 1.0 - s.get("model", 0.0) / s["total"],
    }


def cache_load_seconds(avatar: Avatar, repeats: int = 5) -> tuple[float, int]:
    payload = avatar.to_bytes()
    times = []
    for _ in range(repeats):
        with Stopwatch() as sw:
            Avatar.from_bytes(payload)
        times.append(sw.seconds)
    return min(times), len(payload)


def _time_predict(renderer: Renderer, crops, windows, batch: int, repeats: int) -> float:
    """Best frames/s of ``Renderer.predict`` over all of ``crops`` in batches of ``batch``."""
    n, best = len(crops), float("inf")
    for _ in range(repeats):
        with Stopwatch() as sw:
            for a in range(0, n, batch):
                renderer.predict(crops[a : a + batch], windows[a : a + batch])
        best = min(best, sw.seconds)
    return n / best


def model_sweep(device, checkpoint, avatar, mel, batches, precisions, repeats: int) -> dict:
    n_max = max(max(batches), SWEEP_MIN_FRAMES[device], BASELINE_BATCH)
    crops, windows = _inputs(avatar, mel, n_max)
    sweep: dict[str, dict[int, float]] = {}
    for precision in precisions:
        generator = _generator("wav2lip", checkpoint)
        sweep[precision] = {}
        for batch in batches:
            n = max(batch, SWEEP_MIN_FRAMES[device])
            renderer = Renderer(generator, RenderOptions(device=device, precision=precision, batch_size=batch))
            _warm_up(renderer, crops, windows, (batch,))
            sweep[precision][batch] = _time_predict(renderer, crops[:n], windows[:n], batch, repeats)
    n = max(BASELINE_BATCH, SWEEP_MIN_FRAMES[device])
    model = _generator("wav2lip", checkpoint)
    baseline = official_style_fps(model, device, crops[:n], windows[:n], BASELINE_BATCH, repeats)
    return {"frames_per_s": sweep, "baseline_official_fp32_b128_frames_per_s": baseline}


def overlap_gain(device, checkpoint, avatar, samples, mel, n_frames, tmp: Path, repeats: int) -> dict:
    """Rendering then encoding one after the other (stages summed) vs the overlapped pipeline."""
    generator = _generator("wav2lip", checkpoint)
    renderer = Renderer(generator, RenderOptions(device=device))
    crops, windows = _inputs(avatar, mel, renderer.batch_size)
    _warm_up(renderer, crops, windows, (renderer.batch_size, n_frames % renderer.batch_size))
    enc = EncodeOptions(fps=FPS)
    suffix = segment_format(enc)[1]
    seq_best, ovl_best = None, None
    for i in range(repeats):
        segment = tmp / f"seq{i}{suffix}"
        with Stopwatch() as t_render:
            frames = list(renderer.iter_frames(avatar, mel, FPS, 0, n_frames))
        with Stopwatch() as t_encode:
            with SegmentEncoder(segment, avatar.width, avatar.height, FPS, enc) as encoder:
                for batch in frames:
                    encoder.write(batch)
        del frames
        with Stopwatch() as t_combine:
            combine_segments([segment], samples, tmp / f"seq{i}.mp4", enc)
        seq = {"render": t_render.seconds, "encode": t_encode.seconds, "combine": t_combine.seconds}
        seq["total"] = sum(seq.values())
        segment = tmp / f"ovl{i}{suffix}"
        with Stopwatch() as t_render:
            render_segment(renderer, avatar, mel, FPS, 0, n_frames, segment, enc)
        with Stopwatch() as t_combine:
            combine_segments([segment], samples, tmp / f"ovl{i}.mp4", enc)
        ovl = {"render": t_render.seconds, "encode": None, "combine": t_combine.seconds}
        ovl["total"] = t_render.seconds + t_combine.seconds
        seq_best = seq if seq_best is None or seq["total"] < seq_best["total"] else seq_best
        ovl_best = ovl if ovl_best is None or ovl["total"] < ovl_best["total"] else ovl_best
    return {
        "precision": renderer.precision,
        "batch_size": renderer.batch_size,
        "frames": n_frames,
        "sequential": seq_best,
        "overlapped": ovl_best,
        "speedup": seq_best["total"] / ovl_best["total"],
    }


def first_fragment(device, checkpoint, avatar, samples, tmp: Path, repeats: int, first_frames: int = 16) -> dict:
    """Engine-side time to a progressive stream's first fragment: mel and AAC (once per
    stream), then the first chunk rendered, encoded with its audio slice and packaged.
    Warm model; no service or network (``bench stream`` measures those)."""
    renderer = Renderer(_generator("wav2lip", checkpoint), RenderOptions(device=device))
    crops, windows = _inputs(avatar, melspectrogram(samples), renderer.batch_size)
    _warm_up(renderer, crops, windows, (first_frames,))
    enc = EncodeOptions(fps=FPS)
    best = None
    for i in range(repeats):
        with Stopwatch() as t:
            mel = melspectrogram(samples)
            aac = aac_stream.encode_aac(samples, enc.audio_bitrate)
            (tmp / "first.aac").write_bytes(b"".join(aac[: aac_stream.aac_frame_at(first_frames / FPS)]))
            path = render_segment(renderer, avatar, mel, FPS, 0, first_frames, tmp / f"first{i}.mp4", enc,
                                  audio=tmp / "first.aac")  # fmt: skip
            cmaf.package(path.read_bytes(), 0, 0.0, 0)
        best = t.seconds if best is None else min(best, t.seconds)
    return {"seconds": best, "frames": first_frames, "precision": renderer.precision, "batch_size": renderer.batch_size}


def run(device: str | None = None, quick: bool = False) -> dict:
    device = resolve_device(device)
    repeats = 1 if quick else 3  #: best of: other work on the machine only ever adds time
    with tempfile.TemporaryDirectory(prefix="w2l-bench-") as tmp_name:
        tmp = Path(tmp_name)
        checkpoint = wav2lip.save_official_checkpoint(wav2lip.random_state_dict(SEED), tmp / "wav2lip.pth")
        samples = load_audio(AUDIO)
        mel = melspectrogram(samples)
        n_frames = frame_count(len(samples), FPS)
        avatar = prepare_avatar(wav2lip.DEFAULT_AVATAR_PATH)
        cache_s, payload_bytes = cache_load_seconds(avatar)
        results = {
            "audio": str(AUDIO.relative_to(DATA_DIR.parents[1])),
            "audio_s": len(samples) / 16_000,
            "frames": n_frames,
            "fps": FPS,
            "avatar": {"width": avatar.width, "height": avatar.height, "cache_payload_bytes": payload_bytes},
            "avatar_cache_load_s": cache_s,
            "default_batch": DEFAULT_BATCH[device],
            "auto_selection": Renderer(_generator("wav2lip", checkpoint), RenderOptions(device=device)).selection,
            "quick": quick,
            "repeats": repeats,  #: best of this many runs per figure
            "renders": [],
        }
        for kind, precision in QUICK_CONFIGS if quick else CONFIGS[device]:
            print(f"bench engine: rendering {kind} {precision} on {device} ...", file=sys.stderr, flush=True)
            results["renders"].append(full_render(kind, precision, device, checkpoint, avatar, mel, n_frames, tmp, repeats))
        print("bench engine: model-only sweep ...", file=sys.stderr, flush=True)
        results["auto_precision"] = results["auto_selection"]["precision"]
        precisions = (results["auto_precision"],) if quick else SWEEP_PRECISIONS[device]
        batches = QUICK_SWEEP_BATCHES[device] if quick else SWEEP_BATCHES[device]
        results["model_sweep"] = model_sweep(device, checkpoint, avatar, mel, batches, precisions, repeats)
        print("bench engine: overlap vs sequential ...", file=sys.stderr, flush=True)
        results["overlap"] = overlap_gain(device, checkpoint, avatar, samples, mel, n_frames, tmp, repeats)
        print("bench engine: time to a stream's first fragment ...", file=sys.stderr, flush=True)
        results["first_fragment"] = first_fragment(device, checkpoint, avatar, samples, tmp, repeats)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--quick", action="store_true", help="two configurations and a two-point sweep")
    parser.add_argument("--modes-only", action="store_true", help="only the per-mode table and the selection")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    machine = machine_info(device)
    results = {} if args.modes_only else run(device, args.quick)
    results["modes"] = mode_bench.measure_modes(torch.device(device))
    results["load_avg_1m_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if not args.modes_only:
        engine_report.print_engine(results, device, FPS, BASELINE_BATCH)
    engine_report.print_modes(results["modes"], device)
    path = write_result("engine-modes" if args.modes_only else "engine", device, results, machine)
    print(f"\nmachine: {machine['cpu']} ({machine['cpu_cores_usable']} cores, torch {machine['torch']}, "
          f"{machine['torch_threads']} threads){', ' + machine['gpu'] if machine['gpu'] else ''}; "
          f"load average {machine['load_avg_1m'] or 0:.1f} at start, {results['load_avg_1m_at_end'] or 0:.1f} at end")  # fmt: skip
    print(f"result: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
