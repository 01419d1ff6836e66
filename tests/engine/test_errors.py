"""The exception tree: families, codes, and pickling across processes (Ray actors) intact."""

from __future__ import annotations

import pickle

import pytest

import wav2lip
from wav2lip import errors
from wav2lip.errors import (
    AudioDecodeError,
    CheckpointError,
    EncodeError,
    InputError,
    NoFaceDetected,
    RenderError,
    RetryLater,
    Wav2LipError,
)

pytestmark = pytest.mark.timeout(30)

ALL = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Wav2LipError)]


def test_every_error_has_its_own_code():
    exported = [getattr(wav2lip, n) for n in wav2lip.__all__]
    exported = [c for c in exported if isinstance(c, type) and issubclass(c, Exception)]
    assert len(exported) >= 13 and set(exported) <= set(ALL)
    codes = [c.code for c in ALL]
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_plain_errors_round_trip(cls):
    exc = cls("something went wrong")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert str(back) == "something went wrong" and back.message == exc.message and back.args == exc.args
    assert back.code == cls.code


@pytest.mark.parametrize("exc, attr, value", [
    (NoFaceDetected("no face in frame 17", frame_index=17), "frame_index", 17),
    (CheckpointError("checkpoint /x/wav2lip.pth is truncated", path="/x/wav2lip.pth"), "path", "/x/wav2lip.pth"),
    (EncodeError("ffmpeg failed", stderr_tail="Invalid data found\n"), "stderr_tail", "Invalid data found\n"),
    (RetryLater("all workers busy", retry_after_s=3), "retry_after_s", 3),
])  # fmt: skip
def test_attributes_survive_pickling(exc, attr, value):
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert getattr(back, attr) == value
    assert str(back) == str(exc)
    with pytest.raises(type(exc)):
        raise back


def test_families():
    assert issubclass(NoFaceDetected, InputError) and issubclass(AudioDecodeError, InputError)
    assert not issubclass(CheckpointError, InputError) and not issubclass(RenderError, InputError)
    assert all(issubclass(c, Wav2LipError) for c in ALL)
    assert NoFaceDetected("x").frame_index == 0 and CheckpointError("x").path == "" and EncodeError("x").stderr_tail == ""
