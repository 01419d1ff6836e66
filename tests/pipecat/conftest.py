"""The plugin's tests import ``wav2lip_pipecat``, its example and ``wav2lip_client`` from the repo,
without installing them (as ``tests/client`` does for the client)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "clients" / "python", ROOT / "integrations" / "pipecat", ROOT / "integrations" / "pipecat" / "examples"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
