"""``wav2lip_client`` against the real service: render, a job with progress, a live session
speaking text, refusals as typed errors. One deployment for the module (weights-free renderer,
a 256x256 avatar, two workers, an API key), exactly as ``tests/serve/test_sessions.py`` deploys.

Ray: the body of ``tests/serve/conftest.py``'s ``ray_cluster``, run for this module only and
shut down after it. (Importing that session-scoped fixture here would make pytest run it a
second time for this directory, and ``ray.init`` twice in a whole-suite run.) If Ray is already
up, because ``tests/serve`` ran first in this process, its cluster and Serve are used as they are.
"""

from __future__ import annotations

import time

import pytest

from serve_app.settings import RenderSettings, Settings
from tests.serve import conftest as serve_conftest
from tests.serve.conftest import deploy, small_avatar, speech_clips  # noqa: F401 - fixtures used below
from wav2lip_client import Client, Event, Fragment, NotFound, Unauthorized

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
KEY = "s3cret"
FPS = 25


@pytest.fixture(scope="module")
def cluster():
    import ray

    if ray.is_initialized():  # tests/serve's session-wide cluster: reuse it (and its Serve proxy)
        from ray.serve.context import _get_global_client

        http = _get_global_client().get_serve_details()["http_options"]
        yield f"http://{http['host']}:{http['port']}"
        return
    body = serve_conftest.ray_cluster.__wrapped__()  # the fixture's own generator: init, then shutdown
    url = next(body)
    try:
        yield url
    finally:
        next(body, None)


@pytest.fixture(scope="module")
def service(cluster, tmp_path_factory, small_avatar):  # noqa: F811 - the imported fixture
    settings = Settings(workers=2, worker_gpus=0.5, worker_cpus=0.3, data_dir=tmp_path_factory.mktemp("client"),
                        render=RenderSettings(threads=1), api_key=KEY)  # fmt: skip
    deploy(settings)
    with Client(cluster, api_key=KEY, timeout=120) as client:
        record = client.upload_avatar(small_avatar)
        yield {"url": cluster, "client": client, "avatar": record["avatar_id"], "face_box": record["face_box"]}


def test_render_a_clip_and_download_it(service, speech_clips):  # noqa: F811
    client = service["client"]
    assert client.health()["status"] == "ok"
    assert any(a["agent_type"] == "general" for a in client.agents()) and client.voices()
    assert service["avatar"] in [a["avatar_id"] for a in client.avatars()]
    video = client.render(speech_clips["a"], avatar_id=service["avatar"])  # 2.0 s
    assert video.url == f"/v1/videos/{video.video_id}"
    assert abs(video.duration_s - 50 / FPS) < 1e-6
    assert video.stats["renderer"] == "fallback" and not video.stats["cache_hit"]
    mp4 = video.download()
    assert mp4[4:8] == b"ftyp" and mp4 == client.video_bytes(video.video_id)


def test_submit_and_wait_with_progress(service, speech_clips):  # noqa: F811
    client = service["client"]
    job_id = client.submit(speech_clips["b"], avatar_id=service["avatar"], chunk_duration=0.8)  # 2.4 s, 3 chunks
    seen = []
    final = client.wait(job_id, on_progress=seen.append, poll_s=0.2, timeout=240)
    assert final.status == "succeeded" and final.progress == 1.0 and seen[-1] is final
    assert seen[0].status in ("queued", "running", "succeeded")
    progress = [s.progress for s in seen]
    assert progress == sorted(progress)
    assert final.frames_done == final.frames_total == 60 and final.video_id
    assert client.video_bytes(final.video_id)[4:8] == b"ftyp"
    assert client.job(job_id).status == "succeeded"


def test_session_says_a_text_and_yields_speech_and_fragments(service):
    client = service["client"]
    session = client.session(avatar_id=service["avatar"])
    try:
        assert session.ready["codecs"].startswith("avc1.") and session.ready["codecs"].endswith(",opus")
        assert (session.ready["width"], session.ready["height"], session.ready["fps"]) == (256, 256, FPS)
        session.say("Hello there.")
        fragments, events = [], []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            item = session.recv(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(item, Fragment):
                fragments.append(item)
            elif isinstance(item, Event):
                events.append(item)
                if item.type == "speech_ended":
                    break
        kinds = [e.type for e in events]
        assert "speech_started" in kinds and "speech_ended" in kinds, kinds
        assert "error" not in kinds, [e.data for e in events if e.type == "error"]
        assert fragments[0].init and fragments[0].data[4:8] == b"ftyp"
        assert len(fragments) > 2 and not any(f.init for f in fragments[1:])
        started = next(e for e in events if e.type == "speech_started")
        assert started.pts is not None and started.pts >= 0
        assert session.status().viewers == 1
    finally:
        session.close()
    with pytest.raises(NotFound):  # a close message ends the session
        client.session_status(session.session_id)


def test_refusals_are_typed_errors(service, speech_clips):  # noqa: F811
    client, unknown = service["client"], "0" * 64
    with pytest.raises(NotFound) as raised:
        client.session(avatar_id=unknown)
    assert raised.value.status == 404 and raised.value.code == "not_found"
    with pytest.raises(NotFound):
        client.render(speech_clips["a"], avatar_id=unknown)
    with pytest.raises(NotFound) as raised:  # refused before the socket upgrade
        client.connect_session("0" * 32)
    assert raised.value.code == "not_found"
    with Client(service["url"], timeout=30) as anonymous:
        with pytest.raises(Unauthorized):
            anonymous.avatars()
        with pytest.raises(Unauthorized):  # the socket checks the key before the upgrade, too
            anonymous.connect_session("0" * 32)
        assert anonymous.health()["status"] == "ok"  # open without the key
