"""``wav2lip_client`` against fakes: httpx.MockTransport for HTTP (every request's shape is
checked), a real ``websockets`` server on 127.0.0.1 playing the session socket. No service."""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import json
import struct
import threading
import time
import wave
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.sync.server import serve

import wav2lip_client as w2l
from wav2lip_client import (
    AsyncClient,
    BadRequest,
    Client,
    Event,
    Expired,
    Forbidden,
    Fragment,
    Frame,
    FrameError,
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

pytestmark = pytest.mark.timeout(30)

KEY = "s3cret"
VIDEO_ID = "a2e0" + "0" * 60
JOB_ID = "5c1f" + "0" * 28
STREAM_ID = "b7" * 32
SESSION_ID = "9f3c" + "1" * 28
AVATAR_ID = "c4" * 32
MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 64
INIT = b"\x00\x00\x00\x1cftypiso6\x00\x00\x00\x00iso6cmfcmp41" + b"moov-init"
FRAGMENTS = [b"\x00\x00\x00\x10moof" + bytes([i]) * 40 for i in range(3)]

STATS = {
    "total_chunks": 3, "successful_chunks": 3, "failed_chunks": 0, "chunk_retries": 0, "parallel_processing": True,
    "chunk_duration": 3.0, "total_processing_time": 4.1, "audio_generation_time": 0.0, "video_generation_time": 3.9,
    "optimization_level": "balanced", "speed_multiplier": 2.1, "target_achieved": True, "real_time_factor": 0.47,
    "cache_hit": False, "renderer": "fallback", "stages": {"decode": 0.01, "render": 3.2, "combine": 0.1},
    "nodes": ["n1"], "clipped_samples": 0,
}  # fmt: skip
VIDEO = {"video_id": VIDEO_ID, "url": f"/v1/videos/{VIDEO_ID}", "duration_s": 8.8, "stats": STATS, "warnings": []}


def wav_bytes(seconds: float = 0.1, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(rate)
        f.writeframes(b"\x01\x00" * int(seconds * rate))
    return out.getvalue()


def job_body(status: str, progress: float, **extra) -> dict:
    body = {"job_id": JOB_ID, "status": status, "progress": progress, "frames_done": int(220 * progress),
            "frames_total": 220, "eta_s": None if status != "running" else 2.0, "video_id": None, "url": None,
            "duration_s": None, "stats": None, "error": None}  # fmt: skip
    body.update(extra)
    return body


class FakeHTTP:
    """Routes ``(method, path)`` to handlers; records every request it saw."""

    def __init__(self, routes: dict):
        self.routes = routes
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return httpx.Response(404, json={"error": "not_found", "message": f"no route {request.url.path}"})
        return route(request) if callable(route) else route

    def client(self, **kwargs) -> Client:
        return Client("http://svc.test:8000", api_key=KEY, transport=self.transport, **kwargs)

    def async_client(self, **kwargs) -> AsyncClient:
        return AsyncClient("http://svc.test:8000", api_key=KEY, transport=self.transport, **kwargs)


def form_of(request: httpx.Request) -> tuple[dict, dict]:
    """(fields, files) of a multipart or urlencoded body; files: name -> (filename, bytes, type)."""
    ctype = request.headers.get("content-type", "")
    body = request.content
    if ctype.startswith("application/x-www-form-urlencoded"):
        return {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}, {}
    assert ctype.startswith("multipart/form-data"), ctype
    message = email.message_from_bytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body, policy=email.policy.HTTP)
    fields, files = {}, {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if part.get_filename() is not None:
            files[name] = (part.get_filename(), payload, part.get_content_type())
        else:
            fields[name] = payload.decode()
    return fields, files


def assert_auth(request: httpx.Request) -> None:
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["user-agent"].startswith("wav2lip-client/")


# ---- whole videos -------------------------------------------------------------------------
def test_render_uploads_the_audio_file_and_the_form(tmp_path):
    audio = tmp_path / "speech.wav"
    audio.write_bytes(wav_bytes())

    def create(request):
        assert_auth(request)
        assert "async" not in request.url.params
        fields, files = form_of(request)
        assert fields == {"avatar_id": AVATAR_ID, "preset": "quality", "fps": "12", "pads": "0 10 0 0",
                          "nosmooth": "true", "chunk_duration": "1.5"}  # fmt: skip
        name, data, ctype = files["audio"]
        assert name == "speech.wav" and data == audio.read_bytes() and ctype.startswith("audio/")
        return httpx.Response(200, json=VIDEO)

    fake = FakeHTTP({("POST", "/v1/videos"): create, ("GET", f"/v1/videos/{VIDEO_ID}"): httpx.Response(
        200, content=MP4, headers={"content-type": "video/mp4"})})  # fmt: skip
    with fake.client() as client:
        video = client.render(audio, avatar_id=AVATAR_ID, preset="quality", fps=12, voice=None, pads=(0, 10, 0, 0),
                              nosmooth=True, chunk_duration=1.5)  # fmt: skip
        assert (video.video_id, video.url, video.duration_s) == (VIDEO_ID, f"/v1/videos/{VIDEO_ID}", 8.8)
        assert video.stats["real_time_factor"] == 0.47 and video.raw == VIDEO
        assert video.download() == MP4
        assert client.video_bytes(VIDEO_ID) == MP4
    assert [(r.method, r.url.path) for r in fake.requests] == [
        ("POST", "/v1/videos"), ("GET", f"/v1/videos/{VIDEO_ID}"), ("GET", f"/v1/videos/{VIDEO_ID}")]


def test_render_from_text_and_bytes_and_an_avatar_upload():
    seen = []

    def create(request):
        fields, files = form_of(request)
        seen.append((fields, files))
        return httpx.Response(200, json=VIDEO)

    fake = FakeHTTP({("POST", "/v1/videos"): create,
                     ("GET", f"/v1/videos/{VIDEO_ID}"): httpx.Response(200, content=MP4)})  # fmt: skip
    with fake.client() as client:
        assert client.render_bytes(text="Hello there!", agent_type="support", voice="en_US-joe-medium", rate=0.9) == MP4
        client.render(wav_bytes(), avatar=io.BytesIO(b"\x89PNG fake"), enable_parallel=False)
    (fields, files), (fields2, files2) = seen
    assert fields == {"text": "Hello there!", "agent_type": "support", "voice": "en_US-joe-medium", "rate": "0.9"}
    assert files == {}
    assert fields2 == {"enable_parallel": "false"}
    assert files2["audio"] == ("audio", wav_bytes(), "application/octet-stream")
    assert files2["avatar"][1] == b"\x89PNG fake"


def test_render_needs_audio_or_text():
    with FakeHTTP({}).client() as client, pytest.raises(ValueError, match="audio"):
        client.render(avatar_id="default")


def test_avatars_and_the_catalogue(tmp_path):
    face = tmp_path / "face.png"
    face.write_bytes(b"\x89PNG\r\n\x1a\n fake")
    record = {"avatar_id": AVATAR_ID, "frames": 1, "fps": None, "width": 256, "height": 256,
              "face_box": [40, 200, 60, 190], "kind": "image"}  # fmt: skip

    def upload(request):
        assert_auth(request)
        fields, files = form_of(request)
        assert fields == {} and files["avatar"] == ("face.png", face.read_bytes(), "image/png")
        return httpx.Response(200, json=record)

    agents = [{"agent_type": "general", "description": "d", "avatar": "default", "voice": "en_US-joe-medium",
               "rate": 1.0, "preset": "balanced", "default": True}]  # fmt: skip
    voices = [{"name": "en_US-joe-medium", "language": "en_US", "sample_rate": 22050, "package": "p", "license": "l"}]
    health = {"status": "ok", "model_loaded": True, "renderer": "fallback", "model_id": "m", "device": "cpu",
              "precision": "fp32", "workers": 2, "selection": None}  # fmt: skip
    fake = FakeHTTP({
        ("POST", "/v1/avatars"): upload,
        ("GET", "/v1/avatars"): httpx.Response(200, json=[record]),
        ("GET", f"/v1/avatars/{AVATAR_ID}"): httpx.Response(200, json=record),
        ("DELETE", f"/v1/avatars/{AVATAR_ID}"): httpx.Response(204),
        ("DELETE", "/v1/avatars/default"): httpx.Response(403, json={"error": "forbidden", "message": "no"}),
        ("GET", "/v1/agents"): httpx.Response(200, json=agents),
        ("GET", "/v1/voices"): httpx.Response(200, json=voices),
        ("GET", "/healthz"): httpx.Response(200, json=health),
    })  # fmt: skip
    with fake.client() as client:
        assert client.upload_avatar(face) == record
        assert client.avatars() == [record] and client.avatar(AVATAR_ID) == record
        assert client.agents() == agents and client.voices() == voices and client.health() == health
        assert client.delete_avatar(AVATAR_ID) is None
        with pytest.raises(Forbidden):
            client.delete_avatar("default")
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in fake.requests)


# ---- errors -------------------------------------------------------------------------------
ERRORS = [
    (400, "malformed_request", None, BadRequest),
    (401, "unauthorized", None, Unauthorized),
    (403, "forbidden", None, Forbidden),
    (404, "not_found", None, NotFound),
    (410, "expired", None, Expired),
    (413, "input_too_large", None, TooLarge),
    (415, "unsupported_media", None, Unsupported),
    (422, "no_face_detected", None, InvalidInput),
    (502, "render_failed", None, RenderFailed),
    (503, "overloaded", "2", Overloaded),
    (503, "sessions_full", "5", Overloaded),
    (503, "not_ready", None, Overloaded),
    (500, "internal_error", None, ServerError),
    (408, "upload_timeout", None, ServiceError),
]  # fmt: skip


@pytest.mark.parametrize("status,code,retry_after,cls", ERRORS, ids=[f"{s}-{c}" for s, c, _, _ in ERRORS])
def test_error_bodies_map_to_typed_errors(status, code, retry_after, cls):
    headers = {"Retry-After": retry_after} if retry_after else {}
    body = {"error": code, "message": f"what to fix for {code}"}
    fake = FakeHTTP({("POST", "/v1/videos"): httpx.Response(status, json=body, headers=headers)})
    with fake.client() as client, pytest.raises(cls) as raised:
        client.render(b"RIFF....WAVE")
    err = raised.value
    assert type(err) is cls and isinstance(err, ServiceError)
    assert (err.status, err.code, err.message, err.body) == (status, code, f"what to fix for {code}", body)
    assert err.retry_after_s == (float(retry_after) if retry_after else None)
    assert code in str(err) and str(status) in str(err)


def test_expired_is_a_not_found_and_odd_bodies_still_map():
    assert issubclass(Expired, NotFound)
    fake = FakeHTTP({
        ("GET", "/healthz"): httpx.Response(504, text="<html>gateway timeout</html>"),
        ("GET", "/v1/voices"): httpx.Response(405, json={"detail": "Method Not Allowed"}),
    })  # fmt: skip
    with fake.client() as client:
        with pytest.raises(ServerError) as raised:
            client.health()
        assert raised.value.code == "http_504" and "gateway timeout" in raised.value.message
        with pytest.raises(ServiceError) as raised:
            client.voices()
        assert (raised.value.status, raised.value.message) == (405, "Method Not Allowed")


# ---- jobs ---------------------------------------------------------------------------------
def job_service(states: list[dict]) -> FakeHTTP:
    polls = iter(states)

    def submit(request):
        assert request.url.params["async"] == "true"
        assert_auth(request)
        fields, files = form_of(request)
        assert fields == {"avatar_id": "default"} and files["audio"][1] == wav_bytes()
        return httpx.Response(202, json={"job_id": JOB_ID, "status_url": f"/v1/jobs/{JOB_ID}", "warnings": []})

    return FakeHTTP({
        ("POST", "/v1/videos"): submit,
        ("GET", f"/v1/jobs/{JOB_ID}"): lambda request: httpx.Response(200, json=next(polls)),
        ("DELETE", f"/v1/jobs/{JOB_ID}"): httpx.Response(200, json=job_body("cancelled", 0.25)),
    })  # fmt: skip


SUCCEEDED = job_body("succeeded", 1.0, video_id=VIDEO_ID, url=f"/v1/videos/{VIDEO_ID}", duration_s=8.8, stats=STATS)


def test_submit_and_wait_report_progress():
    fake = job_service([job_body("queued", 0.0), job_body("running", 0.25), job_body("running", 0.6), SUCCEEDED])
    seen = []
    with fake.client() as client:
        job_id = client.submit(wav_bytes(), avatar_id="default")
        assert job_id == JOB_ID
        final = client.wait(job_id, on_progress=seen.append, poll_s=0.001)
    assert [(s.status, s.progress) for s in seen] == [("queued", 0.0), ("running", 0.25), ("running", 0.6),
                                                      ("succeeded", 1.0)]  # fmt: skip
    assert final is seen[-1] and final.done and final.video_id == VIDEO_ID and final.frames_done == 220
    assert final.stats["renderer"] == "fallback" and seen[1].eta_s == 2.0
    assert [r.method for r in fake.requests] == ["POST"] + ["GET"] * 4


@pytest.mark.parametrize("code,cls", [("render_failed", RenderFailed), ("no_face_detected", InvalidInput),
                                      ("model_failed", ServerError)])  # fmt: skip
def test_wait_raises_a_failed_jobs_error(code, cls):
    failed = job_body("failed", 0.5, error={"error": code, "message": "chunk 2 failed on every retry"})
    fake = job_service([job_body("running", 0.5), failed])
    with fake.client() as client, pytest.raises(cls) as raised:
        client.wait(JOB_ID, poll_s=0.001)
    assert raised.value.code == code and raised.value.message == "chunk 2 failed on every retry"
    assert raised.value.job.status == "failed"


def test_cancel_and_a_cancelled_wait_and_a_timeout():
    fake = job_service([job_body("cancelled", 0.25)] + [job_body("running", 0.3)] * 50)
    with fake.client() as client:
        assert client.cancel(JOB_ID).status == "cancelled"
        assert client.wait(JOB_ID, poll_s=0.001).status == "cancelled"  # cancelled is no error
        with pytest.raises(TimeoutError):
            client.wait(JOB_ID, poll_s=0.01, timeout=0.05)
        assert client.job(JOB_ID).progress == 0.3
    assert ("DELETE", f"/v1/jobs/{JOB_ID}") in [(r.method, r.url.path) for r in fake.requests]


# ---- streams ------------------------------------------------------------------------------
STREAM = {"id": STREAM_ID, "hls": f"/v1/streams/{STREAM_ID}/index.m3u8", "mp4": f"/v1/streams/{STREAM_ID}/live.mp4",
          "final": f"/v1/videos/{STREAM_ID}", "status": f"/v1/streams/{STREAM_ID}/status"}  # fmt: skip
STREAM_STATUS = {"id": STREAM_ID, "status": "rendering", "fragments_published": 2, "fragments_total": 0,
                 "duration_s": 0.0, "codecs": "avc1.64001f,mp4a.40.2", "stats": None, "error": None}  # fmt: skip


async def _pieces(pieces):
    for piece in pieces:
        yield piece


def stream_service(live_status: int = 200, asynchronous: bool = False) -> FakeHTTP:
    def create(request):
        fields, files = form_of(request)
        assert fields == {"text": "Hi!", "agent_type": "general"} and not files
        assert "async" not in request.url.params
        return httpx.Response(201, json=STREAM)

    def live(request):
        if live_status != 200:
            return httpx.Response(live_status, json={"error": "render_failed", "message": "chunk 0 failed"})
        pieces = [INIT, *FRAGMENTS]  # sent as a chunked body, piece by piece
        content = _pieces(pieces) if asynchronous else iter(pieces)
        return httpx.Response(200, content=content, headers={"content-type": "video/mp4"})

    return FakeHTTP({
        ("POST", "/v1/streams"): create,
        ("GET", f"/v1/streams/{STREAM_ID}/status"): httpx.Response(200, json=STREAM_STATUS),
        ("GET", f"/v1/streams/{STREAM_ID}/live.mp4"): live,
        ("DELETE", f"/v1/streams/{STREAM_ID}"): httpx.Response(200, json={**STREAM_STATUS, "status": "cancelled"}),
    })  # fmt: skip


def test_streams_open_status_live_bytes_and_cancel():
    fake = stream_service()
    with fake.client() as client:
        info = client.open_stream(text="Hi!", agent_type="general")
        assert (info.id, info.hls, info.mp4, info.final) == (STREAM_ID, STREAM["hls"], STREAM["mp4"], STREAM["final"])
        status = client.stream_status(info.id)
        assert (status.status, status.fragments_published, status.codecs) == ("rendering", 2, STREAM_STATUS["codecs"])
        assert not status.done
        assert list(client.iter_stream(info.id)) == [INIT, *FRAGMENTS]  # as each piece arrives
        assert client.cancel_stream(info.id).status == "cancelled"
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in fake.requests)


def test_a_failed_streams_live_mp4_raises_when_read():
    with stream_service(live_status=502).client() as client:
        pieces = client.iter_stream(STREAM_ID)  # lazy: nothing asked yet
        with pytest.raises(RenderFailed, match="chunk 0 failed"):
            next(pieces)


# ---- the async twin over HTTP -------------------------------------------------------------
def test_async_client_renders_waits_streams_and_maps_errors():
    fake = job_service([job_body("running", 0.5), SUCCEEDED])
    fake.routes.update(stream_service(asynchronous=True).routes)
    fake.routes[("GET", f"/v1/videos/{VIDEO_ID}")] = httpx.Response(200, content=MP4)
    fake.routes[("GET", "/v1/avatars/" + "0" * 64)] = httpx.Response(404, json={"error": "not_found", "message": "no"})
    fake.routes[("GET", "/v1/voices")] = httpx.Response(503, json={"error": "overloaded", "message": "busy"},
                                                        headers={"Retry-After": "3"})  # fmt: skip
    seen = []

    async def progress(status):
        seen.append(status.progress)

    async def run():
        async with fake.async_client() as client:
            job_id = await client.submit(wav_bytes(), avatar_id="default")
            final = await client.wait(job_id, on_progress=progress, poll_s=0.001)
            mp4 = await client.video_bytes(final.video_id)
            info = await client.open_stream(text="Hi!", agent_type="general")
            live = b"".join([piece async for piece in client.iter_stream(info.id)])
            with pytest.raises(NotFound):
                await client.avatar("0" * 64)
            with pytest.raises(Overloaded) as raised:
                await client.voices()
            return final, mp4, live, raised.value

    final, mp4, live, overloaded = asyncio.run(run())
    assert final.status == "succeeded" and seen == [0.5, 1.0] and mp4 == MP4
    assert live == INIT + b"".join(FRAGMENTS)
    assert overloaded.retry_after_s == 3.0 and overloaded.code == "overloaded"


def test_async_render_and_download():
    fake = FakeHTTP({("POST", "/v1/videos"): httpx.Response(200, json=VIDEO),
                     ("GET", f"/v1/videos/{VIDEO_ID}"): httpx.Response(200, content=MP4)})  # fmt: skip

    async def run():
        async with fake.async_client() as client:
            video = await client.render(text="Hello")
            return video, await video.download(), await client.render_bytes(text="Hello")

    video, data, again = asyncio.run(run())
    assert video.video_id == VIDEO_ID and data == again == MP4


# ---- live sessions: a real WebSocket server plays the service ------------------------------
CREATED = {"session_id": SESSION_ID, "ws": f"/v1/sessions/{SESSION_ID}/ws",
           "live_mp4": f"/v1/sessions/{SESSION_ID}/live.mp4", "status_url": f"/v1/sessions/{SESSION_ID}"}  # fmt: skip
SESSION_STATUS = {"session_id": SESSION_ID, "state": "idle", "fps": 25.0, "width": 256, "height": 256, "pts": 3.2,
                  "spoken_s": 0.5, "queue_s": 0.0, "viewers": 1,
                  "stats": {"frames": 80, "fragments": 16, "behind": 0, "render_failures": 0, "interruptions": 0,
                            "dropped_s": 0.0, "queue_s": 0.0, "render_ms_median": 30.0, "render_ms_max": 41.0}}  # fmt: skip
PCM = struct.pack("<8h", 0, 1000, -1000, 32767, -32768, 5, -5, 0)


def ready(output: str) -> str:
    return json.dumps({"type": "ready", "pts": 0.0, "session_id": SESSION_ID, "output": output,
                       "codecs": "avc1.42c01e,opus", "fps": 25.0, "width": 256, "height": 256})  # fmt: skip


class FakeSocket:
    """A WebSocket server on 127.0.0.1 running ``script(connection)`` per connection; ``refuse``:
    path -> (status, JSON body) answered instead of the upgrade, as the service does."""

    def __init__(self, script, refuse: dict | None = None):
        self.script, self.refuse = script, refuse or {}
        self.requests: list = []  #: (path, query, headers) of each upgrade request
        self.received: list = []  #: what the client sent, in order
        self.errors: list = []
        self.server = serve(self._handle, "127.0.0.1", 0, process_request=self._process, compression=None)
        self.port = self.server.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _process(self, connection, request):
        parts = urlsplit(request.path)
        self.requests.append((parts.path, parse_qs(parts.query), request.headers))
        if parts.path in self.refuse:
            status, body = self.refuse[parts.path]
            return Response(status, "Refused", Headers({"Content-Type": "application/json"}), json.dumps(body).encode())
        return None

    def _handle(self, connection):
        try:
            self.script(connection, self)
        except Exception as exc:  # noqa: BLE001 - surfaced by the test
            self.errors.append(exc)

    def close(self):
        self.server.shutdown()
        self._thread.join(5)


@pytest.fixture
def sockets():
    made = []

    def make(script, refuse=None):
        made.append(FakeSocket(script, refuse))
        return made[-1]

    yield make
    for server in made:
        server.close()
    for server in made:
        assert not server.errors, server.errors


def session_http(server: FakeSocket, expect_body: dict) -> FakeHTTP:
    def create(request):
        assert_auth(request)
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == expect_body
        return httpx.Response(201, json=CREATED, headers={"Location": CREATED["status_url"]})

    fake = FakeHTTP({
        ("POST", "/v1/sessions"): create,
        ("GET", f"/v1/sessions/{SESSION_ID}"): httpx.Response(200, json=SESSION_STATUS),
        ("DELETE", f"/v1/sessions/{SESSION_ID}"): httpx.Response(200, json={**SESSION_STATUS, "state": "closed"}),
    })  # fmt: skip
    fake.url = server.url
    return fake


def fmp4_script(conn, server):
    """What the service does on an fmp4 socket: ready, init, fragments; events as input arrives."""
    conn.send(ready("fmp4"))
    conn.send(INIT)
    conn.send(FRAGMENTS[0])
    for _ in range(4):  # text, PCM, end_of_speech, a bad text
        server.received.append(conn.recv())
    conn.send(json.dumps({"type": "speech_started", "pts": 0.2}))
    conn.send(FRAGMENTS[1])
    conn.send(json.dumps({"type": "error", "pts": None, "code": "empty_text", "message": "nothing to speak"}))
    conn.send(FRAGMENTS[2])
    conn.send(json.dumps({"type": "speech_ended", "pts": 1.4}))
    server.received.append(conn.recv())  # interrupt
    conn.send(json.dumps({"type": "interrupted", "pts": 1.4}))
    server.received.append(conn.recv())  # close: the service takes it, then closes the socket
    conn.close()


def check_fmp4_run(server: FakeSocket, fake: FakeHTTP, items: list, ready_event: dict) -> None:
    assert ready_event["codecs"] == "avc1.42c01e,opus" and ready_event["width"] == 256
    (path, query, headers), = server.requests
    assert path == CREATED["ws"] and query == {"sample_rate": ["24000"], "output": ["fmp4"]}
    assert headers["Authorization"] == f"Bearer {KEY}"
    text, pcm, eos, bad, interrupt, close = server.received
    assert json.loads(text) == {"type": "text", "text": "Hello there."}
    assert pcm == PCM and isinstance(pcm, bytes)
    assert json.loads(eos) == {"type": "end_of_speech"} and json.loads(bad) == {"type": "text", "text": " "}
    assert json.loads(interrupt) == {"type": "interrupt"} and json.loads(close) == {"type": "close"}
    fragments = [i for i in items if isinstance(i, Fragment)]
    assert [f.data for f in fragments] == [INIT, *FRAGMENTS] and [f.init for f in fragments] == [True] + [False] * 3
    events = [i for i in items if isinstance(i, Event)]
    assert [e.type for e in events] == ["speech_started", "error", "speech_ended", "interrupted"]
    assert events[0].pts == 0.2 and events[1].code == "empty_text" and events[1].pts is None
    assert events[1].message == "nothing to speak" and events[2].data == {"type": "speech_ended", "pts": 1.4}
    assert [(r.method, r.url.path) for r in fake.requests] == [("POST", "/v1/sessions"),
                                                               ("GET", f"/v1/sessions/{SESSION_ID}")]  # fmt: skip


def test_session_speaks_and_yields_init_fragments_and_events(sockets):
    server = sockets(fmp4_script)
    fake = session_http(server, {"agent_type": "support", "preset": "ultra_fast"})
    items = []
    with Client(server.url, api_key=KEY, transport=fake.transport) as client:
        with client.session(agent_type="support", preset="ultra_fast", sample_rate=24000) as session:
            assert session.session_id == SESSION_ID and session.live_mp4 == CREATED["live_mp4"]
            session.say("Hello there.")
            session.send_audio(PCM)
            session.end_of_speech()
            session.say(" ")
            for item in session:
                items.append(item)
                if isinstance(item, Event) and item.type == "speech_ended":
                    session.interrupt()
                if isinstance(item, Event) and item.type == "interrupted":
                    break
            status = session.status()
            assert (status.state, status.pts, status.stats["fragments"]) == ("idle", 3.2, 16)
            ready_event = session.ready
        assert session.close_code is None  # close() drained the socket quietly
    check_fmp4_run(server, fake, items, ready_event)


def test_async_session_does_the_same(sockets):
    server = sockets(fmp4_script)
    fake = session_http(server, {"agent_type": "support", "preset": "ultra_fast"})

    async def run():
        items = []
        async with AsyncClient(server.url, api_key=KEY, transport=fake.transport) as client:
            async with client.session(agent_type="support", preset="ultra_fast", sample_rate=24000) as session:
                await session.say("Hello there.")
                await session.send_audio(bytearray(PCM))
                await session.end_of_speech()
                await session.say(" ")
                async for item in session:
                    items.append(item)
                    if isinstance(item, Event) and item.type == "speech_ended":
                        await session.interrupt()
                    if isinstance(item, Event) and item.type == "interrupted":
                        break
                assert (await session.status()).viewers == 1
                return items, session.ready

    items, ready_event = asyncio.run(run())
    check_fmp4_run(server, fake, items, ready_event)


def w2lf(frame: int, pts: float, jpeg: bytes, pcm: bytes, sample_rate: int = 16000) -> bytes:
    """A frames-mode message built by hand, as ``wav2lip.live_encode.frame_message`` lays it out."""
    header = json.dumps({"frame": frame, "pts": pts, "jpeg_bytes": len(jpeg), "pcm_bytes": len(pcm),
                         "sample_rate": sample_rate}).encode()  # fmt: skip
    return b"W2LF" + struct.pack(">I", len(header)) + header + jpeg + pcm


JPEGS = [b"\xff\xd8\xff\xe0" + bytes([i]) * 30 + b"\xff\xd9" for i in range(3)]


def frames_script(conn, server):
    conn.send(ready("frames"))
    for i in range(2):
        conn.send(w2lf(100 + i, (100 + i) / 25, JPEGS[i], PCM * 80))
    conn.send(json.dumps({"type": "stats", "pts": 4.08, "frames": 102, "fragments": 20}))
    conn.send(w2lf(102, 102 / 25, JPEGS[2], b""))
    server.received.append(conn.recv())
    conn.close()


def test_frames_output_yields_parsed_frames(sockets):
    server = sockets(frames_script)
    fake = session_http(server, {"avatar_id": AVATAR_ID, "fps": 25})
    with Client(server.url, api_key=KEY, transport=fake.transport) as client:
        session = client.session(avatar_id=AVATAR_ID, fps=25, output="frames")
        items = []
        for item in session:
            items.append(item)
            if len(items) == 4:
                break
        session.close()
    assert server.requests[0][1] == {"sample_rate": ["16000"], "output": ["frames"]}
    assert session.ready["output"] == "frames"
    frames = [i for i in items if isinstance(i, Frame)]
    assert [(f.index, f.pts, f.jpeg, f.sample_rate) for f in frames] == [
        (100 + i, (100 + i) / 25, JPEGS[i], 16000) for i in range(3)]  # fmt: skip
    assert frames[0].pcm == PCM * 80 and frames[2].pcm == b"" and frames[0].header["jpeg_bytes"] == len(JPEGS[0])
    assert isinstance(items[2], Event) and items[2].type == "stats" and items[2].data["frames"] == 102
    assert json.loads(server.received[0]) == {"type": "close"}


def test_frame_messages_are_checked():
    good = w2lf(3, 0.12, JPEGS[0], PCM)
    header, jpeg, pcm = w2l.parse_frame_message(good)
    assert header["frame"] == 3 and jpeg == JPEGS[0] and pcm == PCM
    for bad in (b"W2L", b"XXXX" + good[4:], good[:-1], good + b"\x00",
                b"W2LF" + struct.pack(">I", 5) + b"{nope" + b"rest"):  # fmt: skip
        with pytest.raises(FrameError):
            w2l.parse_frame_message(bad)


def test_socket_refused_before_the_upgrade_maps_to_typed_errors(sockets):
    missing = "0" * 32
    server = sockets(lambda conn, server: None, refuse={
        f"/v1/sessions/{missing}/ws": (404, {"error": "not_found", "message": f"session {missing} does not exist"}),
        CREATED["ws"]: (422, {"error": "invalid_settings", "message": "sample_rate must be an integer in [8000, 48000]"}),
    })  # fmt: skip
    fake = session_http(server, {})
    with Client(server.url, api_key=KEY, transport=fake.transport) as client:
        with pytest.raises(NotFound) as raised:
            client.connect_session(missing)
        assert raised.value.status == 404 and raised.value.code == "not_found" and missing in raised.value.message
        with pytest.raises(InvalidInput) as raised:
            client.session(sample_rate=4000)
        assert raised.value.code == "invalid_settings"
    # the session opened for the refused socket was ended, not left to idle out
    assert [(r.method, r.url.path) for r in fake.requests] == [("POST", "/v1/sessions"),
                                                               ("DELETE", f"/v1/sessions/{SESSION_ID}")]  # fmt: skip

    async def refused_async():
        async with AsyncClient(server.url, api_key=KEY, transport=fake.transport) as client:
            await client.connect_session(missing)

    with pytest.raises(NotFound):
        asyncio.run(refused_async())


def test_policy_close_before_ready_is_a_typed_error_and_a_drop_ends_iteration(sockets):
    def policy(conn, server):
        conn.close(1008, "401 send the API key as 'Authorization: Bearer <key>'")

    def drops(conn, server):
        conn.send(ready("fmp4"))
        conn.send(INIT)
        conn.close(1013, "too slow for the live edge")

    refused, dropping = sockets(policy), sockets(drops)
    with Client(refused.url, transport=session_http(refused, {}).transport) as client:
        with pytest.raises(Unauthorized, match="API key"):
            client.connect_session(SESSION_ID)
        assert "authorization" not in refused.requests[0][2]  # no key given, none sent
    fake = session_http(dropping, {})
    with Client(dropping.url, transport=fake.transport) as client:
        session = client.connect_session(SESSION_ID)
        assert [type(i) for i in session] == [Fragment]
        assert (session.close_code, session.close_reason) == (1013, "too slow for the live edge")
        with pytest.raises(w2l.Disconnected):
            session.say("anyone there?")
        session.close()  # the socket is gone: the session is ended over HTTP
    assert fake.requests[-1].method == "DELETE"


def test_urls_timeouts_and_output_checked():
    from wav2lip_client._common import timeout_of, ws_url

    assert ws_url(httpx.URL("https://h.example/lipsync/"), "/v1/sessions/x/ws", {"sample_rate": 16000, "output": "fmp4"}) \
        == "wss://h.example/lipsync/v1/sessions/x/ws?sample_rate=16000&output=fmp4"  # fmt: skip
    assert ws_url(httpx.URL("http://127.0.0.1:8000"), "/v1/sessions/x/ws", {"output": "frames"}) \
        == "ws://127.0.0.1:8000/v1/sessions/x/ws?output=frames"  # fmt: skip
    assert timeout_of(600).read == 600 and timeout_of(600).connect == 10 and timeout_of(None).read is None
    with FakeHTTP({}).client() as client, pytest.raises(ValueError, match="output"):
        client.session(output="gif")


def reader_script(conn, server):
    conn.send(ready("fmp4"))
    conn.send(INIT)
    server.received.append(conn.recv())
    conn.send(json.dumps({"type": "speech_started", "pts": 0.2}))
    server.received.append(conn.recv())  # close
    conn.close()


def test_close_while_another_thread_iterates(sockets):
    server = sockets(reader_script)
    with Client(server.url, transport=session_http(server, {}).transport) as client:
        session = client.connect_session(SESSION_ID)
        items = []
        reader = threading.Thread(target=lambda: items.extend(session), daemon=True)
        reader.start()
        session.say("Hi")
        deadline = time.monotonic() + 5
        while len(items) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        session.close(timeout=5)  # the reader holds recv(): close waits for the socket to close instead
        assert time.monotonic() - started < 2
        reader.join(5)
    assert not reader.is_alive() and [type(i) for i in items] == [Fragment, Event]
    assert [json.loads(m)["type"] for m in server.received] == ["text", "close"]


def test_async_close_while_another_task_iterates(sockets):
    server = sockets(reader_script)

    async def run():
        async with AsyncClient(server.url, transport=session_http(server, {}).transport) as client:
            session = await client.connect_session(SESSION_ID)
            items = []

            async def read():
                async for item in session:
                    items.append(item)

            reader = asyncio.create_task(read())
            await session.say("Hi")
            while len(items) < 2:
                await asyncio.sleep(0.01)
            await asyncio.wait_for(session.close(timeout=5), 2)
            await asyncio.wait_for(reader, 2)
            return items

    items = asyncio.run(run())
    assert [type(i) for i in items] == [Fragment, Event]
    assert [json.loads(m)["type"] for m in server.received] == ["text", "close"]
