"""Live sessions: open, idle, speak from PCM and from text, interrupt, frames output, refusals,
capacity, reconnect, live.mp4, idle timeout, and a worker replica dying mid-speech.

One deployment for the module (weights-free renderer, a 256x256 avatar, two live workers).
"""

from __future__ import annotations

import time

import cv2
import httpx
import numpy as np
import pytest
import ray
import soundfile as sf
from ray import serve
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from serve_app.settings import RenderSettings, Settings
from wav2lip.encode import read_frames
from wav2lip.live_encode import parse_frame_message

from .conftest import DATA, deploy
from bench.live_client import Viewer, best_lag, decode_live, open_session
from bench.webrtc_client import WebRTCViewer

pytestmark = pytest.mark.timeout(300)
FPS = 25.0
FRAGMENT = 5
PER_WORKER = 3
IDLE_TIMEOUT_S = 6.0
MAX_PEERS = 2


@pytest.fixture(scope="module")
def service(ray_cluster, tmp_path_factory, small_avatar):
    settings = Settings(workers=2, worker_gpus=0.5, worker_cpus=0.3, data_dir=tmp_path_factory.mktemp("sessions"),
                        render=RenderSettings(threads=1), live_workers=2, sessions_per_worker=PER_WORKER,
                        session_idle_timeout_s=IDLE_TIMEOUT_S, session_max_queue_s=10.0,
                        webrtc_max_peers=MAX_PEERS)  # fmt: skip
    deploy(settings)
    record = httpx.post(f"{ray_cluster}/v1/avatars", files={"avatar": ("f.png", small_avatar.read_bytes(), "image/png")},
                        timeout=120).json()  # fmt: skip
    return {"url": ray_cluster, "avatar": record["avatar_id"], "face_box": record["face_box"]}


def speech(seconds: float, offset_s: float = 0.5) -> np.ndarray:
    samples, rate = sf.read(DATA / "speech_9s.wav", dtype="int16")
    assert rate == 16000
    a = int(offset_s * rate)
    return samples[a : a + int(seconds * rate)]


def status(url: str, created: dict) -> dict:
    response = httpx.get(url + created["status_url"], timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def watched_session(service) -> tuple[str, dict, Viewer]:
    """A new session on the module's avatar, with one viewer that got its ready event."""
    created = open_session(service["url"], avatar_id=service["avatar"])
    viewer = Viewer(service["url"], created)
    viewer.wait_event("ready")
    return service["url"], created, viewer


def mouth_motion(frames: list[np.ndarray], box: list[int]) -> np.ndarray:
    """Mean absolute change per frame in the lower part of the face box (where the mouth is)."""
    y1, y2, x1, x2 = box
    region = [f[y1 + (y2 - y1) * 6 // 10 : y2, x1:x2].astype(np.float32) for f in frames]
    return np.array([np.abs(b - a).mean() for a, b in zip(region, region[1:])])


def test_speaks_pcm_in_sync_with_its_audio(service):
    url = service["url"]
    created = open_session(url, avatar_id=service["avatar"])
    assert set(created) == {"session_id", "ws", "live_mp4", "status_url"}
    assert status(url, created)["state"] == "idle"
    viewer = Viewer(url, created)
    try:
        ready = viewer.wait_event("ready")
        assert ready["codecs"].startswith("avc1.") and ready["codecs"].endswith(",opus")
        assert (ready["width"], ready["height"], ready["fps"]) == (256, 256, FPS)
        viewer.wait_media(1 + 5)  # init + 1 s of idle
        assert viewer.media[0][1][4:8] == b"ftyp"
        pcm = speech(2.0)
        viewer.send_pcm(pcm.tobytes(), piece_bytes=640, pace_s=0.004)  # 20 ms pieces at 5x real time
        viewer.send(type="end_of_speech")
        started = viewer.wait_event("speech_started")
        ended = viewer.wait_event("speech_ended")
        assert abs((ended["pts"] - started["pts"]) - 2.0) < 1e-3, (started, ended)
        assert started["pts"] * FPS % FRAGMENT == 0  # an utterance starts on a fragment
        during = status(url, created)
        assert during["viewers"] == 1
        viewer.wait_media(len(viewer.media) + 5)  # some idle after it
    finally:
        viewer.close()
    times, frames, audio, audio_start = decode_live(b"".join(m for _, m in viewer.media))
    assert len(frames) == FRAGMENT * (len(viewer.media) - 1)
    assert np.allclose(np.diff(times), 1 / FPS, atol=1e-4)  # continuous, no gap
    first = times[0]
    assert abs(audio_start - first) < 0.03  # both tracks start together
    # The speech lies where speech_started says, sample-exact within a few samples.
    at = round((started["pts"] - first) * 16000)
    reference = pcm[:8000].astype(np.float32) / 32768
    assert abs(best_lag(audio, reference, at, 800) - at) <= 8
    idle = audio[: max(0, at - 1600)]
    assert len(idle) and np.abs(idle).max() < 0.01  # silence before it
    # The mouth moves while speaking, much less in the idle second before.
    k = round((started["pts"] - first) * FPS)
    box = service["face_box"]
    speaking, resting = mouth_motion(frames[k : k + 50], box), mouth_motion(frames[max(0, k - 25) : k], box)
    assert speaking.mean() > 2 * resting.mean(), (speaking.mean(), resting.mean())
    final = status(url, created)
    assert abs(final["spoken_s"] - 2.0) < 0.05 and final["state"] == "idle" and final["viewers"] == 0
    assert httpx.delete(url + created["status_url"], timeout=30).json()["state"] == "closed"
    assert httpx.get(url + created["status_url"], timeout=30).status_code == 404


def test_text_speaks_and_interrupt_stops_within_a_fragment(service):
    url, created, viewer = watched_session(service)
    try:
        viewer.send(type="text", text="Hello there. This is a long answer that will be cut short by the user, "
                                        "who has something more important to say.")  # fmt: skip
        started = viewer.wait_event("speech_started", timeout=60)
        time.sleep(0.6)
        viewer.send(type="interrupt")
        interrupted = viewer.wait_event("interrupted")
        assert "speech_ended" not in viewer.kinds()
        assert 0.3 < interrupted["pts"] - started["pts"] < 3.0
        n = len(viewer.media)
        viewer.wait_media(n + 10)
        assert status(url, created)["state"] == "idle"
    finally:
        viewer.close()
    times, _, audio, audio_start = decode_live(b"".join(m for _, m in viewer.media))
    # Speech stops within one fragment (+ the lead already rendered) of the interruption.
    cut = round((interrupted["pts"] + (FRAGMENT / FPS) + 0.25 - audio_start) * 16000)
    assert np.abs(audio[round((started["pts"] - audio_start) * 16000) :][:8000]).max() > 0.05
    assert np.abs(audio[cut:]).max() < 0.01
    httpx.delete(url + created["status_url"], timeout=30)


def test_frames_output_at_48k(service):
    url = service["url"]
    created = open_session(url, avatar_id=service["avatar"])
    viewer = Viewer(url, created, output="frames", sample_rate=48000)
    try:
        viewer.wait_event("ready")
        pcm48 = np.repeat(speech(1.0), 3)  # 1 s at 48 kHz
        viewer.send_pcm(pcm48.tobytes(), piece_bytes=9600)
        viewer.send(type="end_of_speech")
        viewer.wait_event("speech_ended")
        viewer.wait_media(len(viewer.media) + 5)
    finally:
        viewer.close()
    headers = [parse_frame_message(m) for _, m in viewer.media]
    indices = [h["frame"] for h, _, _ in headers]
    assert indices == list(range(indices[0], indices[0] + len(indices)))
    for header, jpeg, pcm in headers[:3]:
        assert header["pts"] == pytest.approx(header["frame"] / FPS)
        assert len(pcm) == 2 * 640 and header["sample_rate"] == 16000
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (256, 256, 3)
    loud = [np.abs(np.frombuffer(p, "<i2")).max() for _, _, p in headers]
    assert max(loud) > 1000 and loud[0] < 300  # speech in some frames' PCM, silence at the start
    httpx.delete(url + created["status_url"], timeout=30)


def test_bad_input_gets_clear_errors(service):
    url = service["url"]
    bad = [({"agent_type": "nobody"}, 422), ({"fps": 0}, 422), ({"preset": "turbo"}, 422), ({"colour": "red"}, 422),
           ({"avatar_id": "x" * 3}, 422), ({"avatar_id": "0" * 64}, 404), ({"voice": "nobody"}, 400)]  # fmt: skip
    for body, code in bad:
        response = httpx.post(f"{url}/v1/sessions", json=body, timeout=30)
        assert response.status_code == code, (body, response.text)
        assert set(response.json()) == {"error", "message"}
    assert httpx.get(f"{url}/v1/sessions/{'0' * 32}", timeout=30).status_code == 404
    assert httpx.get(f"{url}/v1/sessions/nonsense", timeout=30).status_code == 422
    created = open_session(url, avatar_id=service["avatar"])
    ws = url.replace("http://", "ws://")
    for path, code in [(f"/v1/sessions/{'0' * 32}/ws", 404), (created["ws"] + "?sample_rate=4000", 422),
                       (created["ws"] + "?output=gif", 422), (created["ws"] + "?sample_rate=abc", 422)]:  # fmt: skip
        with pytest.raises(InvalidStatus) as refused:
            connect(ws + path, open_timeout=30)
        assert refused.value.response.status_code == code, path
    viewer = Viewer(url, created)
    try:
        viewer.wait_event("ready")
        viewer.ws.send("not json")
        assert viewer.wait_event("error")["code"] == "invalid_message"
        viewer.send(type="dance")
        viewer.send(type="text", text="   ")
        viewer.ws.send(np.zeros(16000 * 25, np.int16).tobytes())  # 25 s at once: over the 10 s queue
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "input_too_fast" not in [e.get("code") for _, e in viewer.events]:
            time.sleep(0.05)
        codes = [e.get("code") for _, e in viewer.events if e["type"] == "error"]
        assert codes.count("invalid_message") == 2 and "empty_text" in codes and "input_too_fast" in codes, codes
        state = status(url, created)
        assert state["queue_s"] <= 10.0 and state["stats"]["dropped_s"] >= 15.0
        viewer.send(type="interrupt")
        viewer.wait_media(len(viewer.media) + 2)  # the session lives on
    finally:
        viewer.close()
    httpx.delete(url + created["status_url"], timeout=30)


def test_webrtc_viewers_see_and_hear_the_session(service):
    """Two WebRTC peers and an events-only socket on one session: H.264 frames of the avatar's
    size, the speech in the audio after silence, a peer leaving ends only itself; refusals."""
    url = service["url"]
    created = open_session(url, avatar_id=service["avatar"])
    endpoint = f"{url}{created['status_url']}/webrtc"
    for body, code in [({"sdp": "v=0 nonsense", "type": "offer"}, 422), ({"sdp": "v=0", "type": "answer"}, 422),
                       ({"sdp": "", "type": "offer"}, 422), ({"type": "offer"}, 422)]:  # fmt: skip
        response = httpx.post(endpoint, json=body, timeout=30)
        assert response.status_code == code and set(response.json()) == {"error", "message"}, (body, response.text)
    unknown = httpx.post(f"{url}/v1/sessions/{'0' * 32}/webrtc", json={"sdp": "v=0", "type": "offer"}, timeout=30)
    assert unknown.status_code == 404
    first, second = WebRTCViewer(url, created), WebRTCViewer(url, created)
    events = Viewer(url, created, output="events")
    try:
        assert first.codec == "H264"
        with pytest.raises(RuntimeError, match="503"):  # the host holds MAX_PEERS peers
            WebRTCViewer(url, created).close()
        ready = events.wait_event("ready")
        assert ready["output"] == "events"
        first.wait_frames(25)
        second.wait_frames(25)
        assert first.frames[0][1].shape == (256, 256, 3)
        second.close()  # one peer leaves: the other lives on
        assert status(url, created)["viewers"] == 2  # the first peer and the events socket
        quiet = len(first.audio())
        events.send_pcm(speech(2.0).tobytes(), piece_bytes=640, pace_s=0.004)
        events.send(type="end_of_speech")
        events.wait_event("speech_ended", timeout=60)
        n = len(first.frames)
        first.wait_frames(n + 25)
        assert first.state == "connected"
    finally:
        events.close()
        first.close()
    assert not events.media  # events only: no media on the socket
    heard = first.audio()
    assert np.abs(heard[:quiet]).max() < 0.01 and np.abs(heard[quiet:]).max() > 0.05
    assert abs(len(heard) / 48000 - len(first.frames) / FPS) < 0.5  # both tracks flowed throughout
    httpx.delete(url + created["status_url"], timeout=30)


def test_capacity_reconnect_and_live_mp4(service):
    url = service["url"]
    opened = [open_session(url, avatar_id=service["avatar"]) for _ in range(2 * PER_WORKER)]
    full = httpx.post(f"{url}/v1/sessions", json={"avatar_id": service["avatar"]}, timeout=30)
    assert full.status_code == 503 and full.headers["retry-after"] and full.json()["error"] == "sessions_full"
    for created in opened[1:]:
        assert httpx.delete(url + created["status_url"], timeout=30).status_code == 200
    created = opened[0]
    first = Viewer(url, created)
    first.wait_media(1 + 3)
    first.close()
    pts_before = status(url, created)["pts"]
    again = Viewer(url, created)  # a dropped socket reconnects to the same session, at the live edge
    try:
        again.wait_media(1 + 3)
        times, frames, _, _ = decode_live(b"".join(m for _, m in again.media))
        assert times[0] >= pts_before - 0.5 and len(frames) == FRAGMENT * (len(again.media) - 1)
        with httpx.stream("GET", url + created["live_mp4"], timeout=30) as response:
            assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
            data = b""
            for piece in response.iter_bytes():
                data += piece
                if len(data) > 20_000:
                    break
        assert data[4:8] == b"ftyp"
        assert status(url, created)["viewers"] >= 1
    finally:
        again.close()
    assert httpx.get(url + f"/v1/sessions/{'0' * 32}/live.mp4", timeout=30).status_code == 404
    httpx.delete(url + created["status_url"], timeout=30)


def test_four_sessions_on_two_workers_are_complete_and_gap_free(service):
    """Two image-avatar and two video-avatar sessions speaking at once; a video avatar idles as recorded."""
    url = service["url"]
    video = DATA / "avatar_2s.mp4"
    record = httpx.post(f"{url}/v1/avatars", files={"avatar": ("v.mp4", video.read_bytes(), "video/mp4")},
                        timeout=300).json()  # fmt: skip
    recorded = read_frames(video)
    kinds = ["image", "image", "video", "video"]
    sessions = [open_session(url, avatar_id=service["avatar"] if k == "image" else record["avatar_id"]) for k in kinds]
    viewers = [Viewer(url, created) for created in sessions]
    try:
        for viewer in viewers:
            viewer.wait_event("ready")
            viewer.wait_media(1 + 2)
        for i, viewer in enumerate(viewers):
            viewer.send_pcm(speech(1.6, offset_s=0.5 + i).tobytes(), piece_bytes=16000)
            viewer.send(type="end_of_speech")
        for viewer in viewers:
            viewer.wait_event("speech_ended", timeout=60)
            viewer.wait_media(len(viewer.media) + 5, timeout=60)
    finally:
        for viewer in viewers:
            viewer.close()
    for kind, viewer in zip(kinds, viewers):
        times, frames, audio, audio_start = decode_live(b"".join(m for _, m in viewer.media))
        assert len(frames) == FRAGMENT * (len(viewer.media) - 1)
        assert np.allclose(np.diff(times), 1 / FPS, atol=1e-4), kind  # complete: no frame missing, no gap
        assert abs(len(audio) / 16000 - len(frames) / FPS) < 0.03, kind  # audio as long as the video
        if kind == "video":  # idle before the speech: the recorded frames, ping-pong, untouched by the model
            first = round(times[0] * FPS)
            for j in range(3):
                loop = first + j
                index = loop % 98 if loop % 98 < 50 else 98 - loop % 98
                assert cv2.PSNR(frames[j], recorded[index]) > 30, (loop, index)
    for created in sessions:
        httpx.delete(url + created["status_url"], timeout=30)


def test_idle_session_ends_after_timeout(service):
    url = service["url"]
    created = open_session(url, avatar_id=service["avatar"])
    assert status(url, created)["state"] == "idle"
    deadline = time.monotonic() + IDLE_TIMEOUT_S + 15
    while time.monotonic() < deadline and httpx.get(url + created["status_url"], timeout=30).status_code == 200:
        time.sleep(0.5)
    assert httpx.get(url + created["status_url"], timeout=30).status_code == 404


def test_worker_dying_mid_speech_loses_no_session(service):
    url, created, viewer = watched_session(service)
    try:
        viewer.send_pcm(speech(4.0).tobytes(), pace_s=0.02)
        viewer.send(type="end_of_speech")
        viewer.wait_event("speech_started")
        workers = [a for a in ray.util.list_named_actors(all_namespaces=True) if "LiveWorker" in a["name"]]
        ray.kill(ray.get_actor(workers[0]["name"], namespace=workers[0]["namespace"]), no_restart=False)
        viewer.wait_event("speech_ended", timeout=60)
        n = len(viewer.media)
        viewer.wait_media(n + 10, timeout=60)  # still live
        assert "session_failed" not in [e.get("code") for _, e in viewer.events]
        assert status(url, created)["state"] == "idle"
    finally:
        viewer.close()
    _, frames, _, _ = decode_live(b"".join(m for _, m in viewer.media))
    assert len(frames) == FRAGMENT * (len(viewer.media) - 1)
    serve.get_app_handle("lipsync")  # the app is still there
    httpx.delete(url + created["status_url"], timeout=30)
