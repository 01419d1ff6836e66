"""The Wav2Lip generator, parameter for parameter the official network.

Module and parameter names follow the official checkpoints exactly
(``tests/data/state_dict_spec.tsv``), so ``load_state_dict(strict=True)`` accepts
the released ``wav2lip.pth`` / ``wav2lip_gan.pth`` weights.
"""

from __future__ import annotations

import torch
from torch import nn

from .hparams import IMG_SIZE, MEL_STEP, N_MELS


class ConvBlock(nn.Module):
    """Conv + BatchNorm + ReLU, optionally residual (the official ``Conv2d``)."""

    def __init__(self, cin, cout, kernel_size, stride, padding, residual=False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x):
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class UpBlock(nn.Module):
    """Transposed conv + BatchNorm + ReLU (the official ``Conv2dTranspose``)."""

    def __init__(self, cin, cout, kernel_size, stride, padding, output_padding=0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv_block(x))


def _stage(cin: int, cout: int, stride, n_residual: int, kernel_size=3, padding=1) -> list[nn.Module]:
    """One downsampling conv followed by residual convs at the new width."""
    return [ConvBlock(cin, cout, kernel_size, stride, padding)] + [
        ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(n_residual)
    ]


def _up_stage(cin: int, cout: int, n_residual: int, stride=2, padding=1, output_padding=1) -> nn.Sequential:
    return nn.Sequential(
        UpBlock(cin, cout, 3, stride, padding, output_padding),
        *[ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(n_residual)],
    )


class Wav2Lip(nn.Module):
    """Face encoder (96 -> 1 px) + audio encoder (80x16 mel -> 512) + U-Net decoder."""

    renderer_kind = "wav2lip"
    # The generator interface (wav2lip/generator.py).
    crop_size = IMG_SIZE
    n_mels = N_MELS
    mel_step = MEL_STEP
    uses_positions = False

    def __init__(self):
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBlock(6, 16, 7, 1, 3)),  # 96
                nn.Sequential(*_stage(16, 32, 2, 2)),  # 48
                nn.Sequential(*_stage(32, 64, 2, 3)),  # 24
                nn.Sequential(*_stage(64, 128, 2, 2)),  # 12
                nn.Sequential(*_stage(128, 256, 2, 2)),  # 6
                nn.Sequential(*_stage(256, 512, 2, 1)),  # 3
                nn.Sequential(ConvBlock(512, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0)),  # 1
            ]
        )
        self.audio_encoder = nn.Sequential(
            *_stage(1, 32, 1, 2),
            *_stage(32, 64, (3, 1), 2),
            *_stage(64, 128, 3, 2),
            *_stage(128, 256, (3, 2), 1),
            ConvBlock(256, 512, 3, 1, 0),
            ConvBlock(512, 512, 1, 1, 0),
        )
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBlock(512, 512, 1, 1, 0)),
                _up_stage(1024, 512, 1, stride=1, padding=0, output_padding=0),  # 3
                _up_stage(1024, 512, 2),  # 6
                _up_stage(768, 384, 2),  # 12
                _up_stage(512, 256, 2),  # 24
                _up_stage(320, 128, 2),  # 48
                _up_stage(160, 64, 2),  # 96
            ]
        )
        self.output_block = nn.Sequential(ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """audio (B,1,80,16) + face (B,6,96,96) -> (B,3,96,96); 5-D (B,T,...) inputs fold T into B."""
        steps = None
        if audio.dim() == 5:
            steps = audio.shape[1]
            audio = audio.flatten(0, 1)
            face = face.transpose(1, 2).flatten(0, 1)
        x = self.audio_encoder(audio)
        skips = []
        feat = face
        for block in self.face_encoder_blocks:
            feat = block(feat)
            skips.append(feat)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        out = self.output_block(x)
        if steps is not None:
            out = out.unflatten(0, (-1, steps)).transpose(1, 2)
        return out
