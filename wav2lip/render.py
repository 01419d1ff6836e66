"""Batched inference: mel windows + avatar crops -> pasted full frames.

One ``Renderer`` holds a generator (the official ``Wav2Lip`` or the weights-free
``FallbackGenerator``: same forward signature) on its device. Rendering frames
[a, b) needs only the avatar, the whole-audio mel and the frame range, so any chunk
renders on its own and a chunked render equals a one-pass render.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import nullcontext
from typing import Callable, Iterator

import numpy as np
import torch

from .audio import mel_windows
from .avatar import Avatar
from .errors import InvalidSettings, RenderError
from .hparams import IMG_SIZE
from .options import RenderOptions
from .paste import paste_faces

log = logging.getLogger(__name__)

#: Default frames per model call, measured per device (bench/engine.py).
DEFAULT_BATCH = {"cpu": 16, "cuda": 128}
_HALF = IMG_SIZE // 2
_PIPELINE_DEPTH = 2  #: batches in flight between the model and the paste/encode thread


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidSettings("device cuda was requested but no CUDA GPU is available")
    return device


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX-512 BF16, where bf16 autocast beats fp32 ~4x."""
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        return False
    if "AMX" in isa or "AVX512_BF16" in isa:
        return True
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read(20000)
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """The fastest precision the device supports for "auto"; checked otherwise."""
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise InvalidSettings("fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    return precision


class Renderer:
    """A generator on a device, rendering batches of output frames.

    The generator is moved (and, for half precision on CUDA, converted) in place: give
    each Renderer its own model instance.
    """

    def __init__(self, generator: torch.nn.Module, options: RenderOptions = RenderOptions()):
        self.device = resolve_device(options.device)
        self.precision = resolve_precision(options.precision, self.device)
        self.batch_size = options.batch_size or DEFAULT_BATCH[self.device.type]
        if options.threads and self.device.type == "cpu":
            torch.set_num_threads(options.threads)
        self.kind: str = getattr(generator, "renderer_kind", "wav2lip")
        self.model_id: str = getattr(generator, "model_id", self.kind)
        # fp32 keeps the official layout (NCHW weights, NHWC-strided input as the official
        # np.transpose gives): channels_last weights pick other conv kernels whose rounding
        # differs, and fp32 would no longer match the official inference bit for bit.
        weights_format = torch.contiguous_format if self.precision == "fp32" else torch.channels_last
        model = generator.eval().to(self.device, memory_format=weights_format)
        if self.device.type == "cuda" and self.precision in ("fp16", "bf16"):
            model = model.to(torch.float16 if self.precision == "fp16" else torch.bfloat16)
        if self.device.type == "cuda" and self.precision == "fp32":
            # "fp32 is exact": no TF32 tensor-core shortcuts (process-wide; a worker owns its process).
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.model = model
        param = next(model.parameters(), None)  # the weights-free generator has none
        self._in_dtype = param.dtype if param is not None else torch.float32

    def _autocast(self):
        if self.device.type == "cpu" and self.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    @torch.inference_mode()
    def predict(self, crops: np.ndarray, windows: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        """(B, 96, 96, 3) uint8 predicted faces from crops (B, 96, 96, 3) uint8 and windows (B, 80, 16).

        ``positions`` (B,) int64 timeline frame indices reach generators with ``uses_positions``.
        """
        face = torch.from_numpy(crops).to(self.device, non_blocking=True)
        face = face.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)  # NCHW view, channels_last memory
        masked = face.clone()
        masked[:, :, _HALF:] = 0
        face_in = torch.cat((masked, face), dim=1).contiguous(memory_format=torch.channels_last).to(self._in_dtype)
        # (B, 1, 80, 16) with the official strides (1280, 1, 16, 1), its np.transpose of a (B, 80, 16, 1)
        # array: with one channel both layouts count as contiguous, yet the strides steer the kernel choice.
        audio = torch.from_numpy(np.ascontiguousarray(windows).reshape(*windows.shape, 1)).permute(0, 3, 1, 2)
        audio = audio.to(self.device, non_blocking=True).to(self._in_dtype)
        try:
            with self._autocast():
                if positions is not None and getattr(self.model, "uses_positions", False):
                    out = self.model(audio, face_in, positions=torch.as_tensor(positions, dtype=torch.int64))
                else:
                    out = self.model(audio, face_in)
        except RuntimeError as exc:
            raise RenderError(f"model failed on a batch of {len(crops)}: {str(exc)[:300]}") from None
        # Official: x255 then truncate to uint8 (no rounding), HWC.
        return (out.float() * 255.0).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()

    def iter_frames(
        self,
        avatar: Avatar,
        mel: np.ndarray,
        fps: float,
        start: int,
        stop: int,
        loop: str = "pingpong",
        timings: dict[str, float] | None = None,
    ) -> Iterator[np.ndarray]:
        """Pasted frames [start, stop) in batches: (b, H, W, 3) uint8 BGR arrays.

        Each yielded array is a fresh buffer the consumer may keep. Seconds spent in
        the model and in pasting are added to ``timings["model"]``/``["paste"]``.
        """
        if not 0 <= start < stop:
            raise InvalidSettings(f"empty or negative frame range [{start}, {stop})")
        timings = {} if timings is None else timings
        for a in range(start, stop, self.batch_size):
            b = min(stop, a + self.batch_size)
            idx = avatar.frame_indices(a, b, loop)
            t0 = time.perf_counter()
            faces = self.predict(avatar.crops[idx], mel_windows(mel, fps, a, b), np.arange(a, b))
            t1 = time.perf_counter()
            frames = avatar.frames[idx]  # the one copy of each output frame
            paste_faces(frames, avatar.boxes[idx], faces)
            t2 = time.perf_counter()
            timings["model"] = timings.get("model", 0.0) + t1 - t0
            timings["paste"] = timings.get("paste", 0.0) + t2 - t1
            yield frames

    def render(
        self,
        avatar: Avatar,
        mel: np.ndarray,
        fps: float,
        start: int,
        stop: int,
        sink: Callable[[np.ndarray], None],
        loop: str = "pingpong",
        progress: Callable[[int], None] | None = None,
        timings: dict[str, float] | None = None,
    ) -> None:
        """Render [start, stop) into ``sink`` with the model and the sink overlapped.

        The model runs in this thread; pasting happens inside ``iter_frames`` and the
        sink (typically the encoder's pipe) runs in a second thread fed by a small
        queue, so encoding batch k overlaps inference of batch k+1.
        """
        handoff: queue.Queue = queue.Queue(maxsize=_PIPELINE_DEPTH)
        failure: list[BaseException] = []
        timings = {} if timings is None else timings

        def consume():
            while (item := handoff.get()) is not None:
                if failure:
                    continue
                try:
                    t0 = time.perf_counter()
                    sink(item)
                    timings["encode"] = timings.get("encode", 0.0) + time.perf_counter() - t0
                    if progress:
                        progress(len(item))
                except BaseException as exc:  # handed to the producer, re-raised below
                    failure.append(exc)

        thread = threading.Thread(target=consume, name="w2l-sink", daemon=True)
        thread.start()
        try:
            for frames in self.iter_frames(avatar, mel, fps, start, stop, loop, timings):
                if failure:
                    break
                handoff.put(frames)
        finally:
            handoff.put(None)
            thread.join()
        if failure:
            raise failure[0]
