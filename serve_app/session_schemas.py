"""The live-session protocol's records: what opens a session, what a socket may send."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from wav2lip.options import PRESETS

from .schemas import AVATAR_ID_PATTERN, known_preset, valid_unicode

SESSION_ID_PATTERN = r"^[0-9a-f]{32}$"
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 48000  #: what a socket's PCM may be sampled at
SOCKET_OUTPUTS = ("fmp4", "frames", "events")  #: events: no media (input and events beside WebRTC)
MAX_SDP_CHARS = 100_000  #: an SDP offer is a few kB


class SessionRequest(BaseModel):
    """Open a live session: an avatar (or the persona's), the voice of its text messages."""

    model_config = ConfigDict(extra="forbid")

    avatar_id: str | None = Field(None, pattern=AVATAR_ID_PATTERN, description="default: the persona's avatar")
    agent_type: str | None = Field(None, description="persona from agents.yaml: avatar, voice, rate, preset")
    voice: str | None = Field(None, description="TTS voice of text messages (GET /v1/voices); default: the persona's")
    preset: str | None = Field(None, description=f"one of {sorted(PRESETS)}: frame rate and resolution")
    fps: float | None = Field(None, ge=1, le=60, description="default: a video avatar's own rate, else the preset's")

    @field_validator("preset")
    @classmethod
    def _preset(cls, value):
        return known_preset(value)


class SessionCreated(BaseModel):
    session_id: str
    ws: str = Field(description="the session's WebSocket (query: sample_rate, output, token)")
    live_mp4: str = Field(description="the session's video as one fragmented MP4, from the live edge")
    status_url: str


class SessionStats(BaseModel):
    frames: int
    fragments: int
    behind: int = Field(description="times the session could not keep real time")
    render_failures: int = Field(description="fragments shown unsynced because every worker attempt failed")
    interruptions: int
    dropped_s: float = Field(description="seconds of input dropped (input_too_fast)")
    queue_s: float
    render_ms_median: float | None
    render_ms_max: float | None


class SessionStatus(BaseModel):
    session_id: str
    state: Literal["idle", "speaking", "closed"]
    fps: float
    width: int
    height: int
    pts: float = Field(description="seconds of timeline rendered so far")
    spoken_s: float = Field(description="seconds of speech played")
    queue_s: float = Field(description="seconds of speech waiting")
    viewers: int
    stats: SessionStats


class WebRTCOffer(BaseModel):
    """A browser's SDP offer (its ``pc.localDescription``), every ICE candidate in it."""

    model_config = ConfigDict(extra="forbid")

    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)
    type: Literal["offer"]


class WebRTCAnswer(BaseModel):
    """The service's SDP answer, for ``pc.setRemoteDescription``."""

    sdp: str
    type: Literal["answer"]


class TextMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str = Field(min_length=1)

    @field_validator("text")
    @classmethod
    def _text(cls, value):
        return valid_unicode(value)


class ControlMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["end_of_speech", "interrupt", "close"]


#: A socket's JSON text message.
SocketMessage = TypeAdapter(Annotated[Union[TextMessage, ControlMessage], Field(discriminator="type")])
