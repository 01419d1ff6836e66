"""``Session``: one live session over its WebSocket, blocking (``Client.session`` opens one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import inspect
import time
from collections import deque
from typing import Iterator

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.sync.client import connect as ws_connect

from . import _common as c
from .errors import Disconnected
from .models import Event, Fragment, Frame, SessionStatus

SessionItem = Event | Fragment | Frame
#: websockets >= 17.1 wants ``legacy=True`` to return a connection directly (without a warning)
_WS_OPTIONS = {"legacy": True} if "legacy" in inspect.signature(ws_connect).parameters else {}



if TYPE_CHECKING:  # the client opens sessions; a session calls back into it
    from .client import Client


class Session:
    """One live session's socket. Iterate it for ``Event``, ``Fragment`` and ``Frame`` items;
    ``say``/``send_audio``/``end_of_speech``/``interrupt`` to speak; ``close()`` ends the session.

    ``ready`` is the ready event (``codecs``, ``width``, ``height``, ``fps``, ...), consumed
    when connecting (not yielded again). Error events are yielded as ``Event(type="error")``.
    Iteration ends when the socket closes (``close_code``/``close_reason`` say why); sending on
    a closed socket raises ``Disconnected``. Sending from another thread while iterating is fine.
    """

    def __init__(self, client: Client, created: dict, ws, output: str, sample_rate: int):
        self.client = client
        self.session_id: str = created["session_id"]
        self.urls = dict(created)  #: ``session_id``, ``ws``, ``live_mp4``, ``status_url``
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

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.ready is None:
            try:
                item = self._receive(max(0.0, deadline - time.monotonic()))
            except Disconnected as exc:
                raise c.closed_before_ready(exc) from None
            if isinstance(item, Event) and item.type == "ready":
                self.ready = item.data
            else:
                self._pending.append(item)

    def _receive(self, timeout: float | None) -> SessionItem:
        try:
            message = self._ws.recv(timeout)
        except ConnectionClosed as exc:
            raise self._disconnected(exc) from None
        return self._decoder.decode(message)

    def _disconnected(self, exc: ConnectionClosed) -> Disconnected:
        frame = exc.rcvd or exc.sent
        self.close_code = frame.code if frame else 1006
        self.close_reason = frame.reason if frame else ""
        return c.disconnected(self.close_code, self.close_reason)

    # ---- what comes -------------------------------------------------------------------------
    def recv(self, timeout: float | None = None) -> SessionItem:
        """The next item; ``TimeoutError`` after ``timeout`` s, ``Disconnected`` once the socket closed."""
        if self._pending:
            return self._pending.popleft()
        return self._receive(timeout)

    def __iter__(self) -> Iterator[SessionItem]:
        while True:
            try:
                item = self.recv()
            except Disconnected:
                return
            yield item

    # ---- what goes --------------------------------------------------------------------------
    def _send(self, message: str | bytes) -> None:
        try:
            self._ws.send(message)
        except ConnectionClosed as exc:
            raise self._disconnected(exc) from None

    def say(self, text: str) -> None:
        """Speak ``text`` with the session's voice (queued after what is already queued)."""
        self._send(c.text_message("text", text=text))

    def send_audio(self, pcm16: bytes) -> None:
        """PCM16LE mono at ``sample_rate``, any size (bytes or any buffer, e.g. an int16 array)."""
        self._send(memoryview(pcm16).cast("B").tobytes())

    def end_of_speech(self) -> None:
        """The audio sent so far is a whole utterance: play it without waiting for more."""
        self._send(c.text_message("end_of_speech"))

    def interrupt(self) -> None:
        """Stop speaking now and drop what is queued."""
        self._send(c.text_message("interrupt"))

    def status(self) -> SessionStatus:
        return self.client.session_status(self.session_id)

    def close(self, timeout: float = 10.0) -> None:
        """End the session: send ``close``, wait (up to ``timeout`` s) for the service to close
        the socket after taking the input before it, then close ours. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._ws.send(c.text_message("close"))
        except ConnectionClosed:  # the socket had dropped: end the session over HTTP
            self.client._end_quietly(self.session_id)
            return
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self._ws.recv(max(0.0, deadline - time.monotonic()))
        except (ConnectionClosed, TimeoutError):
            pass
        except RuntimeError:  # another thread is iterating (ConcurrencyError): it sees the socket close
            while time.monotonic() < deadline and self._ws.protocol.state is not State.CLOSED:
                time.sleep(0.02)
        finally:
            self._ws.close()

    def disconnect(self) -> None:
        """Close this socket only; the session lives on (``client.connect_session`` rejoins it)."""
        self._closed = True
        self._ws.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
