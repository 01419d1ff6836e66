"""One render, start to finish: the engine's high-level API (used by the CLI and workers).

``load_generator`` picks the official checkpoint or the weights-free renderer;
``render_segment`` renders one frame range into one encoded segment (a worker's
job); ``lip_sync`` does a whole request in one process (the CLI's job).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .accuracy import CALIBRATION_FRAMES, HELD_OUT_FRAMES
from .audio import frame_count, load_audio, mel_windows, melspectrogram
from .avatar import DEFAULT_AVATAR_PATH, Avatar, prepare_avatar
from .checkpoint import find_checkpoint, load_checkpoint
from .encode import SegmentEncoder, combine_segments, segment_format
from .hparams import SAMPLE_RATE
from .options import AvatarOptions, EncodeOptions, RenderOptions
from .render import Renderer
from .selection import describe

log = logging.getLogger(__name__)


def load_generator(checkpoint: str | Path | None = None, checkpoint_dir: str | Path | None = None) -> torch.nn.Module:
    """The official model from ``checkpoint`` (or the best file in ``checkpoint_dir``), else the fallback.

    A checkpoint that exists but is corrupt raises ``CheckpointError``: never a silent
    fall-back to the weights-free renderer.
    """
    path = Path(checkpoint) if checkpoint else (find_checkpoint(checkpoint_dir) if checkpoint_dir else None)
    if path is not None:
        return load_checkpoint(path)
    from .fallback import FallbackGenerator

    log.info("no Wav2Lip checkpoint found; using the weights-free renderer")
    return FallbackGenerator()


def output_fps(avatar: Avatar, enc: EncodeOptions, fps: float | None) -> float:
    """An explicit fps wins; else a video keeps its own rate; else the preset's."""
    if fps:
        return float(fps)
    return float(avatar.fps) if avatar.fps else enc.fps


def render_segment(
    renderer: Renderer,
    avatar: Avatar,
    mel: np.ndarray,
    fps: float,
    start: int,
    stop: int,
    path: str | Path,
    enc: EncodeOptions,
    loop: str = "pingpong",
    timings: dict[str, float] | None = None,
    progress: Callable[[int], None] | None = None,
    audio: str | Path | None = None,
) -> Path:
    """Frames [start, stop) rendered and encoded into one segment file (starts on a keyframe).

    ``audio``: this chunk's AAC frames (ADTS file); the segment is then a CMAF fragment.
    """
    with SegmentEncoder(path, avatar.width, avatar.height, fps, enc, audio) as encoder:
        renderer.render(avatar, mel, fps, start, stop, encoder.write, loop, progress, timings)
    return Path(path)


@dataclass
class RenderResult:
    """What one render made, and how long each stage took."""

    path: Path
    n_frames: int
    fps: float
    duration_s: float
    audio_s: float
    renderer: str
    model_id: str
    precision: str
    device: str
    seconds: dict[str, float] = field(default_factory=dict)
    selection: dict = field(default_factory=dict)  #: ``Renderer.selection``: what was picked and why

    @property
    def total_s(self) -> float:
        return self.seconds.get("total", 0.0)

    def summary(self) -> str:
        stages = " ".join(f"{k}={v:.2f}s" for k, v in self.seconds.items() if k != "total")
        rtf = self.total_s / self.duration_s if self.duration_s else 0.0
        return (
            f"{self.path}: {self.n_frames} frames at {self.fps:g} fps ({self.duration_s:.2f} s) in {self.total_s:.2f} s "
            f"[{stages}] real-time factor {rtf:.2f}, renderer {self.renderer} ({self.device}, {self.precision})"
            + (f"\nprecision {describe(self.selection)}" if self.selection else "")
        )


def lip_sync(
    audio: str | Path | bytes | np.ndarray,
    out: str | Path,
    face: str | Path | bytes | Avatar | None = None,
    *,
    generator: torch.nn.Module | None = None,
    checkpoint: str | Path | None = None,
    render: RenderOptions = RenderOptions(),
    enc: EncodeOptions = EncodeOptions(),
    avatar_options: AvatarOptions | None = None,
    fps: float | None = None,
    loop: str = "pingpong",
    progress: Callable[[int, int], None] | None = None,
) -> RenderResult:
    """Render ``face`` speaking ``audio`` into ``out`` (MP4, or MKV when ``enc.lossless``).

    ``audio`` is a path, bytes, or 16 kHz float32 samples; ``face`` a path, bytes, a
    prepared ``Avatar`` or None for the shipped default avatar.
    """
    seconds: dict[str, float] = {}
    t_start = time.perf_counter()
    t = t_start
    samples = audio if isinstance(audio, np.ndarray) else load_audio(audio)
    seconds["decode"] = time.perf_counter() - t
    t = time.perf_counter()
    mel = melspectrogram(samples)
    seconds["mel"] = time.perf_counter() - t
    t = time.perf_counter()
    if not isinstance(face, Avatar):
        opts = avatar_options or AvatarOptions(resize_factor=enc.resize_factor)
        face = prepare_avatar(face if face is not None else DEFAULT_AVATAR_PATH, opts)
    seconds["avatar"] = time.perf_counter() - t
    rate = output_fps(face, enc, fps)
    n_cal = CALIBRATION_FRAMES + HELD_OUT_FRAMES  # int8 calibrates on this render's own crops and windows
    calibration = (face.crops[face.frame_indices(0, n_cal, loop)], mel_windows(mel, rate, 0, n_cal))
    renderer = Renderer(generator if generator is not None else load_generator(checkpoint), render, calibration)
    n_frames = frame_count(len(samples), rate)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], n_frames)

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="w2l-render-", dir=out.parent if out.parent.exists() else None) as tmp:
        segment = Path(tmp) / f"segment{segment_format(enc)[1]}"
        t = time.perf_counter()
        render_segment(renderer, face, mel, rate, 0, n_frames, segment, enc, loop, seconds, tick)
        seconds["render_wall"] = time.perf_counter() - t
        t = time.perf_counter()
        combine_segments([segment], samples, out, enc)
        seconds["combine"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t_start
    return RenderResult(
        out, n_frames, rate, n_frames / rate, len(samples) / SAMPLE_RATE, renderer.kind, renderer.model_id,
        renderer.precision, str(renderer.device), seconds, renderer.selection,
    )  # fmt: skip
