"""What the sync and async clients share: request shapes, answers, socket messages."""

from __future__ import annotations

import json
import mimetypes
import os
import re
from pathlib import Path
from typing import Any, BinaryIO, Union
from urllib.parse import quote, urlencode

import httpx

from .errors import Disconnected, error_class, error_from_response
from .models import Event, Fragment, Frame, event_from_text, frame_from_message

__version__ = "0.1.0"

DEFAULT_BASE_URL = "http://localhost:8000"
DEFAULT_TIMEOUT = 600.0  #: seconds to wait for an answer (a synchronous render of long audio takes a while)
CONNECT_TIMEOUT = 10.0
OUTPUTS = ("fmp4", "frames")

#: audio, a face image/video: bytes, a path, or an open binary file
Media = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", BinaryIO]

_AUDIO_TYPES = ("audio/", "video/")
_AVATAR_TYPES = ("image/", "video/")


def timeout_of(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=CONNECT_TIMEOUT if timeout is None else min(timeout, CONNECT_TIMEOUT))


def headers_for(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"wav2lip-client/{__version__}"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def read_media(media: Media, default_name: str, kinds: tuple[str, ...]) -> tuple[str, bytes, str]:
    """(filename, bytes, content type) of an upload given as bytes, a path or a binary file."""
    if isinstance(media, (bytes, bytearray, memoryview)):
        return default_name, bytes(media), "application/octet-stream"
    if isinstance(media, (str, os.PathLike)):
        path = Path(media)
        data, name = path.read_bytes(), path.name
    elif hasattr(media, "read"):
        data = media.read()
        if isinstance(data, str):
            raise TypeError("open the file in binary mode ('rb')")
        name = Path(getattr(media, "name", "") or default_name).name
    else:
        raise TypeError(f"expected bytes, a path or a binary file, not {type(media).__name__}")
    guessed = mimetypes.guess_type(name)[0] or ""
    return name, data, guessed if guessed.startswith(kinds) else "application/octet-stream"


def form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def video_request(audio: Media | None, text: str | None, avatar: Media | None, fields: dict[str, Any]) -> dict:
    """httpx keyword arguments (``data``, ``files``) for ``POST /v1/videos`` and ``/v1/streams``."""
    if audio is None and text is None:
        raise ValueError("give audio (bytes, a path or a file) or text")
    data = {k: form_value(v) for k, v in fields.items() if v is not None}
    if text is not None:
        data["text"] = text
    files = {}
    if audio is not None:
        files["audio"] = read_media(audio, "audio", _AUDIO_TYPES)
    if avatar is not None:
        files["avatar"] = read_media(avatar, "avatar", _AVATAR_TYPES)
    out: dict[str, Any] = {"data": data}
    if files:
        out["files"] = files
    return out


def avatar_upload(avatar: Media) -> dict:
    return {"files": {"avatar": read_media(avatar, "avatar", _AVATAR_TYPES)}}


def session_body(**fields: Any) -> dict:
    return {k: v for k, v in fields.items() if v is not None}


def segment(value: str) -> str:
    """An id as one path segment (the service checks its format; this keeps it one segment)."""
    return quote(str(value), safe="")


def check(response: httpx.Response) -> httpx.Response:
    """``response`` if it is a success (its body read), else the typed error."""
    if response.is_success:
        return response
    raise error_from_response(response.status_code, response.content, response.headers)


def ws_url(base_url: httpx.URL, ws_path: str, query: dict[str, Any]) -> str:
    """The session socket's ``ws://``/``wss://`` URL: base URL + the ``ws`` path the service gave."""
    scheme = {"http": "ws", "https": "wss"}.get(base_url.scheme, base_url.scheme)
    prefix = base_url.raw_path.decode().split("?")[0].rstrip("/")
    path = ws_path if ws_path.startswith("/") else "/" + ws_path
    netloc = base_url.netloc.decode()
    return f"{scheme}://{netloc}{prefix}{path}?{urlencode(query)}"


class SocketDecoder:
    """Turns one socket's messages into ``Event``, ``Fragment`` (fmp4) or ``Frame`` (frames)."""

    def __init__(self, output: str):
        self.output = output
        self.binary_seen = 0

    def decode(self, message: str | bytes) -> Event | Fragment | Frame:
        if isinstance(message, str):
            return event_from_text(message)
        self.binary_seen += 1
        if self.output == "frames":
            return frame_from_message(message)
        return Fragment(data=bytes(message), init=self.binary_seen == 1)


def text_message(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def refusal_error(exc: Exception):
    """The typed error for a socket the service refused before the upgrade (websockets ``InvalidStatus``)."""
    response = exc.response  # type: ignore[attr-defined]
    return error_from_response(response.status_code, response.body or b"", response.headers)


def session_urls(session_id: str) -> dict:
    """What ``POST /v1/sessions`` answers, for a session known by id only."""
    base = f"/v1/sessions/{segment(session_id)}"
    return {"session_id": session_id, "ws": f"{base}/ws", "live_mp4": f"{base}/live.mp4", "status_url": base}


def disconnected(code: int, reason: str) -> Disconnected:
    return Disconnected(code, reason)


def closed_before_ready(exc: Disconnected) -> Exception:
    """A socket closed before its ready event: the typed error when the service said why
    (policy close ``1008`` with reason ``"<status> <message>"``), else ``exc``."""
    match = re.match(r"(\d{3}) (.*)", exc.reason or "", re.S)
    if exc.code == 1008 and match:
        status = int(match.group(1))
        return error_class(status)(status, f"http_{status}", match.group(2), body=exc.reason)
    return exc
