"""PyTorch eager backend: the generator as an ``nn.Module``, in one of four layouts/numerics.

* ``fp32``: the official layout (NCHW weights, NHWC-strided input as the official
  ``np.transpose`` gives), no TF32: bit for bit the official inference.
* ``fp32-fast``: channels_last weights (other conv kernels, different rounding), TF32
  allowed on CUDA.
* ``bf16`` / ``fp16``: channels_last; on the CPU under autocast (weights stay fp32), on
  CUDA with the weights converted.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchBackend:
    """The generator moved (and on CUDA, for half modes, converted) in place for one mode."""

    def __init__(self, mode, generator: torch.nn.Module, device: torch.device):
        self.mode = mode.name
        self.device = device
        self._exact = mode.exact
        dtype = _DTYPES[mode.dtype]
        layout = torch.contiguous_format if mode.exact else torch.channels_last
        model = generator.eval().to(device, memory_format=layout)
        self._autocast_dtype = None
        if dtype != torch.float32:
            if device.type == "cuda":
                model = model.to(dtype)
            else:
                self._autocast_dtype = dtype
        self.model = model
        param = next(model.parameters(), None)  # the weights-free generator has none
        self._in_dtype = param.dtype if param is not None else torch.float32

    def _context(self):
        if self._autocast_dtype is not None:
            return torch.autocast(self.device.type, dtype=self._autocast_dtype)
        if self._exact and self.device.type == "cuda":
            # "fp32 is exact": no TF32 tensor-core shortcuts (scoped to this call).
            return torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False)
        return nullcontext()

    def __call__(self, audio: torch.Tensor, face: torch.Tensor, **extra) -> torch.Tensor:
        with self._context():
            return self.model(audio.to(self._in_dtype), face.to(self._in_dtype), **extra)
