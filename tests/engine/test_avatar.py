"""Avatars: decoding, face boxes (Haar + tracking), official pads and smoothing, crops, cache payload."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from wav2lip import (
    Avatar,
    AvatarOptions,
    InputError,
    MediaDecodeError,
    NoFaceDetected,
    UnsupportedMedia,
    avatar_key,
    prepare_avatar,
)
from wav2lip.face import detect_faces, pad_boxes, smooth_boxes

pytestmark = pytest.mark.timeout(120)

HAAR_BOX = (177, 66, 272, 161)  #: x1, y1, x2, y2 of the still's face (fixtures README)
FACE_BOX = [66, 171, 177, 272]  #: y1, y2, x1, x2: the Haar box + the default 10 px bottom pad
NO_PADS = (0, 0, 0, 0)


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def read_video(path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return np.stack(frames)


@pytest.fixture(scope="module")
def avatar_png(data_dir) -> bytes:
    return (data_dir / "avatar.png").read_bytes()


@pytest.fixture(scope="module")
def video_frames(data_dir) -> np.ndarray:
    return read_video(data_dir / "avatar_2s.mp4")


@pytest.fixture(scope="module")
def video_boxes(video_frames) -> np.ndarray:
    return detect_faces(video_frames)


def test_default_avatar(default_avatar):
    summary = default_avatar.summary()
    assert summary["face_box"] == FACE_BOX
    assert summary["kind"] == "image" and summary["frames"] == 1 and summary["fps"] is None
    assert (summary["width"], summary["height"]) == (512, 512)
    assert default_avatar.frames.shape == (1, 512, 512, 3) and default_avatar.frames.dtype == np.uint8
    assert default_avatar.boxes.dtype == np.int32
    y1, y2, x1, x2 = FACE_BOX
    expected = cv2.resize(default_avatar.frames[0, y1:y2, x1:x2], (96, 96))
    assert np.array_equal(default_avatar.crops[0], expected)


def test_still_detection_is_the_haar_box(avatar_png):
    frame = cv2.imdecode(np.frombuffer(avatar_png, np.uint8), cv2.IMREAD_COLOR)
    assert detect_faces(frame[None]).tolist() == [list(HAAR_BOX)]


def test_video_boxes_follow_the_face(data_dir, video_frames, video_boxes):
    """Before padding and smoothing, every frame's box is the real face (not the spurious larger box)."""
    reference = np.array(json.loads((data_dir / "avatar_2s_haar_boxes.json").read_text())["boxes"])
    assert len(video_frames) == len(reference) == 50
    x, y, w, h = reference.T
    expected = np.stack([x, y, x + w, y + h], 1)
    assert video_boxes.shape == (50, 4)
    assert np.abs(video_boxes - expected).max() <= 5
    sides = video_boxes[:, 2] - video_boxes[:, 0]
    assert sides.max() <= 105  # the spurious box is ~123 px wide, at x ~289


def test_video_avatar_pads_then_smooths(data_dir, video_frames, video_boxes):
    avatar = prepare_avatar(data_dir / "avatar_2s.mp4")
    assert avatar.n_frames == 50 and avatar.fps == 25.0 and avatar.summary()["kind"] == "video"
    padded = pad_boxes(video_boxes, (0, 10, 0, 0), 512, 512)
    expected = smooth_boxes(padded)[:, [1, 3, 0, 2]]
    assert np.array_equal(avatar.boxes, expected)
    assert np.array_equal(avatar.frames, video_frames)
    assert avatar.crops.shape == (50, 96, 96, 3)


def test_box_override_used_as_is(data_dir):
    box = (40, 200, 150, 300)
    avatar = prepare_avatar(data_dir / "avatar_2s.mp4", AvatarOptions(box=box, max_frames=8))
    assert avatar.n_frames == 8
    assert (avatar.boxes == np.array(box)).all()  # no pads, no smoothing, no detection
    y1, y2, x1, x2 = box
    assert np.array_equal(avatar.crops[3], cv2.resize(avatar.frames[3, y1:y2, x1:x2], (96, 96)))


def test_box_override_is_in_resized_pixels(avatar_png):
    avatar = prepare_avatar(avatar_png, AvatarOptions(box=(10, 250, 20, 256), resize_factor=2))
    assert avatar.frames.shape == (1, 256, 256, 3)
    assert avatar.boxes.tolist() == [[10, 250, 20, 256]]
    with pytest.raises(NoFaceDetected, match="outside"):  # fits 512x512, not the 256x256 frame
        prepare_avatar(avatar_png, AvatarOptions(box=(0, 400, 0, 400), resize_factor=2))


def official_smooth(boxes: np.ndarray, T: int = 5) -> np.ndarray:
    """The official get_smoothened_boxes, literally (in place on an int array)."""
    boxes = boxes.copy()
    for i in range(len(boxes)):
        if i + T > len(boxes):
            window = boxes[len(boxes) - T :]
        else:
            window = boxes[i : i + T]
        boxes[i] = np.mean(window, axis=0)
    return boxes


@pytest.mark.parametrize("n", range(1, 10))
def test_smooth_boxes_equals_official(n):
    rng = np.random.default_rng(n)
    for _ in range(20):
        boxes = rng.integers(0, 600, (n, 4)).astype(np.int64)
        assert np.array_equal(smooth_boxes(boxes), official_smooth(boxes))


def test_smooth_boxes_long_sequence(video_boxes):
    assert np.array_equal(smooth_boxes(video_boxes), official_smooth(video_boxes))


def test_pads_clip_at_frame_edges(avatar_png):
    boxes = np.array([[177, 66, 272, 161], [5, 3, 500, 509]])
    padded = pad_boxes(boxes, (10, 20, 30, 40), 512, 512)  # top, bottom, left, right
    assert padded.tolist() == [[147, 56, 312, 181], [0, 0, 512, 512]]
    avatar = prepare_avatar(avatar_png, AvatarOptions(pads=(100, 400, 200, 300)))
    assert avatar.boxes.tolist() == [[0, 512, 0, 512]]


def test_resize_factor_halves_frames_and_boxes(avatar_png):
    full = prepare_avatar(avatar_png, AvatarOptions(pads=NO_PADS))
    half = prepare_avatar(avatar_png, AvatarOptions(pads=NO_PADS, resize_factor=2))
    assert full.frames.shape == (1, 512, 512, 3) and half.frames.shape == (1, 256, 256, 3)
    assert full.boxes.tolist() == [[66, 161, 177, 272]]
    assert half.boxes.tolist() == (full.boxes // 2).tolist()
    # Pads are in the resized frame's pixels, as the official code pads after resizing.
    padded = prepare_avatar(avatar_png, AvatarOptions(resize_factor=2))
    assert padded.boxes.tolist() == [[33, 90, 88, 136]]


def _avatar(n: int) -> Avatar:
    frames = np.zeros((n, 16, 16, 3), np.uint8)
    return Avatar(frames, np.zeros((n, 4), np.int32), np.zeros((n, 96, 96, 3), np.uint8), 25.0, "t", AvatarOptions())


def test_frame_indices_loop_modes():
    four = _avatar(4)
    assert four.frame_indices(0, 10, "wrap").tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert four.frame_indices(0, 10, "pingpong").tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert four.frame_indices(0, 10).tolist() == four.frame_indices(0, 10, "pingpong").tolist()
    assert four.frame_indices(7, 13, "pingpong").tolist() == four.frame_indices(0, 13, "pingpong")[7:].tolist()
    assert four.frame_indices(5, 9, "wrap").tolist() == [1, 2, 3, 0]
    assert _avatar(2).frame_indices(0, 5, "pingpong").tolist() == [0, 1, 0, 1, 0]
    assert _avatar(1).frame_indices(3, 7, "pingpong").tolist() == [0, 0, 0, 0]
    assert _avatar(1).frame_indices(3, 7, "wrap").tolist() == [0, 0, 0, 0]


def test_payload_round_trip(data_dir):
    avatar = prepare_avatar(data_dir / "avatar_2s.mp4", AvatarOptions(pads=(1, 2, 3, 4), max_frames=6))
    back = Avatar.from_bytes(avatar.to_bytes())
    for name in ("frames", "boxes", "crops"):
        a, b = getattr(avatar, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert (back.fps, back.avatar_id, back.options) == (avatar.fps, avatar.avatar_id, avatar.options)
    boxed = prepare_avatar(data_dir / "avatar.png", AvatarOptions(box=(60, 180, 170, 280)))
    back = Avatar.from_bytes(boxed.to_bytes())
    assert back.options == boxed.options and back.options.box == (60, 180, 170, 280) and back.fps is None


def test_flat_or_noise_image_has_no_face():
    for image in (np.full((256, 256, 3), 128, np.uint8), np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)):
        with pytest.raises(NoFaceDetected) as info:
            prepare_avatar(png(image))
        assert info.value.frame_index == 0


def test_one_pixel_image():
    with pytest.raises(NoFaceDetected, match="1x1") as info:
        prepare_avatar(png(np.zeros((1, 1, 3), np.uint8)))
    assert info.value.frame_index == 0


def test_truncated_png(avatar_png):
    with pytest.raises(MediaDecodeError):
        prepare_avatar(avatar_png[:1000])


def test_random_bytes():
    with pytest.raises(UnsupportedMedia):
        prepare_avatar(np.random.default_rng(0).bytes(5000))
    with pytest.raises(MediaDecodeError):
        prepare_avatar(b"")


def test_errors_are_input_errors():
    assert all(issubclass(e, InputError) for e in (NoFaceDetected, MediaDecodeError, UnsupportedMedia))


def test_avatar_id_is_content_and_settings(avatar_png):
    a = prepare_avatar(avatar_png)
    b = prepare_avatar(bytes(avatar_png))
    c = prepare_avatar(avatar_png, AvatarOptions(pads=(0, 20, 0, 0)))
    assert a.avatar_id == b.avatar_id == avatar_key(avatar_png, AvatarOptions())
    assert c.avatar_id != a.avatar_id
    assert avatar_key(avatar_png[:-1] + b"\0", AvatarOptions()) != a.avatar_id
    assert prepare_avatar(avatar_png, avatar_id="mine").avatar_id == "mine"
