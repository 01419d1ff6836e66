"""Session fixtures shared by the engine tests: fixture data, a random official checkpoint, audio, avatar.

Everything reads ``tests/data`` only. The random checkpoint is written in the official
training format (``{'state_dict': {'module.<key>': tensor}, ...}``), so loading it goes
through exactly the code path the released ``wav2lip.pth`` files take.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import wav2lip

DATA_DIR = Path(__file__).resolve().parent / "data"
RANDOM_SEED = 0


def pytest_configure(config):
    # Tests are sized for 2 CPU cores; more threads than cores only adds contention.
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """An official-format checkpoint file (``module.`` keys) with random, input-sensitive weights."""
    path = tmp_path_factory.mktemp("checkpoint") / "wav2lip.pth"
    return wav2lip.save_official_checkpoint(wav2lip.random_state_dict(RANDOM_SEED), path)


@pytest.fixture(scope="session")
def random_model(random_checkpoint) -> wav2lip.Wav2Lip:
    return wav2lip.load_checkpoint(random_checkpoint)


@pytest.fixture(scope="session")
def speech_samples(data_dir) -> np.ndarray:
    """speech_9s.wav: 140 806 samples, 16 kHz mono float32."""
    return wav2lip.load_audio(data_dir / "speech_9s.wav")


@pytest.fixture(scope="session")
def default_avatar() -> wav2lip.Avatar:
    """The shipped default avatar, prepared with the default settings (512x512 still)."""
    return wav2lip.prepare_avatar(wav2lip.DEFAULT_AVATAR_PATH)
