"""What a hostile or careless client sends at the edge: unknown fields, text that cannot be
encoded, uploads that trickle in. Each gets a JSON 4xx/503 naming the problem, fast enough
that a generous timeout catches a hang (no speed assertions)."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from serve_app.schemas import GenerateVideoRequest, VideoRequest
from serve_app.settings import RenderSettings, Settings

from .conftest import deploy

pytestmark = pytest.mark.timeout(300)
UPLOAD_TIMEOUT_S = 2.0
PENDING = 3  #: renders admitted by the ingress replica at once
UPLOADS = 8  #: request bodies received at once
MAX_AUDIO_S = 6.0


@pytest.fixture(scope="module")
def url(ray_cluster, tmp_path_factory):
    deploy(Settings(workers=1, worker_gpus=0.5, data_dir=tmp_path_factory.mktemp("hostile"), max_uploads=UPLOADS,
                    upload_timeout_s=UPLOAD_TIMEOUT_S, max_pending_requests=PENDING, max_audio_s=MAX_AUDIO_S, render=RenderSettings(threads=1)))
    return ray_cluster


def wav(speech_clips) -> dict:
    return {"audio": ("a.wav", speech_clips["a"].read_bytes(), "audio/wav")}


def test_unknown_fields_are_refused_on_v1_and_named_on_the_old_route(url, speech_clips):
    typo = httpx.post(f"{url}/v1/videos", files=wav(speech_clips), data={"presett": "quality"}, timeout=60)
    assert typo.status_code == 422 and typo.json()["error"] == "invalid_settings"
    assert "'presett'" in typo.json()["message"]
    on_stream = httpx.post(f"{url}/v1/streams", files=wav(speech_clips), data={"async": "true"}, timeout=60)
    assert on_stream.status_code == 422 and "'async'" in on_stream.json()["message"]
    as_form = httpx.post(f"{url}/v1/videos", files=wav(speech_clips), data={"async": "true"}, timeout=60)
    assert as_form.status_code == 202 and as_form.json()["job_id"]  # async in the form, as users send it
    old = httpx.post(f"{url}/generate_video", json={"message": "Hello there.", "presett": 1, "voice_id": "x"},
                     timeout=180)  # fmt: skip
    assert old.status_code == 200, old.text
    assert old.json()["warnings"] == ["unknown field 'presett' was ignored", "unknown field 'voice_id' was ignored"]


def test_text_that_cannot_be_encoded_is_refused_at_the_edge(url):
    body = '{"message": "Hello \\ud800 there", "agent_type": "general"}'  # a lone surrogate, as JSON allows
    for path in ("/generate_video", "/generate_video?async=true"):
        r = httpx.post(url + path, content=body, headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 422 and r.json()["error"] == "invalid_settings", r.text
        assert "surrogate" in r.json()["message"] and "pid" not in r.json()["message"]
    with pytest.raises(ValueError, match="surrogate"):
        VideoRequest(text="a\udfffb")
    with pytest.raises(ValueError, match="surrogate"):
        GenerateVideoRequest(message="\ud83d")


def _stalled_upload(base: str, sent: bytes = b"--b\r\n") -> socket.socket:
    """A POST whose body stops after ``sent`` (a client that trickles, or has gone quiet)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(b"POST /v1/videos HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 b"Content-Length: 100000\r\n\r\n" + sent)  # fmt: skip
    return sock


def _response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    text = body.decode(errors="replace")
    return status, json.loads(text[text.index("{") : text.rindex("}") + 1])


def test_slow_uploads_time_out_and_cannot_take_every_slot(url):
    stalled = [_stalled_upload(url) for _ in range(UPLOADS)]
    time.sleep(1.0)  # every upload slot is now taken by a body that does not come
    third = _stalled_upload(url)
    status, body = _response(third)
    assert status == 503 and body["error"] == "overloaded"  # refused at once, not queued behind them
    assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200  # the service still answers
    for sock in stalled:
        status, body = _response(sock)
        assert status == 408 and body["error"] == "upload_timeout", body
        assert f"{UPLOAD_TIMEOUT_S:g} s" in body["message"]
        sock.close()
    third.close()
    after = _stalled_upload(url)  # the slots are free again
    status, _ = _response(after)
    assert status == 408
    after.close()


def test_admission_happens_at_the_door(url, speech_clips):
    """What was accepted is rendered: beyond the limit a job or stream is refused with 503 at
    once, never accepted (202/201) and failed later; identical bad requests all get the 4xx."""
    import concurrent.futures as cf

    clips = [speech_clips[f"c{i}"].read_bytes() for i in range(2 * PENDING)]

    def submit(i: int) -> httpx.Response:
        return httpx.post(f"{url}/v1/videos?async=true", files={"audio": ("a.wav", clips[i], "audio/wav")}, timeout=60)

    with cf.ThreadPoolExecutor(len(clips)) as pool:
        answers = list(pool.map(submit, range(len(clips))))
    codes = sorted(r.status_code for r in answers)
    assert set(codes) <= {202, 503} and codes.count(202) >= 1 and codes.count(503) >= 1, codes
    for r in answers:
        if r.status_code == 503:
            assert r.json()["error"] == "overloaded" and r.headers["retry-after"]
    for r in answers:
        if r.status_code == 202:
            job_url = url + r.json()["status_url"]
            deadline = time.monotonic() + 240
            while (job := httpx.get(job_url, timeout=30).json())["status"] in ("queued", "running"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert job["status"] == "succeeded", job  # accepted means rendered, not "overloaded" later

    bad = b"RIFF\x24\x00\x00\x00WAVEnot really audio at all" * 4

    def bad_stream(_):
        return httpx.post(f"{url}/v1/streams", files={"audio": ("a.wav", bad, "audio/wav")}, timeout=60)

    with cf.ThreadPoolExecutor(6) as pool:
        refused = list(pool.map(bad_stream, range(6)))
    assert [r.status_code for r in refused] == [422] * 6, [(r.status_code, r.text) for r in refused]
    assert {r.json()["error"] for r in refused} == {"undecodable_audio"}


def _float_wav(samples) -> bytes:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def test_audio_samples_that_are_not_sane_numbers(url):
    """Decided at decode time: finite samples beyond [-1, 1] are clipped (and counted in the
    stats), NaN/inf refused with a 422, for whole videos and streams alike."""
    import numpy as np

    t = np.arange(32000) / 16000
    loud = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    loud[[100, 5000, 20000]] = 1e10
    r = httpx.post(f"{url}/v1/videos", files={"audio": ("a.wav", _float_wav(loud), "audio/wav")}, timeout=180)
    assert r.status_code == 200, r.text
    assert r.json()["stats"]["clipped_samples"] == 3
    for bad in (np.nan, np.inf):
        broken = loud.copy()
        broken[777] = bad
        for path in ("/v1/videos", "/v1/streams"):
            r = httpx.post(url + path, files={"audio": ("a.wav", _float_wav(broken), "audio/wav")}, timeout=60)
            assert r.status_code == 422 and r.json()["error"] == "undecodable_audio", r.text
            assert "0x" not in r.json()["message"]  # no addresses or ffmpeg internals


def test_every_path_to_a_long_output_meets_the_audio_limit(url):
    """Text is capped by characters, and its speech by ``max_audio_s`` like an upload: digits
    read out one by one make a long answer from a short text."""
    digits = " ".join("4817 2093 5561" for _ in range(12))  # ~170 characters, far more than 6 s of speech
    t0 = time.monotonic()
    r = httpx.post(f"{url}/v1/videos", data={"text": digits}, timeout=180)
    assert r.status_code == 413 and r.json()["error"] == "input_too_large", r.text
    assert f"{MAX_AUDIO_S:g} s" in r.json()["message"]
    print(f"\nlong text refused after {time.monotonic() - t0:.2f} s")  # for docs/reliability.md (pytest -s)


def test_small_edge_cases(url, small_avatar):
    slash = httpx.get(f"{url}/v1/avatars/", headers={"host": "evil.example"}, timeout=30, follow_redirects=False)
    assert slash.status_code == 404 and "location" not in slash.headers and slash.json()["error"] == "not_found"
    record = httpx.post(f"{url}/v1/avatars", files={"avatar": ("f.png", small_avatar.read_bytes(), "image/png")},
                        timeout=120).json()  # fmt: skip
    listed = {a["avatar_id"]: a for a in httpx.get(f"{url}/v1/avatars", timeout=30).json()}
    assert listed[record["avatar_id"]] == record and "default" in listed


def test_identical_concurrent_requests_share_one_render_without_503(url, speech_clips):
    """A request that joins the same render under way (or is answered from the store) takes no
    admission slot: more identical requests than slots all get the one video."""
    import concurrent.futures as cf

    body = speech_clips["c7"].read_bytes()

    def post(_):
        return httpx.post(f"{url}/v1/videos", files={"audio": ("a.wav", body, "audio/wav")}, timeout=180)

    n = UPLOADS - 1  # more than the render slots, fewer than the upload slots
    with cf.ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(post, range(n)))
    assert [r.status_code for r in answers] == [200] * n, [r.text for r in answers if r.status_code != 200]
    assert len({r.json()["video_id"] for r in answers}) == 1
    assert sum(not r.json()["stats"]["cache_hit"] for r in answers) == 1  # rendered once
