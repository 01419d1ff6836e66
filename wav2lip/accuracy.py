"""Modes checked against fp32 when they load (int8): calibration inputs, the check, refusal.

A quantised mode is calibrated once per load on the avatar crops and mel windows of a
real render (the request's in the CLI; the shipped avatar speaking the shipped
calibration speech by default), then its output on held-out frames of the same render
is compared with exact fp32. Below ``RenderOptions.int8_floor_db`` the mode is refused:
``PrecisionRefused`` (the CLI exits with its message), or, with ``on_refusal="next"``
(the service's workers), a warning and the mode "auto" picks instead, recorded in the
selection under ``refused``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .backends import MODES, build_backend
from .errors import PrecisionRefused
from .generator import GeneratorSpec, model_inputs
from .options import RenderOptions
from .mode_timing import psnr_db, to_uint8
from .selection import select

log = logging.getLogger(__name__)

CALIBRATION_SPEECH = Path(__file__).parent / "assets" / "calibration_speech.wav"  #: 3 s of the speech fixture
CALIBRATION_FRAMES = 32  #: frames the quantiser sees
HELD_OUT_FRAMES = 16  #: later frames of the same render, only for the check
CALIBRATION_FPS = 25.0


def default_calibration() -> tuple[np.ndarray, np.ndarray]:
    """(crops, windows) of the shipped avatar speaking the shipped calibration speech."""
    from .audio import load_audio, mel_windows, melspectrogram
    from .avatar import DEFAULT_AVATAR_PATH, prepare_avatar

    n = CALIBRATION_FRAMES + HELD_OUT_FRAMES
    avatar = prepare_avatar(DEFAULT_AVATAR_PATH)
    windows = mel_windows(melspectrogram(load_audio(CALIBRATION_SPEECH)), CALIBRATION_FPS, 0, n)
    return np.ascontiguousarray(avatar.crops[avatar.frame_indices(0, n)]), windows


def check(mode: str, backend, generator: torch.nn.Module, held_out: tuple[torch.Tensor, torch.Tensor],
          floor_db: float) -> float:
    """PSNR of ``backend`` against exact fp32 on the held-out inputs; ``PrecisionRefused`` below the floor."""
    reference = build_backend("fp32", generator, torch.device("cpu"))
    with torch.inference_mode():
        got, want = to_uint8(backend(*held_out)), to_uint8(reference(*held_out))
    db = psnr_db(got, want)
    if db < floor_db:
        raise PrecisionRefused(
            f"precision {mode} refused: its output is {db:.1f} dB PSNR from fp32 on {len(got)} held-out frames, "
            f"below the {floor_db:g} dB floor (int8 is only right for some models; use fp32-fast, bf16 or auto)"
        )
    return db


def prepare(generator: torch.nn.Module, spec: GeneratorSpec, device: torch.device, options: RenderOptions,
            calibration: tuple[np.ndarray, np.ndarray] | None, cache_dir: Path):
    """(backend, selection) for ``options``: selected, built and, for checked modes, calibrated and checked."""
    selection = select(generator, spec, device, options)
    mode = MODES[selection["precision"]]
    if not mode.checked_at_load or not spec.has_weights:
        return build_backend(mode.name, generator, device, cache_dir), selection
    crops, windows = calibration if calibration is not None else default_calibration()
    audio, face = model_inputs(crops, windows, torch.device("cpu"), spec.crop_size)
    n = min(CALIBRATION_FRAMES, len(audio) - 1)
    try:
        backend = build_backend(mode.name, generator, device, cache_dir, (audio[:n], face[:n]))
        db = check(mode.name, backend, generator, (audio[n:], face[n:]), options.int8_floor_db)
    except PrecisionRefused as exc:
        if options.on_refusal == "error":
            raise
        log.warning("%s; rendering with precision auto instead", exc)
        backend, selection = prepare(generator, spec, device, replace(options, precision="auto"), None, cache_dir)
        return backend, {**selection, "refused": {"precision": mode.name, "reason": str(exc)}}
    figure = {"mode": mode.name, "batch_size": selection["batch_size"], "ms_per_frame": None, "psnr_db": db,
              "accepted": True, "note": f"calibrated on {n} frames, checked on {len(audio) - n} held-out frames"}  # fmt: skip
    return backend, {**selection, "figures": [figure],
                     "reason": f"precision {mode.name} was given; {db:.1f} dB from fp32 on held-out frames "
                               f"(floor {options.int8_floor_db:g} dB)"}  # fmt: skip
