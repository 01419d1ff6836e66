"""Weights-free renderer: a procedural mouth driven by the mel window.

Used when no official checkpoint is installed, so the service still answers with a
face that talks. ``FallbackGenerator`` has the Wav2Lip generator's forward signature
(audio (B, 1, 80, 16), face (B, 6, 96, 96) -> (B, 3, 96, 96), or the 5-D form), so
the same batched renderer and paste-back drive both. It warps the reference crop
(channels 3-5) with a smooth displacement field (``grid_sample``) and darkens the
gap between the lips; everywhere the field is zero the output IS the reference.
Every frame depends only on its own inputs, so chunked renders equal one pass.

With ``positions`` (each frame's index on the output timeline) it also blinks and moves
the head slightly (``face_motion``); without them it is the still face of before. The
upper teeth and lip never move with the jaw: only rows below the lip line drop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .face_motion import DEFAULT_SEED, blink_closure, head_offset
from .hparams import DEFAULT_FPS, IMG_SIZE, MEL_FLOOR_VALUE, MEL_STEP, N_MELS

# -- Where the mouth is in the 96x96 crop (face box: eyebrows to chin + 10 px pad).
MOUTH_CENTER_X = 48.0  #: px, horizontal centre of the mouth
LIP_LINE_Y = 75.0  #: px, row where the teeth meet (the gap opens below it; upper teeth above)
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
SPEAKING_GATE = (OPEN_KNEE, 2.5)  #: window energy range over which head motion grows

# -- Eyes (crop px, from the face box) and the blink's upper lid.
EYE_CENTERS_X = (27.0, 70.0)  #: px, eye centres
EYE_TOP_Y = 27.5  #: px, just above the upper lash line of the open eye
EYE_HEIGHT_PX = 8.0  #: px, lid travel from there to the lower lid
EYE_HALF_WIDTH = 10.0  #: px, half the lid width
LID_SKIN_PX = 4.0  #: px of skin above the eye stretched down over it as the lid
LASH_DARKNESS = 0.45  #: opacity of the lash line at the closing lid's edge
LASH_BGR = (0.12, 0.12, 0.16)  #: lash line colour, BGR
LASH_WIDTH_PX = 1.0  #: px, e-folding half-width of the lash line

# -- Head motion fades to zero at the crop edge so paste-back shows no seam.
HEAD_FADE_PX = 14.0  #: px from the crop edge over which the head shift fades in


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


def level_mean(audio: torch.Tensor) -> torch.Tensor:
    """(B, 1, 80, 16) mel -> (B,) unweighted voiced level over the window: slow speech activity."""
    level = (audio[:, 0].float() - MEL_FLOOR_VALUE).clamp(min=0.0)
    return level[:, VOICE_BAND[0]:VOICE_BAND[1]].mean(dim=(1, 2))


class FallbackGenerator(torch.nn.Module):
    """Drop-in stand-in for the Wav2Lip generator, with no learned weights.

    It holds no parameters or buffers (``state_dict()`` is empty): every constant is
    made on the input's device in float32, so ``.to(dtype)`` cannot degrade it.
    """

    renderer_kind = "fallback"
    #: Goes into result-cache keys (``Renderer.model_id``): bump it when the motion changes.
    model_id = "fallback-v2"
    #: ``Renderer.predict`` passes timeline positions only to generators that say so.
    uses_positions = True

    def __init__(self, fps: float = DEFAULT_FPS, seed: int = DEFAULT_SEED, motion: bool = True):
        super().__init__()
        self.fps, self.seed, self.motion = float(fps), int(seed), bool(motion)

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

    def forward(self, audio: torch.Tensor, face: torch.Tensor,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """Same I/O as the Wav2Lip generator, plus optional (B,) or (B, T) int64 positions."""
        if audio.dim() == 5:  # (B, T, 1, 80, 16) + (B, 6, T, 96, 96): fold T into the batch
            b, t = audio.shape[:2]
            pos = None if positions is None else positions.reshape(b * t)
            out = self._render(audio.reshape(b * t, *audio.shape[2:]),
                               face.transpose(1, 2).reshape(b * t, face.shape[1], *face.shape[3:]), pos)
            return out.reshape(b, t, *out.shape[1:]).transpose(1, 2).contiguous()
        return self._render(audio, face, positions)

    def _render(self, audio: torch.Tensor, face: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        device_type = face.device.type
        with torch.autocast(device_type=device_type, enabled=False):  # grid_sample wants fp32
            pos = None if positions is None or not self.motion else positions.to(face.device).long()
            out = self._warp(audio.float(), face[:, 3:6].float(), pos)
        return out.to(face.dtype)

    def _head_coords(self, energy: torch.Tensor, pos: torch.Tensor | None,
                     pix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output pixel -> (x, y) on the still face, (B, 96, 96) each: the head shift, 0 at the edge."""
        ys, xs = pix[None, :, None], pix[None, None, :]
        if pos is None:
            return xs.expand(1, IMG_SIZE, IMG_SIZE), ys.expand(1, IMG_SIZE, IMG_SIZE)
        hx, hy = head_offset(pos, self.fps, _smoothstep(energy, *SPEAKING_GATE), self.seed)
        edge = torch.minimum(pix, IMG_SIZE - 1.0 - pix)
        fade = _smoothstep(edge, 0.0, HEAD_FADE_PX)
        w = fade[None, :, None] * fade[None, None, :]
        return xs - hx[:, None, None] * w, ys - hy[:, None, None] * w

    def _blink(self, pos: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Upper lids drawn down: (source y, lash alpha), each (B, 96, 96)."""
        closure = blink_closure(pos, self.fps, self.seed)[:, None, None]
        across = torch.zeros_like(xs)
        for cx in EYE_CENTERS_X:  # two eyes: a fixed, tiny loop
            across = across + (1.0 - ((xs - cx) / EYE_HALF_WIDTH).square()).clamp(min=0.0).sqrt()
        lid = EYE_TOP_Y + closure * EYE_HEIGHT_PX * across  # lower edge of the lid, per column
        top = EYE_TOP_Y - LID_SKIN_PX
        under = (ys >= top) & (ys < lid) & (across > 0)
        src_y = torch.where(under, top + (ys - top) * LID_SKIN_PX / (lid - top).clamp(min=1e-3), ys)
        lash = (LASH_DARKNESS * (closure * across).clamp(max=1.0)
                * torch.exp(-((ys - lid) / LASH_WIDTH_PX).square()) * (across > 0))
        return src_y, lash

    def _warp(self, audio: torch.Tensor, ref: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        _, opening, rounding = self.mouth_features(audio)
        jaw = (JAW_DROP_MAX_PX * opening)[:, None, None]  # (B, 1, 1) px
        squeeze = (ROUNDING_MAX * rounding)[:, None, None]
        pix = torch.arange(IMG_SIZE, dtype=torch.float32, device=ref.device)
        head_x, ys = self._head_coords(level_mean(audio), pos, pix)
        rel_x = head_x - MOUTH_CENTER_X

        # Rounding: output x shows source centre + (x - centre)(1 + squeeze) in an
        # elliptical zone around the (opened) mouth, compactly supported.
        r2 = (rel_x / ROUND_ZONE_RX).square() + ((ys - LIP_LINE_Y - 0.5 * jaw)
                                                / ROUND_ZONE_RY).square()
        ramp_start = LIP_LINE_Y - LIP_RAMP_PX / 2 - RAMP_SOFTNESS_PX / 2
        below_teeth = _smoothstep(ys, ramp_start, ramp_start + RAMP_SOFTNESS_PX)  # upper teeth/lip stay
        dx = squeeze * rel_x * (1.0 - r2).clamp(min=0.0).square() * below_teeth
        src_rel_x = rel_x + dx

        # Jaw drop: output row y shows source row y - dy. A thin band of rows at the
        # lip line stretches into the opening; below it lower lip and chin translate;
        # the drop fades out above the crop's bottom row and towards the cheeks.
        ramp = _soft_ramp(ys, ramp_start, LIP_RAMP_PX + jaw, RAMP_SOFTNESS_PX)
        chin = 1.0 - _smoothstep(ys, CHIN_FADE_START_Y, CHIN_FADE_END_Y)
        across = 0.5 + 0.5 * torch.cos(math.pi * (src_rel_x / JAW_HALF_WIDTH).clamp(-1.0, 1.0))
        dy = jaw * ramp * chin * across

        src_x, src_y = MOUTH_CENTER_X + src_rel_x, ys - dy
        lash = torch.zeros_like(src_y)
        if pos is not None:
            src_y, lash = self._blink(pos, src_x, src_y)
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
                 * (1.0 - _smoothstep(er, 0.55, 1.0)) * below_teeth)[:, None]
        shadow = torch.tensor(MOUTH_SHADOW_BGR, device=ref.device).view(1, 3, 1, 1)
        tongue = torch.tensor(MOUTH_TONGUE_BGR, device=ref.device).view(1, 3, 1, 1)
        depth = ramp[:, None].square()
        warped = warped * (1.0 - alpha) + (shadow + (tongue - shadow) * depth) * alpha
        lash_bgr = torch.tensor(LASH_BGR, device=ref.device).view(1, 3, 1, 1)
        warped = warped * (1.0 - lash[:, None]) + lash_bgr * lash[:, None]

        still = (src_x == MOUTH_CENTER_X + (pix[None, None, :] - MOUTH_CENTER_X)) & (src_y == pix[None, :, None])
        moved = (~still)[:, None] | (alpha > 0) | (lash[:, None] > 0)
        return torch.where(moved, warped, ref).clamp(0.0, 1.0)
