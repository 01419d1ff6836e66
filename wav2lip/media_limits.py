"""How much avatar media the engine will decode: pixels per frame, frames x pixels, frame rate.

Limits are checked at the door, from headers, before any pixel is decoded, and again
while decoding (a header can lie). The service hands its own ``MediaLimits`` down;
the defaults below are what the engine uses otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputTooLarge, InvalidSettings, UnsupportedMedia

MAX_PIXELS = 4096 * 4096  #: pixels in one image or video frame (16.8 megapixels)
MAX_VIDEO_FRAMES = 1500  #: frames kept from an avatar video (60 s at 25 fps); later frames are not read
#: Decoded frames x pixels per frame of one avatar video: 640 M is about 1.9 GB of BGR
#: frames, e.g. 27 s of 720p or 12 s of 1080p at 25 fps, 60 s of 854x480.
MAX_VIDEO_PIXELS = 640_000_000
MIN_AVATAR_FPS = 1.0  #: slower avatar videos are refused (the request's fps has the same range)
MAX_AVATAR_FPS = 60.0  #: faster avatar videos keep every k-th frame, so they play at <= this
DEFAULT_VIDEO_FPS = 25.0  #: a video whose rate is missing or unreadable plays at this


@dataclass(frozen=True)
class MediaLimits:
    """Bounds on one avatar's media; every figure must be positive."""

    max_pixels: int = MAX_PIXELS
    max_frames: int = MAX_VIDEO_FRAMES
    max_video_pixels: int = MAX_VIDEO_PIXELS
    min_fps: float = MIN_AVATAR_FPS
    max_fps: float = MAX_AVATAR_FPS

    def __post_init__(self):
        if min(self.max_pixels, self.max_frames, self.max_video_pixels) <= 0:
            raise InvalidSettings("media limits must be positive")
        if not 0 < self.min_fps <= self.max_fps:
            raise InvalidSettings(f"min_fps {self.min_fps} and max_fps {self.max_fps} must satisfy 0 < min <= max")

    def check_frame(self, width: int, height: int, what: str = "avatar image") -> None:
        """``InputTooLarge`` when one width x height frame is over ``max_pixels``."""
        if width * height > self.max_pixels:
            raise InputTooLarge(
                f"the {what} is {width}x{height}; the limit is {self.max_pixels / 1e6:.1f} megapixels per frame"
            )

    def check_video(self, width: int, height: int, n_frames: int) -> None:
        """``InputTooLarge`` when ``n_frames`` decoded frames of width x height exceed the budget."""
        if n_frames * width * height > self.max_video_pixels:
            seconds_hint = self.max_video_pixels // max(1, width * height)
            raise InputTooLarge(
                f"the avatar video is too large: {n_frames} frames of {width}x{height} are over the limit of "
                f"{self.max_video_pixels / 1e6:.3g} M frame pixels (at this size at most {seconds_hint} frames)"
            )

    def frame_step(self, fps: float) -> int:
        """Keep every k-th frame of a ``fps`` video so it plays at ``fps / k`` <= ``max_fps``.

        Dropping whole frames at a fixed step keeps motion even (no judder), as a player
        showing a 120 fps clip on a 60 Hz screen does; refusing would turn away ordinary
        high-frame-rate phone clips. Below ``min_fps`` is refused: no real face video is that slow.
        """
        if fps < self.min_fps:
            raise UnsupportedMedia(f"the avatar video plays at {fps:g} fps; at least {self.min_fps:g} fps is needed")
        return max(1, math.ceil(fps / self.max_fps - 1e-9))


def video_fps(fps: float | None) -> float:
    """The rate a video declares, or ``DEFAULT_VIDEO_FPS`` when it is missing, zero or not a number."""
    return float(fps) if fps and math.isfinite(fps) and fps > 0 else DEFAULT_VIDEO_FPS
