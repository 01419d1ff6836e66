"""Wav2Lip engine: checkpoint-exact lip-sync rendering with no Ray dependency.

Hard imports are numpy, torch and OpenCV (plus the ffmpeg binary); TTS imports
Piper lazily.
"""

from .audio import (
    DecodedAudio,
    decode_audio,
    final_frames,
    frame_count,
    load_audio,
    mel_windows,
    melspectrogram,
    official_frame_count,
    sanitize_samples,
    window_starts,
)
from .avatar import DEFAULT_AVATAR_ID, DEFAULT_AVATAR_PATH, Avatar, avatar_key, prepare_avatar
from .checkpoint import (
    CHECKPOINT_NAMES,
    file_sha256,
    find_checkpoint,
    load_checkpoint,
    random_state_dict,
    save_official_checkpoint,
)
from .avatar_media import MediaFrames
from .encode import SegmentEncoder, combine_segments, read_frames
from .errors import (
    AudioDecodeError,
    CheckpointError,
    EmptyText,
    EncodeError,
    InputError,
    InputTooLarge,
    InvalidSettings,
    MediaDecodeError,
    NoFaceDetected,
    NotFound,
    PrecisionRefused,
    RenderError,
    UnsupportedMedia,
    Wav2LipError,
)
from .generator import Generator, GeneratorSpec, generator_spec
from .idle import render_idle
from .media_limits import MediaLimits
from .model import Wav2Lip
from .options import PRESETS, AvatarOptions, EncodeOptions, RenderOptions, preset
from .pipeline import RenderResult, lip_sync, load_generator, output_fps, render_segment
from .render import Renderer
from .keys import KEY_VERSION, content_key

__all__ = [
    "AudioDecodeError", "Avatar", "AvatarOptions", "CHECKPOINT_NAMES", "CheckpointError", "DEFAULT_AVATAR_ID",
    "DecodedAudio", "MediaFrames", "MediaLimits", "decode_audio", "sanitize_samples",
    "DEFAULT_AVATAR_PATH", "EmptyText", "EncodeError", "EncodeOptions", "InputError", "InputTooLarge",
    "Generator", "GeneratorSpec", "InvalidSettings", "MediaDecodeError", "NoFaceDetected", "NotFound", "PRESETS",
    "PrecisionRefused", "RenderError", "RenderOptions",
    "RenderResult", "Renderer", "SegmentEncoder", "UnsupportedMedia", "Wav2Lip", "Wav2LipError", "KEY_VERSION",
    "avatar_key", "combine_segments", "content_key", "file_sha256", "final_frames", "find_checkpoint", "frame_count",
    "generator_spec", "lip_sync",
    "load_audio", "load_checkpoint", "load_generator", "mel_windows", "melspectrogram", "official_frame_count",
    "output_fps", "prepare_avatar", "preset", "random_state_dict", "read_frames", "render_idle", "render_segment",
    "save_official_checkpoint", "window_starts",
]  # fmt: skip
