"""TTS voices that ship inside installed packages (nothing is downloaded at run time)."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_VOICE = "en_US-joe-medium"


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    language: str
    sample_rate: int
    package: str
    license: str


# --------------------------------------------------------------------------- voices


@functools.lru_cache(maxsize=1)
def _voice_files() -> dict[str, tuple[VoiceInfo, Path, Path, str]]:
    """Scan installed distributions for Piper voices (``X.onnx`` next to ``X.onnx.json``)."""
    from importlib.metadata import distributions

    found: dict[str, tuple[VoiceInfo, Path, Path, str]] = {}
    for dist in distributions():
        files = {str(f): f for f in (dist.files or ())}
        for rel, f in files.items():
            if not rel.endswith(".onnx") or rel + ".json" not in files:
                continue
            model, config = Path(dist.locate_file(f)), Path(dist.locate_file(files[rel + ".json"]))
            try:
                cfg = json.loads(config.read_text(encoding="utf-8"))
                rate = int(cfg["audio"]["sample_rate"])
                cfg["phoneme_id_map"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a Piper voice config
            name = model.name[: -len(".onnx")]
            if name in found or not model.is_file():
                continue
            lang = (cfg.get("language") or {}).get("code") or cfg.get("espeak", {}).get("voice", "")
            meta = dist.metadata
            lic = meta.get("License-Expression") or meta.get("License") or "unknown"
            card = model.parent / "MODEL_CARD"  # upstream cards state the dataset licence
            if card.is_file():
                m = re.search(r"License:\s*(\S+)", card.read_text(encoding="utf-8", errors="replace"))
                if m and m.group(1) != lic:
                    lic = f"{lic} (voice data: {m.group(1)})"
            info = VoiceInfo(name, lang, rate, meta.get("Name", "?"), lic)
            found[name] = (info, model, config, dist.version)
    return found


def list_voices() -> list[VoiceInfo]:
    """Voices whose model ships inside an installed package (works without piper)."""
    return sorted((v[0] for v in _voice_files().values()), key=lambda v: v.name)
