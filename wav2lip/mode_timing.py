"""Timing and checking modes on one device: seeded probe inputs, PSNR against exact fp32, the budget.

``measure`` times the candidate modes at the first batch size, checks each against the
exact fp32 output on the same inputs, then times the winner at every batch size, all
within ``RenderOptions.selection_budget_s``; ``pick`` chooses among the figures.
``wav2lip/selection.py`` keeps the verdicts.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from .backends import MODES, build_backend
from .generator import GeneratorSpec
from .options import RenderOptions

TIE_MARGIN = 0.05  #: a mode at most 5% slower than the fastest is a tie (more exact wins)
PROBE_SEED = 0
#: Batch size used when nothing is measured (fallback, an explicit mode given a budget of 0).
DEFAULT_BATCH = {"cpu": 16, "cuda": 128}
#: Seconds an OpenVINO conversion takes here (a trace; 17 s on 2 loaded cores): measured only
#: when this much budget is left, or when the converted model is already on disk.
OPENVINO_CONVERT_S = 15.0
ACCURACY_FRAMES = 4  #: frames compared with exact fp32 (of the first batch size's warm-up call)
TIMED_CALLS = 2  #: timed calls per figure after the warm-up (the fastest counts: load only adds time)
MEL_RANGE = (-4.0, 2.0)  #: the official normalised log-mel range of the probe windows
EXACT_PSNR_DB = float("inf")


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two uint8 arrays in dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return EXACT_PSNR_DB if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


def probe_inputs(n: int, spec: GeneratorSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (n, 1, mels, steps) windows and (n, 6, size, size) masked+reference faces, as the renderer feeds them."""
    rng = np.random.default_rng(PROBE_SEED)
    audio = rng.uniform(*MEL_RANGE, (n, 1, spec.n_mels, spec.mel_step)).astype(np.float32)
    ref = rng.random((n, 3, spec.crop_size, spec.crop_size), dtype=np.float32)
    masked = ref.copy()
    masked[:, :, spec.crop_size // 2 :] = 0
    face = torch.from_numpy(np.concatenate((masked, ref), axis=1)).contiguous(memory_format=torch.channels_last)
    return torch.from_numpy(audio).to(device), face.to(device)


def to_uint8(out: torch.Tensor) -> np.ndarray:
    """The renderer's output conversion: x255, truncate."""
    return (out.float() * 255.0).to(torch.uint8).cpu().numpy()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Measurer:
    """Times and checks modes on one generator within one budget."""

    def __init__(self, generator, spec, device, budget_s, cache_dir):
        self.generator, self.spec, self.device, self.cache_dir = generator, spec, device, cache_dir
        self.deadline = time.perf_counter() + budget_s
        self.backends: dict[str, object] = {}

    def left_s(self) -> float:
        return self.deadline - time.perf_counter()

    def backend(self, mode: str):
        if mode not in self.backends:
            # A copy per mode: torch modes convert the module in place (layout, CUDA dtype).
            model = self.generator if MODES[mode].library != "torch" else copy.deepcopy(self.generator)
            self.backends[mode] = build_backend(mode, model, self.device, self.cache_dir)
        return self.backends[mode]

    @torch.inference_mode()
    def run(self, mode: str, audio, face) -> tuple[np.ndarray, float]:
        """(uint8 output, seconds) of one call."""
        backend = self.backend(mode)
        _sync(self.device)
        t0 = time.perf_counter()
        out = backend(audio, face)
        _sync(self.device)
        seconds = time.perf_counter() - t0
        return to_uint8(out), seconds


    def ms_per_frame(self, mode: str, audio, face) -> float:
        """Fastest of ``TIMED_CALLS`` calls (at least one), in ms per frame."""
        best = self.run(mode, audio, face)[1]
        for _ in range(TIMED_CALLS - 1):
            if self.left_s() <= 0:
                break
            best = min(best, self.run(mode, audio, face)[1])
        return 1000.0 * best / len(audio)


def _unaffordable(mode: str, measurer: _Measurer) -> str:
    """Why ``mode`` cannot be measured in the budget left ("" when it can)."""
    if measurer.left_s() <= 0:
        return "not measured: selection budget spent"
    if MODES[mode].library == "openvino":
        from .backends.ov import ir_cached

        if not ir_cached(measurer.generator, measurer.cache_dir) and measurer.left_s() < OPENVINO_CONVERT_S:
            return f"not measured: converting the model takes ~{OPENVINO_CONVERT_S:g} s, more than the budget left"
    return ""


def pick(figures: list[dict], floor_db: float, key: str = "ms_per_frame") -> dict | None:
    """The fastest figure whose accuracy passes; a near-tie (``TIE_MARGIN``) goes to the more exact."""
    passing = [f for f in figures if f.get(key) is not None and f.get("accepted")]
    if not passing:
        return None
    fastest = min(f[key] for f in passing)
    ties = [f for f in passing if f[key] <= fastest * (1.0 + TIE_MARGIN)]
    return max(ties, key=lambda f: (f["psnr_db"] if f["psnr_db"] is not None else -1.0, -f[key]))


def measure(generator, spec: GeneratorSpec, device: torch.device, candidates: list[str], batches: tuple[int, ...],
            options: RenderOptions, check_accuracy: bool) -> dict:
    """Time ``candidates`` at ``batches[0]``, check them against fp32, then size the winner's batch."""
    t_start = time.perf_counter()
    cache_dir = Path(options.selection_dir).expanduser()
    m = _Measurer(generator, spec, device, options.selection_budget_s, cache_dir)
    audio, face = probe_inputs(max(batches), spec, device)
    b0 = batches[0]
    # The reference first, on a few frames (the exact mode is often the slowest); the exact mode is
    # timed last, so on a busy machine the budget goes to the modes that could beat it.
    reference = m.run("fp32", audio[:ACCURACY_FRAMES], face[:ACCURACY_FRAMES])[0] if check_accuracy else None
    order = [c for c in candidates if not MODES[c].exact] + [c for c in candidates if MODES[c].exact]
    figures = {}
    for mode in order:
        fig = {"mode": mode, "batch_size": b0, "ms_per_frame": None, "psnr_db": None, "accepted": False, "note": ""}
        measured_any = any(f["ms_per_frame"] is not None for f in figures.values())
        figures[mode] = fig
        if measured_any and (why := _unaffordable(mode, m)):
            fig["note"] = why
            fig["too_costly"] = why.startswith("not measured: converting")  # never affordable: not a reason to retry
            continue
        out, _ = m.run(mode, audio[:b0], face[:b0])  # warm-up: kernel choice, allocator growth, conversion
        fig["ms_per_frame"] = m.ms_per_frame(mode, audio[:b0], face[:b0])
        fig["psnr_db"] = psnr_db(out[:ACCURACY_FRAMES], reference) if reference is not None else None
        fig["accepted"] = MODES[mode].exact or not check_accuracy or fig["psnr_db"] >= options.accuracy_floor_db
        if not fig["accepted"]:
            fig["note"] = f"PSNR {fig['psnr_db']:.1f} dB vs fp32 is below the {options.accuracy_floor_db:g} dB floor"
    figures = [figures[c] for c in candidates]  # reported in the modes' own order
    complete = all(f["ms_per_frame"] is not None or f.get("too_costly") for f in figures)
    best = pick(figures, options.accuracy_floor_db) or next((f for f in figures if MODES[f["mode"]].exact), figures[0])
    sizes = [{"batch_size": b0, "ms_per_frame": best["ms_per_frame"]}] if best["ms_per_frame"] is not None else []
    for batch in batches[1:]:
        if m.left_s() <= 0 or not sizes:
            break
        m.run(best["mode"], audio[:batch], face[:batch])  # warm-up at the new shape
        sizes.append({"batch_size": batch, "ms_per_frame": m.ms_per_frame(best["mode"], audio[:batch], face[:batch])})
    complete = complete and len(sizes) == len(batches)
    # Ties between batch sizes go to the smaller one (less latency).
    by_size = sorted(sizes, key=lambda s: s["batch_size"])
    if by_size:
        fastest = min(s["ms_per_frame"] for s in by_size)
        batch = next(s for s in by_size if s["ms_per_frame"] <= fastest * (1.0 + TIE_MARGIN))["batch_size"]
    else:
        batch = DEFAULT_BATCH[device.type]
    return {
        "precision": best["mode"],
        "batch_size": batch,
        "figures": figures,
        "batch_figures": sizes,
        "seconds": time.perf_counter() - t_start,
        "accuracy_floor_db": options.accuracy_floor_db if check_accuracy else None,
        "complete": complete,  #: every candidate and batch size measured within the budget
    }
