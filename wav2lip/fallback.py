"""Weights-free renderer: a procedural mouth driven by the mel window.

Used when no official checkpoint is installed, so the service still answers with a
face that talks. ``FallbackGenerator`` has the Wav2Lip generator's forward signature
(audio (B, 1, 80, 16), face (B, 6, 96, 96) -> (B, 3, 96, 96), or the 5-D form), so
the same batched renderer and paste-back drive both. It warps the reference crop
(channels 3-5) with a smooth displacement field (``grid_sample``) and darkens the
gap between the lips; everywhere the field is zero the output IS the reference.
Every frame depends only on its own inputs, so chunked renders equal one pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .hparams import IMG_SIZE, MEL_FLOOR_VALUE, MEL_STEP, N_MELS

# -- Where the mouth is in the 96x96 crop (face box: eyebrows to chin + 10 px pad).
MOUTH_CENTER_X = 48.0  #: px, horizontal centre of the mouth
LIP_LINE_Y = 74.0  #: px, row where the lips meet (the gap opens below it)
MOUTH_HALF_WIDTH = 16.0  #: px, half the lip width (lips ~28-36 px wide)
JAW_HALF_WIDTH = 34.0  #: px, the jaw drop fades to zero this far from the centre
CHIN_FADE_START_Y = 84.0  #: px, below this the jaw drop fades out ...
CHIN_FADE_END_Y = 95.0  #: px, ... to exactly zero at the crop's bottom row
LIP_RAMP_PX = 2.0  #: px of source rows at the lip line that stretch open
RAMP_SOFTNESS_PX = 2.0  #: px, rounding of the ramp's corners (keeps it C1)

# -- Motion amplitudes.
JAW_DROP_MAX_PX = 8.0  #: lower lip/chin drop at full opening
ROUNDING_MAX = 0.25  #: max relative horizontal squeeze (+) / stretch (-) of the lips
ROUND_ZONE_RX = 34.0  #: px, horizontal radius of the squeeze/stretch zone
ROUND_ZONE_RY = 16.0  #: px, vertical radius of the squeeze/stretch zone (ends above row 95)
MOUTH_DARKNESS = 0.92  #: opacity of the mouth interior at full opening
MOUTH_SHADOW_BGR = (0.04, 0.04, 0.10)  #: mouth interior under the upper teeth, BGR
MOUTH_TONGUE_BGR = (0.18, 0.18, 0.45)  #: mouth interior near the lower lip, BGR

# -- Audio features (units: normalised mel level above the -4 floor, 0..8).
TIME_DECAY_STEPS = 6.0  #: e-folding of the weights over the window's 12.5 ms steps
VOICE_BAND = (0, 56)  #: mel bins, ~55 Hz..3 kHz: voiced energy drives the jaw
LOW_BAND = (0, 20)  #: mel bins below ~800 Hz (F1, rounded vowels)
HIGH_BAND = (48, N_MELS)  #: mel bins above ~2.3 kHz (high F2, fricatives)
OPEN_KNEE = 0.5  #: energy below this keeps the mouth shut (room noise)
OPEN_SCALE = 2.2  #: energy above the knee giving 63 % opening
ROUND_CENTER = 0.6  #: low-minus-high balance of a neutral vowel (speech median)
ROUND_SCALE = 1.5  #: balance change for ~76 % of the full squeeze/stretch
ROUND_GATE = (OPEN_KNEE, 1.5)  #: energy range over which lip shaping fades in


def _smoothstep(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """C1 step from 0 (x <= lo) to 1 (x >= hi); exactly 0/1 outside, for compact support."""
    t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _soft_ramp(y: torch.Tensor, start: float, length: torch.Tensor, soft: float) -> torch.Tensor:
    """Rises from 0 at ``start`` to 1 after ``length + soft`` px, slope <= 1/length.

    The integral of a trapezoid (piecewise quadratic): smooth, exactly flat outside,
    and with bounded slope, so the backward warp it drives never folds the image.
    """
    q = lambda v: v.clamp(min=0.0).square()  # noqa: E731
    end = start + length + soft
    return (q(y - start) - q(y - start - soft) - q(y - end + soft) + q(y - end)) / (
        2.0 * soft * length)


class FallbackGenerator(torch.nn.Module):
    """Drop-in stand-in for the Wav2Lip generator, with no learned weights.

    It holds no parameters or buffers (``state_dict()`` is empty): every constant is
    made on the input's device in float32, so ``.to(dtype)`` cannot degrade it.
    """

    renderer_kind = "fallback"
    #: Goes into result-cache keys (``Renderer.model_id``): bump it when the motion changes.
    model_id = "fallback-v1"

    def mouth_features(self, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 1, 80, 16) mel -> (energy, opening, rounding), each (B,) float32.

        Energy: time-weighted voiced level above the floor (0 = silence, ~2.4 = median
        speech). Opening in [0, 1): energy through a soft knee, exactly 0 in silence.
        Rounding in (-1, 1): low-vs-high band balance, + rounded (o, u), - spread (i, s).
        """
        level = (audio[:, 0].float() - MEL_FLOOR_VALUE).clamp(min=0.0)  # (B, 80, 16)
        # The window starts at the frame and looks forward: weight its first steps most.
        w = torch.exp(-torch.arange(MEL_STEP, device=audio.device) / TIME_DECAY_STEPS)
        w = w / w.sum()

        def band(lo_hi: tuple[int, int]) -> torch.Tensor:
            return (level[:, lo_hi[0]:lo_hi[1]].mean(dim=1) * w).sum(dim=1)

        energy = band(VOICE_BAND)
        over = (energy - OPEN_KNEE).clamp(min=0.0) / OPEN_SCALE
        opening = 1.0 - torch.exp(-over.square())
        balance = band(LOW_BAND) - band(HIGH_BAND)
        gate = _smoothstep(energy, *ROUND_GATE)
        rounding = torch.tanh((balance - ROUND_CENTER) / ROUND_SCALE) * gate
        return energy, opening, rounding

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """Same I/O as the Wav2Lip generator; see the module docstring."""
        if audio.dim() == 5:  # (B, T, 1, 80, 16) + (B, 6, T, 96, 96): fold T into the batch
            b, t = audio.shape[:2]
            out = self._render(audio.reshape(b * t, *audio.shape[2:]),
                               face.transpose(1, 2).reshape(b * t, face.shape[1], *face.shape[3:]))
            return out.reshape(b, t, *out.shape[1:]).transpose(1, 2).contiguous()
        return self._render(audio, face)

    def _render(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        device_type = face.device.type
        with torch.autocast(device_type=device_type, enabled=False):  # grid_sample wants fp32
            out = self._warp(audio.float(), face[:, 3:6].float())
        return out.to(face.dtype)

    def _warp(self, audio: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        _, opening, rounding = self.mouth_features(audio)
        jaw = (JAW_DROP_MAX_PX * opening)[:, None, None]  # (B, 1, 1) px
        squeeze = (ROUNDING_MAX * rounding)[:, None, None]
        pix = torch.arange(IMG_SIZE, dtype=torch.float32, device=ref.device)
        ys, rel_x = pix[:, None], pix[None, :] - MOUTH_CENTER_X  # broadcast to (96, 96)

        # Rounding: output x shows source centre + (x - centre)(1 + squeeze) in an
        # elliptical zone around the (opened) mouth, compactly supported.
        r2 = (rel_x / ROUND_ZONE_RX).square() + ((ys - LIP_LINE_Y - 0.5 * jaw)
                                                / ROUND_ZONE_RY).square()
        dx = squeeze * rel_x * (1.0 - r2).clamp(min=0.0).square()
        src_rel_x = rel_x + dx

        # Jaw drop: output row y shows source row y - dy. A thin band of rows at the
        # lip line stretches into the opening; below it lower lip and chin translate;
        # the drop fades out above the crop's bottom row and towards the cheeks.
        ramp_start = LIP_LINE_Y - LIP_RAMP_PX / 2 - RAMP_SOFTNESS_PX / 2
        ramp = _soft_ramp(ys, ramp_start, LIP_RAMP_PX + jaw, RAMP_SOFTNESS_PX)
        chin = 1.0 - _smoothstep(ys, CHIN_FADE_START_Y, CHIN_FADE_END_Y)
        across = 0.5 + 0.5 * torch.cos(math.pi * (src_rel_x / JAW_HALF_WIDTH).clamp(-1.0, 1.0))
        dy = jaw * ramp * chin * across

        src_x, src_y = MOUTH_CENTER_X + src_rel_x, ys - dy
        grid = torch.stack(((2.0 * src_x + 1.0) / IMG_SIZE - 1.0,
                            (2.0 * src_y + 1.0) / IMG_SIZE - 1.0), dim=-1)
        warped = F.grid_sample(ref, grid, mode="bilinear", padding_mode="border",
                               align_corners=False)

        # Mouth interior: a soft ellipse over the stretched rows, its size following the
        # opening; dark under the upper teeth, reddish towards the tongue.
        half_w = MOUTH_HALF_WIDTH * (0.7 + 0.3 * opening[:, None, None]) * (1.0 - squeeze)
        half_h = 0.5 * (LIP_RAMP_PX + jaw + RAMP_SOFTNESS_PX) + 0.5
        er = ((src_rel_x / half_w).square()
              + ((ys - ramp_start - half_h) / half_h).square()).sqrt()
        alpha = (MOUTH_DARKNESS * _smoothstep(opening, 0.0, 0.3)[:, None, None]
                 * (1.0 - _smoothstep(er, 0.55, 1.0)))[:, None]
        shadow = torch.tensor(MOUTH_SHADOW_BGR, device=ref.device).view(1, 3, 1, 1)
        tongue = torch.tensor(MOUTH_TONGUE_BGR, device=ref.device).view(1, 3, 1, 1)
        depth = ramp[:, None].square()
        warped = warped * (1.0 - alpha) + (shadow + (tongue - shadow) * depth) * alpha

        moved = ((dx != 0) | (dy != 0))[:, None] | (alpha > 0)
        return torch.where(moved, warped, ref).clamp(0.0, 1.0)
