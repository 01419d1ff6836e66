"""Long renders as jobs: progress, cancellation, disconnects, Python handles."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from ray import serve

from serve_app.schemas import VideoRequest
from serve_app.settings import RenderSettings, Settings
from wav2lip.audio import frame_count, load_audio
from wav2lip.encode import read_frames

from .conftest import DATA, chunks_rendered, deploy

pytestmark = pytest.mark.timeout(300)
LONG = DATA / "speech_long_60s.wav"


def settings(data_dir, **overrides) -> Settings:
    base = dict(workers=2, worker_gpus=0.5, worker_cpus=0.5, data_dir=data_dir, chunk_duration_s=6.0,
                render=RenderSettings(threads=1), job_poll_s=0.2)  # fmt: skip
    base.update(overrides)
    return Settings(**base)


def result_files(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "results").glob("*.mp4")}


def test_long_render_as_job_reports_progress(ray_cluster, tmp_path, small_avatar):
    url = ray_cluster
    deploy(settings(tmp_path))
    avatar_id = httpx.post(f"{url}/v1/avatars", files={"avatar": ("f.png", small_avatar.read_bytes(), "image/png")},
                           timeout=60).json()["avatar_id"]  # fmt: skip
    r = httpx.post(f"{url}/v1/videos?async=true", files={"audio": ("long.wav", LONG.read_bytes(), "audio/wav")},
                   data={"avatar_id": avatar_id}, timeout=60)  # fmt: skip
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status_url"] == f"/v1/jobs/{accepted['job_id']}"
    seen, progress = [], []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = httpx.get(url + accepted["status_url"], timeout=30).json()
        seen.append(job["status"])
        progress.append(job["progress"])
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert job["status"] == "succeeded", job
    assert seen[0] in ("queued", "running") and "running" in seen
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any(0 < p < 1 for p in progress)  # progress was visible mid-way
    assert job["frames_done"] == job["frames_total"] == frame_count(len(load_audio(LONG)), 25)
    assert job["stats"]["total_chunks"] >= 10 and abs(job["duration_s"] - job["frames_total"] / 25) < 1e-6
    video = tmp_path / "long.mp4"
    video.write_bytes(httpx.get(url + job["url"], timeout=60).content)
    assert len(read_frames(video)) == job["frames_total"]


def test_cancel_stops_rendering_and_caches_nothing(ray_cluster, tmp_path):
    url = ray_cluster
    deploy(settings(tmp_path, chunk_duration_s=2.0, inject_chunk_delay_s=1.0))
    before, files_before = chunks_rendered(), result_files(tmp_path)
    r = httpx.post(f"{url}/v1/videos", params={"async": "true"},
                   files={"audio": ("long.wav", LONG.read_bytes(), "audio/wav")}, timeout=60)  # fmt: skip
    job_id = r.json()["job_id"]
    time.sleep(3.0)
    cancelled = httpx.delete(f"{url}/v1/jobs/{job_id}", timeout=30)
    assert cancelled.status_code == 200
    for _ in range(50):
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
        if job["status"] == "cancelled":
            break
        time.sleep(0.2)
    assert job["status"] == "cancelled" and job["video_id"] is None
    time.sleep(2.0)  # anything still rendering would finish in this time
    planned = 31  # 61 s in 2 s chunks
    rendered = chunks_rendered() - before
    assert rendered < planned // 2, rendered
    assert result_files(tmp_path) == files_before
    again = httpx.delete(f"{url}/v1/jobs/{job_id}", timeout=30)  # idempotent
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert httpx.get(f"{url}/v1/jobs/{'0' * 32}", timeout=30).status_code == 404


def test_client_disconnect_stops_the_work(ray_cluster, tmp_path):
    url = ray_cluster
    deploy(settings(tmp_path, chunk_duration_s=2.0, inject_chunk_delay_s=1.0))
    before = chunks_rendered()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/videos", files={"audio": ("long.wav", LONG.read_bytes(), "audio/wav")}, timeout=2.5)
    time.sleep(4.0)
    rendered = chunks_rendered() - before
    assert rendered < 10, rendered  # of 31 planned: the rest were cancelled with the request


def test_python_handle_jobs(ray_cluster, tmp_path, speech_clips):
    deploy(settings(tmp_path, chunk_duration_s=0.5))
    handle = serve.get_app_handle("lipsync")
    job_id = handle.submit.remote(VideoRequest(audio=speech_clips["b"].read_bytes())).result()
    for _ in range(300):
        status = handle.status.remote(job_id).result()
        if status.status == "succeeded":
            break
        time.sleep(0.1)
    assert status.status == "succeeded" and status.url == f"/v1/videos/{status.video_id}"
    assert handle.video_bytes.remote(status.video_id).result()[4:8] == b"ftyp"
    text_job = httpx.post(f"{ray_cluster}/generate_video", json={"message": "Hello there.", "async": True}, timeout=60)
    assert text_job.status_code == 202
    text_id = text_job.json()["job_id"]
    assert handle.cancel.remote(text_id).result().status in ("queued", "running", "cancelled", "succeeded")
    for _ in range(100):  # the replica running it picks the cancel request up within job_poll_s
        final = handle.status.remote(text_id).result()
        if final.status in ("cancelled", "succeeded", "failed"):
            break
        time.sleep(0.1)
    assert final.status in ("cancelled", "succeeded")

    # Job state lives in the registry, not in an ingress replica: it outlives one.
    import ray

    for name in [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].startswith("SERVE_REPLICA::lipsync#Ingress#")]:  # fmt: skip
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    for _ in range(100):  # Serve starts a new ingress replica
        try:
            after = handle.status.remote(job_id).result()
            break
        except Exception:  # noqa: BLE001 - the replica is being replaced
            time.sleep(0.3)
    assert after.status == "succeeded" and after.video_id == status.video_id
