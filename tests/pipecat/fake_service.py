"""A small fake of the service's live sessions on loopback (aiohttp), speaking the README protocol.

``POST /v1/sessions`` -> 201; the socket sends ``ready``, then one ``W2LF`` frame message per
video frame, a fragment of ``fragment_frames`` every fragment period, as the real host does:
idle frames (silent PCM) until speech is queued, speech once a fragment plus the look-ahead is
queued (or ``end_of_speech`` came), ``speech_started`` / ``speech_ended`` / ``interrupted``
events before the fragment they concern. Each fragment is built one period before it is sent
(the real host renders ahead), so the fragment in flight when ``interrupt`` comes keeps its
speech, as the service documents. Speech frames are one colour and idle frames another, so a
test can tell them apart in the decoded image. PCM comes back at the socket's rate.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web
from PIL import Image

from wav2lip_client.models import frame_message

SPEECH_RGB, IDLE_RGB = (200, 40, 40), (40, 40, 200)


def solid_jpeg(size: tuple[int, int], rgb: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, rgb).save(out, "JPEG", quality=95)
    return out.getvalue()


@dataclass
class FakeSession:
    session_id: str
    body: dict
    sample_rate: int = 0
    output: str = ""
    received: bytearray = field(default_factory=bytearray)  #: every PCM byte the client sent
    messages: list = field(default_factory=list)  #: text message types, in order
    queue: bytearray = field(default_factory=bytearray)
    speaking: bool = False
    ended: bool = False
    interrupted: bool = False
    closed: bool = False
    frame: int = 0
    sent_speech_frames: int = 0


class FakeSessionService:
    """``async with FakeSessionService() as fake: fake.url``; ``fake.sessions`` records each session."""

    def __init__(self, fps: int = 25, fragment_frames: int = 5, size: tuple[int, int] = (64, 48),
                 lookahead_s: float = 0.2, api_key: str | None = None):  # fmt: skip
        self.fps, self.fragment_frames, self.size = fps, fragment_frames, size
        self.lookahead_s, self.api_key = lookahead_s, api_key
        self.jpeg = {True: solid_jpeg(size, SPEECH_RGB), False: solid_jpeg(size, IDLE_RGB)}
        self.sessions: dict[str, FakeSession] = {}
        self.url = ""
        app = web.Application()
        app.router.add_post("/v1/sessions", self._open)
        app.router.add_get("/v1/sessions/{sid}", self._status)
        app.router.add_delete("/v1/sessions/{sid}", self._delete)
        app.router.add_get("/v1/sessions/{sid}/ws", self._socket)
        self._runner = web.AppRunner(app)

    async def __aenter__(self) -> "FakeSessionService":
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()

    def only(self) -> FakeSession:
        (session,) = self.sessions.values()
        return session

    # ---- HTTP ---------------------------------------------------------------------------------
    def _authorised(self, request: web.Request) -> bool:
        return not self.api_key or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _open(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "unauthorized", "message": "no key"}, status=401)
        sid = uuid.uuid4().hex
        self.sessions[sid] = FakeSession(sid, await request.json())
        base = f"/v1/sessions/{sid}"
        return web.json_response({"session_id": sid, "ws": f"{base}/ws", "live_mp4": f"{base}/live.mp4",
                                  "status_url": base}, status=201)  # fmt: skip

    def _state(self, s: FakeSession) -> dict:
        rate = s.sample_rate or 16000
        return {"session_id": s.session_id, "state": "closed" if s.closed else "speaking" if s.speaking else "idle",
                "fps": self.fps, "width": self.size[0], "height": self.size[1], "pts": s.frame / self.fps,
                "queue_s": len(s.queue) / 2 / rate, "viewers": 0 if s.closed else 1, "spoken_s": 0, "stats": {}}  # fmt: skip

    async def _status(self, request: web.Request) -> web.Response:
        s = self.sessions.get(request.match_info["sid"])
        if s is None or s.closed:
            return web.json_response({"error": "not_found", "message": "no such session"}, status=404)
        return web.json_response(self._state(s))

    async def _delete(self, request: web.Request) -> web.Response:
        s = self.sessions.get(request.match_info["sid"])
        if s is None:
            return web.json_response({"error": "not_found", "message": "no such session"}, status=404)
        s.closed = True
        return web.json_response(self._state(s))

    # ---- the socket -----------------------------------------------------------------------------
    async def _socket(self, request: web.Request) -> web.StreamResponse:
        s = self.sessions[request.match_info["sid"]]
        s.sample_rate, s.output = int(request.query.get("sample_rate", 16000)), request.query.get("output", "fmp4")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"type": "ready", "pts": 0.0, "session_id": s.session_id, "output": s.output,
                                      "fps": self.fps, "width": self.size[0], "height": self.size[1],
                                      "sample_rate": s.sample_rate, "fragment_frames": self.fragment_frames}))  # fmt: skip
        clock = asyncio.create_task(self._fragments(s, ws))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    s.received += msg.data
                    s.queue += msg.data
                    s.ended = False
                elif msg.type == WSMsgType.TEXT:
                    kind = json.loads(msg.data)["type"]
                    s.messages.append(kind)
                    if kind == "end_of_speech":
                        s.ended = True
                    elif kind == "interrupt":
                        s.interrupted, s.queue = s.speaking or bool(s.queue), bytearray()
                    elif kind == "close":
                        s.closed = True
                        break
        finally:
            clock.cancel()
            await ws.close()
        return ws

    async def _fragments(self, s: FakeSession, ws: web.WebSocketResponse) -> None:
        period = self.fragment_frames / self.fps
        loop = asyncio.get_running_loop()
        start, in_flight = loop.time(), None
        while True:
            built = self._build(s)
            if in_flight is not None:
                for message in in_flight:
                    await ws.send_str(message) if isinstance(message, str) else await ws.send_bytes(message)
            in_flight = built
            await asyncio.sleep(max(0.0, start + (s.frame // self.fragment_frames) * period - loop.time()))

    def _build(self, s: FakeSession) -> list:
        """The next fragment's messages: its events, then one frame message per frame."""
        per_frame = s.sample_rate // self.fps * 2  # PCM bytes a frame owns (whole samples at these rates)
        need, ahead = per_frame * self.fragment_frames, int(self.lookahead_s * s.sample_rate) * 2
        a, events = s.frame, []
        if s.interrupted:
            s.interrupted = s.speaking = False
            events.append({"type": "interrupted", "pts": a / self.fps})
        if not s.speaking and s.queue and (len(s.queue) >= need + ahead or s.ended):
            s.speaking = True
            events.append({"type": "speech_started", "pts": a / self.fps})
        speech = s.speaking
        pcm = bytes(s.queue[:need]) if speech else b""
        del s.queue[: len(pcm)]
        if speech and not s.queue and s.ended:
            s.speaking = s.ended = False
            events.append({"type": "speech_ended", "pts": (a * per_frame + len(pcm)) / 2 / s.sample_rate})
        pcm += bytes(need - len(pcm))
        messages = [json.dumps(e) for e in events]
        for i in range(self.fragment_frames):
            header = {"frame": a + i, "pts": (a + i) / self.fps, "sample_rate": s.sample_rate}
            messages.append(frame_message(header, self.jpeg[speech], pcm[i * per_frame : (i + 1) * per_frame]))
        s.frame += self.fragment_frames
        s.sent_speech_frames += self.fragment_frames if speech else 0
        return messages
