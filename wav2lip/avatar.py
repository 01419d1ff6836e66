"""Avatars: a face image or video prepared once into frames, boxes and 96x96 crops.

Preparation (decode, resize, detect, pad, smooth, crop) is the slow part of a new
face, so its result is one compressed ``.npz`` payload keyed by a content hash of
the media bytes and the preparation settings, and is reused for every request.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .avatar_media import FrameBuffer, MediaFrames, load_media  # noqa: F401 (load_media: public here too)
from .errors import NoFaceDetected
from .face import FaceTracker, pad_boxes, smooth_boxes
from .hparams import IMG_SIZE
from .media_limits import MAX_PIXELS, MAX_VIDEO_FRAMES, MediaLimits  # noqa: F401 (the limits' old home)
from .keys import avatar_key
from .options import AvatarOptions

DEFAULT_AVATAR_PATH = Path(__file__).parent / "assets" / "default_avatar.png"
DEFAULT_AVATAR_ID = "default"
_PREP_VERSION = 1  #: bump when preparation changes, so old cache entries are not reused


@dataclass
class Avatar:
    """A prepared face: everything the renderer needs per output frame."""

    frames: np.ndarray  #: (n, H, W, 3) uint8 BGR, after resize_factor
    boxes: np.ndarray  #: (n, 4) int32 crop box y1, y2, x1, x2 (official order)
    crops: np.ndarray  #: (n, 96, 96, 3) uint8 BGR model input crops
    fps: float | None  #: the video's frame rate; None for a still image
    avatar_id: str
    options: AvatarOptions

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    def frame_indices(self, start: int, stop: int, loop: str = "pingpong") -> np.ndarray:
        """(stop - start,) avatar frame used for each output frame.

        ``wrap`` is the official i mod n (a jump back to frame 0); ``pingpong`` plays
        forward then backward, so a video avatar never jumps.
        """
        idx = np.arange(start, stop, dtype=np.int64)
        n = self.n_frames
        if n == 1:
            return np.zeros_like(idx)
        if loop == "wrap":
            return idx % n
        period = 2 * n - 2
        r = idx % period
        return np.where(r < n, r, period - r)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        meta = {"fps": self.fps, "avatar_id": self.avatar_id, "options": asdict(self.options), "version": _PREP_VERSION}
        np.savez_compressed(buf, frames=self.frames, boxes=self.boxes, crops=self.crops, meta=np.array(json.dumps(meta)))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Avatar:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            opts = meta["options"]
            opts["pads"] = tuple(opts["pads"])
            opts["box"] = tuple(opts["box"]) if opts["box"] else None
            return cls(npz["frames"], npz["boxes"], npz["crops"], meta["fps"], meta["avatar_id"], AvatarOptions(**opts))

    def summary(self) -> dict:
        """JSON-able description (the API's avatar record)."""
        return {
            "avatar_id": self.avatar_id,
            "frames": self.n_frames,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "face_box": [int(v) for v in self.boxes[0]],
            "kind": "image" if self.fps is None else "video",
        }


def prepare_avatar(
    media: bytes | str | Path,
    options: AvatarOptions = AvatarOptions(),
    avatar_id: str | None = None,
    limits: MediaLimits = MediaLimits(),
) -> Avatar:
    """Decode, resize, find the face per frame and crop it (the official preprocessing).

    Frames stream from the decoder: each is searched for a face at full resolution,
    resized and written into the one frames array, so full-size frames are never all
    in memory. ``limits`` bound pixels per frame, frames x pixels and the frame rate
    (``InputTooLarge``, ``UnsupportedMedia``), checked before decoding where headers allow.
    """
    data = Path(media).read_bytes() if isinstance(media, (str, Path)) else bytes(media)
    rf = options.resize_factor
    with MediaFrames(data, limits, options.max_frames or None) as source:
        buffer = FrameBuffer(source.capacity)
        tracker = FaceTracker() if options.box is None else None
        for frame in source:
            if buffer.n == 0:
                h, w = frame.shape[:2]
                _check_fits(h, w, options)
            if tracker is not None:  # detect at full resolution (small resized faces defeat Haar)
                tracker.add(frame)
            buffer.append(cv2.resize(frame, (w // rf, h // rf)) if rf > 1 else frame)
        fps = source.fps
    frames = buffer.array()
    n, h, w = frames.shape[:3]
    if options.box is not None:
        boxes = np.tile(np.array(options.box, np.int64), (n, 1))  # y1, y2, x1, x2
    else:
        padded = pad_boxes(tracker.boxes() // rf, options.pads, h, w)  # x1, y1, x2, y2
        if options.smooth:
            padded = smooth_boxes(padded)
        boxes = padded[:, [1, 3, 0, 2]]
    if ((boxes[:, 1] - boxes[:, 0]) < 2).any() or ((boxes[:, 3] - boxes[:, 2]) < 2).any():
        raise NoFaceDetected("the face box is empty after padding and resizing", int(np.argmax(boxes[:, 1] - boxes[:, 0] < 2)))
    crops = np.stack([cv2.resize(f[y1:y2, x1:x2], (IMG_SIZE, IMG_SIZE)) for f, (y1, y2, x1, x2) in zip(frames, boxes)])
    return Avatar(frames, boxes.astype(np.int32), crops, fps, avatar_id or avatar_key(data, options), options)


def _check_fits(h: int, w: int, options: AvatarOptions) -> None:
    """``NoFaceDetected`` when an h x w frame cannot hold a face or the fixed box."""
    rf = options.resize_factor
    if min(h, w) < 2 * rf or min(h, w) < 16:
        raise NoFaceDetected(f"the avatar is {w}x{h} pixels: too small to hold a face", 0)
    if options.box is not None:  # the box is in the resized frame's pixels (official --box)
        y1, y2, x1, x2 = options.box
        if y2 > h // rf or x2 > w // rf:
            raise NoFaceDetected(f"box {options.box} lies outside the {w // rf}x{h // rf} avatar", 0)
