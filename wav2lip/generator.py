"""What a lip-sync network must provide to be rendered: the generator interface.

The renderer, its backends and the service only rely on this: a module that maps a
batch of mel windows and masked+reference face crops to predicted crops, plus a few
facts about it. The official ``Wav2Lip`` and the weights-free ``FallbackGenerator``
both satisfy it; a second network satisfies it by having the same call and
attributes, and needs no change in ``serve_app/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from .hparams import IMG_SIZE, MEL_STEP, N_MELS


@runtime_checkable
class Generator(Protocol):
    """A lip-sync network.

    ``generator(audio, face)`` maps audio (B, 1, N_MELS, mel_step) float32 mel windows and
    face (B, 6, crop_size, crop_size) float32 in [0, 1] (channels 0-2: the crop with its
    lower half zeroed, 3-5: the reference crop, BGR) to (B, 3, crop_size, crop_size) in
    [0, 1]. A generator with ``uses_positions = True`` also takes ``positions=``: the
    (B,) int64 timeline frame index of each row. Optional attributes default as in
    ``generator_spec``.
    """

    def __call__(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class GeneratorSpec:
    """The facts the renderer needs about a generator (read once, with defaults)."""

    kind: str = "wav2lip"  #: ``renderer_kind``: what result metadata calls it
    model_id: str = ""  #: ``model_id``: weights identity, part of cache keys ("" = unknown)
    crop_size: int = IMG_SIZE  #: px, square face crop in and out
    n_mels: int = N_MELS  #: mel bins per window
    mel_step: int = MEL_STEP  #: mel columns per window
    uses_positions: bool = False  #: takes ``positions=`` (timeline frame indices)
    has_weights: bool = True  #: False: nothing a precision or backend can change


def generator_spec(generator: torch.nn.Module) -> GeneratorSpec:
    """The ``GeneratorSpec`` of ``generator``, from its attributes where it has them."""
    kind = getattr(generator, "renderer_kind", "wav2lip")
    return GeneratorSpec(
        kind=kind,
        model_id=str(getattr(generator, "model_id", "") or ""),
        crop_size=int(getattr(generator, "crop_size", IMG_SIZE)),
        n_mels=int(getattr(generator, "n_mels", N_MELS)),
        mel_step=int(getattr(generator, "mel_step", MEL_STEP)),
        uses_positions=bool(getattr(generator, "uses_positions", False)),
        has_weights=next(generator.parameters(), None) is not None if isinstance(generator, torch.nn.Module) else True,
    )


def model_inputs(crops, windows, device: torch.device, crop_size: int = IMG_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's float32 inputs from (B, S, S, 3) uint8 crops and (B, mels, steps) windows.

    As the official inference makes them: face (B, 6, S, S) = lower-half-masked crop +
    crop in [0, 1], channels_last-strided; audio (B, 1, mels, steps) with the official
    strides (its ``np.transpose`` of a (B, mels, steps, 1) array): with one channel both
    layouts count as contiguous, yet the strides steer the conv kernel choice.
    """
    import numpy as np

    face = torch.from_numpy(crops).to(device, non_blocking=True)
    face = face.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)  # NCHW view, channels_last memory
    masked = face.clone()
    masked[:, :, crop_size // 2 :] = 0
    face_in = torch.cat((masked, face), dim=1).contiguous(memory_format=torch.channels_last)
    audio = torch.from_numpy(np.ascontiguousarray(windows).reshape(*windows.shape, 1)).permute(0, 3, 1, 2)
    return audio.to(device, non_blocking=True), face_in
