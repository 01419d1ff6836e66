"""OpenVINO backend (CPU): the generator converted once to OpenVINO IR, compiled per mode.

Optional: ``pip install openvino`` (about 180 MB); without it the modes are not
candidates. Converting the module (a trace) takes seconds, so the IR is kept under
the selection folder by model id and later starts compile the saved IR instead.
The generator must not take ``positions=``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..hparams import IMG_SIZE, MEL_STEP, N_MELS

log = logging.getLogger(__name__)

_HINTS = {"fp32": "f32", "bf16": "bf16"}
_EXAMPLE_BATCH = 2


def _convert(generator: torch.nn.Module):
    import openvino as ov

    example = (torch.zeros(_EXAMPLE_BATCH, 1, N_MELS, MEL_STEP), torch.zeros(_EXAMPLE_BATCH, 6, IMG_SIZE, IMG_SIZE))
    shapes = [ov.PartialShape([-1, 1, N_MELS, MEL_STEP]), ov.PartialShape([-1, 6, IMG_SIZE, IMG_SIZE])]
    with torch.inference_mode(False), torch.no_grad():
        return ov.convert_model(generator.eval().float(), example_input=example, input=shapes)


def _ir_path(generator: torch.nn.Module, cache_dir: Path | None) -> Path | None:
    from importlib.metadata import version

    model_id = getattr(generator, "model_id", "")
    return cache_dir / "openvino" / f"{model_id}-{version('openvino')}.xml" if cache_dir and model_id else None


def _ir_model(generator: torch.nn.Module, cache_dir: Path | None):
    """The generator as an OpenVINO model, from ``cache_dir`` when it was converted before."""
    import openvino as ov

    path = _ir_path(generator, cache_dir)
    if path is not None and path.is_file() and path.with_suffix(".bin").is_file():
        try:
            return ov.Core().read_model(str(path))
        except RuntimeError as exc:  # a damaged file: convert again
            log.warning("cannot read the cached OpenVINO model %s (%s); converting again", path, exc)
    model = _convert(generator)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".ir-", dir=path.parent))
            ov.save_model(model, str(tmp / "m.xml"), compress_to_fp16=False)
            os.replace(tmp / "m.bin", path.with_suffix(".bin"))  # weights first: an .xml is only there with its .bin
            os.replace(tmp / "m.xml", path)
            tmp.rmdir()
        except OSError as exc:
            log.warning("cannot keep the OpenVINO model in %s (%s)", path.parent, exc)
    return model


class OpenVinoBackend:
    """One compiled OpenVINO model; calls go through a single infer request."""

    def __init__(self, mode, generator: torch.nn.Module, cache_dir: Path | None = None):
        import openvino as ov

        self.mode = mode.name
        config = {"INFERENCE_PRECISION_HINT": _HINTS[mode.dtype], "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": torch.get_num_threads()}  # fmt: skip
        self._compiled = ov.Core().compile_model(_ir_model(generator, cache_dir), "CPU", config)
        self._request = self._compiled.create_infer_request()

    def __call__(self, audio: torch.Tensor, face: torch.Tensor, **extra) -> torch.Tensor:
        if extra:
            raise TypeError(f"the OpenVINO backend takes no {sorted(extra)}")
        inputs = [np.ascontiguousarray(audio.float().cpu().numpy()), np.ascontiguousarray(face.float().cpu().numpy())]
        out = self._request.infer(inputs)[0]
        return torch.from_numpy(np.array(out, copy=True))


def ir_cached(generator: torch.nn.Module, cache_dir: Path | None) -> bool:
    """True when the converted model of ``generator`` is already on disk."""
    path = _ir_path(generator, cache_dir)
    return path is not None and path.is_file() and path.with_suffix(".bin").is_file()
