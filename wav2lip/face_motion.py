"""Blinks and head motion for the weights-free face: pure functions of the timeline.

Each frame's blink closure and head offset depend only on (seed, frame position, fps),
never on the batch or the chunk it is rendered in, so chunked renders equal one pass
bit for bit and result caches stay valid. Hashing is integer arithmetic (identical on
CPU and CUDA); only the final smooth profiles are float.
"""

from __future__ import annotations

import math

import torch

DEFAULT_SEED = 18  #: fixed default: same avatar + same timeline -> same frames

# -- Blinks: one per slot, jittered inside it, so intervals stay within [2, 6] s.
BLINK_SLOT_S = 4.0  #: mean interval between blinks
BLINK_JITTER_S = 2.0  #: onset lies in [slot + 1 s, slot + 3 s): gaps between 2 and 6 s
BLINK_SLOT_OFFSET_S = 1.0  #: earliest onset inside a slot
BLINK_CLOSE_S = 0.06  #: lid travel down ...
BLINK_HOLD_S = 0.03  #: ... held shut ...
BLINK_OPEN_S = 0.06  #: ... and back up: 150 ms in all
_HASH_MUL, _HASH_ADD, _HASH_MOD = 1103515245, 12345, 2 ** 31  #: LCG constants (glibc)

# -- Head motion: a few slow incommensurate sines per axis, px in the 96x96 crop.
SWAY_PX = 1.2  #: horizontal amplitude at rest
NOD_PX = 0.9  #: vertical amplitude at rest
SPEECH_GAIN = 1.0  #: extra fraction of amplitude while speaking (x2 in loud speech)
SWAY_HZ = (0.13, 0.31)  #: slow sway components
NOD_HZ = (0.17, 0.41)  #: slow nod components
SECOND_WEIGHT = 0.4  #: weight of each axis' faster component


def _unit_hash(k: torch.Tensor, seed: int) -> torch.Tensor:
    """int64 -> uniform float64 in [0, 1), two LCG rounds (exact integer maths)."""
    h = (k * _HASH_MUL + seed * _HASH_ADD + _HASH_ADD) % _HASH_MOD
    h = (h * _HASH_MUL + _HASH_ADD) % _HASH_MOD
    return h.double() / _HASH_MOD


def blink_closure(positions: torch.Tensor, fps: float, seed: int = DEFAULT_SEED) -> torch.Tensor:
    """(B,) int64 frame positions -> (B,) float32 lid closure in [0, 1] (1 = shut)."""
    t = positions.double() / fps
    slot = torch.floor(t / BLINK_SLOT_S).long()
    out = torch.zeros_like(t)
    for k in (slot - 1, slot):  # a blink may spill over from the previous slot
        onset = k * BLINK_SLOT_S + BLINK_SLOT_OFFSET_S + BLINK_JITTER_S * _unit_hash(k, seed)
        d = t - onset
        down = (d / BLINK_CLOSE_S).clamp(0.0, 1.0)
        up = ((BLINK_CLOSE_S + BLINK_HOLD_S + BLINK_OPEN_S - d) / BLINK_OPEN_S).clamp(0.0, 1.0)
        out = torch.maximum(out, torch.minimum(down, up))
    return out.float()


def head_offset(positions: torch.Tensor, fps: float, speech: torch.Tensor,
                seed: int = DEFAULT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) positions, (B,) speech level in [0, 1] -> (dx, dy) px float32, each (B,).

    Smooth (a few sines under 0.5 Hz), bounded by (1 + SPEECH_GAIN)(1 + SECOND_WEIGHT)
    times the amplitudes, and phase-shifted per seed.
    """
    t = positions.double() / fps
    phase = 2.0 * math.pi * _unit_hash(torch.arange(4, device=positions.device), seed)

    def axis(hz: tuple[float, float], p0: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
        return (torch.sin(2.0 * math.pi * hz[0] * t + p0)
                + SECOND_WEIGHT * torch.sin(2.0 * math.pi * hz[1] * t + p1))

    gain = 1.0 + SPEECH_GAIN * speech.double()
    dx = SWAY_PX * gain * axis(SWAY_HZ, phase[0], phase[1])
    dy = NOD_PX * gain * axis(NOD_HZ, phase[2], phase[3])
    return dx.float(), dy.float()
