"""Choosing the mode and batch size by measurement, once per machine + model + libraries.

``select`` times the candidate modes on the actual device with the actual generator
for a few small batches (``wav2lip/mode_timing.py``), measures each mode's accuracy
against the exact fp32 mode on the same inputs (PSNR of the uint8 96x96 output), and
keeps the fastest mode above the accuracy floor; a mode within ``TIE_MARGIN`` of the fastest that is more exact wins the
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

import fcntl
import json
import logging
import os
import platform
from contextlib import contextmanager
from pathlib import Path

import torch

from .backends import MODES, available_modes, library_versions
from .files import atomic_write
from .generator import GeneratorSpec
from .keys import content_key
from .mode_timing import DEFAULT_BATCH, EXACT_PSNR_DB, measure
from .options import RenderOptions

log = logging.getLogger(__name__)

SELECTION_VERSION = 1  #: bump when the procedure changes: old verdicts are then ignored
#: Batch sizes tried, smallest first: modes are compared at the first, the winner at all.
BATCHES = {"cpu": (8, 16, 32), "cuda": (32, 64, 128, 256)}
#: Starts that measure again while a verdict is incomplete (budget spent: e.g. a machine busy
#: with other work); after that the incomplete verdict is kept.
MAX_ATTEMPTS = 3


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


@contextmanager
def _locked(path: Path):
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
