"""The asyncio client: ``httpx.AsyncClient`` for HTTP, ``websockets.asyncio`` for live sessions.

Same methods as ``Client``, as coroutines; ``iter_stream`` is an async iterator, and a
session is ``await client.session(...)`` or ``async with client.session(...) as session``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, AsyncIterator, Callable

import httpx
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from . import _common as c
from .client import _check_output, _finished
from .aio_session import AsyncSession, _Opening
from .models import JobStatus, SessionStatus, StreamInfo, StreamStatus, Video


class AsyncClient:
    """The Wav2Lip service over HTTP and WebSocket, for asyncio. ``async with AsyncClient() as client:``."""

    def __init__(self, base_url: str = c.DEFAULT_BASE_URL, api_key: str | None = None,
                 timeout: float | httpx.Timeout | None = c.DEFAULT_TIMEOUT, *,
                 transport: httpx.AsyncBaseTransport | None = None, ws_open_timeout: float = 30.0):  # fmt: skip
        self.base_url = httpx.URL(base_url)
        self.api_key = api_key
        self.ws_open_timeout = ws_open_timeout
        self._http = httpx.AsyncClient(base_url=base_url, headers=c.headers_for(api_key),
                                       timeout=c.timeout_of(timeout), transport=transport)  # fmt: skip

    async def close(self) -> None:
        await self._http.aclose()

    aclose = close

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ---- plumbing ---------------------------------------------------------------------------
    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return c.check(await self._http.request(method, path, **kwargs))

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._request(method, path, **kwargs)).json()

    # ---- whole videos -----------------------------------------------------------------------
    async def render(self, audio: c.Media | None = None, *, text: str | None = None, avatar_id: str | None = None,
                     avatar: c.Media | None = None, agent_type: str | None = None, voice: str | None = None,
                     preset: str | None = None, fps: float | None = None, **form: Any) -> Video:  # fmt: skip
        """``POST /v1/videos``; ``await video.download()`` fetches the MP4."""
        fields = dict(avatar_id=avatar_id, agent_type=agent_type, voice=voice, preset=preset, fps=fps, **form)
        body = await self._json("POST", "/v1/videos", **c.video_request(audio, text, avatar, fields))
        return Video.from_json(body, self)

    async def render_bytes(self, audio: c.Media | None = None, **kwargs: Any) -> bytes:
        return await self.video_bytes((await self.render(audio, **kwargs)).video_id)

    async def video_bytes(self, video_id: str) -> bytes:
        return (await self._request("GET", f"/v1/videos/{c.segment(video_id)}")).content

    async def delete_video(self, video_id: str) -> None:
        await self._request("DELETE", f"/v1/videos/{c.segment(video_id)}")

    # ---- jobs -------------------------------------------------------------------------------
    async def submit(self, audio: c.Media | None = None, *, text: str | None = None, avatar_id: str | None = None,
                     avatar: c.Media | None = None, agent_type: str | None = None, voice: str | None = None,
                     preset: str | None = None, fps: float | None = None, **form: Any) -> str:  # fmt: skip
        fields = dict(avatar_id=avatar_id, agent_type=agent_type, voice=voice, preset=preset, fps=fps, **form)
        body = await self._json("POST", "/v1/videos", params={"async": "true"},
                                **c.video_request(audio, text, avatar, fields))  # fmt: skip
        return body["job_id"]

    async def job(self, job_id: str) -> JobStatus:
        return JobStatus.from_json(await self._json("GET", f"/v1/jobs/{c.segment(job_id)}"))

    async def wait(self, job_id: str, on_progress: Callable[[JobStatus], Any] | None = None, poll_s: float = 0.5,
                   timeout: float | None = None) -> JobStatus:  # fmt: skip
        """As ``Client.wait``; ``on_progress`` may be a plain function or a coroutine function."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = await self.job(job_id)
            if on_progress is not None:
                result = on_progress(status)
                if inspect.isawaitable(result):
                    await result
            if status.done:
                return _finished(status)
            if deadline is not None and time.monotonic() + poll_s > deadline:
                raise TimeoutError(f"job {job_id} still {status.status} after {timeout} s")
            await asyncio.sleep(poll_s)

    async def cancel(self, job_id: str) -> JobStatus:
        return JobStatus.from_json(await self._json("DELETE", f"/v1/jobs/{c.segment(job_id)}"))

    # ---- progressive streams ----------------------------------------------------------------
    async def open_stream(self, audio: c.Media | None = None, *, text: str | None = None,
                          avatar_id: str | None = None, avatar: c.Media | None = None, agent_type: str | None = None,
                          voice: str | None = None, preset: str | None = None, fps: float | None = None,
                          **form: Any) -> StreamInfo:  # fmt: skip
        fields = dict(avatar_id=avatar_id, agent_type=agent_type, voice=voice, preset=preset, fps=fps, **form)
        body = await self._json("POST", "/v1/streams", **c.video_request(audio, text, avatar, fields))
        return StreamInfo.from_json(body)

    async def stream_status(self, stream_id: str) -> StreamStatus:
        return StreamStatus.from_json(await self._json("GET", f"/v1/streams/{c.segment(stream_id)}/status"))

    async def iter_stream(self, stream_id: str, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        """``async for piece in client.iter_stream(id)``: the live fMP4's bytes as they arrive."""
        async with self._http.stream("GET", f"/v1/streams/{c.segment(stream_id)}/live.mp4") as response:
            if not response.is_success:
                await response.aread()
                c.check(response)
            async for piece in response.aiter_bytes(chunk_size):
                yield piece

    async def cancel_stream(self, stream_id: str) -> StreamStatus:
        return StreamStatus.from_json(await self._json("DELETE", f"/v1/streams/{c.segment(stream_id)}"))

    # ---- avatars and the catalogue ----------------------------------------------------------
    async def upload_avatar(self, avatar: c.Media) -> dict:
        return await self._json("POST", "/v1/avatars", **c.avatar_upload(avatar))

    async def avatars(self) -> list[dict]:
        return await self._json("GET", "/v1/avatars")

    async def avatar(self, avatar_id: str) -> dict:
        return await self._json("GET", f"/v1/avatars/{c.segment(avatar_id)}")

    async def delete_avatar(self, avatar_id: str) -> None:
        await self._request("DELETE", f"/v1/avatars/{c.segment(avatar_id)}")

    async def voices(self) -> list[dict]:
        return await self._json("GET", "/v1/voices")

    async def agents(self) -> list[dict]:
        return await self._json("GET", "/v1/agents")

    async def health(self) -> dict:
        return await self._json("GET", "/healthz")

    # ---- live sessions ----------------------------------------------------------------------
    def session(self, avatar_id: str | None = None, agent_type: str | None = None, voice: str | None = None,
                preset: str | None = None, fps: float | None = None, output: str = "fmp4",
                sample_rate: int = 16000) -> "_Opening":  # fmt: skip
        """``session = await client.session(...)`` or ``async with client.session(...) as session:``."""
        _check_output(output)
        body = c.session_body(avatar_id=avatar_id, agent_type=agent_type, voice=voice, preset=preset, fps=fps)
        return _Opening(self._open_session(body, output, sample_rate))

    async def _open_session(self, body: dict, output: str, sample_rate: int) -> "AsyncSession":
        created = await self._json("POST", "/v1/sessions", json=body)
        try:
            return await self._connect(created, output, sample_rate)
        except BaseException:
            await self._end_quietly(created["session_id"])
            raise

    def connect_session(self, session_id: str, output: str = "fmp4", sample_rate: int = 16000) -> "_Opening":
        _check_output(output)
        return _Opening(self._connect(c.session_urls(session_id), output, sample_rate))

    async def session_status(self, session_id: str) -> SessionStatus:
        return SessionStatus.from_json(await self._json("GET", f"/v1/sessions/{c.segment(session_id)}"))

    async def close_session(self, session_id: str) -> SessionStatus:
        return SessionStatus.from_json(await self._json("DELETE", f"/v1/sessions/{c.segment(session_id)}"))

    async def _connect(self, created: dict, output: str, sample_rate: int) -> "AsyncSession":
        url = c.ws_url(self.base_url, created["ws"], {"sample_rate": sample_rate, "output": output})
        try:
            ws = await ws_connect(url, additional_headers=c.headers_for(self.api_key), max_size=None,
                                  compression=None, open_timeout=self.ws_open_timeout, user_agent_header=None)  # fmt: skip
        except InvalidStatus as exc:
            raise c.refusal_error(exc) from None
        session = AsyncSession(self, created, ws, output, sample_rate)
        try:
            await session._wait_ready(self.ws_open_timeout)
        except BaseException:
            await ws.close()
            raise
        return session

    async def _end_quietly(self, session_id: str) -> None:
        try:
            await self.close_session(session_id)
        except Exception:  # noqa: BLE001 - best effort: it ends on its idle timeout anyway
            pass
