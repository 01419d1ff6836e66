"""Mode and batch-size selection by measurement: verdicts, floors, ties, sharing, backends."""

from __future__ import annotations

import copy
import json
import threading

import numpy as np
import pytest
import torch

import wav2lip
from wav2lip import RenderOptions, Renderer
from wav2lip.backends import MODES, available_modes, build_backend
from wav2lip.fallback import FallbackGenerator
from wav2lip.generator import Generator, generator_spec
from wav2lip.options import PRECISIONS
from wav2lip.mode_timing import EXACT_PSNR_DB, pick, probe_inputs, psnr_db, to_uint8
from wav2lip.selection import select

pytestmark = pytest.mark.timeout(240)

TINY = 4  #: frames per measured call: selection in tests stays well under a second per mode


def options(tmp_path, **kw) -> RenderOptions:
    kw.setdefault("candidates", ("fp32", "bf16"))
    kw.setdefault("selection_budget_s", 60.0)  # tiny batches: the budget only matters on a machine busy with other tests
    return RenderOptions(device="cpu", batch_size=TINY, selection_dir=str(tmp_path), **kw)


def test_modes_table_matches_the_option_names():
    assert PRECISIONS == ("auto", *MODES)
    assert [m for m in MODES.values() if m.exact] == [MODES["fp32"]]
    assert {"fp32", "fp32-fast", "bf16", "fp16"} <= set(available_modes(torch.device("cpu")))


def test_generators_satisfy_the_interface(random_model):
    for generator in (random_model, FallbackGenerator()):
        assert isinstance(generator, Generator)
    spec = generator_spec(random_model)
    assert (spec.kind, spec.crop_size, spec.n_mels, spec.mel_step, spec.uses_positions, spec.has_weights) == (
        "wav2lip", 96, 80, 16, False, True)
    assert spec.model_id == random_model.model_id
    fb = generator_spec(FallbackGenerator())
    assert fb.kind == "fallback" and not fb.has_weights


def test_auto_measures_once_then_reads_the_verdict(tmp_path, random_model, monkeypatch):
    first = Renderer(copy.deepcopy(random_model), options(tmp_path))
    sel = first.selection
    assert sel["source"] == "measured" and sel["precision"] in ("fp32", "bf16") and sel["batch_size"] == TINY
    figures = {f["mode"]: f for f in sel["figures"]}
    assert figures["fp32"]["psnr_db"] == EXACT_PSNR_DB and figures["fp32"]["accepted"]
    assert figures["bf16"]["ms_per_frame"] > 0 and 30 < figures["bf16"]["psnr_db"] < 80  # tempered weights: a real figure
    assert sel["complete"] and sel["attempts"] == 1  # (the budget itself is tested below, with 0 s)
    assert "fastest mode above the accuracy floor" in sel["reason"] and "ms/frame" in sel["reason"]
    [verdict] = tmp_path.glob("*.json")
    assert json.loads(verdict.read_text())["precision"] == sel["precision"]

    import wav2lip.selection as selection

    monkeypatch.setattr(selection, "measure", lambda *a, **k: pytest.fail("measured again"))
    again = Renderer(copy.deepcopy(random_model), options(tmp_path))
    assert again.selection["source"] == "cached"
    assert (again.precision, again.batch_size) == (first.precision, first.batch_size)
    assert again.describe()["figures"] == sel["figures"]


def test_a_damaged_verdict_is_measured_again(tmp_path, random_model):
    Renderer(copy.deepcopy(random_model), options(tmp_path))
    [verdict] = tmp_path.glob("*.json")
    verdict.write_text("{not json")
    assert Renderer(copy.deepcopy(random_model), options(tmp_path)).selection["source"] == "measured"


def test_replicas_starting_together_measure_once(tmp_path, random_model):
    spec, device = generator_spec(random_model), torch.device("cpu")
    results = []

    def start():
        results.append(select(copy.deepcopy(random_model), spec, device, options(tmp_path)))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["source"] for r in results) == ["cached", "measured"]
    assert results[0]["precision"] == results[1]["precision"]


def test_floor_keeps_inexact_modes_out(tmp_path, random_model):
    sel = Renderer(copy.deepcopy(random_model), options(tmp_path, accuracy_floor_db=120.0)).selection
    assert sel["precision"] == "fp32"
    bf16 = next(f for f in sel["figures"] if f["mode"] == "bf16")
    assert not bf16["accepted"] and "below the 120 dB floor" in bf16["note"]


def test_near_ties_go_to_the_more_exact_mode():
    figs = [
        {"mode": "fp32", "ms_per_frame": 10.4, "psnr_db": EXACT_PSNR_DB, "accepted": True},
        {"mode": "fp32-fast", "ms_per_frame": 10.2, "psnr_db": 90.0, "accepted": True},
        {"mode": "bf16", "ms_per_frame": 10.0, "psnr_db": 45.0, "accepted": True},
        {"mode": "fp16", "ms_per_frame": 5.0, "psnr_db": 20.0, "accepted": False},
    ]
    assert pick(figs, 30.0)["mode"] == "fp32"  # all three within 5%: the exact one
    figs[0]["ms_per_frame"] = 20.0
    assert pick(figs, 30.0)["mode"] == "fp32-fast"
    figs[1]["ms_per_frame"] = 12.0
    assert pick(figs, 30.0)["mode"] == "bf16"


def test_explicit_mode_and_batch_measure_nothing(tmp_path, random_model):
    r = Renderer(copy.deepcopy(random_model), RenderOptions(device="cpu", precision="bf16", batch_size=8,
                                                            selection_dir=str(tmp_path)))  # fmt: skip
    assert (r.precision, r.batch_size, r.selection["source"]) == ("bf16", 8, "explicit")
    assert list(tmp_path.iterdir()) == []


def test_explicit_mode_measures_its_batch_size(tmp_path, random_model, monkeypatch):
    import wav2lip.selection as selection

    monkeypatch.setitem(selection.BATCHES, "cpu", (2, 4))
    r = Renderer(copy.deepcopy(random_model), RenderOptions(device="cpu", precision="fp32-fast", selection_dir=str(tmp_path)))
    assert r.precision == "fp32-fast" and r.batch_size in (2, 4)
    assert [b["batch_size"] for b in r.selection["batch_figures"]] == [2, 4]
    assert "was given" in r.selection["reason"]


def test_weights_free_generator_is_not_measured(tmp_path):
    r = Renderer(FallbackGenerator(), RenderOptions(device="cpu", selection_dir=str(tmp_path)))
    assert r.selection["source"] == "fixed" and r.precision == "fp32" and r.batch_size == 16
    assert list(tmp_path.iterdir()) == []


def test_every_torch_mode_is_close_to_fp32(random_model):
    """Each mode on the (tempered) test weights: what the floors are about."""
    audio, face = probe_inputs(TINY, generator_spec(random_model), torch.device("cpu"))
    outs = {}
    for mode in ("fp32", "fp32-fast", "bf16", "fp16"):
        backend = build_backend(mode, copy.deepcopy(random_model), torch.device("cpu"))
        with torch.inference_mode():
            outs[mode] = to_uint8(backend(audio, face))
    assert psnr_db(outs["fp32-fast"], outs["fp32"]) > 70
    assert psnr_db(outs["bf16"], outs["fp32"]) > 35
    assert psnr_db(outs["fp16"], outs["fp32"]) > 45


@pytest.mark.slow
def test_openvino_backend_matches_fp32(tmp_path, random_model):
    pytest.importorskip("openvino")
    audio, face = probe_inputs(TINY, generator_spec(random_model), torch.device("cpu"))
    with torch.inference_mode():
        ref = to_uint8(build_backend("fp32", copy.deepcopy(random_model), torch.device("cpu"))(audio, face))
    backend = build_backend("openvino-fp32", copy.deepcopy(random_model), torch.device("cpu"), tmp_path)
    assert psnr_db(to_uint8(backend(audio, face)), ref) > 70
    assert list((tmp_path / "openvino").glob("*.xml"))  # converted once, kept for the next start
    again = build_backend("openvino-fp32", copy.deepcopy(random_model), torch.device("cpu"), tmp_path)
    assert np.array_equal(to_uint8(again(audio, face)), to_uint8(backend(audio, face)))


def test_an_incomplete_verdict_is_measured_again_then_kept(tmp_path, random_model, monkeypatch):
    """A budget spent before every mode was timed (a busy machine) is not the final word."""
    import wav2lip.selection as selection

    opts = options(tmp_path, selection_budget_s=0.0)  # only the first mode gets measured
    first = select(copy.deepcopy(random_model), generator_spec(random_model), torch.device("cpu"), opts)
    assert not first["complete"] and first["source"] == "measured" and "incomplete" in first["reason"]
    timed = [f["mode"] for f in first["figures"] if f["ms_per_frame"] is not None]
    assert timed == ["bf16"]  # the exact mode is timed last: its reference output is made first anyway
    for attempt in (2, 3):
        again = select(copy.deepcopy(random_model), generator_spec(random_model), torch.device("cpu"), opts)
        assert again["source"] == "measured" and again["attempts"] == attempt
    monkeypatch.setattr(selection, "measure", lambda *a, **k: pytest.fail("measured a fourth time"))
    kept = select(copy.deepcopy(random_model), generator_spec(random_model), torch.device("cpu"), opts)
    assert kept["source"] == "cached" and "kept" in kept["reason"]


def test_a_mode_too_costly_to_convert_does_not_keep_the_verdict_open(tmp_path, random_model, monkeypatch):
    import wav2lip.mode_timing as mode_timing

    monkeypatch.setattr(mode_timing, "_unaffordable", lambda mode, m: "" if mode != "bf16" else
                        "not measured: converting the model takes ~15 s, more than the budget left")  # fmt: skip
    opts = options(tmp_path, candidates=("fp32", "fp32-fast", "bf16"))
    sel = select(copy.deepcopy(random_model), generator_spec(random_model), torch.device("cpu"), opts)
    bf16 = next(f for f in sel["figures"] if f["mode"] == "bf16")
    assert bf16["ms_per_frame"] is None and sel["complete"] and "incomplete" not in sel["reason"]
