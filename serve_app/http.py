"""HTTP plumbing at the edge: error bodies, the streaming upload limit, byte ranges."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

from wav2lip.errors import InputTooLarge, Wav2LipError

from .errors import UploadTimedOut, error_body, error_code, status_for

log = logging.getLogger("ray.serve")

_HTTP_CODES = {400: "malformed_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               413: "input_too_large", 415: "unsupported_media", 416: "range_not_satisfiable", 503: "not_ready"}  # fmt: skip


class UploadTooLarge(InputTooLarge):
    """The request body passed the upload limit while it was arriving."""


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error": code, "message": text}`` with the table's status."""

    @app.exception_handler(Wav2LipError)
    async def _engine_error(request: Request, exc: Wav2LipError):
        status = status_for(exc)
        retry_after = getattr(exc, "retry_after_s", None)  # load shedding (RetryLater: Overloaded, SessionsFull, PeersFull)
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        if status >= 500 and status != 503:  # 503 is load shedding, not a failure
            log.error("request failed: %s", exc)
        message = getattr(exc, "message", None) or str(exc)
        return JSONResponse(error_body(error_code(exc), message), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(error_body("malformed_request", "the request body is not valid JSON"), status_code=400)
        parts = []
        for e in errors[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
        return JSONResponse(error_body("invalid_settings", "; ".join(parts)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse(error_body("internal_error", f"internal error ({type(exc).__name__}); please report it"),
                            status_code=500)  # fmt: skip


class EdgeConfig:
    """What the edge middleware enforces; set from the settings when a replica starts."""

    def __init__(self, max_bytes: int = 50 * 1024 * 1024, api_key: str | None = None, cors_origins=(),
                 upload_timeout_s: float = 60.0, max_uploads: int = 64, retry_after_s: int = 2):  # fmt: skip
        self.max_bytes = max_bytes
        self.api_key = api_key
        self.cors_origins = list(cors_origins)
        self.upload_timeout_s = upload_timeout_s  #: the whole body must arrive within this
        self.max_uploads = max_uploads  #: bodies being received at once; more are refused (503)
        self.retry_after_s = retry_after_s


#: Routes open without an API key: health probes, and the demo page (static; its API
#: calls send the key the user types in).
PUBLIC_PATHS = ("/healthz", "/")


class Edge:
    """ASGI middleware at the front of the app: API key, CORS, and the upload limit.

    The limit is checked from Content-Length and again while the body arrives, so an
    oversized upload is refused without being read into memory. Slow clients are bounded
    twice: a body must arrive within ``upload_timeout_s`` (else 408), and at most
    ``max_uploads`` bodies are received at once (else 503 at once), so uploads trickling
    in cannot take every request slot of the replica (health checks and reads go on). Starlette freezes its
    middleware once serving starts, so this one is installed at import and reads its
    ``EdgeConfig`` per request; CORS (Starlette's own middleware) is composed lazily.
    """

    def __init__(self, app, config: EdgeConfig):
        self.app = app
        self.config = config
        self._cors = None
        self.uploading = 0  #: request bodies being received now

    @property
    def max_bytes(self) -> int:
        return self.config.max_bytes

    def _inner(self):
        if not self.config.cors_origins:
            return self.app
        if self._cors is None:
            self._cors = CORSMiddleware(self.app, allow_origins=self.config.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                                        allow_headers=["Authorization", "Content-Type", "Range", "X-Request-ID"],
                                        expose_headers=["X-Request-ID", "Content-Range", "Retry-After"])  # fmt: skip
        return self._cors

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        key = self.config.api_key
        if key and scope["path"] not in PUBLIC_PATHS and scope["method"] != "OPTIONS":
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + key.encode()):
                return await _send_json(send, 401, "unauthorized", "send the API key as 'Authorization: Bearer <key>'",
                                        [(b"www-authenticate", b"Bearer")])  # fmt: skip
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_json(send, 413, "input_too_large",
                                    f"the upload is {int(declared)} bytes; the limit is {self.max_bytes} bytes")  # fmt: skip
        has_body = (declared not in (None, b"0")) or b"chunked" in headers.get(b"transfer-encoding", b"")
        if has_body and self.uploading >= self.config.max_uploads:
            return await _send_json(send, 503, "overloaded", f"{self.uploading} uploads are arriving; retry shortly",
                                    [(b"retry-after", str(self.config.retry_after_s).encode())])  # fmt: skip
        seen = 0
        receiving = has_body
        timed_out = started = False
        deadline = time.monotonic() + self.config.upload_timeout_s
        if receiving:
            self.uploading += 1

        def done_receiving() -> None:
            nonlocal receiving
            if receiving:
                receiving = False
                self.uploading -= 1

        async def counting_receive():
            nonlocal seen, timed_out
            if not receiving:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                done_receiving()
                timed_out = True  # the app sees the client gone; the 408 is sent below
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    done_receiving()
                    raise UploadTooLarge(f"the upload is over the limit of {self.max_bytes} bytes")
                if not message.get("more_body", False):
                    done_receiving()
            else:
                done_receiving()
            return message

        async def guarded_send(message):
            nonlocal started
            if timed_out:
                return  # whatever the app says about a body that never came, the answer is the 408
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._inner()(scope, counting_receive, guarded_send)
        except Exception:
            if not timed_out:
                raise
        finally:
            done_receiving()
        if timed_out and not started:
            await _send_json(send, 408, UploadTimedOut.code,
                             f"the upload did not arrive within {self.config.upload_timeout_s:g} s")  # fmt: skip


async def _send_json(send, status: int, code: str, message: str, extra_headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close"), *extra_headers]})  # fmt: skip
    await send({"type": "http.response.body", "body": json.dumps(error_body(code, message)).encode()})


def ranged_response(data: bytes, range_header: str | None, media_type: str) -> Response:
    """``data`` whole (200) or one ``bytes=a-b`` range of it (206), as browsers seek."""
    size = len(data)
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "public, max-age=86400, immutable"}
    if not range_header or not range_header.startswith("bytes=") or "," in range_header:
        return Response(data, media_type=media_type, headers=headers)
    first, _, last = range_header[6:].strip().partition("-")
    try:
        if first:
            start, end = int(first), int(last) if last else size - 1
        else:
            start, end = max(0, size - int(last)), size - 1
    except ValueError:
        return Response(data, media_type=media_type, headers=headers)
    end = min(end, size - 1)
    if start > end or start >= size:
        return JSONResponse(error_body("range_not_satisfiable", f"range {range_header} is outside 0-{size - 1}"),
                            status_code=416, headers={"Content-Range": f"bytes */{size}"})  # fmt: skip
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(data[start : end + 1], status_code=206, media_type=media_type, headers=headers)
