"""The plugin's tunables in one place: what the session socket accepts and how output is paced."""

from __future__ import annotations

from pydantic import BaseModel, Field

MIN_SAMPLE_RATE = 8_000  #: Hz, the lowest ``sample_rate`` the session socket accepts
MAX_SAMPLE_RATE = 48_000  #: Hz, the highest
FALLBACK_SAMPLE_RATE = 16_000  #: Hz, used when the pipeline's rate is outside the socket's range


class Wav2LipParams(BaseModel):
    """How the service talks to the session and pushes what comes back.

    Parameters:
        sample_rate: PCM rate of the session socket. ``None``: the pipeline's output rate (what
            Pipecat TTS services produce by default), or 16 kHz if that is outside 8-48 kHz. TTS
            audio at any other rate is resampled to it, so one socket serves the whole call.
        idle_frames: push the avatar's idle frames (blinking, silent audio) between utterances,
            so a live transport keeps showing a moving face. ``False`` pushes speech frames only.
        pace: push each frame when it is due on the session timeline (real time), instead of as
            soon as it arrives (a fragment's frames arrive together).
        max_lag_s: a frame this late re-anchors the pacing clock instead of being rushed.
        drain_timeout_s: on ``EndFrame``, how long to wait for queued speech to be rendered.
        open_timeout_s: how long to wait for the session socket's ``ready`` event.
        close_timeout_s: how long to wait for the service to close the socket after ``close``.
        request_timeout_s: HTTP timeout for opening the session and reading its state.
    """

    sample_rate: int | None = Field(None, ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)
    idle_frames: bool = True
    pace: bool = True
    max_lag_s: float = Field(0.5, gt=0)
    drain_timeout_s: float = Field(30.0, ge=0)
    open_timeout_s: float = Field(30.0, gt=0)
    close_timeout_s: float = Field(5.0, ge=0)
    request_timeout_s: float = Field(30.0, gt=0)


def socket_rate(requested: int | None, pipeline_rate: int) -> int:
    """The socket's PCM rate: the one asked for, else the pipeline's when the socket accepts it."""
    if requested is not None:
        return requested
    if MIN_SAMPLE_RATE <= pipeline_rate <= MAX_SAMPLE_RATE:
        return pipeline_rate
    return FALLBACK_SAMPLE_RATE
