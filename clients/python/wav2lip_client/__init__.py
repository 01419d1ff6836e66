"""Python client for the Wav2Lip talking-head service (sync ``Client``, asyncio ``AsyncClient``).

    from wav2lip_client import Client

    with Client("http://localhost:8000") as client:
        video = client.render("speech.wav")            # or render(text="Hello!", agent_type="general")
        open("answer.mp4", "wb").write(video.download())
"""

from ._common import __version__
from .aio import AsyncClient
from .aio_session import AsyncSession
from .client import Client
from .session import Session
from .errors import (
    BadRequest,
    Disconnected,
    Expired,
    Forbidden,
    InvalidInput,
    NotFound,
    Overloaded,
    RenderFailed,
    ServerError,
    ServiceError,
    TooLarge,
    Unauthorized,
    Unsupported,
)
from .models import (
    Event,
    Fragment,
    Frame,
    FrameError,
    JobStatus,
    SessionStatus,
    StreamInfo,
    StreamStatus,
    Video,
    parse_frame_message,
)

__all__ = [
    "AsyncClient", "AsyncSession", "BadRequest", "Client", "Disconnected", "Event", "Expired", "Forbidden",
    "Fragment", "Frame", "FrameError", "InvalidInput", "JobStatus", "NotFound", "Overloaded", "RenderFailed",
    "ServerError", "ServiceError", "Session", "SessionStatus", "StreamInfo", "StreamStatus", "TooLarge",
    "Unauthorized", "Unsupported", "Video", "__version__", "parse_frame_message",
]
