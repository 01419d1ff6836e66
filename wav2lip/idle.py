"""Idle frames: the face at rest between utterances, for live sessions.

An image avatar idles through the renderer on a silent mel (mouth closed), so the
weights-free generator adds its blinks and head motion for each timeline position;
a video avatar idles as its own ping-pong loop, untouched (blinks off by default).
Frames are a pure function of (avatar, generator, [start, stop)), so idle chunks
rendered separately equal one pass.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidSettings
from .hparams import MEL_FLOOR_VALUE, MEL_STEP, N_MELS
from .render import Renderer

MEL_FRAMES_PER_SECOND = 80.0  #: mel columns per second (hop 200 at 16 kHz)


def silent_mel(fps: float, stop: int) -> np.ndarray:
    """(80, T) mel of silence long enough for windows of frames [0, stop)."""
    cols = int(np.ceil(stop / fps * MEL_FRAMES_PER_SECOND)) + MEL_STEP + 1
    return np.full((N_MELS, cols), MEL_FLOOR_VALUE, dtype=np.float32)


def render_idle(renderer: Renderer, avatar, start: int, stop: int, fps: float,
                blinks_on_video: bool = False) -> np.ndarray:
    """(stop - start, H, W, 3) uint8 BGR idle frames [start, stop) of the timeline."""
    if not 0 <= start < stop:
        raise InvalidSettings(f"empty or negative idle range [{start}, {stop})")
    if avatar.n_frames > 1 and not blinks_on_video:
        return avatar.frames[avatar.frame_indices(start, stop, "pingpong")]
    mel = silent_mel(fps, stop)
    return np.concatenate(list(renderer.iter_frames(avatar, mel, fps, start, stop)))
