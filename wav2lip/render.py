"""Batched inference: mel windows + avatar crops -> pasted full frames.

One ``Renderer`` holds a generator (anything satisfying ``wav2lip.generator.Generator``:
the official ``Wav2Lip`` or the weights-free ``FallbackGenerator``) run by one backend
in one mode on its device. The mode and batch size are given, or chosen by
measurement (``wav2lip/selection.py``, verdict kept on disk); ``Renderer.selection``
says what was picked and why. Rendering frames [a, b) needs only the avatar, the
whole-audio mel and the frame range, so any chunk renders on its own and a chunked
render equals a one-pass render.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .audio import mel_windows
from .avatar import Avatar
from .accuracy import prepare
from .backends import check_mode
from .errors import InvalidSettings, RenderError
from .generator import generator_spec, model_inputs
from .options import RenderOptions
from .paste import paste_faces
from .mode_timing import DEFAULT_BATCH
from .selection import describe, select

log = logging.getLogger(__name__)

_PIPELINE_DEPTH = 2  #: batches in flight between the model and the paste/encode thread
__all__ = ["DEFAULT_BATCH", "Renderer", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidSettings("device cuda was requested but no CUDA GPU is available")
    return device


class Renderer:
    """A generator on a device, rendering batches of output frames.

    The generator is moved (and, for half precision on CUDA, converted) in place: give
    each Renderer its own model instance. With ``precision="auto"`` (or batch size 0)
    the constructor chooses by measurement, or reads the verdict kept on disk.
    """

    def __init__(self, generator: torch.nn.Module, options: RenderOptions = RenderOptions(),
                 calibration: tuple[np.ndarray, np.ndarray] | None = None):
        """``calibration``: (crops, windows) of a real render for int8 (default: the shipped avatar and speech)."""
        self.device = resolve_device(options.device)
        if options.precision != "auto":
            check_mode(options.precision, self.device)
        if options.threads and self.device.type == "cpu":
            torch.set_num_threads(options.threads)
        self.spec = generator_spec(generator)
        self.kind: str = self.spec.kind
        self.model_id: str = self.spec.model_id or self.kind
        #: What was picked and why: precision, batch_size, source (measured / cached / explicit /
        #: fixed), reason, the measured figures (ms per frame, PSNR vs fp32 per mode) and, when a
        #: mode asked for was refused, ``refused`` (which, and why).
        self.backend, self.selection = prepare(generator, self.spec, self.device, options, calibration,
                                               Path(options.selection_dir).expanduser())  # fmt: skip
        self.precision: str = self.selection["precision"]
        self.batch_size: int = self.selection["batch_size"]
        log.info("renderer %s on %s: %s", self.kind, self.device, describe(self.selection))
        self.model = getattr(self.backend, "model", generator)
        #: One batch on the model at a time, whichever thread asks: a live session's small
        #: batch runs between an offline render's batches instead of racing them.
        self._model_lock = threading.Lock()

    def describe(self) -> dict:
        """A plain dict for health and status pages: mode, backend, batch size and why."""
        return {"renderer": self.kind, "model_id": self.model_id, "device": str(self.device),
                "precision": self.precision, "backend": self.backend.__class__.__name__,
                "batch_size": self.batch_size, **{k: self.selection[k] for k in ("source", "reason", "figures",
                                                                                   "batch_figures", "seconds")},
                "refused": self.selection.get("refused")}  # fmt: skip

    @torch.inference_mode()
    def predict(self, crops: np.ndarray, windows: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        """(B, 96, 96, 3) uint8 predicted faces from crops (B, 96, 96, 3) uint8 and windows (B, 80, 16).

        ``positions`` (B,) int64 timeline frame indices reach generators with ``uses_positions``.
        Thread-safe: calls from several threads take turns on the model.
        """
        audio, face_in = model_inputs(crops, windows, self.device, self.spec.crop_size)
        extra = {}
        if positions is not None and self.spec.uses_positions:
            extra["positions"] = torch.as_tensor(positions, dtype=torch.int64, device=self.device)
        try:
            with self._model_lock:
                out = self.backend(audio, face_in, **extra)
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
