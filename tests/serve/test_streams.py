"""Progressive streams: fragments published in order while the render runs, HLS and
live.mp4 views of the same fragments, attach, disconnect, cancel, failure, isolation.

Every chunk waits ``DELAY_S`` in the worker first (the fault-injection setting), so a
2-core CPU render takes long enough (8 chunks of ~1 s) for streaming to be observable.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import subprocess
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import ray
from ray import serve
import soundfile as sf

from serve_app.schemas import VideoRequest
from serve_app.settings import RenderSettings, Settings
from wav2lip.audio import frame_count, load_audio
from wav2lip.encode import read_frames
from wav2lip.ffmpeg import ffmpeg_binary

from ..media import framemd5, packet_times
from .conftest import DATA, chunks_rendered, deploy, stream_durations

pytestmark = pytest.mark.timeout(300)
DELAY_S = 1.0
SPEECH = DATA / "speech_9s.wav"
ACTIVE = ("starting", "rendering")


def settings(data_dir, **overrides) -> Settings:
    base = dict(workers=2, worker_gpus=0.5, worker_cpus=0.5, data_dir=data_dir, render=RenderSettings(threads=1),
                stream_chunk_duration_s=1.28, inject_chunk_delay_s=DELAY_S, job_poll_s=0.1,
                stream_stale_after_s=2.0)  # fmt: skip
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(scope="module")
def service(ray_cluster, tmp_path_factory, small_avatar):
    data_dir = tmp_path_factory.mktemp("streams")
    deploy(settings(data_dir))
    avatar = httpx.post(f"{ray_cluster}/v1/avatars", files={"avatar": ("f.png", small_avatar.read_bytes(), "image/png")},
                        timeout=120).json()["avatar_id"]  # fmt: skip
    return {"url": ray_cluster, "avatar": avatar, "data_dir": data_dir}


def open_stream(url: str, audio: Path | bytes, **data) -> httpx.Response:
    content = audio.read_bytes() if isinstance(audio, Path) else audio
    return httpx.post(f"{url}/v1/streams", files={"audio": ("a.wav", content, "audio/wav")},
                      data={k: str(v) for k, v in data.items()}, timeout=120)  # fmt: skip


def status(url: str, info: dict) -> dict:
    return httpx.get(url + info["status"], timeout=30).json()


def wait_for_first_fragment(url: str, info: dict) -> None:
    deadline = time.monotonic() + 60
    while status(url, info)["fragments_published"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)


def kill_replica(deployment: str, all_of_them: bool = True) -> None:
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith(f"SERVE_REPLICA::lipsync#{deployment}#")]  # fmt: skip
    for name in names if all_of_them else names[:1]:
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


def wait_until_done(url: str, info: dict, timeout_s: float = 240) -> dict | None:
    """The stream's status once it ended, riding out requests that fail while replicas restart."""
    state, deadline = None, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = httpx.get(url + info["status"], timeout=30).json()
            if state["status"] not in ACTIVE:
                break
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)
    return state


def read_live(url: str, info: dict, events: list, stop_after: int | None = None) -> bytes:
    """live.mp4 as it arrives; each piece's arrival is logged with the stream's status then."""
    body = bytearray()
    with httpx.stream("GET", url + info["mp4"], timeout=120) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
        for piece in response.iter_bytes():
            if not body:
                events.append(status(url, info))
            body += piece
            if stop_after is not None and len(body) >= stop_after:
                break  # the viewer goes away mid-stream
    return bytes(body)


def test_stream_plays_while_rendering_and_equals_the_final_mp4(service, tmp_path):
    url = service["url"]
    before = chunks_rendered()
    r = open_stream(url, SPEECH, avatar_id=service["avatar"])
    assert r.status_code == 201, r.text
    info = r.json()
    sid = info["id"]
    assert info == {"id": sid, "hls": f"/v1/streams/{sid}/index.m3u8", "mp4": f"/v1/streams/{sid}/live.mp4",
                    "final": f"/v1/videos/{sid}", "status": f"/v1/streams/{sid}/status"}  # fmt: skip
    first = status(url, info)
    assert first["status"] in ACTIVE and first["fragments_published"] == 0  # answered before any chunk was done

    live_events: list = []
    with cf.ThreadPoolExecutor(1) as pool:
        live = pool.submit(read_live, url, info, live_events)
        playlists, hls_proc, hls_out = [], None, tmp_path / "hls.mp4"
        while True:
            s = status(url, info)
            text = httpx.get(url + info["hls"], timeout=30)
            assert text.headers["cache-control"] == "no-cache"
            playlists.append((s, text.text))
            if hls_proc is None and "seg/0.m4s" in text.text:
                assert s["status"] == "rendering"  # ffmpeg joins mid-render
                hls_proc = subprocess.Popen([ffmpeg_binary(), "-hide_banner", "-y", "-live_start_index", "0",
                                             "-i", url + info["hls"], "-c", "copy", str(hls_out)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
            if s["status"] not in ACTIVE:
                break
            time.sleep(0.1)
        live_bytes = live.result(timeout=120)
    assert s["status"] == "complete", s
    assert hls_proc.wait(timeout=120) == 0, hls_proc.stderr.read().decode()[-800:]

    n_frames = frame_count(len(load_audio(SPEECH)), 25)
    total = s["fragments_total"]
    assert total >= 6 and s["fragments_published"] == total and abs(s["duration_s"] - n_frames / 25) < 1e-6
    assert chunks_rendered() - before == total
    # fragment 0 was listed, and sent by live.mp4, before half of the chunks were done
    listed = next(st for st, text in playlists if "seg/0.m4s" in text)
    assert listed["status"] == "rendering" and listed["fragments_published"] * 2 <= total
    assert live_events[0]["status"] == "rendering" and live_events[0]["fragments_published"] * 2 <= total
    # the playlist only grew, and ended with ENDLIST
    texts = [text for _, text in playlists]
    for a, b in zip(texts, texts[1:]):
        assert b.startswith(a.removesuffix("#EXT-X-ENDLIST\n")), (a, b)
    assert texts[-1].endswith("#EXT-X-ENDLIST\n") and texts[-1].count(".m4s") == total
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in texts[0] and '#EXT-X-MAP:URI="init.mp4"' in texts[0]

    # what ffmpeg got over HLS: every frame, continuous timestamps, audio and video together
    packets = packet_times(hls_out)
    video, audio = packets[0], packets[1]
    assert len(video) == n_frames
    for track in (video, audio):
        for (t0, d0), (t1, _) in zip(track, track[1:]):
            assert abs(t1 - (t0 + d0)) < 1e-3, (t0, d0, t1)  # no gap, no overlap
    assert abs(video[0][0] - audio[0][0]) <= 0.040
    durations = stream_durations(hls_out)
    speech_s = len(load_audio(SPEECH)) / 16000
    assert abs(durations["video"] - speech_s) <= 0.04 and abs(durations["audio"] - speech_s) <= 0.04, durations

    final = tmp_path / "final.mp4"
    final.write_bytes(httpx.get(url + info["final"], timeout=60).content)
    head = final.read_bytes()[:4096]
    assert head.find(b"moov") < head.find(b"mdat") or b"mdat" not in head  # faststart
    live_file = tmp_path / "live.mp4"
    live_file.write_bytes(live_bytes)
    frames = read_frames(final)
    assert len(frames) == n_frames
    assert np.array_equal(read_frames(live_file), frames) and np.array_equal(read_frames(hls_out), frames)

    seg = httpx.get(f"{url}/v1/streams/{sid}/seg/1.m4s", timeout=30)
    assert seg.status_code == 200 and "immutable" in seg.headers["cache-control"]
    assert httpx.get(f"{url}/v1/streams/{sid}/seg/{total}.m4s", timeout=30).status_code == 404
    assert s["codecs"].startswith("avc1.") and s["codecs"].endswith(",mp4a.40.2")
    assert s["stats"]["stages"]["first_fragment"] < s["stats"]["total_processing_time"]


def test_identical_requests_share_one_render_and_a_finished_stream_needs_no_worker(service, speech_clips):
    url = service["url"]
    before = chunks_rendered()
    first = open_stream(url, speech_clips["b"], avatar_id=service["avatar"]).json()
    second = open_stream(url, speech_clips["b"], avatar_id=service["avatar"]).json()
    assert second == first  # attached to the running render
    done = wait_until_done(url, first)
    assert done["status"] == "complete"
    rendered = chunks_rendered() - before
    assert rendered == done["fragments_total"]  # rendered once

    third = open_stream(url, speech_clips["b"], avatar_id=service["avatar"])
    assert third.status_code == 201 and third.json() == first
    assert status(url, first)["status"] == "complete"
    assert httpx.get(url + first["hls"], timeout=30).text.endswith("#EXT-X-ENDLIST\n")
    events: list = []
    body = read_live(url, first, events)
    assert events[0]["status"] == "complete" and len(body) > 1000
    assert chunks_rendered() - before == rendered  # no worker call for the replay

    handle = serve.get_app_handle("lipsync")  # the same through a Python handle
    request = VideoRequest(audio=speech_clips["b"].read_bytes(), avatar_id=service["avatar"])
    via_handle = handle.open_stream.remote(request).result()
    assert via_handle.model_dump() == first
    assert handle.stream_status.remote(first["id"]).result().status == "complete"


def test_a_viewer_leaving_ends_only_its_response_and_delete_stops_the_render(service, speech_clips, tmp_path):
    """No assertion about a state at a moment that a fast machine could skip past: a viewer leaves
    the 60 s stream (about 30 chunks, each held DELAY_S by fault injection, two workers: still
    rendering for many seconds after its first fragment), and a short stream is only checked to
    finish without its viewer."""
    url = service["url"]
    info = open_stream(url, speech_clips["a"], avatar_id=service["avatar"]).json()
    assert read_live(url, info, [], stop_after=1)  # the viewer goes away after its first bytes
    done = wait_until_done(url, info)
    assert done["status"] == "complete"  # the render went on without its viewer
    video = httpx.get(url + info["final"], timeout=60)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"

    long = open_stream(url, DATA / "speech_long_60s.wav", avatar_id=service["avatar"]).json()
    events: list = []
    partial = read_live(url, long, events, stop_after=1)
    assert partial and events[0]["status"] == "rendering"
    left_at = status(url, long)["fragments_published"]
    deadline = time.monotonic() + 60
    while status(url, long)["fragments_published"] == left_at and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status(url, long)["fragments_published"] > left_at  # rendering goes on without its viewer
    deleted = httpx.delete(f"{url}/v1/streams/{long['id']}", timeout=30)
    assert deleted.status_code == 200
    end = wait_until_done(url, long, 60)
    assert end["status"] == "cancelled" and end["fragments_published"] < end["fragments_total"]
    settled = chunks_rendered()
    time.sleep(3 * DELAY_S)
    assert chunks_rendered() == settled  # the workers were freed, not left rendering for nobody
    assert httpx.get(url + long["final"], timeout=30).status_code == 404
    # a fresh request for the same input renders again (the cancelled stream is not reused)
    again = open_stream(url, DATA / "speech_long_60s.wav", avatar_id=service["avatar"]).json()
    assert again["id"] == long["id"] and status(url, again)["status"] in ACTIVE
    assert httpx.delete(f"{url}/v1/streams/{long['id']}", timeout=30).status_code == 200
    assert wait_until_done(url, again, 60)["status"] == "cancelled"


def test_three_concurrent_streams_with_different_avatars_do_not_mix(service, speech_clips, small_avatar, tmp_path):
    url = service["url"]
    base = cv2.imread(str(small_avatar))
    images = [base, cv2.flip(base, 1), np.ascontiguousarray(base[:, :, ::-1])]
    ids = []
    for i, img in enumerate(images):
        ok, png = cv2.imencode(".png", img)
        r = httpx.post(f"{url}/v1/avatars", files={"avatar": (f"{i}.png", png.tobytes(), "image/png")}, timeout=120)
        ids.append(r.json()["avatar_id"])
    with cf.ThreadPoolExecutor(3) as pool:
        infos = list(pool.map(lambda a: open_stream(url, speech_clips["c3"], avatar_id=a).json(), ids))
    assert len({i["id"] for i in infos}) == 3
    for i, info in enumerate(infos):
        assert wait_until_done(url, info)["status"] == "complete"
        path = tmp_path / f"{i}.mp4"
        path.write_bytes(httpx.get(url + info["final"], timeout=60).content)
        frame = read_frames(path)[0].astype(np.float32)
        errors = [np.abs(frame - img.astype(np.float32)).mean() for img in images]
        assert int(np.argmin(errors)) == i and errors[i] < 10, errors  # its own avatar, nobody else's


def test_bad_stream_requests_get_clear_errors(service, speech_clips):
    url = service["url"]
    cases = [
        (httpx.post(f"{url}/v1/streams", data={"avatar_id": "default"}, timeout=30), 400),
        (open_stream(url, b"RIFF not really a wave file"), 422),
        (open_stream(url, speech_clips["a"], avatar_id="f" * 64), 404),
        (httpx.get(f"{url}/v1/streams/{'0' * 64}/status", timeout=30), 404),
        (httpx.get(f"{url}/v1/streams/{'0' * 64}/live.mp4", timeout=30), 404),
        (httpx.get(f"{url}/v1/streams/{'0' * 64}/index.m3u8", timeout=30), 404),
        (httpx.get(f"{url}/v1/streams/not-an-id/status", timeout=30), 422),
    ]
    for response, expected in cases:
        assert response.status_code == expected, response.text
        assert set(response.json()) >= {"error", "message"}
    # the refused requests left no stream behind: the same id is free for a valid request
    ok = open_stream(url, speech_clips["a"])
    assert ok.status_code == 201


def test_a_stream_outlives_its_registry_replica_dying(service, tmp_path):
    url = service["url"]
    info = open_stream(url, SPEECH, avatar_id=service["avatar"], chunk_duration=0.96).json()
    live_events: list = []
    with cf.ThreadPoolExecutor(1) as pool:
        live = pool.submit(read_live, url, info, live_events)  # a viewer from before the restart
        wait_for_first_fragment(url, info)
        kill_replica("StreamRegistry")
        done = wait_until_done(url, info)  # Serve starts a new registry replica, which reloads from disk
        body = live.result(timeout=120)
    assert done["status"] == "complete", done
    assert done["fragments_published"] == done["fragments_total"]
    final, watched = tmp_path / "final.mp4", tmp_path / "watched.mp4"
    final.write_bytes(httpx.get(url + info["final"], timeout=60).content)
    watched.write_bytes(body)
    assert np.array_equal(read_frames(watched), read_frames(final))  # the viewer missed nothing


def test_a_stream_whose_ingress_replica_dies_fails_cleanly_and_renders_again(service, speech_clips):
    url = service["url"]
    info = open_stream(url, SPEECH, avatar_id=service["avatar"], chunk_duration=0.64).json()
    wait_for_first_fragment(url, info)
    assert status(url, info)["status"] == "rendering"
    kill_replica("Ingress")
    lost = wait_until_done(url, info)  # Serve starts a new ingress replica; the registry notices the silence
    assert lost["status"] == "failed" and lost["error"]["error"] == "stream_lost", lost
    assert httpx.get(url + info["hls"], timeout=30).text.endswith("#EXT-X-ENDLIST\n")  # players stop waiting
    again = open_stream(url, SPEECH, avatar_id=service["avatar"], chunk_duration=0.64)
    assert again.status_code == 201 and again.json()["id"] == info["id"]
    done = wait_until_done(url, info)
    assert done["status"] == "complete" and done["fragments_published"] == done["fragments_total"]
    assert httpx.get(url + info["final"], timeout=60).status_code == 200


def test_a_worker_dying_mid_stream_costs_a_retry_not_the_stream(service, tmp_path):
    url = service["url"]
    info = open_stream(url, SPEECH, avatar_id=service["avatar"], chunk_duration=1.92).json()
    wait_for_first_fragment(url, info)
    kill_replica("LipSyncWorker", all_of_them=False)  # one of two; it holds chunks in flight
    done = wait_until_done(url, info, 120)
    assert done["status"] == "complete", done
    assert done["stats"]["chunk_retries"] >= 1 and done["fragments_published"] == done["fragments_total"]
    final = tmp_path / "final.mp4"
    final.write_bytes(httpx.get(url + info["final"], timeout=60).content)
    assert len(read_frames(final)) == frame_count(len(load_audio(SPEECH)), 25)


TEXT = ("Thanks for calling. Your order shipped this morning and should arrive on Thursday. "
        "You can follow it with the tracking link in your email. If anything is missing, reply to that email "
        "and we will sort it out. Is there anything else I can help you with today?")  # fmt: skip


def test_text_stream_starts_before_the_speech_is_done_and_equals_the_audio_stream(ray_cluster, tmp_path):
    from wav2lip.tts import SpeechSynthesizer

    url = ray_cluster
    deploy(settings(tmp_path, inject_chunk_delay_s=0.0))
    info = httpx.post(f"{url}/v1/streams", data={"text": TEXT}, timeout=120)
    assert info.status_code == 201, info.text
    done = wait_until_done(url, info.json())
    assert done["status"] == "complete", done
    stages = done["stats"]["stages"]
    assert stages["first_fragment"] < stages["tts"]  # a fragment was out before the speech was complete

    # the same speech uploaded as audio: the same plan, frames, AAC packets and timestamps
    speech = SpeechSynthesizer("en_US-joe-medium").synthesize(TEXT, 1.0)
    wav = io.BytesIO()
    sf.write(wav, speech, 16000, format="WAV", subtype="FLOAT")
    uploaded = open_stream(url, wav.getvalue()).json()
    assert wait_until_done(url, uploaded)["status"] == "complete"
    files = []
    for name, stream in (("text", info.json()), ("audio", uploaded)):
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(httpx.get(url + stream["final"], timeout=60).content)
        files.append(path)
    assert done["fragments_total"] == status(url, uploaded)["fragments_total"] >= 10
    assert framemd5(files[0]) == framemd5(files[1])
    assert len(read_frames(files[0])) == frame_count(len(speech), 25)


def test_a_chunk_failing_every_attempt_fails_the_stream_and_caches_nothing(ray_cluster, tmp_path, speech_clips):
    url = ray_cluster
    deploy(settings(tmp_path, inject_chunk_delay_s=3.0, chunk_timeout_s=1.0, chunk_retries=1))
    info = open_stream(url, speech_clips["a"]).json()
    end = wait_until_done(url, info, 120)
    assert end["status"] == "failed" and end["error"]["error"] == "render_failed", end
    assert end["fragments_published"] == 0  # nothing half-made was listed
    assert "seg/" not in httpx.get(url + info["hls"], timeout=30).text
    assert httpx.get(url + info["final"], timeout=30).status_code == 404
    live = httpx.get(url + info["mp4"], timeout=30)
    assert live.status_code == 502 and live.json()["error"] == "render_failed"
    assert not list((tmp_path / "results").glob("*.mp4"))
    assert not list((tmp_path / "streams" / "media").glob("*.m4s"))
