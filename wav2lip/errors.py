"""The engine's exception tree.

Every error a caller can act on is one of these. Constructors take plain values so
the exceptions pickle across Ray actors and keep their type; the service maps
classes to HTTP statuses in one table (``serve_app/errors.py``).
"""

from __future__ import annotations


class Wav2LipError(Exception):
    """Base of every error raised by the engine."""

    code = "wav2lip_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __reduce__(self):
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls, state):
    exc = cls.__new__(cls)
    Exception.__init__(exc, state.get("message", ""))
    exc.__dict__.update(state)
    return exc


class InputError(Wav2LipError):
    """The request's own data or settings are unusable."""

    code = "invalid_input"


class InvalidSettings(InputError):
    """A render setting is out of range or inconsistent."""

    code = "invalid_settings"


class PrecisionRefused(InvalidSettings):
    """A mode was asked for but measured too far from fp32 on this model (int8 below its floor)."""

    code = "precision_refused"


class AudioDecodeError(InputError):
    """The audio could not be decoded, or holds no samples."""

    code = "undecodable_audio"


class MediaDecodeError(InputError):
    """An image or video could not be decoded."""

    code = "undecodable_media"


class NoFaceDetected(InputError):
    """No face was found in a frame of the avatar."""

    code = "no_face_detected"

    def __init__(self, message: str, frame_index: int = 0):
        super().__init__(message)
        self.frame_index = frame_index


class UnsupportedMedia(InputError):
    """The upload is not a media type the service reads."""

    code = "unsupported_media"


class InputTooLarge(InputError):
    """An upload, image, audio or text is over its configured limit."""

    code = "input_too_large"


class NotFound(Wav2LipError):
    """An avatar, video or other item with that id does not exist."""

    code = "not_found"


class Expired(NotFound):
    """The item existed but its retention ended, or it was evicted to free space."""

    code = "expired"


class CheckpointError(Wav2LipError):
    """A checkpoint file is missing, truncated or does not match the model."""

    code = "checkpoint_error"

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.path = path


class RenderError(Wav2LipError):
    """The model or renderer failed on valid input (our bug or the device's)."""

    code = "model_failed"


class EncodeError(Wav2LipError):
    """FFmpeg failed; the message carries the tail of its stderr."""

    code = "encode_failed"

    def __init__(self, message: str, stderr_tail: str = ""):
        super().__init__(message)
        self.stderr_tail = stderr_tail


class EmptyText(InputError):
    """Text for speech synthesis is empty or holds nothing speakable."""

    code = "empty_text"


class RetryLater(Wav2LipError):
    """The service takes no more of this now (queues, sessions, peers full): retry after
    ``retry_after_s`` (the HTTP layer answers 503 with Retry-After)."""

    code = "retry_later"

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s
