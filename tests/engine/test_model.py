"""The generator's weight layout and the strict checkpoint loader."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

import wav2lip
from wav2lip import CheckpointError, Wav2Lip, find_checkpoint, load_checkpoint, load_generator
from wav2lip.checkpoint import CHECKPOINT_NAMES

pytestmark = pytest.mark.timeout(120)

N_PARAMS = 36_298_035
_DTYPES = {"float32": torch.float32, "int64": torch.int64}


def _spec(data_dir: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    rows = {}
    lines = [ln for ln in (data_dir / "state_dict_spec.tsv").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0].split("\t") == ["key", "shape", "dtype"]
    for line in lines[1:]:
        key, shape, dtype = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        rows[key] = (dims, _DTYPES[dtype])
    return rows


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return wav2lip.random_state_dict(1)


def test_state_dict_matches_official_spec(data_dir):
    spec = _spec(data_dir)
    ours = Wav2Lip().state_dict()
    assert len(spec) == 352
    assert list(ours) == list(spec)  # same keys, same order
    for key, (shape, dtype) in spec.items():
        assert tuple(ours[key].shape) == shape, key
        assert ours[key].dtype == dtype, key


def test_parameter_count():
    assert sum(p.numel() for p in Wav2Lip().parameters() if p.requires_grad) == N_PARAMS


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("prefixed", [True, False], ids=["module-prefix", "bare-keys"])
@pytest.mark.parametrize("wrapped", [True, False], ids=["training-dict", "bare-state-dict"])
def test_official_formats_load_strictly(tmp_path, state, prefixed, wrapped):
    keys = {("module." + k if prefixed else k): v for k, v in state.items()}
    obj = {"state_dict": keys, "optimizer": None, "global_step": 3, "global_epoch": 1} if wrapped else keys
    model = load_checkpoint(_save(obj, tmp_path / "w.pth"))
    assert not model.training
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, tensor in state.items():
        assert torch.equal(loaded[key], tensor), key


def test_save_official_checkpoint_writes_the_training_layout(random_checkpoint):
    obj = torch.load(random_checkpoint, map_location="cpu", weights_only=True)
    assert set(obj) == {"state_dict", "optimizer", "global_step", "global_epoch"}
    assert all(k.startswith("module.") for k in obj["state_dict"])
    assert len(obj["state_dict"]) == 352


def test_model_id_is_file_sha256(random_checkpoint, random_model):
    digest = hashlib.sha256(Path(random_checkpoint).read_bytes()).hexdigest()
    assert random_model.model_id == digest
    assert wav2lip.file_sha256(random_checkpoint) == digest


def test_truncated_file_names_the_file(tmp_path, random_checkpoint):
    data = Path(random_checkpoint).read_bytes()
    path = tmp_path / "half.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_not_a_state_dict(tmp_path):
    path = _save({"state_dict": {"a": 1}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="odd.pth"):
        load_checkpoint(path)


RESHAPED = "audio_encoder.0.conv_block.0.weight"
REMOVED = "output_block.1.bias"
EXTRA = "face_decoder_blocks.9.0.conv_block.0.weight"


def _reshaped(state):
    bad = dict(state)
    bad[RESHAPED] = bad[RESHAPED].reshape(-1)
    return bad


def _removed(state):
    return {k: v for k, v in state.items() if k != REMOVED}


def _extra(state):
    return {**state, EXTRA: torch.zeros(3)}


@pytest.mark.parametrize("mutate, key", [(_reshaped, RESHAPED), (_removed, REMOVED), (_extra, EXTRA)],
                         ids=["reshaped", "removed", "extra"])  # fmt: skip
def test_mismatched_checkpoint_names_the_key(tmp_path, state, mutate, key):
    assert (key in state) != (mutate is _extra)
    path = wav2lip.save_official_checkpoint(mutate(state), tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert repr(key) in str(info.value)
    assert str(path) in str(info.value)


def test_random_weights_depend_on_audio_and_face(random_model):
    """Random weights are only useful for tests if the output follows the inputs."""
    rng = np.random.default_rng(0)
    face = torch.from_numpy(rng.random((1, 6, 96, 96), dtype=np.float32))
    face[:, :3, 48:] = 0
    quiet = torch.full((1, 1, 80, 16), -4.0)
    loud = torch.from_numpy(rng.uniform(-4, 2, (1, 1, 80, 16)).astype(np.float32))
    with torch.inference_mode():
        a, b = random_model(quiet, face), random_model(loud, face)
        c = random_model(loud, face.flip(2))
    assert a.shape == (1, 3, 96, 96)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    assert float((a - b).abs().mean()) * 255 > 2  # clearly different (a few uint8 levels on average)
    assert float((b - c).abs().mean()) * 255 > 2
    assert float(a.std()) * 255 > 5  # not a flat image


def test_find_checkpoint_prefers_gan(tmp_path):
    assert CHECKPOINT_NAMES == ("wav2lip_gan.pth", "wav2lip.pth")
    assert find_checkpoint(tmp_path) is None
    (tmp_path / "wav2lip.pth").write_bytes(b"x")
    assert find_checkpoint(tmp_path) == tmp_path / "wav2lip.pth"
    (tmp_path / "wav2lip_gan.pth").write_bytes(b"x")
    assert find_checkpoint(tmp_path) == tmp_path / "wav2lip_gan.pth"
    assert find_checkpoint(tmp_path, preferred="wav2lip.pth") == tmp_path / "wav2lip.pth"
    with pytest.raises(CheckpointError, match="other.pth"):
        find_checkpoint(tmp_path, preferred="other.pth")


def test_corrupt_checkpoint_in_dir_raises(tmp_path, random_checkpoint):
    """A broken file is an error, never a silent switch to the weights-free renderer."""
    (tmp_path / "wav2lip.pth").write_bytes(Path(random_checkpoint).read_bytes())
    (tmp_path / "wav2lip_gan.pth").write_bytes(b"not a pytorch file")
    with pytest.raises(CheckpointError, match="wav2lip_gan.pth"):
        load_generator(checkpoint_dir=tmp_path)


def test_load_generator_picks_the_checkpoint(tmp_path, random_checkpoint):
    (tmp_path / "wav2lip.pth").write_bytes(Path(random_checkpoint).read_bytes())
    model = load_generator(checkpoint_dir=tmp_path)
    assert isinstance(model, Wav2Lip)
    assert getattr(model, "renderer_kind", "wav2lip") == "wav2lip"
    assert model.model_id == wav2lip.file_sha256(random_checkpoint)
    assert isinstance(load_generator(random_checkpoint), Wav2Lip)


def test_empty_dir_gives_fallback(tmp_path):
    generator = load_generator(checkpoint_dir=tmp_path)
    assert not isinstance(generator, Wav2Lip)
    assert generator.renderer_kind == "fallback"
    assert isinstance(load_generator(), type(generator))


def test_random_weights_are_tempered_not_saturated():
    """The default random weights keep the sigmoid out of saturation; ``tempered=False`` does not."""
    rng = np.random.default_rng(1)
    face = torch.from_numpy(rng.random((2, 6, 96, 96), dtype=np.float32))
    audio = torch.from_numpy(rng.uniform(-4, 2, (2, 1, 80, 16)).astype(np.float32))
    saturated = {}
    for tempered in (True, False):
        model = Wav2Lip()
        model.load_state_dict(wav2lip.random_state_dict(0, tempered=tempered))
        with torch.inference_mode():
            out = model.eval()(audio, face)
        saturated[tempered] = float(((out * 255).to(torch.uint8).eq(0) | (out * 255).to(torch.uint8).eq(255)).float().mean())
    assert saturated[True] < 0.01
    assert saturated[False] > 0.9
