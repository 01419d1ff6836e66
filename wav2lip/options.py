"""Plain dataclasses of the engine's tunables.

The engine never reads the environment: the service (or the CLI) builds these and
hands them down. Dataclasses, not pydantic, so the engine runs where only numpy,
torch and OpenCV are installed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import InvalidSettings
from .hparams import DEFAULT_PADS

#: "auto" (chosen by measurement, wav2lip/selection.py) or a mode of wav2lip/backends: "fp32" is
#: the official layout, bit for bit; the others trade exactness for speed.
PRECISIONS = ("auto", "fp32", "fp32-fast", "bf16", "fp16", "openvino-fp32", "openvino-bf16", "onnx-fp32", "int8")
#: dB, PSNR against fp32 on held-out frames below which int8 is refused at load.
INT8_FLOOR_DB = 35.0
REFUSAL_POLICIES = ("error", "next")
#: dB, PSNR against fp32 on the same inputs below which "auto" never picks a mode.
ACCURACY_FLOOR_DB = 30.0
#: Seconds the measurement behind "auto" may take (once per machine + model + libraries).
SELECTION_BUDGET_S = 5.0
#: Where the verdicts (and converted models) are kept; "~" is the user's home.
SELECTION_DIR = "~/.cache/wav2lip/selection"
LOOP_MODES = ("pingpong", "wrap")


@dataclass(frozen=True)
class RenderOptions:
    """How the model runs: device, numeric precision and batch size."""

    device: str = "auto"  #: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"  #: "auto" = fastest accurate mode, measured; "fp32" is exact
    batch_size: int = 0  #: frames per model call; 0 = measured with the mode
    threads: int = 0  #: torch intra-op threads on CPU; 0 = leave torch's default
    accuracy_floor_db: float = ACCURACY_FLOOR_DB  #: "auto" keeps only modes at least this close to fp32
    selection_budget_s: float = SELECTION_BUDGET_S  #: bound on the measurement behind "auto"
    selection_dir: str = SELECTION_DIR  #: verdicts shared by every worker on the machine
    candidates: tuple[str, ...] = ()  #: modes "auto" may pick; () = every mode available here
    int8_floor_db: float = INT8_FLOOR_DB  #: int8 below this against fp32 is refused
    on_refusal: str = "error"  #: a refused mode: "error" raises PrecisionRefused; "next" logs and uses auto

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise InvalidSettings(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.batch_size < 0 or self.batch_size > 4096:
            raise InvalidSettings(f"batch_size must be 0 (auto) or 1..4096, not {self.batch_size}")
        unknown = [c for c in self.candidates if c not in PRECISIONS[1:]]
        if unknown:
            raise InvalidSettings(f"unknown candidate mode {unknown[0]!r}; choose from {PRECISIONS[1:]}")
        if not 0 <= self.accuracy_floor_db <= 200:
            raise InvalidSettings(f"accuracy_floor_db must be 0..200, not {self.accuracy_floor_db}")
        if self.on_refusal not in REFUSAL_POLICIES:
            raise InvalidSettings(f"on_refusal must be one of {REFUSAL_POLICIES}, not {self.on_refusal!r}")
        if not 0 <= self.int8_floor_db <= 200:
            raise InvalidSettings(f"int8_floor_db must be 0..200, not {self.int8_floor_db}")
        if not 0 <= self.selection_budget_s <= 600:
            raise InvalidSettings(f"selection_budget_s must be 0..600, not {self.selection_budget_s}")


@dataclass(frozen=True)
class AvatarOptions:
    """How a face image or video becomes an avatar (part of its content key)."""

    pads: tuple[int, int, int, int] = DEFAULT_PADS  #: top, bottom, left, right
    box: tuple[int, int, int, int] | None = None  #: fixed crop y1, y2, x1, x2 (official --box)
    smooth: bool = True  #: the official 5-frame box smoothing
    resize_factor: int = 1  #: divide width and height by this before everything else
    max_frames: int = 0  #: cap on video frames read (0 = all)

    def __post_init__(self):
        if len(self.pads) != 4 or any(p < 0 or p > 1000 for p in self.pads):
            raise InvalidSettings("pads must be four integers 0..1000 (top, bottom, left, right)")
        if self.box is not None:
            y1, y2, x1, x2 = self.box
            if len(self.box) != 4 or y1 < 0 or x1 < 0 or y2 <= y1 or x2 <= x1:
                raise InvalidSettings("box must be four integers y1 y2 x1 x2 with y1 < y2 and x1 < x2")
        if not 1 <= self.resize_factor <= 16:
            raise InvalidSettings(f"resize_factor must be 1..16, not {self.resize_factor}")


@dataclass(frozen=True)
class EncodeOptions:
    """How frames become video: codec settings of one preset."""

    name: str = "balanced"
    fps: float = 25.0
    resize_factor: int = 1
    crf: int = 23
    x264_preset: str = "veryfast"
    lossless: bool = False  #: FFV1 in Matroska, BGR kept exactly (CLI / Python API only)
    audio_bitrate: str = "64k"


PRESETS: dict[str, EncodeOptions] = {
    # The old VBVA system's "ultra fast" mode: 12 fps, quarter resolution.
    "ultra_fast": EncodeOptions("ultra_fast", fps=12.0, resize_factor=4, crf=28, x264_preset="ultrafast"),
    "balanced": EncodeOptions("balanced", fps=25.0, resize_factor=1, crf=23, x264_preset="veryfast"),
    "quality": EncodeOptions("quality", fps=25.0, resize_factor=1, crf=18, x264_preset="medium"),
}
DEFAULT_PRESET = "balanced"


def preset(name: str, **overrides) -> EncodeOptions:
    """The named preset with some fields replaced; unknown names are a settings error."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise InvalidSettings(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
