"""Avatar media -> BGR frames, one at a time, within ``MediaLimits``.

Sizes come from headers before anything is decoded (``image_header`` for images,
ffmpeg's probe with ``-max_pixels`` for videos), the frames x pixels budget is checked
from the container's duration before decoding and counted again while decoding, and
frames are yielded one by one so a caller can keep only what it needs.
Images and videos decode with OpenCV, as before these checks: the frames are the same.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator

import cv2
import numpy as np

from .errors import InputTooLarge, MediaDecodeError, UnsupportedMedia
from .ffmpeg import probe_media
from .image_header import image_format, image_size
from .media_limits import MediaLimits, video_fps

_NOT_MEDIA = "the avatar is neither an image (PNG, JPEG, WebP, BMP, GIF, TIFF) nor a video (MP4, MOV, WebM, MKV, AVI)"


def is_video(data: bytes) -> bool:
    """Plain video containers only: MP4/MOV, Matroska/WebM, AVI (never playlists or lists,
    which OpenCV's FFmpeg backend would follow to other files)."""
    return data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3" or (data[:4] == b"RIFF" and data[8:12] == b"AVI ")


class MediaFrames:
    """The frames of an avatar image or video: ``fps`` (None for an image), then iterate.

    ``capacity`` bounds how many frames iteration can yield (for a buffer allocated
    once). Use as a context manager: a video's temp file goes away on exit.
    """

    def __init__(self, data: bytes, limits: MediaLimits = MediaLimits(), max_frames: int | None = None):
        if not data:
            raise MediaDecodeError("the avatar file is empty")
        self.limits = limits
        self.keep = min(max_frames or limits.max_frames, limits.max_frames)
        self._tmp = None
        self._cap = None
        if image_format(data) is not None:
            self.fps, self.step, self.capacity = None, 1, 1
            self._image = _decode_image(data, limits)
            return
        if not is_video(data):
            raise UnsupportedMedia(_NOT_MEDIA)
        self._image = None
        try:
            self._open_video(data)
        except BaseException:
            self.close()
            raise

    def _open_video(self, data: bytes) -> None:
        limits = self.limits
        self._tmp = tempfile.TemporaryDirectory(prefix="w2l-face-")
        path = os.path.join(self._tmp.name, "face")
        with open(path, "wb") as fh:
            fh.write(data)
        info = probe_media(path, limits.max_pixels)
        if info.too_many_pixels:
            raise InputTooLarge(f"a frame of the avatar video is over the limit of {limits.max_pixels / 1e6:.1f} megapixels")
        if info.width is None or info.height is None:
            raise UnsupportedMedia(f"{_NOT_MEDIA}: no video stream with a readable frame size")
        limits.check_frame(info.width, info.height, "avatar video")
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            raise UnsupportedMedia(_NOT_MEDIA)
        self._pixels = info.width * info.height
        source_fps = video_fps(self._cap.get(cv2.CAP_PROP_FPS))
        self.step = limits.frame_step(source_fps)
        self.fps = source_fps / self.step
        self.capacity = max(1, min(self.keep, limits.max_video_pixels // self._pixels))
        if info.reliable_duration_s is not None:  # refuse from the header, before decoding
            decoded = min(math.ceil(info.reliable_duration_s * source_fps - 1e-6), self.keep * self.step)
            limits.check_video(info.width, info.height, decoded)

    def __iter__(self) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 BGR frames: every ``step``-th of a video, at most ``keep`` of them."""
        if self._image is not None:
            yield self._image
            return
        cap, limits, shape = self._cap, self.limits, None
        decoded = kept = 0
        while kept < self.keep:
            if decoded % self.step:  # a dropped frame: decoded, never converted
                if not cap.grab():
                    break
                decoded += 1
                continue
            ok, frame = cap.read()
            if not ok:
                break
            decoded += 1
            height, width = frame.shape[:2]
            if shape is None:
                shape = frame.shape
                limits.check_frame(width, height, "avatar video")
            elif frame.shape != shape:
                raise MediaDecodeError(f"the avatar video changes frame size at frame {decoded - 1}")
            limits.check_video(width, height, decoded)  # counted while decoding: headers can lie
            kept += 1
            yield frame
        if kept == 0:
            raise MediaDecodeError("the avatar video has no decodable frames")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _decode_image(data: bytes, limits: MediaLimits) -> np.ndarray:
    """(H, W, 3) uint8 BGR, decoded only once its header's size is within the limit."""
    width, height = image_size(data)
    limits.check_frame(width, height)
    try:
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        frame = None
    if frame is None:
        raise MediaDecodeError("the avatar image could not be decoded (truncated or corrupt file)")
    limits.check_frame(frame.shape[1], frame.shape[0])
    return frame


def load_media(data: bytes, max_frames: int | None = None, limits: MediaLimits = MediaLimits()) -> tuple[np.ndarray, float | None]:
    """(n, H, W, 3) uint8 BGR frames and fps (None for an image) from image or video bytes."""
    with MediaFrames(data, limits, max_frames) as media:
        frames = FrameBuffer(media.capacity)
        for frame in media:
            frames.append(frame)
        return frames.array(), media.fps


class FrameBuffer:
    """Frames appended one by one into one array allocated once (no list + stack copy).

    The array is reserved for ``capacity`` frames at the first append (untouched pages
    cost no memory) and trimmed in place to the frames written.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._array: np.ndarray | None = None
        self.n = 0

    def append(self, frame: np.ndarray) -> None:
        if self._array is None:
            self._array = np.empty((self.capacity, *frame.shape), frame.dtype)
        if self.n == self.capacity:
            raise InputTooLarge(f"the avatar has more than {self.capacity} frames")
        self._array[self.n] = frame
        self.n += 1

    def array(self) -> np.ndarray:
        """(n, H, W, 3) the frames appended."""
        if self._array is None:
            raise MediaDecodeError("the avatar has no decodable frames")
        if self.n < self.capacity:
            self._array.resize((self.n, *self._array.shape[1:]), refcheck=False)
        return self._array
