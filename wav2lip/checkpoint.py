"""Find, validate and load official Wav2Lip checkpoints, strictly.

A checkpoint is either the official training dict (``{'state_dict': {'module.<key>':
tensor}, 'optimizer': ..., 'global_step': int, 'global_epoch': int}``) or a bare state
dict, with or without the DataParallel ``module.`` prefix. Anything else is a
``CheckpointError`` naming the file and the first bad key: never a partial load.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from pathlib import Path

import torch

from .errors import CheckpointError
from .model import Wav2Lip

log = logging.getLogger(__name__)

#: Preference order when several official files are in the checkpoint folder.
CHECKPOINT_NAMES = ("wav2lip_gan.pth", "wav2lip.pth")
_PREFIX = "module."
#: The random weights' pre-sigmoid logits have a std of ~1300: 99.5% of the output pixels sit at
#: exactly 0 or 1, and a PSNR between two precisions then mostly counts pixels that flip between 0
#: and 255. Dividing the last 1x1 conv by this brings the std to ~1.3, so nothing saturates.
TEMPER_DIVISOR = 1000.0
_OUTPUT_CONV = "output_block.1."


def find_checkpoint(directory: str | Path, preferred: str | None = None) -> Path | None:
    """The checkpoint to use from ``directory``: ``preferred`` if given, else GAN before plain."""
    directory = Path(directory)
    names = (preferred,) if preferred else CHECKPOINT_NAMES
    for name in names:
        path = directory / name
        if path.is_file():
            return path
    if preferred:
        raise CheckpointError(f"configured checkpoint {directory / preferred} does not exist", str(directory / preferred))
    return None


def file_sha256(path: str | Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file: the model id in cache keys."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _strip_prefix(state: dict) -> dict:
    # The official loader replaces every occurrence; keys only ever hold it as a prefix.
    return {k.replace(_PREFIX, ""): v for k, v in state.items()}


def _read(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a PyTorch file ({type(exc).__name__}: {str(exc)[:200]})", str(path)
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors", str(path))
    return _strip_prefix(obj)


def validate_state_dict(state: dict, model: torch.nn.Module, path: str | Path = "<memory>") -> None:
    """Raise ``CheckpointError`` naming the first missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    for key, ref in expected.items():
        if key not in state:
            raise CheckpointError(f"checkpoint {path} lacks key {key!r} (is it a Wav2Lip generator?)", str(path))
        got = state[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"checkpoint {path}: key {key!r} has shape {tuple(got.shape)}, expected {tuple(ref.shape)}", str(path)
            )
        if got.dtype.is_floating_point != ref.dtype.is_floating_point:
            raise CheckpointError(f"checkpoint {path}: key {key!r} has dtype {got.dtype}, expected {ref.dtype}", str(path))
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"checkpoint {path} has unexpected key {extra[0]!r} ({len(extra)} in all)", str(path))


def load_checkpoint(path: str | Path) -> Wav2Lip:
    """A ``Wav2Lip`` in eval mode on the CPU with the file's weights; ``model_id`` = sha256."""
    path = Path(path)
    state = _read(path)
    model = Wav2Lip()
    validate_state_dict(state, model, path)
    model.load_state_dict(state, strict=True)
    model.eval()
    model.model_id = file_sha256(path)
    log.info("loaded Wav2Lip checkpoint %s (sha256 %s)", path, model.model_id[:12])
    return model


def random_state_dict(seed: int = 0, tempered: bool = True) -> dict:
    """Random weights whose output really depends on face and audio (for tests and benchmarks).

    PyTorch's default init makes the generator's output nearly constant (the BatchNorm
    statistics never saw data), so running statistics are randomised and weights scaled.
    ``tempered`` (the default) divides the last 1x1 conv by ``TEMPER_DIVISOR`` so that the
    sigmoid does not saturate: precision and audio-dependence checks then see real
    differences; ``tempered=False`` gives the saturated weights of earlier versions.
    """
    gen = torch.Generator().manual_seed(seed)
    model = Wav2Lip()
    state = model.state_dict()
    for key, tensor in state.items():
        if key.endswith("running_mean"):
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
        elif key.endswith("running_var"):
            tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.5 + 0.5)
        elif key.endswith("conv_block.1.weight"):  # BatchNorm gamma
            tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.5 + 0.75)
        elif key.endswith("conv_block.1.bias"):  # BatchNorm beta
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
        elif key.endswith("weight") and tensor.dim() == 4:
            fan_in = tensor[0].numel() if "conv_block.0" in key and "decoder" not in key else tensor.shape[0] * tensor[0, 0].numel()
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        elif key.endswith("bias"):
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.05)
    if tempered:
        for key in (_OUTPUT_CONV + "weight", _OUTPUT_CONV + "bias"):
            state[key].div_(TEMPER_DIVISOR)
    return state


def save_official_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` the way the official training script does (``module.`` keys)."""
    path = Path(path)
    payload = {
        "state_dict": {_PREFIX + k: v for k, v in state.items()},
        "optimizer": None,
        "global_step": 0,
        "global_epoch": 0,
    }
    torch.save(payload, path)
    return path
