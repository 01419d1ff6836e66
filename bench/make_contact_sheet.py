"""Render docs/fallback_contact_sheet.png: the weights-free renderer on the fixture face.

Row 1: synthetic neutral-vowel windows from silence to loud (label = the voiced energy
the renderer sees and the mouth opening it maps to). Row 2, when the golden mel of
speech_9s is in tests/data or ../shared: eight consecutive real frames (label = frame,
energy, opening, rounding), to show that motion is smooth from frame to frame.
Row 3: an idle (silent) stretch around the first blink, with head motion (label = frame,
lid closure, head offset in crop px). Rows 1-2 use timeline positions too, so they show
motion as a live render would. ``--mp4`` also writes a short clip: speech, then idle.
Each tile is the face region of the full 512x512 frame after the 96x96 output was
pasted back like the renderer does (x255, truncate, cv2.resize into the padded box).

    python -m bench.make_contact_sheet [--out docs/fallback_contact_sheet.png] [--mp4 docs/fallback_demo.mp4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import torch

from wav2lip.face_motion import blink_closure, head_offset
from wav2lip.ffmpeg import ffmpeg_binary
from wav2lip.fallback import FallbackGenerator
from wav2lip.hparams import IMG_SIZE, MEL_FLOOR_VALUE, MEL_STEP, N_MELS

ROOT = Path(__file__).resolve().parents[1]
AVATAR = ROOT / "tests" / "data" / "avatar.png"
GOLDEN_DIRS = (ROOT / "tests" / "data", ROOT.parent / "shared" / "wav2lip" / "golden")
FACE_BOX = (177, 66, 272, 171)  #: Haar box (177, 66, 272, 161) + 10 px bottom pad
VIEW_MARGIN = 14  #: px of frame shown around the box
TILE_SCALE = 2  #: tiles are upscaled for viewing
LOUDNESS = np.linspace(0.0, 1.0, 8)
VOWEL_PEAK_LEVEL = 4.4  #: level above the -4 floor in the lowest bin at full loudness
FPS = 25.0  #: timeline rate of the rows and the clip
CLIP_SPEECH_S = 4.0  #: seconds of speech_9s in the clip ...
CLIP_IDLE_S = 4.0  #: ... then this much idle
CLIP_MARGIN = 40  #: px of frame around the face box in the clip
VOWEL_TILT = 0.2  #: fall of the level towards the top bin (neutral: rounding ~0)


def vowel_window(loudness: float) -> np.ndarray:
    """(80, 16) mel window of a steady neutral vowel: silence at 0, loud speech at 1."""
    level = VOWEL_PEAK_LEVEL * loudness * (1.0 - VOWEL_TILT * np.arange(N_MELS) / N_MELS)
    win = MEL_FLOOR_VALUE + level
    return np.repeat(win[:, None], MEL_STEP, axis=1).astype(np.float32)


def golden_windows(n: int, first: int) -> np.ndarray | None:
    """n consecutive official mel windows of speech_9s, or None when not available."""
    for folder in GOLDEN_DIRS:
        try:
            mel = np.load(folder / "speech_9s_mel.npy")
            starts = json.loads((folder / "speech_9s_windows.json").read_text())["start_indices"]
            break
        except OSError:
            continue
    else:
        return None
    idx = np.asarray(starts[first:first + n])[:, None] + np.arange(MEL_STEP)
    return mel[:, idx].transpose(1, 0, 2)


def render_faces(frame: np.ndarray, windows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) full frames: the fallback's output pasted back into ``frame``."""
    x1, y1, x2, y2 = FACE_BOX
    crop = cv2.resize(frame[y1:y2, x1:x2], (IMG_SIZE, IMG_SIZE))
    masked = crop.copy()
    masked[IMG_SIZE // 2:] = 0
    face = np.concatenate([masked, crop], axis=2).transpose(2, 0, 1)[None] / 255.0
    face = torch.from_numpy(np.repeat(face, len(windows), 0)).float()
    audio = torch.from_numpy(windows[:, None]).float()
    with torch.inference_mode():
        out = FallbackGenerator()(audio, face, positions=torch.from_numpy(positions).long())
    out = (out.numpy().transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)
    full = np.repeat(frame[None], len(out), axis=0)
    for f, img in zip(full, out):
        f[y1:y2, x1:x2] = cv2.resize(img, (x2 - x1, y2 - y1))
    return full


def render_tiles(frame: np.ndarray, windows: np.ndarray, labels: list[str],
                 positions: np.ndarray) -> np.ndarray:
    """One labelled row of face-region tiles."""
    x1, y1, x2, y2 = FACE_BOX
    tiles = []
    m = VIEW_MARGIN
    for full, label in zip(render_faces(frame, windows, positions), labels):
        tile = full[y1 - m:y2 + m, x1 - m:x2 + m]
        tile = cv2.resize(tile, None, fx=TILE_SCALE, fy=TILE_SCALE, interpolation=cv2.INTER_CUBIC)
        cv2.putText(tile, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                    cv2.LINE_AA)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


def idle_row(frame: np.ndarray, n: int) -> np.ndarray:
    """Silent frames around the first blink: lid closing and opening, head drifting."""
    pos = np.arange(int(10 * FPS))
    closure = blink_closure(torch.from_numpy(pos), FPS).numpy()
    first = int(np.argmax(closure)) - n // 2
    pos = np.arange(first, first + n)
    silence = np.stack([vowel_window(0.0)] * n)
    lid = blink_closure(torch.from_numpy(pos), FPS).tolist()
    hx, hy = head_offset(torch.from_numpy(pos), FPS, torch.zeros(n))
    labels = [f"#{p} lid {c:.2f} head {x:+.1f},{y:+.1f}" for p, c, x, y in zip(pos, lid, hx.tolist(), hy.tolist())]
    return render_tiles(frame, silence, labels, pos)


def write_mp4(frame: np.ndarray, out: Path) -> None:
    """A small H.264 clip of the face region: speech_9s's first seconds, then idle."""
    mel = np.load(ROOT / "tests" / "data" / "speech_9s_mel.npy")
    starts = json.loads((ROOT / "tests" / "data" / "speech_9s_windows.json").read_text())["start_indices"]
    n_speech = min(len(starts), int(CLIP_SPEECH_S * FPS))
    speech = mel[:, np.asarray(starts[:n_speech])[:, None] + np.arange(MEL_STEP)].transpose(1, 0, 2)
    idle = np.stack([vowel_window(0.0)] * int(CLIP_IDLE_S * FPS))
    windows = np.concatenate([speech, idle]).astype(np.float32)
    x1, y1, x2, y2 = FACE_BOX
    m = CLIP_MARGIN
    full = render_faces(frame, windows, np.arange(len(windows)))[:, y1 - m:y2 + m, x1 - m:x2 + m]
    h, w = full.shape[1] // 2 * 2, full.shape[2] // 2 * 2
    cmd = [ffmpeg_binary(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
           "-s", f"{w}x{h}", "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-crf", "23", str(out)]
    subprocess.run(cmd, input=np.ascontiguousarray(full[:, :h, :w]).tobytes(), check=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} kB, {len(windows)} frames)")


def features(windows: np.ndarray) -> list[tuple[float, float, float]]:
    """(energy, opening, rounding) per window, as the renderer sees them."""
    feats = FallbackGenerator().mouth_features(torch.from_numpy(windows[:, None]).float())
    return list(zip(*(f.tolist() for f in feats)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "fallback_contact_sheet.png")
    parser.add_argument("--mp4", type=Path, default=None, help="also write a short speech + idle clip")
    parser.add_argument("--first-frame", type=int, default=4, help="first speech_9s frame")
    args = parser.parse_args()

    frame = cv2.imread(str(AVATAR))
    synth = np.stack([vowel_window(v) for v in LOUDNESS])
    labels = [f"energy {e:.2f} open {o:.2f}" for e, o, _ in features(synth)]
    n = len(LOUDNESS)
    rows = [render_tiles(frame, synth, labels, np.zeros(n, dtype=np.int64))]
    real = golden_windows(n, args.first_frame)
    if real is not None:
        labels = [f"#{args.first_frame + i} E{e:.1f} o{o:.2f} r{round(r, 2) + 0.0:+.2f}"
                  for i, (e, o, r) in enumerate(features(real))]
        rows.append(render_tiles(frame, real, labels, np.arange(args.first_frame, args.first_frame + n)))
    rows.append(idle_row(frame, n))
    if args.mp4 is not None:
        write_mp4(frame, args.mp4)
    sheet = np.concatenate(rows, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), sheet)
    print(f"wrote {args.out} {sheet.shape[1]}x{sheet.shape[0]}")


if __name__ == "__main__":
    main()
