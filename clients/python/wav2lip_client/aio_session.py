"""``AsyncSession``: one live session over its WebSocket, for asyncio (``AsyncClient.session``)."""


from __future__ import annotations

from typing import TYPE_CHECKING

import asyncio
import time
from collections import deque
from typing import AsyncIterator, Awaitable

from websockets.exceptions import ConnectionClosed

from . import _common as c
from .session import SessionItem
from .errors import Disconnected
from .models import Event, SessionStatus

if TYPE_CHECKING:  # the client opens sessions; a session calls back into it
    from .aio import AsyncClient


class _Opening(Awaitable["AsyncSession"]):
    """A session being opened: await it, or use it as an async context manager (closed on exit)."""

    def __init__(self, opening: Awaitable["AsyncSession"]):
        self._opening = opening
        self._session: AsyncSession | None = None

    def __await__(self):
        return self._opening.__await__()

    async def __aenter__(self) -> "AsyncSession":
        self._session = await self._opening
        return self._session

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()


class AsyncSession:
    """``Session`` for asyncio: ``async for item in session``, ``await session.say(...)``, ..."""

    def __init__(self, client: AsyncClient, created: dict, ws, output: str, sample_rate: int):
        self.client = client
        self.session_id: str = created["session_id"]
        self.urls = dict(created)
        self.output, self.sample_rate = output, sample_rate
        self.ready: dict | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._ws = ws
        self._decoder = c.SocketDecoder(output)
        self._pending: deque[SessionItem] = deque()
        self._closed = False

    @property
    def live_mp4(self) -> str:
        return self.urls["live_mp4"]

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.ready is None:
            try:
                item = await self._receive(max(0.0, deadline - time.monotonic()))
            except Disconnected as exc:
                raise c.closed_before_ready(exc) from None
            if isinstance(item, Event) and item.type == "ready":
                self.ready = item.data
            else:
                self._pending.append(item)

    async def _receive(self, timeout: float | None) -> SessionItem:
        try:
            if timeout is None:
                message = await self._ws.recv()
            else:
                message = await asyncio.wait_for(self._ws.recv(), timeout)
        except ConnectionClosed as exc:
            raise self._disconnected(exc) from None
        except asyncio.TimeoutError:
            raise TimeoutError(f"nothing from the session within {timeout} s") from None
        return self._decoder.decode(message)

    def _disconnected(self, exc: ConnectionClosed) -> Disconnected:
        frame = exc.rcvd or exc.sent
        self.close_code = frame.code if frame else 1006
        self.close_reason = frame.reason if frame else ""
        return c.disconnected(self.close_code, self.close_reason)

    async def recv(self, timeout: float | None = None) -> SessionItem:
        if self._pending:
            return self._pending.popleft()
        return await self._receive(timeout)

    def __aiter__(self) -> AsyncIterator[SessionItem]:
        return self._items()

    async def _items(self) -> AsyncIterator[SessionItem]:
        while True:
            try:
                item = await self.recv()
            except Disconnected:
                return
            yield item

    async def _send(self, message: str | bytes) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise self._disconnected(exc) from None

    async def say(self, text: str) -> None:
        await self._send(c.text_message("text", text=text))

    async def send_audio(self, pcm16: bytes) -> None:
        await self._send(memoryview(pcm16).cast("B").tobytes())

    async def end_of_speech(self) -> None:
        await self._send(c.text_message("end_of_speech"))

    async def interrupt(self) -> None:
        await self._send(c.text_message("interrupt"))

    async def status(self) -> SessionStatus:
        return await self.client.session_status(self.session_id)

    async def close(self, timeout: float = 10.0) -> None:
        """As ``Session.close``: send ``close``, let the service close the socket, close ours."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._ws.send(c.text_message("close"))
        except ConnectionClosed:
            await self.client._end_quietly(self.session_id)
            return
        async def drain() -> None:
            while True:
                await self._ws.recv()

        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(drain(), timeout)
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
        except RuntimeError:  # another task is iterating (ConcurrencyError): it sees the socket close
            try:
                await asyncio.wait_for(self._ws.wait_closed(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass
        finally:
            await self._ws.close()

    async def disconnect(self) -> None:
        self._closed = True
        await self._ws.close()

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
