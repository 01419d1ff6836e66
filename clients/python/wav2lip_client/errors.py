"""Typed errors for the service's JSON error bodies ``{"error": code, "message": text}``."""

from __future__ import annotations

import json
from typing import Any, Mapping


class ServiceError(Exception):
    """The service refused or failed a request: HTTP ``status``, snake_case ``code``, ``message``.

    ``status`` is the HTTP status of the answer; for a failed job (whose error arrives in a
    200 status body) it is the status the service gives that code elsewhere.
    """

    def __init__(self, status: int, code: str, message: str, *, retry_after_s: float | None = None,
                 body: Any = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.body = body  #: the decoded JSON body (or the text) as it came


class BadRequest(ServiceError):
    """400: the request cannot be read, or lacks audio."""


class Unauthorized(ServiceError):
    """401: the service has an API key and the request did not carry it."""


class Forbidden(ServiceError):
    """403: e.g. deleting the ``default`` avatar."""


class NotFound(ServiceError):
    """404 (unknown id) or 410 (expired: see ``Expired``)."""


class Expired(NotFound):
    """410: the item existed but its retention ended."""


class TooLarge(ServiceError):
    """413: upload, audio or text over the service's limit."""


class Unsupported(ServiceError):
    """415: the upload's media type is not one the service reads."""


class InvalidInput(ServiceError):
    """422: a bad setting or id, media that does not decode, no face, empty text."""


class RenderFailed(ServiceError):
    """502: a chunk failed on every retry."""


class Overloaded(ServiceError):
    """503 (``overloaded``, ``sessions_full``, ``not_ready``): retry after ``retry_after_s`` (may be None)."""


class ServerError(ServiceError):
    """500 (and other 5xx): the service's own bug."""


_BY_STATUS: dict[int, type[ServiceError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 410: Expired, 413: TooLarge,
    415: Unsupported, 422: InvalidInput, 502: RenderFailed, 503: Overloaded, 500: ServerError,
}

#: The service's error codes and their HTTP statuses (README "Errors"), for errors that
#: arrive without a status of their own (a failed job's ``error``).
CODE_STATUS: dict[str, int] = {
    "malformed_request": 400, "invalid_input": 400, "unauthorized": 401, "forbidden": 403,
    "not_found": 404, "upload_timeout": 408, "expired": 410, "input_too_large": 413,
    "unsupported_media": 415, "invalid_settings": 422, "undecodable_audio": 422, "undecodable_media": 422,
    "no_face_detected": 422, "empty_text": 422, "render_failed": 502, "overloaded": 503, "not_ready": 503,
    "sessions_full": 503, "internal_error": 500, "model_failed": 500, "encode_failed": 500,
    "checkpoint_error": 500,
}


def error_class(status: int) -> type[ServiceError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    return ServiceError


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form); None when absent or a date."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_response(status: int, body: bytes | str | None, headers: Mapping[str, str] | None = None) -> ServiceError:
    """The typed error for an HTTP answer ``status`` with ``body`` (JSON error body, or anything)."""
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else (body or "")
    decoded: Any = text
    code, message = f"http_{status}", text.strip()[:500] or f"HTTP {status}"
    try:
        decoded = json.loads(text) if text else None
    except ValueError:
        pass
    if isinstance(decoded, dict):
        if isinstance(decoded.get("error"), str):
            code = decoded["error"]
            message = str(decoded.get("message", message))
        elif "detail" in decoded:  # a plain FastAPI/Starlette body
            message = str(decoded["detail"])
    retry = None
    if headers is not None:
        retry = parse_retry_after(_header(headers, "retry-after"))
    return error_class(status)(status, code, message, retry_after_s=retry, body=decoded)


def error_from_code(code: str, message: str, body: Any = None) -> ServiceError:
    """The typed error for an error ``code`` reported without an HTTP status (a failed job)."""
    status = CODE_STATUS.get(code, 500)
    return error_class(status)(status, code, message, body=body)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    getter = getattr(headers, "get", None)
    value = getter(name) if getter else None
    if value is None:  # a plain dict with other capitalisation
        for key, v in headers.items():
            if str(key).lower() == name:
                return v
    return value


class Disconnected(ConnectionError):
    """A session socket closed: ``code`` (WebSocket close code; 1006 when it just dropped), ``reason``."""

    def __init__(self, code: int, reason: str = ""):
        super().__init__(f"the session socket closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason
