"""int8 (ONNX Runtime static quantisation): calibrated at load, checked against fp32, refused when wrong."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from torch import nn

import wav2lip
from wav2lip import RenderOptions, Renderer
from wav2lip.accuracy import CALIBRATION_FRAMES, HELD_OUT_FRAMES, default_calibration
from wav2lip.errors import PrecisionRefused

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytestmark = pytest.mark.timeout(240)


class TinyLipNet(nn.Module):
    """A small conv net with the generator's inputs and output: int8 is accurate on it."""

    renderer_kind = "tiny"
    model_id = "tiny-lipnet-test"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.face = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
        self.audio = nn.Linear(80 * 16, 3)

    def forward(self, audio, face):
        bias = self.audio(audio.flatten(1)) * 0.05
        return torch.sigmoid(self.face(face) + bias[:, :, None, None])


@pytest.fixture(scope="module")
def calibration(default_avatar, speech_samples):
    n = CALIBRATION_FRAMES + HELD_OUT_FRAMES
    windows = wav2lip.mel_windows(wav2lip.melspectrogram(speech_samples), 25, 0, n)
    return default_avatar.crops[default_avatar.frame_indices(0, n)], windows


def int8(**kw) -> RenderOptions:
    return RenderOptions(device="cpu", precision="int8", **kw)


def test_int8_is_accepted_where_it_is_accurate(calibration, default_avatar, speech_samples):
    renderer = Renderer(TinyLipNet(), int8(), calibration)
    sel = renderer.selection
    assert renderer.precision == "int8" and renderer.describe()["backend"] == "OnnxRuntimeBackend"
    [figure] = sel["figures"]
    assert figure["psnr_db"] >= 35 and f"held-out" in figure["note"]
    assert "dB from fp32 on held-out frames" in sel["reason"]
    crops, windows = calibration
    assert renderer.predict(crops[:3], windows[:3]).shape == (3, 96, 96, 3)


@pytest.mark.slow
def test_int8_is_refused_on_random_wav2lip_weights(calibration):
    saturated = wav2lip.Wav2Lip()
    saturated.load_state_dict(wav2lip.random_state_dict(0, tempered=False))
    saturated.model_id = "random-saturated"
    with pytest.raises(PrecisionRefused, match=r"precision int8 refused: .* dB PSNR from fp32 .* below the 35 dB floor"):
        Renderer(saturated, int8(), calibration)


def test_refusal_can_fall_back_to_auto(tmp_path, calibration, caplog):
    """What a service worker does: log why, render with the next mode, and say so."""
    caplog.set_level(logging.WARNING)
    renderer = Renderer(TinyLipNet(), int8(int8_floor_db=199.0, on_refusal="next", selection_dir=str(tmp_path),
                                           batch_size=4, candidates=("fp32", "fp32-fast")), calibration)  # fmt: skip
    assert renderer.precision in ("fp32", "fp32-fast")
    assert renderer.selection["refused"]["precision"] == "int8"
    assert "below the 199 dB floor" in renderer.describe()["refused"]["reason"]
    assert "rendering with precision auto instead" in caplog.text


def test_default_calibration_is_the_shipped_avatar_speaking():
    crops, windows = default_calibration()
    n = CALIBRATION_FRAMES + HELD_OUT_FRAMES
    assert crops.shape == (n, 96, 96, 3) and crops.dtype == np.uint8
    assert windows.shape == (n, 80, 16) and float(windows.std()) > 0.5  # speech, not silence


def test_int8_is_not_an_auto_candidate(tmp_path, random_model):
    sel = Renderer(copy.deepcopy(random_model), RenderOptions(device="cpu", batch_size=4, selection_dir=str(tmp_path),
                                                              candidates=("fp32", "int8"))).selection  # fmt: skip
    assert [f["mode"] for f in sel["figures"]] == ["fp32"]
