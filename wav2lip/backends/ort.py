"""ONNX Runtime backend (CPU): the generator exported to ONNX, run as fp32 or static int8.

Needs ``onnxruntime`` (already installed for Piper) and ``onnx`` (the exporter's
dependency, about 33 MB with ml_dtypes). int8 is post-training static quantisation
(QDQ, per-channel int8 weights, uint8 activations) calibrated on the model inputs it is
given; whether the result is accurate enough is checked by the caller
(``wav2lip/accuracy.py``). The generator must not take ``positions=``.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidSettings

log = logging.getLogger(__name__)

ONNX_OPSET = 17
CALIBRATION_BATCH = 4  #: rows per calibration call
_EXAMPLE_BATCH = 2
_NAMES = ("audio", "face")


def export_onnx(generator: torch.nn.Module, path: Path, crop_size: int, n_mels: int, mel_step: int) -> Path:
    """Write ``generator`` as an ONNX file with a dynamic batch dimension."""
    example = (torch.zeros(_EXAMPLE_BATCH, 1, n_mels, mel_step), torch.zeros(_EXAMPLE_BATCH, 6, crop_size, crop_size))
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(generator.eval().float(), example, str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=list(_NAMES), output_names=["out"],
                          dynamic_axes={"audio": {0: "batch"}, "face": {0: "batch"}, "out": {0: "batch"}})  # fmt: skip
    return path


class _Calibration:
    """onnxruntime's CalibrationDataReader over (audio, face) arrays, a few rows at a time."""

    def __init__(self, audio: np.ndarray, face: np.ndarray):
        self.audio, self.face, self.at = audio, face, 0

    def get_next(self):
        if self.at >= len(self.audio):
            return None
        rows = slice(self.at, self.at + CALIBRATION_BATCH)
        self.at += CALIBRATION_BATCH
        return {"audio": self.audio[rows], "face": self.face[rows]}


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy())


class OnnxRuntimeBackend:
    """One ONNX Runtime session (fp32 or int8) of the generator."""

    def __init__(self, mode, generator: torch.nn.Module, calibration: tuple[torch.Tensor, torch.Tensor] | None = None):
        import onnxruntime as ort

        from ..generator import generator_spec

        self.mode = mode.name
        spec = generator_spec(generator)
        if mode.dtype == "int8" and calibration is None:
            raise InvalidSettings("int8 needs calibration inputs (the avatar crops and mel windows of real renders)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3  # errors only
        with tempfile.TemporaryDirectory(prefix="w2l-onnx-") as tmp:
            path = export_onnx(generator, Path(tmp) / "fp32.onnx", spec.crop_size, spec.n_mels, spec.mel_step)
            if mode.dtype == "int8":
                path = self._quantize(path, Path(tmp) / "int8.onnx", *calibration)
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    @staticmethod
    def _quantize(src: Path, dst: Path, audio: torch.Tensor, face: torch.Tensor) -> Path:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)  # the quantiser's advice goes to the root logger, once per layer
            try:
                quantize_static(str(src), str(dst), _Calibration(_numpy(audio), _numpy(face)),
                                quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
            finally:
                logging.disable(logging.NOTSET)
        return dst

    def __call__(self, audio: torch.Tensor, face: torch.Tensor, **extra) -> torch.Tensor:
        if extra:
            raise TypeError(f"the ONNX Runtime backend takes no {sorted(extra)}")
        out = self._session.run(None, {"audio": _numpy(audio), "face": _numpy(face)})[0]
        return torch.from_numpy(out)
