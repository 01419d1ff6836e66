"""Choosing the mode and batch size by measurement, once per machine + model + libraries.

``select`` times the candidate modes on the actual device with the actual generator
for a few small batches, measures each mode's accuracy against the exact fp32 mode on
the same inputs (PSNR of the uint8 96x96 output), and keeps the fastest mode above the
accuracy floor; a mode within ``TIE_MARGIN`` of the fastest that is more exact wins the
tie. Then the winner's batch size is chosen the same way. The whole measurement is
bounded by ``RenderOptions.selection_budget_s`` (steps that would start later are
skipped and say so).

The verdict is a JSON file in ``RenderOptions.selection_dir`` named by a key over
everything it depends on (model id, device, threads, library versions, candidates,
floor). Measuring holds an exclusive lock on that key, so replicas starting together
measure once and all read the same verdict: they never disagree (the mode is part of
the result-cache keys), and later starts reuse it at no cost.
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .backends import MODES, available_modes, build_backend, library_versions
from .generator import GeneratorSpec
from .options import RenderOptions
from .files import atomic_write
from .keys import content_key

log = logging.getLogger(__name__)

SELECTION_VERSION = 1  #: bump when the procedure changes: old verdicts are then ignored
TIE_MARGIN = 0.05  #: a mode at most 5% slower than the fastest is a tie (more exact wins)
PROBE_SEED = 0
#: Batch sizes tried, smallest first: modes are compared at the first, the winner at all.
BATCHES = {"cpu": (8, 16, 32), "cuda": (32, 64, 128, 256)}
#: Batch size used when nothing is measured (fallback, an explicit mode given a budget of 0).
DEFAULT_BATCH = {"cpu": 16, "cuda": 128}
#: Seconds an OpenVINO conversion takes here (a trace; 17 s on 2 loaded cores): measured only
#: when this much budget is left, or when the converted model is already on disk.
OPENVINO_CONVERT_S = 15.0
ACCURACY_FRAMES = 4  #: frames compared with exact fp32 (of the first batch size's warm-up call)
#: Starts that measure again while a verdict is incomplete (budget spent: e.g. a machine busy
#: with other work); after that the incomplete verdict is kept.
MAX_ATTEMPTS = 3
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


def device_id(device: torch.device) -> str:
    """What the machine is, for the verdict key: CPU model and ISA, or GPU name."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{torch.cuda.get_device_name(index)}:{torch.cuda.get_device_capability(index)}"
    name = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), name)
    except OSError:
        pass
    return f"cpu:{name}:{torch.backends.cpu.get_cpu_capability()}:{os.cpu_count()}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _locked(path: Path):
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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


def select(generator, spec: GeneratorSpec, device: torch.device, options: RenderOptions) -> dict:
    """The verdict for this generator on this device: ``{"precision", "batch_size", "source", "reason", ...}``."""
    auto = options.precision == "auto"
    if not spec.has_weights:
        mode = "fp32" if auto else options.precision
        return _verdict(mode, options.batch_size or DEFAULT_BATCH[device.type], "fixed",
                        "the generator has no weights: every mode computes the same", {})  # fmt: skip
    candidates = [c for c in (options.candidates or available_modes(device)) if c in available_modes(device)] if auto \
        else [options.precision]  # fmt: skip
    if not auto and options.batch_size:
        return _verdict(options.precision, options.batch_size, "explicit", "precision and batch size were given", {})
    if not auto and MODES[options.precision].checked_at_load:  # needs calibration: checked at load, not timed
        return _verdict(options.precision, DEFAULT_BATCH[device.type], "explicit",
                        f"precision {options.precision} was given; default batch size", {})  # fmt: skip
    if not candidates:
        candidates = ["fp32"]
    batches = (options.batch_size,) if options.batch_size else BATCHES[device.type]
    parts = (SELECTION_VERSION, spec.model_id, device_id(device), torch.get_num_threads(), library_versions(),
             candidates, batches, options.accuracy_floor_db if auto else None, options.selection_budget_s)  # fmt: skip
    cache_dir = Path(options.selection_dir).expanduser()
    if not spec.model_id:  # nothing says which weights these are: measure, keep nothing
        return _finish(measure(generator, spec, device, candidates, batches, options, auto), "measured", auto)
    key = content_key(*parts)[:32]
    path = cache_dir / f"{key}.json"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock = _locked(cache_dir / f"{key}.lock")
    except OSError as exc:
        log.warning("cannot use the selection folder %s (%s): measuring without keeping the verdict", cache_dir, exc)
        return _finish(measure(generator, spec, device, candidates, batches, options, auto), "measured", auto)
    with lock:
        cached = _read(path)
        attempts = cached.get("attempts", 1) if cached is not None else 0
        if cached is not None and (cached.get("complete", True) or attempts >= MAX_ATTEMPTS):
            return _finish(cached, "cached", auto)
        result = measure(generator, spec, device, candidates, batches, options, auto)
        result["attempts"] = attempts + 1
        if cached is not None and not result["complete"] and _measured(cached) > _measured(result):
            result = {**cached, "attempts": attempts + 1}  # the earlier try saw more: keep it
        result["key"] = {"model_id": spec.model_id, "device": device_id(device), "threads": torch.get_num_threads(),
                         "libraries": library_versions(), "candidates": candidates}  # fmt: skip
        try:
            atomic_write(path, json.dumps(result, indent=1, default=str).encode())
        except OSError as exc:
            log.warning("cannot keep the selection verdict in %s (%s)", path, exc)
    log.info("selection: %s, batch %d, measured in %.1f s", result["precision"], result["batch_size"], result["seconds"])
    return _finish(result, "measured", auto)


def _measured(verdict: dict) -> int:
    return sum(f["ms_per_frame"] is not None for f in verdict["figures"]) + len(verdict["batch_figures"])


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # a damaged verdict is measured again
        log.warning("ignoring the unreadable selection verdict %s (%s)", path, exc)
        return None
    return data if isinstance(data, dict) and data.get("precision") in MODES else None


def _verdict(precision: str, batch_size: int, source: str, reason: str, extra: dict) -> dict:
    return {"precision": precision, "batch_size": batch_size, "source": source, "reason": reason,
            "figures": [], "batch_figures": [], "seconds": 0.0, **extra}  # fmt: skip


def _finish(result: dict, source: str, auto: bool) -> dict:
    result = {**result, "source": source}
    chosen = next((f for f in result["figures"] if f["mode"] == result["precision"]), None)
    if auto and chosen is not None:
        others = ", ".join(f"{f['mode']} {_fig(f)}" for f in result["figures"] if f is not chosen)
        result["reason"] = f"fastest mode above the accuracy floor: {chosen['mode']} {_fig(chosen)}" + (
            f"; others: {others}" if others else "")
    else:
        result["reason"] = f"precision {result['precision']} was given; batch size measured"
    if not result.get("complete", True):
        tries = result.get("attempts", 1)
        result["reason"] += (f" (incomplete: the {MAX_ATTEMPTS - tries} next start(s) measure again)"
                             if tries < MAX_ATTEMPTS else " (incomplete after every try: kept)")  # fmt: skip
    return result


def _fig(f: dict) -> str:
    if f["ms_per_frame"] is None:
        return f"({f['note']})"
    acc = "" if f["psnr_db"] is None else (" exact" if f["psnr_db"] == EXACT_PSNR_DB else f" {f['psnr_db']:.1f} dB")
    note = f", {f['note']}" if f["note"] else ""
    return f"({f['ms_per_frame']:.1f} ms/frame at batch {f['batch_size']}{acc}{note})"


def describe(selection: dict) -> str:
    """One line for logs and the CLI summary."""
    return f"{selection['precision']}, batch {selection['batch_size']} [{selection['source']}: {selection['reason']}]"
