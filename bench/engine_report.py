"""The engine benchmark's tables (``bench/engine.py`` measures, this prints)."""

from __future__ import annotations

from . import modes as mode_bench
from .common import print_table


def print_engine(results: dict, device: str, fps: float, baseline_batch: int) -> None:
    """The full-render, model-sweep, overlap and first-fragment tables."""
    n, audio_s = results["frames"], results["audio_s"]
    rows = []
    for r in results["renders"]:
        s = r["seconds"]
        with_cache = s["total"] - s["avatar"] + results["avatar_cache_load_s"]
        rows.append([r["renderer"], r["precision"], r["batch_size"], s["decode"], s["mel"], s["avatar"],
                     results["avatar_cache_load_s"], s.get("model"), s.get("paste"), s.get("encode"), s["combine"],
                     s["total"], r["frames_per_s"], r["real_time_factor"], 100 * r["non_model_share"],
                     with_cache])  # fmt: skip
    print_table(
        f"Full render, {device}: speech_9s ({audio_s:.2f} s audio, {n} frames at {fps:g} fps), default avatar 512x512 "
        "(seconds per stage)",
        ["renderer", "precision", "batch", "decode", "mel", "avatar detect", "avatar cache load", "model", "paste",
         "encode", "combine", "total", "frames/s", "RTF", "non-model %", "total, cached avatar"],
        rows,
    )  # fmt: skip
    sweep = results["model_sweep"]
    batches = sorted({b for per in sweep["frames_per_s"].values() for b in per} | {baseline_batch})
    rows = [[p, *[per.get(b) for b in batches]] for p, per in sweep["frames_per_s"].items()]
    rows.append([f"official-style loop fp32 (batch {baseline_batch})",
                 *[sweep["baseline_official_fp32_b128_frames_per_s"] if b == baseline_batch else None for b in batches]])  # fmt: skip
    print_table(f"Model only ({device}): frames/s by batch size (Renderer.predict, uint8 in/out)",
                ["precision", *[f"batch {b}" for b in batches]], rows)  # fmt: skip
    ov = results["overlap"]
    rows = [
        ["sequential (render all, then encode)", ov["sequential"]["render"], ov["sequential"]["encode"],
         ov["sequential"]["combine"], ov["sequential"]["total"], ov["frames"] / ov["sequential"]["total"]],
        ["overlapped (render_segment)", ov["overlapped"]["render"], None, ov["overlapped"]["combine"],
         ov["overlapped"]["total"], ov["frames"] / ov["overlapped"]["total"]],
    ]  # fmt: skip
    print_table(f"Overlap ({device}, {ov['precision']}, batch {ov['batch_size']}, {ov['frames']} frames): "
                f"speed-up x{ov['speedup']:.2f}",
                ["variant", "render (+encode)", "encode", "combine", "total", "frames/s"], rows)  # fmt: skip
    ff = results.get("first_fragment")
    if ff:
        print_table(f"Progressive stream, engine side ({device}, {ff['precision']}): mel + AAC + first chunk packaged",
                    ["first chunk frames", "seconds"], [[ff["frames"], ff["seconds"]]])  # fmt: skip


def print_modes(modes: dict, device: str) -> None:
    """The modes table and what ``auto`` picked."""
    sel = modes["selection"]
    print_table(f"Modes, generator alone ({device}, {modes['threads']} threads, median of {modes['repeats']})",
                mode_bench.table_headers(modes), mode_bench.table_rows(modes))  # fmt: skip
    print(f"\nauto picked {sel['precision']}, batch {sel['batch_size']}, measuring for {sel['seconds']:.1f} s "
          f"({sel['wall_s']:.1f} s wall); a second start: {sel['second_start']['source']}, "
          f"{sel['second_start']['wall_s']:.2f} s. {sel['reason']}")  # fmt: skip
