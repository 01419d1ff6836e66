"""HTTP statuses for every error, in one table, and the JSON error body.

Engine errors (``wav2lip.errors``) and the service's own are mapped here and only
here; the most specific class wins, anything unknown is a 500 (our bug).
"""

from __future__ import annotations

from wav2lip.errors import (
    AudioDecodeError,
    CheckpointError,
    EmptyText,
    EncodeError,
    Expired,
    InputError,
    InputTooLarge,
    InvalidSettings,
    MediaDecodeError,
    NoFaceDetected,
    NotFound,
    RenderError,
    RetryLater,
    UnsupportedMedia,
    Wav2LipError,
)


class Overloaded(RetryLater):
    """The service's queues are full; retry after ``retry_after_s``."""

    code = "overloaded"


class NotReady(Wav2LipError):
    """The service is starting or has no worker replica."""

    code = "not_ready"


class RenderFailed(Wav2LipError):
    """A chunk failed on every attempt; nothing was cached."""

    code = "render_failed"


class UploadTimedOut(InputError):
    """The request body did not arrive within ``upload_timeout_s`` (a slow or stalled client)."""

    code = "upload_timeout"


#: The status table (also in the README). 500 only for our own bugs.
STATUS: dict[type[Wav2LipError], int] = {
    InputError: 400,
    UploadTimedOut: 408,
    NotFound: 404,
    Expired: 410,
    InputTooLarge: 413,
    UnsupportedMedia: 415,
    InvalidSettings: 422,
    AudioDecodeError: 422,
    MediaDecodeError: 422,
    NoFaceDetected: 422,
    EmptyText: 422,
    RetryLater: 503,  #: Overloaded, SessionsFull, PeersFull: with Retry-After
    NotReady: 503,
    RenderFailed: 502,
    RenderError: 500,
    EncodeError: 500,
    CheckpointError: 500,
}


def status_for(exc: BaseException) -> int:
    return next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), 500)


def error_code(exc: BaseException) -> str:
    """The ``error`` field: the class's own code (engine classes are wrapped by Ray)."""
    for cls in type(exc).__mro__:
        if issubclass(cls, Wav2LipError) and "code" in cls.__dict__:
            return cls.__dict__["code"]
    return "internal_error"


def error_body(code: str, message: str) -> dict:
    return {"error": code, "message": message}
