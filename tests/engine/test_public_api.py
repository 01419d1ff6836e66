"""The package's public surface: ``__all__`` is exactly what ``wav2lip`` exports, and no Ray."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import wav2lip

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


def test_all_matches_exported_members():
    """As httpx's test_exported_members: every public name is in __all__, and nothing else."""
    exported = {
        name for name, value in vars(wav2lip).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)  # submodules are not API
    }  # fmt: skip
    assert len(wav2lip.__all__) == len(set(wav2lip.__all__))
    assert set(wav2lip.__all__) == exported
    for name in wav2lip.__all__:
        assert getattr(wav2lip, name) is not None, name


def test_import_pulls_in_no_service_dependencies():
    code = (
        "import sys, wav2lip, wav2lip.pipeline, wav2lip.fallback\n"
        "heavy = ('ray', 'pydantic', 'fastapi', 'starlette', 'piper', 'onnxruntime')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
