"""Backends: one generator run by one library in one numeric mode, behind one call.

A *mode* names a backend and its numerics; the mode name is what ``Renderer.precision``
reports and what result-cache keys hold. Every backend takes the renderer's fp32
inputs (audio (B, 1, 80, 16), face (B, 6, 96, 96) channels_last-strided, both on the
renderer's device) and returns (B, 3, 96, 96) in [0, 1] on the same device. A mode
whose library is not installed is simply not available.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from ..errors import InvalidSettings


class Backend(Protocol):
    mode: str

    def __call__(self, audio: torch.Tensor, face: torch.Tensor, **extra) -> torch.Tensor: ...


@dataclass(frozen=True)
class Mode:
    """One way of running the generator."""

    name: str
    library: str  #: "torch" or "openvino"
    dtype: str  #: "fp32", "bf16", "fp16": the arithmetic of the convolutions
    devices: tuple[str, ...]  #: device types it runs on
    exact: bool = False  #: bit-for-bit the official inference (only "fp32")
    auto: bool = True  #: a candidate of "auto"; False: only when asked for by name
    checked_at_load: bool = False  #: calibrated and checked against fp32 each time it loads


#: Every mode, the exact one first. Near-ties in selection go to the higher measured PSNR.
MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("fp32", "torch", "fp32", ("cpu", "cuda"), exact=True),  # official layout: NCHW weights
    Mode("fp32-fast", "torch", "fp32", ("cpu", "cuda")),  # channels_last (+ TF32 on CUDA)
    Mode("bf16", "torch", "bf16", ("cpu", "cuda")),  # CPU: autocast; CUDA: bf16 weights
    Mode("fp16", "torch", "fp16", ("cpu", "cuda")),  # CPU: autocast; CUDA: fp16 weights
    Mode("openvino-fp32", "openvino", "fp32", ("cpu",)),
    Mode("openvino-bf16", "openvino", "bf16", ("cpu",)),
    Mode("onnx-fp32", "onnxruntime", "fp32", ("cpu",)),
    # Static QDQ quantisation calibrated on real renders: opt-in, refused below its own floor.
    Mode("int8", "onnxruntime", "int8", ("cpu",), auto=False, checked_at_load=True),
)}  # fmt: skip
#: The Python packages each library needs (ONNX Runtime needs onnx to export the module).
_PACKAGES = {"torch": (), "openvino": ("openvino",), "onnxruntime": ("onnxruntime", "onnx")}
MODE_NAMES = tuple(MODES)


def library_installed(library: str) -> bool:
    return all(importlib.util.find_spec(package) is not None for package in _PACKAGES[library])


def available_modes(device: torch.device, auto_only: bool = True) -> list[str]:
    """The modes that can run on ``device`` with the libraries installed here (``auto_only``: auto's candidates)."""
    return [m.name for m in MODES.values()
            if device.type in m.devices and library_installed(m.library) and (m.auto or not auto_only)]  # fmt: skip


def check_mode(name: str, device: torch.device) -> Mode:
    """The ``Mode`` called ``name``, or ``InvalidSettings`` saying why it cannot run here."""
    mode = MODES.get(name)
    if mode is None:
        raise InvalidSettings(f"unknown precision {name!r}; choose auto or one of {MODE_NAMES}")
    if device.type not in mode.devices:
        raise InvalidSettings(f"precision {name} runs on {'/'.join(mode.devices)}, not on {device.type}")
    if not library_installed(mode.library):
        raise InvalidSettings(f"precision {name} needs {' and '.join(_PACKAGES[mode.library])}, not installed here")
    return mode


def build_backend(name: str, generator: torch.nn.Module, device: torch.device, cache_dir: Path | None = None,
                  calibration: tuple[torch.Tensor, torch.Tensor] | None = None) -> Backend:
    """The generator ready to run in mode ``name`` (torch modes convert it in place).

    ``calibration``: (audio, face) model inputs for a quantised mode.
    """
    mode = check_mode(name, device)
    if mode.library == "onnxruntime":
        from .ort import OnnxRuntimeBackend

        return OnnxRuntimeBackend(mode, generator, calibration)
    if mode.library == "openvino":
        from .ov import OpenVinoBackend

        return OpenVinoBackend(mode, generator, cache_dir)
    from .eager import TorchBackend

    return TorchBackend(mode, generator, device)


def library_versions() -> dict[str, str]:
    """Versions of the libraries behind the available modes (part of the verdict key)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"torch": torch.__version__}
    for library, packages in _PACKAGES.items():
        if packages and library_installed(library):
            for package in packages:
                try:
                    versions[package] = version(package)
                except PackageNotFoundError:
                    versions[package] = "unknown"
    return versions
