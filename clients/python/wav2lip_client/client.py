"""The synchronous client: ``httpx.Client`` for HTTP, ``websockets.sync`` for live sessions."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import httpx
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from . import _common as c
from .errors import error_from_code
from .session import _WS_OPTIONS, Session
from .models import JobStatus, SessionStatus, StreamInfo, StreamStatus, Video

class Client:
    """The Wav2Lip service over HTTP and WebSocket, blocking. Use as a context manager, or ``close()``.

    ``timeout``: seconds to wait for an answer (float, None for no limit, or an ``httpx.Timeout``).
    ``transport``: an httpx transport (e.g. ``httpx.MockTransport`` in tests).
    """

    def __init__(self, base_url: str = c.DEFAULT_BASE_URL, api_key: str | None = None,
                 timeout: float | httpx.Timeout | None = c.DEFAULT_TIMEOUT, *,
                 transport: httpx.BaseTransport | None = None, ws_open_timeout: float = 30.0):  # fmt: skip
        self.base_url = httpx.URL(base_url)
        self.api_key = api_key
        self.ws_open_timeout = ws_open_timeout
        self._http = httpx.Client(base_url=base_url, headers=c.headers_for(api_key), timeout=c.timeout_of(timeout),
                                  transport=transport)  # fmt: skip

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- plumbing ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return c.check(self._http.request(method, path, **kwargs))

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # ---- whole videos -----------------------------------------------------------------------
    def render(self, audio: c.Media | None = None, *, text: str | None = None, avatar_id: str | None = None,
               avatar: c.Media | None = None, agent_type: str | None = None, voice: str | None = None,
               preset: str | None = None, fps: float | None = None, **form: Any) -> Video:  # fmt: skip
        """``POST /v1/videos``: render ``audio`` (bytes, path or binary file) or ``text``; waits for the video.

        ``form``: any other field of the form (``rate``, ``chunk_duration``, ``enable_parallel``,
        ``pads``, ``box``, ``nosmooth``, ``loop``); None values are left out.
        """
        fields = dict(avatar_id=avatar_id, agent_type=agent_type, voice=voice, preset=preset, fps=fps, **form)
        body = self._json("POST", "/v1/videos", **c.video_request(audio, text, avatar, fields))
        return Video.from_json(body, self)

    def render_bytes(self, audio: c.Media | None = None, **kwargs: Any) -> bytes:
        """``render`` then the MP4's bytes."""
        return self.video_bytes(self.render(audio, **kwargs).video_id)

    def video_bytes(self, video_id: str) -> bytes:
        """``GET /v1/videos/{id}``: the MP4."""
        return self._request("GET", f"/v1/videos/{c.segment(video_id)}").content

    def delete_video(self, video_id: str) -> None:
        self._request("DELETE", f"/v1/videos/{c.segment(video_id)}")

    # ---- jobs -------------------------------------------------------------------------------
    def submit(self, audio: c.Media | None = None, *, text: str | None = None, avatar_id: str | None = None,
               avatar: c.Media | None = None, agent_type: str | None = None, voice: str | None = None,
               preset: str | None = None, fps: float | None = None, **form: Any) -> str:  # fmt: skip
        """``POST /v1/videos?async=true`` (same inputs as ``render``): the job id, at once."""
        fields = dict(avatar_id=avatar_id, agent_type=agent_type, voice=voice, preset=preset, fps=fps, **form)
        body = self._json("POST", "/v1/videos", params={"async": "true"}, **c.video_request(audio, text, avatar, fields))
        return body["job_id"]

    def job(self, job_id: str) -> JobStatus:
        """``GET /v1/jobs/{id}``."""
        return JobStatus.from_json(self._json("GET", f"/v1/jobs/{c.segment(job_id)}"))

    def wait(self, job_id: str, on_progress: Callable[[JobStatus], Any] | None = None, poll_s: float = 0.5,
             timeout: float | None = None) -> JobStatus:  # fmt: skip
        """Poll the job until it ends; ``on_progress(status)`` after every poll (the last one included).

        Returns the final status (``succeeded``, or ``cancelled``); a failed job raises its typed
        error (``RenderFailed``, ``InvalidInput``, ...) with the status as ``.job``. ``timeout``
        (seconds) raises ``TimeoutError``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.job(job_id)
            if on_progress is not None:
                on_progress(status)
            if status.done:
                return _finished(status)
            if deadline is not None and time.monotonic() + poll_s > deadline:
                raise TimeoutError(f"job {job_id} still {status.status} after {timeout} s")
            time.sleep(poll_s)

    def cancel(self, job_id: str) -> JobStatus:
        """``DELETE /v1/jobs/{id}``: its status (cancelled, or how it had ended)."""
        return JobStatus.from_json(self._json("DELETE", f"/v1/jobs/{c.segment(job_id)}"))

    # ---- progressive streams ----------------------------------------------------------------
    def open_stream(self, audio: c.Media | None = None, *, text: str | None = None, avatar_id: str | None = None,
                    avatar: c.Media | None = None, agent_type: str | None = None, voice: str | None = None,
                    preset: str | None = None, fps: float | None = None, **form: Any) -> StreamInfo:  # fmt: skip
        """``POST /v1/streams`` (same inputs as ``render``): where to read it, at once."""
        fields = dict(avatar_id=avatar_id, agent_type=agent_type, voice=voice, preset=preset, fps=fps, **form)
        return StreamInfo.from_json(self._json("POST", "/v1/streams", **c.video_request(audio, text, avatar, fields)))

    def stream_status(self, stream_id: str) -> StreamStatus:
        return StreamStatus.from_json(self._json("GET", f"/v1/streams/{c.segment(stream_id)}/status"))

    def iter_stream(self, stream_id: str, chunk_size: int | None = None) -> Iterator[bytes]:
        """``GET /v1/streams/{id}/live.mp4``: the fragmented MP4's bytes as they arrive (init segment first).

        A generator: the request is made on the first ``next()``; an error answer raises there.
        """
        with self._http.stream("GET", f"/v1/streams/{c.segment(stream_id)}/live.mp4") as response:
            if not response.is_success:
                response.read()
                c.check(response)
            yield from response.iter_bytes(chunk_size)

    def cancel_stream(self, stream_id: str) -> StreamStatus:
        """``DELETE /v1/streams/{id}``: cancels a running stream, deletes a finished one."""
        return StreamStatus.from_json(self._json("DELETE", f"/v1/streams/{c.segment(stream_id)}"))

    # ---- avatars and the catalogue ----------------------------------------------------------
    def upload_avatar(self, avatar: c.Media) -> dict:
        """``POST /v1/avatars``: ``{avatar_id, frames, fps, width, height, face_box, kind}``."""
        return self._json("POST", "/v1/avatars", **c.avatar_upload(avatar))

    def avatars(self) -> list[dict]:
        return self._json("GET", "/v1/avatars")

    def avatar(self, avatar_id: str) -> dict:
        return self._json("GET", f"/v1/avatars/{c.segment(avatar_id)}")

    def delete_avatar(self, avatar_id: str) -> None:
        self._request("DELETE", f"/v1/avatars/{c.segment(avatar_id)}")

    def voices(self) -> list[dict]:
        return self._json("GET", "/v1/voices")

    def agents(self) -> list[dict]:
        return self._json("GET", "/v1/agents")

    def health(self) -> dict:
        """``GET /healthz``; a 503 (no worker ready) raises ``Overloaded``."""
        return self._json("GET", "/healthz")

    # ---- live sessions ----------------------------------------------------------------------
    def session(self, avatar_id: str | None = None, agent_type: str | None = None, voice: str | None = None,
                preset: str | None = None, fps: float | None = None, output: str = "fmp4",
                sample_rate: int = 16000) -> "Session":  # fmt: skip
        """Open a live session (``POST /v1/sessions``) and connect its socket; returns once ``ready`` came.

        ``output``: ``"fmp4"`` (``Fragment``s, the init segment first) or ``"frames"`` (``Frame``s).
        ``sample_rate``: of the PCM you will send. If the socket cannot connect, the new
        session is ended and the refusal raised as its typed error.
        """
        _check_output(output)
        body = c.session_body(avatar_id=avatar_id, agent_type=agent_type, voice=voice, preset=preset, fps=fps)
        created = self._json("POST", "/v1/sessions", json=body)
        try:
            return self._connect(created, output, sample_rate)
        except BaseException:
            self._end_quietly(created["session_id"])
            raise

    def connect_session(self, session_id: str, output: str = "fmp4", sample_rate: int = 16000) -> "Session":
        """Connect a socket to an existing session (e.g. after a dropped one): it continues at the live edge."""
        _check_output(output)
        return self._connect(c.session_urls(session_id), output, sample_rate)

    def session_status(self, session_id: str) -> SessionStatus:
        return SessionStatus.from_json(self._json("GET", f"/v1/sessions/{c.segment(session_id)}"))

    def close_session(self, session_id: str) -> SessionStatus:
        """``DELETE /v1/sessions/{id}``: ends it; its final state."""
        return SessionStatus.from_json(self._json("DELETE", f"/v1/sessions/{c.segment(session_id)}"))

    def _connect(self, created: dict, output: str, sample_rate: int) -> "Session":
        url = c.ws_url(self.base_url, created["ws"], {"sample_rate": sample_rate, "output": output})
        try:
            ws = ws_connect(url, additional_headers=c.headers_for(self.api_key), max_size=None, compression=None,
                            open_timeout=self.ws_open_timeout, user_agent_header=None, **_WS_OPTIONS)  # fmt: skip
        except InvalidStatus as exc:
            raise c.refusal_error(exc) from None
        session = Session(self, created, ws, output, sample_rate)
        try:
            session._wait_ready(self.ws_open_timeout)
        except BaseException:
            ws.close()
            raise
        return session

    def _end_quietly(self, session_id: str) -> None:
        try:
            self.close_session(session_id)
        except Exception:  # noqa: BLE001 - best effort: it ends on its idle timeout anyway
            pass


def _finished(status: JobStatus) -> JobStatus:
    if status.status == "failed":
        error = status.error or {}
        exc = error_from_code(error.get("error", "internal_error"), error.get("message", "the job failed"), error)
        exc.job = status  # type: ignore[attr-defined]
        raise exc
    return status


def _check_output(output: str) -> None:
    if output not in c.OUTPUTS:
        raise ValueError(f"output must be one of {c.OUTPUTS}, not {output!r}")


__all__ = ["Client", "Session"]
