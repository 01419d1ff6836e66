"""The weights-free renderer: same I/O as Wav2Lip, a real mouth, exact elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from wav2lip.fallback import FallbackGenerator
from wav2lip.hparams import IMG_SIZE, MEL_FLOOR_VALUE, MEL_STEP, N_MELS

AVATAR = Path(__file__).resolve().parents[1] / "data" / "avatar.png"
FACE_BOX = (177, 66, 272, 171)  #: Haar box (177, 66, 272, 161) + the default 10 px bottom pad
MOUTH = (slice(55, 91), slice(25, 72))  #: rows, cols of the mouth region in the crop
TOP = slice(0, 41)  #: rows that must never change


def _window(loudness: float, tilt: float = 0.2) -> np.ndarray:
    """(80, 16) mel window of a steady vowel; 0 = silence, 1 = loud speech (peak ~+0.4).

    ``tilt`` is how much the level falls from the lowest to the highest bin: large =
    low-heavy (rounded vowel), negative = high-heavy (spread vowel, fricative).
    """
    level = 4.4 * loudness * (1.0 - tilt * np.arange(N_MELS) / N_MELS)
    return np.repeat((MEL_FLOOR_VALUE + level)[:, None], MEL_STEP, axis=1).astype(np.float32)


def _audio(*loudness: float, tilt: float = 0.2) -> torch.Tensor:
    return torch.from_numpy(np.stack([_window(v, tilt) for v in loudness]))[:, None]


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """(96, 96, 3) uint8 BGR face crop of the fixture photo, as the pipeline makes it."""
    frame = cv2.imread(str(AVATAR))
    assert frame is not None, f"missing fixture {AVATAR}"
    x1, y1, x2, y2 = FACE_BOX
    return cv2.resize(frame[y1:y2, x1:x2], (IMG_SIZE, IMG_SIZE), interpolation=cv2.INTER_LINEAR)


def _face(crop: np.ndarray, n: int) -> torch.Tensor:
    masked = crop.copy()
    masked[IMG_SIZE // 2:] = 0
    six = np.concatenate([masked, crop], axis=2).transpose(2, 0, 1)[None] / 255.0
    return torch.from_numpy(np.repeat(six, n, axis=0)).float()


def _to_uint8(out: torch.Tensor) -> np.ndarray:
    """(B, 96, 96, 3) uint8, converted like the renderer: x255 and truncate."""
    return (out.float() * 255.0).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _run(audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return FallbackGenerator()(audio, face)


def _mean_diff(img: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(img.astype(np.int16) - ref.astype(np.int16)).mean())


def test_interface_matches_a_weightless_generator():
    gen = FallbackGenerator()
    assert FallbackGenerator.renderer_kind == "fallback"
    assert FallbackGenerator.model_id.startswith("fallback")
    assert isinstance(gen, torch.nn.Module)
    assert gen.state_dict() == {} and list(gen.parameters()) == []


def test_silence_returns_the_reference_exactly(crop):
    face = _face(crop, 3)
    audio = torch.full((3, 1, N_MELS, MEL_STEP), MEL_FLOOR_VALUE)
    out = _run(audio, face)
    assert torch.equal(out, face[:, 3:])
    assert np.array_equal(_to_uint8(out), np.repeat(crop[None], 3, axis=0))


def test_speech_moves_the_mouth_and_nothing_above_it(crop):
    out = _to_uint8(_run(_audio(0.0, 0.6, 1.0), _face(crop, 3)))
    silence, medium, loud = (_mean_diff(o[MOUTH], crop[MOUTH]) for o in out)
    assert silence == 0.0
    assert medium > 4.0 and loud > medium + 2.0, (medium, loud)
    for o in out:
        assert np.array_equal(o[TOP], crop[TOP])
        # The pasted box must not show a seam: its outer ring stays the reference.
        for edge in (np.s_[0], np.s_[-1], np.s_[:, 0], np.s_[:, -1]):
            assert np.array_equal(o[edge], crop[edge])


def test_open_mouth_is_dark_inside(crop):
    """An opening reads as a mouth (dark gap below the upper lip), not a stretched chin."""
    out = _to_uint8(_run(_audio(1.0), _face(crop, 1)))[0]
    gap = np.s_[76:82, 42:55]
    assert out[gap].mean() < 0.5 * crop[gap].mean()


@pytest.mark.parametrize("batch", [1, 4])
def test_shapes_dtype_and_range_4d(crop, batch):
    out = _run(_audio(*np.linspace(0, 1, batch)), _face(crop, batch))
    assert out.shape == (batch, 3, IMG_SIZE, IMG_SIZE) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_5d_form_folds_time_into_the_batch(crop):
    b, t = 2, 5
    audio4 = _audio(*np.linspace(0, 1, b * t))
    face4 = _face(crop, b * t)
    audio5 = audio4.reshape(b, t, 1, N_MELS, MEL_STEP)
    face5 = face4.reshape(b, t, 6, IMG_SIZE, IMG_SIZE).transpose(1, 2)
    out5 = _run(audio5, face5)
    assert out5.shape == (b, 3, t, IMG_SIZE, IMG_SIZE) and out5.dtype == torch.float32
    expected = _run(audio4, face4).reshape(b, t, 3, IMG_SIZE, IMG_SIZE).transpose(1, 2)
    assert torch.equal(out5, expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_autocast_on_cpu(crop, dtype):
    audio, face = _audio(0.0, 0.5, 1.0), _face(crop, 3)
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
        out = FallbackGenerator()(audio, face)
    assert out.dtype == torch.float32
    assert torch.allclose(out, _run(audio, face), atol=1e-6)


def test_half_precision_inputs_give_half_outputs(crop):
    audio, face = _audio(0.0, 1.0), _face(crop, 2)
    out = _run(audio.bfloat16(), face.bfloat16())
    assert out.dtype == torch.bfloat16
    assert (out.float() - _run(audio, face)).abs().max() < 0.02


def test_deterministic_and_batch_independent(crop):
    """Frame k renders the same alone, in a batch of 8, or in another chunking."""
    loud = np.linspace(0.0, 1.0, 8)
    audio = _audio(*loud, tilt=0.5)
    audio[3] = torch.from_numpy(_window(0.8, tilt=-0.6))  # a spread vowel in the mix
    face = _face(crop, 8)
    whole = _run(audio, face)
    assert torch.equal(whole, _run(audio, face))
    for k in range(8):
        assert torch.equal(whole[k:k + 1], _run(audio[k:k + 1], face[k:k + 1]))
    chunks = torch.cat([_run(audio[:3], face[:3]), _run(audio[3:], face[3:])])
    assert torch.equal(whole, chunks)


def test_rising_energy_opens_the_mouth_monotonically(crop):
    loud = np.linspace(0.0, 1.0, 12)
    audio = _audio(*loud)
    _, opening, _ = FallbackGenerator().mouth_features(audio)
    assert opening[0] == 0.0 and opening[-1] > 0.8
    steps = torch.diff(opening)
    assert (steps >= 0).all() and (steps[2:] > 0).all()  # closed below the noise knee only
    assert steps.max() < 0.2  # small energy steps give small motion steps: no jumps
    change = [_mean_diff(o[MOUTH], crop[MOUTH]) for o in _to_uint8(_run(audio, _face(crop, 12)))]
    assert change[0] == change[1] == 0.0  # below the noise knee nothing moves at all
    assert all(b > a for a, b in zip(change[1:], change[2:])), change


def test_overlapping_windows_change_the_mouth_gradually():
    """Consecutive frames' windows share 80 % of their columns: features move a little."""
    rng = np.random.default_rng(0)
    envelope = np.clip(np.sin(np.linspace(0, 3 * np.pi, 200)), 0, None) * 5.0
    mel = MEL_FLOOR_VALUE + envelope[None] * (1 - 0.2 * np.arange(N_MELS) / N_MELS)[:, None]
    mel = (mel + rng.normal(0, 0.1, mel.shape)).clip(-4, 4).astype(np.float32)
    starts = (np.arange(50) * 3.2).astype(int)
    windows = mel[:, starts[:, None] + np.arange(MEL_STEP)].transpose(1, 0, 2)
    _, opening, rounding = FallbackGenerator().mouth_features(torch.from_numpy(windows)[:, None])
    assert opening.max() > 0.6 and opening.min() < 0.05
    assert torch.diff(opening).abs().max() < 0.3
    assert torch.diff(rounding).abs().max() < 0.3


def test_lip_shape_follows_spectral_balance(crop):
    """Low-heavy (rounded, 'oo') vs high-heavy (spread, 'ee') windows of similar loudness."""
    rounded = _audio(0.9, tilt=0.9)
    spread = _audio(1.0, tilt=-0.5)
    gen = FallbackGenerator()
    _, open_r, round_r = gen.mouth_features(rounded)
    _, open_s, round_s = gen.mouth_features(spread)
    assert round_r.item() > 0.3 and round_s.item() < -0.3
    assert open_r.item() > 0.5 and open_s.item() > 0.5

    def dark_width(out: np.ndarray) -> int:
        dark = out.astype(np.int16).sum(-1) < crop.astype(np.int16).sum(-1) * 0.5
        return int(dark[70:86].any(axis=0).sum())

    width_r = dark_width(_to_uint8(_run(rounded, _face(crop, 1)))[0])
    width_s = dark_width(_to_uint8(_run(spread, _face(crop, 1)))[0])
    assert 0 < width_r < width_s - 4, (width_r, width_s)


def test_real_speech_opens_in_words_and_closes_in_pauses(crop):
    """The official mel of speech_9s (when the golden copy is in tests/data)."""
    data = AVATAR.parent
    if not (data / "speech_9s_mel.npy").exists():
        pytest.skip("tests/data/speech_9s_mel.npy not present")
    mel = np.load(data / "speech_9s_mel.npy")
    starts = np.asarray(json.loads((data / "speech_9s_windows.json").read_text())["start_indices"])
    windows = torch.from_numpy(mel[:, starts[:, None] + np.arange(MEL_STEP)].transpose(1, 0, 2))
    energy, opening, _ = FallbackGenerator().mouth_features(windows[:, None])
    assert opening[energy == 0].eq(0).all() and (energy == 0).sum() >= 2  # edge silences
    assert 0.3 < opening.mean() < 0.7 and opening.max() > 0.85
    assert (opening < 0.05).sum() >= 10  # the pauses between phrases close the mouth
    step = torch.diff(opening).abs()  # 25 fps, 80 % window overlap: small steps
    assert step.mean() < 0.15 and step.max() < 0.6  # the largest are speech onsets
    out = _to_uint8(_run(windows[:, None], _face(crop, len(windows))))
    silent = (energy == 0).numpy()
    assert (out[silent] == crop[None]).all()
    assert (out[:, TOP] == crop[None, TOP]).all()
