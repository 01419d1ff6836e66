"""Face boxes per frame: Haar detection with tracking, official pads and smoothing.

OpenCV's frontal-face Haar cascade ships inside the ``opencv-python-headless`` wheel,
so nothing is downloaded at run time. On video it returns spurious extra boxes, so we
never take "the largest": the first frame keeps the candidate with the most
neighbour votes, later frames the candidate that overlaps the previous frame's face
(searching a window around it first), falling back to the most votes.
See docs/face_detection.md.
"""

from __future__ import annotations

import cv2
import numpy as np

from .errors import NoFaceDetected
from .hparams import SMOOTH_WINDOW

_CASCADE_FILE = "haarcascade_frontalface_default.xml"
HAAR_SCALE_FACTOR = 1.1
HAAR_MIN_NEIGHBORS = 3  #: low, to keep recall; votes and tracking reject the spurious boxes
MIN_FACE_FRACTION = 0.08  #: smallest face side searched, as a fraction of the frame's short side
TRACK_MARGIN = 0.5  #: search window around the previous face, in face sizes on each side
TRACK_MIN_IOU = 0.3
MAX_MISSING_FRAMES = 5  #: video frames without a face that borrow the nearest detection

_cascade = None


def _classifier() -> cv2.CascadeClassifier:
    global _cascade
    if _cascade is None:
        _cascade = cv2.CascadeClassifier(cv2.data.haarcascades + _CASCADE_FILE)
        if _cascade.empty():
            raise RuntimeError(f"OpenCV's {_CASCADE_FILE} is missing (opencv-python-headless<5 ships it)")
    return _cascade


def _candidates(gray: np.ndarray, offset=(0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """(k, 4) x1,y1,x2,y2 boxes and (k,) neighbour votes in ``gray`` (shifted by ``offset``)."""
    min_side = max(20, int(MIN_FACE_FRACTION * min(gray.shape[:2])))
    rects, votes = _classifier().detectMultiScale2(
        gray, scaleFactor=HAAR_SCALE_FACTOR, minNeighbors=HAAR_MIN_NEIGHBORS, minSize=(min_side, min_side)
    )
    if len(rects) == 0:
        return np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
    rects = np.asarray(rects, np.int64)
    boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]], 1)
    boxes[:, [0, 2]] += offset[0]
    boxes[:, [1, 3]] += offset[1]
    return boxes, np.asarray(votes, np.int64).reshape(-1)


def _iou(boxes: np.ndarray, ref: np.ndarray) -> np.ndarray:
    x1 = np.maximum(boxes[:, 0], ref[0])
    y1 = np.maximum(boxes[:, 1], ref[1])
    x2 = np.minimum(boxes[:, 2], ref[2])
    y2 = np.minimum(boxes[:, 3], ref[3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(boxes) + area(ref) - inter, 1)


def _pick(boxes: np.ndarray, votes: np.ndarray, previous: np.ndarray | None) -> np.ndarray | None:
    if len(boxes) == 0:
        return None
    if previous is not None:
        overlap = _iou(boxes, previous)
        near = overlap >= TRACK_MIN_IOU
        if near.any():
            return boxes[near][np.argmax(votes[near])]
    return boxes[np.argmax(votes)]


def _detect_one(gray: np.ndarray, previous: np.ndarray | None) -> np.ndarray | None:
    if previous is not None:  # search near the last face first: faster, and stays on it
        h, w = gray.shape
        size = max(previous[2] - previous[0], previous[3] - previous[1])
        m = int(size * TRACK_MARGIN)
        x1, y1 = max(0, previous[0] - m), max(0, previous[1] - m)
        x2, y2 = min(w, previous[2] + m), min(h, previous[3] + m)
        box = _pick(*_candidates(gray[y1:y2, x1:x2], (x1, y1)), previous)
        if box is not None and _iou(box[None], previous)[0] >= TRACK_MIN_IOU:
            return box
    return _pick(*_candidates(gray), previous)


class FaceTracker:
    """Face boxes of a video fed one frame at a time, so its frames need not all be in memory.

    ``add`` detects in one frame (searching near the previous face first); ``boxes``
    fills the gaps as ``detect_faces`` documents. The same boxes as ``detect_faces``.
    """

    def __init__(self):
        self._found: list[np.ndarray | None] = []
        self._previous: np.ndarray | None = None

    def add(self, frame: np.ndarray) -> None:
        """Detect in one (H, W, 3) uint8 BGR frame."""
        box = _detect_one(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), self._previous)
        self._found.append(box)
        self._previous = box if box is not None else self._previous

    def boxes(self) -> np.ndarray:
        """(n, 4) int64 x1,y1,x2,y2 per frame added; ``NoFaceDetected`` as ``detect_faces``."""
        found = self._found
        hits = np.array([b is not None for b in found])
        if not hits.any():
            raise NoFaceDetected("no face detected in the avatar (frame 0); use a frontal, well-lit face or pass a box", 0)
        hit_idx = np.flatnonzero(hits)
        boxes = np.empty((len(found), 4), np.int64)
        for i, box in enumerate(found):
            if box is None:
                nearest = hit_idx[np.argmin(np.abs(hit_idx - i))]
                if abs(nearest - i) > MAX_MISSING_FRAMES:
                    raise NoFaceDetected(f"no face detected in frame {i} of the avatar video", int(i))
                box = found[nearest]
            boxes[i] = box
        return boxes


def detect_faces(frames: np.ndarray) -> np.ndarray:
    """(n, 4) int64 x1,y1,x2,y2 face box per (n, H, W, 3) uint8 BGR frame.

    Frames without a face borrow the nearest detected frame's box when the gap is at
    most ``MAX_MISSING_FRAMES``; otherwise ``NoFaceDetected`` names the frame.
    """
    tracker = FaceTracker()
    for frame in frames:
        tracker.add(frame)
    return tracker.boxes()


def pad_boxes(boxes: np.ndarray, pads, height: int, width: int) -> np.ndarray:
    """(n, 4) x1,y1,x2,y2 boxes grown by pads (top, bottom, left, right), clipped to the frame."""
    top, bottom, left, right = pads
    out = boxes.copy()
    out[:, 0] = np.maximum(0, boxes[:, 0] - left)
    out[:, 1] = np.maximum(0, boxes[:, 1] - top)
    out[:, 2] = np.minimum(width, boxes[:, 2] + right)
    out[:, 3] = np.minimum(height, boxes[:, 3] + bottom)
    return out


def smooth_boxes(boxes: np.ndarray, window: int = SMOOTH_WINDOW) -> np.ndarray:
    """The official forward-looking box smoothing, quirks included.

    Box i becomes the truncated mean of boxes i..i+window-1; the last boxes use the
    final window, which by then already holds smoothed values (the official code works
    in place). Leading boxes are one vectorised moving mean; only the tail loops.
    """
    out = np.array(boxes, dtype=np.int64)
    n = len(out)
    head = max(0, n - window + 1)
    if head:
        csum = np.concatenate([np.zeros((1, 4)), np.cumsum(out, axis=0, dtype=np.float64)])
        out[:head] = ((csum[window : window + head] - csum[:head]) / window).astype(np.int64)
    for i in range(head, n):  # at most window - 1 iterations
        out[i] = np.mean(out[n - window :], axis=0).astype(np.int64)  # negative start for n < window, as official
    return out
