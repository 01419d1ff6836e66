"""The alive fallback face: upper teeth stay, blinks, head motion, idle frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from wav2lip import render_idle
from wav2lip.avatar import Avatar
from wav2lip.face_motion import blink_closure, head_offset
from wav2lip.fallback import FallbackGenerator
from wav2lip.hparams import IMG_SIZE
from wav2lip.options import AvatarOptions, RenderOptions
from wav2lip.render import Renderer

from .test_fallback import FACE_BOX, MOUTH, _audio, _face, _mean_diff, _to_uint8, crop  # noqa: F401

AVATAR = Path(__file__).resolve().parents[1] / "data" / "avatar.png"
FPS = 25.0
UPPER_TEETH = (slice(66, 73), slice(38, 58))  #: crop rows/cols of the upper teeth
EYES = (slice(24, 38), slice(16, 82))  #: crop rows/cols of both eyes
BLINK_MAX_FRAMES = 4  #: frames (160 ms at 25 fps) an eye may be more than half shut per blink
IDLE_S = 60


def _run(audio, face, positions=None, **kw):
    with torch.inference_mode():
        return FallbackGenerator(**kw)(audio, face, positions=positions)


def test_upper_teeth_stay_as_the_mouth_opens(crop):
    out = _to_uint8(_run(_audio(0.0, 0.5, 1.0), _face(crop, 3)))
    r, c = UPPER_TEETH
    for img in out:
        assert np.array_equal(img[r, c], crop[r, c])
    assert _mean_diff(out[2][MOUTH], crop[MOUTH]) > 5.0  # ... while the jaw drops below them


def test_blinks_at_a_natural_rate_and_close_quickly():
    pos = torch.arange(int(IDLE_S * FPS))
    closure = blink_closure(pos, FPS).numpy()
    shut = closure > 0.5
    onsets = np.flatnonzero(shut[1:] & ~shut[:-1]) + 1
    assert IDLE_S / 6 - 1 <= len(onsets) <= IDLE_S / 2 + 1
    gaps = np.diff(onsets) / FPS
    assert gaps.min() >= 2.0 - 0.2 and gaps.max() <= 6.0 + 0.2
    for a in onsets:
        assert shut[a:a + BLINK_MAX_FRAMES + 1].sum() <= BLINK_MAX_FRAMES
        assert closure[a - 1:a + BLINK_MAX_FRAMES].max() >= 0.8


def test_a_blink_closes_the_eye_region(crop):
    pos = torch.arange(int(10 * FPS))
    closure = blink_closure(pos, FPS)
    peak = int(closure.argmax())
    out = _to_uint8(_run(_audio(0.0, 0.0), _face(crop, 2), torch.tensor([peak, 0]), seed=18))
    open_eye = _to_uint8(_run(_audio(0.0), _face(crop, 1), torch.tensor([peak])[:1], motion=False))[0]
    assert _mean_diff(out[0][EYES], open_eye[EYES]) > 4.0 * _mean_diff(out[1][EYES], open_eye[EYES]) + 1.0


def test_head_motion_is_small_smooth_and_stronger_in_speech():
    pos = torch.arange(int(IDLE_S * FPS))
    quiet = head_offset(pos, FPS, torch.zeros(len(pos)))
    loud = head_offset(pos, FPS, torch.ones(len(pos)))
    for dx, dy in (quiet, loud):
        assert dx.abs().max() <= 4.0 and dy.abs().max() <= 4.0
        assert dx.diff().abs().max() <= 0.3 and dy.diff().abs().max() <= 0.3
    assert loud[0].abs().mean() > 1.5 * quiet[0].abs().mean()


def test_motion_keeps_the_crop_edge_and_speech_moves_the_mouth_more(crop):
    pos = torch.arange(40, 44)
    silent = _to_uint8(_run(_audio(0.0, 0.0, 0.0, 0.0), _face(crop, 4), pos))
    speech = _to_uint8(_run(_audio(1.0, 0.8, 1.0, 0.8), _face(crop, 4), pos))
    for img in np.concatenate([silent, speech]):
        assert np.array_equal(img[[0, -1]], crop[[0, -1]])
        assert np.array_equal(img[:, [0, -1]], crop[:, [0, -1]])
    assert np.mean([_mean_diff(s[MOUTH], crop[MOUTH]) for s in speech]) > \
        2.0 * np.mean([_mean_diff(s[MOUTH], crop[MOUTH]) for s in silent])


def test_5d_form_takes_positions(crop):
    audio, face, pos = _audio(0.5, 1.0), _face(crop, 2), torch.tensor([37, 38])
    flat = _run(audio, face, pos)
    five = _run(audio[None], face.transpose(0, 1)[None], pos[None])
    assert torch.equal(five[0].transpose(0, 1), flat)


def _image_avatar() -> Avatar:
    frame = cv2.imread(str(AVATAR))
    x1, y1, x2, y2 = FACE_BOX
    c = cv2.resize(frame[y1:y2, x1:x2], (IMG_SIZE, IMG_SIZE), interpolation=cv2.INTER_LINEAR)
    return Avatar(frame[None], np.array([[y1, y2, x1, x2]]), c[None], None, "idle-test", AvatarOptions())


def test_idle_chunked_equals_one_pass_and_is_deterministic():
    avatar = _image_avatar()
    renderer = Renderer(FallbackGenerator(), RenderOptions(device="cpu", batch_size=8))
    start, stop = 90, 130  # spans a blink of the default seed
    whole = render_idle(renderer, avatar, start, stop, FPS)
    parts = np.concatenate([render_idle(renderer, avatar, a, min(a + 13, stop), FPS)
                            for a in range(start, stop, 13)])
    assert whole.shape == (stop - start, *avatar.frames.shape[1:])
    assert np.array_equal(whole, parts)
    assert np.array_equal(whole, render_idle(renderer, avatar, start, stop, FPS))
    assert len({f.tobytes() for f in whole}) > 1  # never frozen


def test_video_idle_is_the_pingpong_loop():
    avatar = _image_avatar()
    video = Avatar(np.repeat(avatar.frames, 3, axis=0), np.repeat(avatar.boxes, 3, axis=0),
                   np.repeat(avatar.crops, 3, axis=0), 25.0, "v", AvatarOptions())
    renderer = Renderer(FallbackGenerator(), RenderOptions(device="cpu"))
    out = render_idle(renderer, video, 0, 7, FPS)
    assert np.array_equal(out, video.frames[video.frame_indices(0, 7, "pingpong")])
