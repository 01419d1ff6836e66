"""Avatars: a face image or video prepared once into frames, boxes and 96x96 crops.

Preparation (decode, resize, detect, pad, smooth, crop) is the slow part of a new
face, so its result is one compressed ``.npz`` payload keyed by a content hash of
the media bytes and the preparation settings, and is reused for every request.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import InputTooLarge, MediaDecodeError, NoFaceDetected, UnsupportedMedia
from .face import detect_faces, pad_boxes, smooth_boxes
from .hparams import IMG_SIZE
from .options import AvatarOptions
from .keys import avatar_key

DEFAULT_AVATAR_PATH = Path(__file__).parent / "assets" / "default_avatar.png"
DEFAULT_AVATAR_ID = "default"
MAX_PIXELS = 4096 * 4096  #: larger frames are refused before any full decode
MAX_VIDEO_FRAMES = 1500  #: 60 s at 25 fps
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"BM")


def _is_image(data: bytes) -> bool:
    return data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _is_video(data: bytes) -> bool:
    """Plain video containers only: MP4/MOV, Matroska/WebM, AVI (never playlists or lists,
    which OpenCV's FFmpeg backend would follow to other files)."""
    return data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3" or (data[:4] == b"RIFF" and data[8:12] == b"AVI ")
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


def _decode_image(data: bytes) -> np.ndarray | None:
    arr = np.frombuffer(data, np.uint8)
    frame = cv2.imdecode(arr, cv2.IMREAD_COLOR)
    return frame


def _image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG/JPEG header without decoding pixels; None if unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:3] == b"\xff\xd8\xff":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _read_video(data: bytes, max_frames: int) -> tuple[np.ndarray, float]:
    with tempfile.TemporaryDirectory(prefix="w2l-face-") as tmp:
        path = os.path.join(tmp, "face")
        with open(path, "wb") as fh:
            fh.write(data)
        cap = cv2.VideoCapture(path)
        try:
            if not cap.isOpened():
                raise UnsupportedMedia("the avatar is neither a readable image (PNG, JPEG) nor a video (MP4, WebM, MOV)")
            w, h = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
            if w * h > MAX_PIXELS:
                raise InputTooLarge(f"the avatar video is {int(w)}x{int(h)}; the limit is {MAX_PIXELS} pixels per frame")
            fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
            frames = []
            while len(frames) < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                frames.append(frame)
        finally:
            cap.release()
    if not frames:
        raise MediaDecodeError("the avatar video has no decodable frames")
    return np.stack(frames), float(fps)


def load_media(data: bytes, max_frames: int = MAX_VIDEO_FRAMES) -> tuple[np.ndarray, float | None]:
    """(n, H, W, 3) uint8 BGR frames and fps (None for an image) from image or video bytes."""
    if not data:
        raise MediaDecodeError("the avatar file is empty")
    if _is_image(data):
        size = _image_size(data)
        if size and size[0] * size[1] > MAX_PIXELS:
            raise InputTooLarge(f"the avatar image is {size[0]}x{size[1]}; the limit is {MAX_PIXELS} pixels")
        frame = _decode_image(data)
        if frame is None:
            raise MediaDecodeError("the avatar image could not be decoded (truncated or corrupt file)")
        return frame[None], None
    if not _is_video(data):
        raise UnsupportedMedia("the avatar is neither an image (PNG, JPEG, BMP, WebP) nor a video (MP4, MOV, WebM, MKV, AVI)")
    return _read_video(data, max_frames)


def prepare_avatar(media: bytes | str | Path, options: AvatarOptions = AvatarOptions(), avatar_id: str | None = None) -> Avatar:
    """Decode, resize, find the face per frame and crop it (the official preprocessing)."""
    data = Path(media).read_bytes() if isinstance(media, (str, Path)) else bytes(media)
    frames, fps = load_media(data, options.max_frames or MAX_VIDEO_FRAMES)
    n, h, w = frames.shape[:3]
    if min(h, w) < 2 * options.resize_factor or min(h, w) < 16:
        raise NoFaceDetected(f"the avatar is {w}x{h} pixels: too small to hold a face", 0)
    rf = options.resize_factor
    if options.box is not None:  # the box is in the resized frame's pixels (official --box)
        y1, y2, x1, x2 = options.box
        if y2 > h // rf or x2 > w // rf:
            raise NoFaceDetected(f"box {options.box} lies outside the {w // rf}x{h // rf} avatar", 0)
    if options.box is None:
        # Detect at full resolution (small resized faces defeat Haar), then scale down.
        faces = detect_faces(frames) // rf
    if rf > 1:
        frames = np.stack([cv2.resize(f, (w // rf, h // rf)) for f in frames])
        h, w = frames.shape[1:3]
    if options.box is not None:
        y1, y2, x1, x2 = options.box
        boxes = np.tile(np.array([y1, y2, x1, x2], np.int64), (n, 1))
    else:
        padded = pad_boxes(faces, options.pads, h, w)  # x1, y1, x2, y2
        if options.smooth:
            padded = smooth_boxes(padded)
        boxes = padded[:, [1, 3, 0, 2]]
    if ((boxes[:, 1] - boxes[:, 0]) < 2).any() or ((boxes[:, 3] - boxes[:, 2]) < 2).any():
        raise NoFaceDetected("the face box is empty after padding and resizing", int(np.argmax(boxes[:, 1] - boxes[:, 0] < 2)))
    crops = np.stack([cv2.resize(f[y1:y2, x1:x2], (IMG_SIZE, IMG_SIZE)) for f, (y1, y2, x1, x2) in zip(frames, boxes)])
    return Avatar(frames, boxes.astype(np.int32), crops, fps, avatar_id or avatar_key(data, options), options)
