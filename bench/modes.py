"""Every mode of the generator alone: ms per frame by batch size, PSNR against fp32, the verdict.

Part of ``python -m bench engine`` (``--modes-only`` runs just this). Generator only,
the renderer's threads, random official-format weights; timing is the median of
``REPEATS`` calls after a warm-up, per batch size. Accuracy is the PSNR of the uint8
96x96 output against exact fp32 on the same seeded inputs, on two checkpoints: the
saturated random weights of earlier test helpers (pre-sigmoid std ~1300: a PSNR there
mostly counts pixels flipping between 0 and 255) and the tempered ones (last 1x1 conv
/ 1000) that the selection's accuracy floor is meant for. int8 is calibrated on the
shipped avatar and speech (``wav2lip.accuracy.default_calibration``). Then the
engine's own selection runs (as a worker would, in a fresh folder) and its verdict is
recorded, with the accuracy floor applied to each mode.
"""

from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import time

import torch

import wav2lip
from wav2lip import RenderOptions, Renderer
from wav2lip.accuracy import default_calibration
from wav2lip.backends import MODES, available_modes, build_backend
from wav2lip.generator import generator_spec, model_inputs
from wav2lip.options import ACCURACY_FLOOR_DB, INT8_FLOOR_DB
from wav2lip.mode_timing import probe_inputs, psnr_db, to_uint8

BATCHES = {"cpu": (16, 64), "cuda": (64, 256)}
REPEATS = 5
ACCURACY_FRAMES = 16
REFERENCE = "torch fp32, all contiguous"  #: input and weights NCHW-contiguous: the plain PyTorch way


def _model(tempered: bool, seed: int = 0) -> wav2lip.Wav2Lip:
    model = wav2lip.Wav2Lip()
    model.load_state_dict(wav2lip.random_state_dict(seed, tempered=tempered))
    model.model_id = f"bench-random-{seed}-{'tempered' if tempered else 'saturated'}"
    return model.eval()


def _calibration(spec, device):
    crops, windows = default_calibration()
    audio, face = model_inputs(crops, windows, torch.device("cpu"), spec.crop_size)
    return audio.to(device), face.to(device)


def _backend(mode: str, model, device, calibration):
    if mode == REFERENCE:
        fp32 = build_backend("fp32", model, device)
        return lambda audio, face: fp32(audio.contiguous(), face.contiguous())
    return build_backend(mode, model, device, None, calibration if MODES[mode].checked_at_load else None)


def _ms_per_frame(run, audio, face, device) -> float:
    run(audio, face)  # warm-up at this shape
    times = []
    for _ in range(REPEATS):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run(audio, face)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times) / len(audio)


@torch.inference_mode()
def measure_modes(device: torch.device) -> dict:
    batches = BATCHES[device.type]
    modes = [REFERENCE, *available_modes(device, auto_only=False)]
    spec = generator_spec(_model(True))
    audio, face = probe_inputs(max(batches), spec, device)
    calibration = _calibration(spec, device)
    rows = []
    for tempered in (False, True):
        base = _model(tempered)
        reference = to_uint8(build_backend("fp32", copy.deepcopy(base), device)(audio[:ACCURACY_FRAMES], face[:ACCURACY_FRAMES]))
        for mode in modes:
            print(f"bench engine: mode {mode} ({'tempered' if tempered else 'saturated'} weights) ...", file=sys.stderr,
                  flush=True)  # fmt: skip
            t0 = time.perf_counter()
            run = _backend(mode, copy.deepcopy(base), device, calibration)
            load_s = time.perf_counter() - t0
            out = to_uint8(run(audio[:ACCURACY_FRAMES], face[:ACCURACY_FRAMES]))
            row = next((r for r in rows if r["mode"] == mode), None)
            if row is None:
                row = {"mode": mode, "ms_per_frame": {}, "load_s": {}}
                rows.append(row)
            row["psnr_tempered_db" if tempered else "psnr_saturated_db"] = psnr_db(out, reference)
            row["load_s"]["tempered" if tempered else "saturated"] = load_s
            if tempered:  # same architecture, same cost: time once
                row["ms_per_frame"] = {b: _ms_per_frame(run, audio[:b], face[:b], device) for b in batches}
            del run
    for row in rows:
        floor = INT8_FLOOR_DB if row["mode"] in MODES and MODES[row["mode"]].checked_at_load else ACCURACY_FLOOR_DB
        exact = row["mode"] in ("fp32", REFERENCE)
        row["floor_db"] = None if exact else floor
        row["passes_floor"] = exact or row["psnr_tempered_db"] >= floor
    with tempfile.TemporaryDirectory(prefix="w2l-bench-sel-") as tmp:
        t0 = time.perf_counter()
        renderer = Renderer(_model(True), RenderOptions(device=str(device), selection_dir=tmp))
        selection = {**renderer.selection, "wall_s": time.perf_counter() - t0}
        t0 = time.perf_counter()
        again = Renderer(_model(True), RenderOptions(device=str(device), selection_dir=tmp))
        selection["second_start"] = {"source": again.selection["source"], "wall_s": time.perf_counter() - t0}
    return {"batches": list(batches), "repeats": REPEATS, "threads": torch.get_num_threads(), "rows": rows,
            "selection": selection}  # fmt: skip


def rule_pick(result: dict, batch) -> str:
    """The selection's rule applied to this table's figures at ``batch``: fastest passing, ties to the more exact."""
    from wav2lip.mode_timing import EXACT_PSNR_DB, pick

    figs = [{"mode": r["mode"], "ms_per_frame": r["ms_per_frame"].get(batch, r["ms_per_frame"].get(str(batch))),
             "psnr_db": EXACT_PSNR_DB if r["mode"] == "fp32" else r["psnr_tempered_db"],
             "accepted": r["passes_floor"] and r["mode"] in MODES and MODES[r["mode"]].auto} for r in result["rows"]]  # fmt: skip
    return pick(figs, ACCURACY_FLOOR_DB)["mode"]


def verdict(row: dict, result: dict) -> str:
    picks = [b for b in result["batches"] if rule_pick(result, b) == row["mode"]]
    if picks:
        return "the rule's pick at batch " + " and ".join(map(str, picks))
    if row["mode"] == REFERENCE:
        return "reference (not a mode)"
    if not row["passes_floor"]:
        return f"below its {row['floor_db']:g} dB floor" + (" (refused at load)" if row["mode"] == "int8" else "")
    if row["mode"] in MODES and not MODES[row["mode"]].auto:
        return "opt-in only"
    return "accurate enough, slower"


def table_rows(result: dict) -> list[list]:
    return [[r["mode"], *[r["ms_per_frame"].get(b, r["ms_per_frame"].get(str(b))) for b in result["batches"]],
             r["psnr_saturated_db"], r["psnr_tempered_db"], verdict(r, result)] for r in result["rows"]]  # fmt: skip


def table_headers(result: dict) -> list[str]:
    return ["mode", *[f"ms/frame, batch {b}" for b in result["batches"]], "PSNR vs fp32, saturated ckpt (dB)",
            "PSNR vs fp32, tempered ckpt (dB)", "verdict"]  # fmt: skip
