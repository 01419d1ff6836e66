"""The baseline of the model sweep: a loop written like the official Wav2Lip inference.

Numpy float64 preprocessing, ``torch.FloatTensor``, a plain fp32 forward, x255 and truncate,
batch by batch: what the renderer's own path is measured against.
"""

from __future__ import annotations

import numpy as np
import torch

from .common import Stopwatch


def official_style_fps(model: torch.nn.Module, device: str, crops: np.ndarray, windows: np.ndarray, batch: int,
                       repeats: int) -> float:
    """The official loop: numpy float64 preprocessing, FloatTensor, fp32 forward, x255 and truncate."""
    model = model.to(device).eval()

    def run(c, w):
        masked = c.copy()
        masked[:, 48:] = 0
        img = np.concatenate((masked, c), axis=3) / 255.0
        mel = np.reshape(w, [len(w), w.shape[1], w.shape[2], 1])
        img_t = torch.FloatTensor(np.transpose(img, (0, 3, 1, 2))).to(device)
        mel_t = torch.FloatTensor(np.transpose(mel, (0, 3, 1, 2))).to(device)
        with torch.no_grad():
            pred = model(mel_t, img_t)
        return (pred.cpu().numpy().transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)

    run(crops[:batch], windows[:batch])  # warm-up
    n, best = len(crops), float("inf")
    for _ in range(repeats):
        with Stopwatch() as sw:
            for a in range(0, n, batch):
                run(crops[a : a + batch], windows[a : a + batch])
        best = min(best, sw.seconds)
    return n / best
