"""The app on a simulated multi-node GPU cluster (``ray.cluster_utils.Cluster``, one machine).

Head: 1 CPU, no GPU (like cluster.yaml's head). Two worker nodes: 2 CPUs and 2 logical
GPUs each. Four LipSyncWorker replicas with half a GPU each must spread over both worker
nodes; one request's chunks render on both; the disk caches live in one ``data_dir``
shared by every node (a directory of this machine, as an EFS/NFS mount is in a real
cluster), so a redeployed app finds results and avatars written before.

This module needs its own Ray cluster, not the session one of ``conftest.ray_cluster``:
if that one is running (an earlier module used it), it is shut down first and started
again afterwards with the same resources and HTTP port, so later modules keep working.
"""

from __future__ import annotations

import io
import os
import tempfile

import httpx
import pytest
import ray
import soundfile as sf
from ray import serve
from ray.cluster_utils import Cluster

from serve_app.settings import RenderSettings, Settings
from wav2lip.audio import frame_count, load_audio
from wav2lip.encode import read_frames

from .conftest import DATA, deploy, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]  # slow: skipped by default (CI budget)
RUNTIME_ENV = {"env_vars": {"RAY_AUTH_MODE": "disabled"}}


# ---- the session Ray: paused while this module runs, then restored ------------------------
def _pause_session_ray(request) -> dict | None:
    """Shut down the session Ray if it is up; what is needed to start it again."""
    if not ray.is_initialized():
        return None
    url = request.getfixturevalue("ray_cluster")  # already set up: the cached URL, no new Ray
    resources = ray.cluster_resources()
    serve.shutdown()
    ray.shutdown()
    return {"port": int(url.rsplit(":", 1)[1]), "cpus": int(resources.get("CPU", 0)),
            "gpus": int(resources.get("GPU", 0))}  # fmt: skip


def _resume_session_ray(saved: dict | None) -> None:
    """The session Ray as ``conftest.ray_cluster`` made it (its teardown shuts this one down)."""
    if saved is None:
        return
    ray.init(num_cpus=saved["cpus"], num_gpus=saved["gpus"], include_dashboard=False,
             _temp_dir=tempfile.mkdtemp(prefix="rt", dir="/tmp"), runtime_env=RUNTIME_ENV)  # fmt: skip
    serve.start(http_options={"host": "127.0.0.1", "port": saved["port"]})


# ---- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_cluster(request, tmp_path_factory):
    saved = _pause_session_ray(request)
    assert not ray.is_initialized()
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    # Cluster records its address in Ray's default temp dir, where a plain ray.init() of any
    # other process on this machine would find and join it: point that default here.
    old_tmpdir = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp_dir
    os.makedirs(os.path.join(temp_dir, "ray"))
    small = {"object_store_memory": 200 * 1024 * 1024, "include_dashboard": False}
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1, num_gpus=0, temp_dir=temp_dir, **small)  # the head: no GPU
        workers = [cluster.add_node(num_cpus=2, num_gpus=2, **small) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env=RUNTIME_ENV)
        port = free_port()
        # One HTTP proxy, on the head (the driver's node): requests enter there, as through a
        # load balancer in front of the head.
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        data_dir = tmp_path_factory.mktemp("shared")  # one directory every node sees: the "mount"
        settings = Settings(workers=4, worker_gpus=0.5, worker_cpus=0.5, data_dir=data_dir,
                            render=RenderSettings(threads=1))  # fmt: skip
        deploy(settings)
        yield {
            "url": f"http://127.0.0.1:{port}",
            "settings": settings,
            "head": cluster.head_node.node_id,
            "workers": {node.node_id for node in workers},
        }
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
            if old_tmpdir is None:
                os.environ.pop("RAY_TMPDIR", None)
            else:
                os.environ["RAY_TMPDIR"] = old_tmpdir
            _resume_session_ray(saved)


def clip(offset_s: float, seconds: float = 2.4) -> bytes:
    """A WAV slice of the 9 s speech fixture (different offsets: different cache keys)."""
    samples, rate = sf.read(DATA / "speech_9s.wav", dtype="int16")
    a = int(offset_s * rate)
    buf = io.BytesIO()
    sf.write(buf, samples[a : a + int(seconds * rate)], rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def post_video(url: str, audio: bytes, **fields) -> dict:
    r = httpx.post(f"{url}/v1/videos", files={"audio": ("s.wav", audio, "audio/wav")},
                   data={k: str(v) for k, v in fields.items()}, timeout=180)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


# ---- tests -------------------------------------------------------------------------------
def test_workers_spread_over_both_gpu_nodes_with_fractional_gpus(gpu_cluster):
    nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 3 and nodes[gpu_cluster["head"]]["Resources"].get("GPU", 0) == 0
    handle = serve.get_deployment_handle("LipSyncWorker", "lipsync")
    seen: dict[str, dict] = {}
    for _ in range(100):
        info = handle.info.remote().result(timeout_s=30)
        seen[info["replica"]] = info
        if len(seen) == 4:
            break
    assert len(seen) == 4, f"only {len(seen)} of 4 LipSyncWorker replicas answered"
    on = {info["node_id"] for info in seen.values()}
    assert on == gpu_cluster["workers"], "workers must cover both GPU nodes and never the head"
    for info in seen.values():
        assert len(info["gpu_ids"]) == 1  # half of one logical GPU
    # Per node, the two workers' halves: either two halves of one GPU or one half of each.
    held = 0.5 * (gpu_cluster["settings"].workers + gpu_cluster["settings"].live_workers)  # the live pool has a share too
    assert ray.available_resources().get("GPU", 0) == pytest.approx(4.0 - held)


def test_one_request_renders_on_both_nodes_and_the_video_is_whole(gpu_cluster, tmp_path):
    url = gpu_cluster["url"]
    for attempt, offset in enumerate((0.5, 3.0, 5.5)):  # a rare all-on-one-node draw: other audio
        audio = clip(offset)
        body = post_video(url, audio, chunk_duration=0.3)
        stats = body["stats"]
        assert stats["total_chunks"] >= 8 and not stats["cache_hit"]
        if set(stats["nodes"]) == gpu_cluster["workers"]:
            break
    assert set(stats["nodes"]) == gpu_cluster["workers"], f"chunks stayed on {stats['nodes']} after {attempt + 1} tries"
    video = httpx.get(url + body["url"], timeout=60)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    path = tmp_path / "out.mp4"
    path.write_bytes(video.content)
    n = frame_count(len(load_audio(audio)), 25)
    assert len(read_frames(path)) == n == 60
    assert abs(body["duration_s"] - n / 25) < 1e-6


def test_shared_data_dir_serves_results_and_avatars_after_redeploy(gpu_cluster, small_avatar):
    url = gpu_cluster["url"]
    files = {"avatar": ("face.png", small_avatar.read_bytes(), "image/png")}
    uploaded = httpx.post(f"{url}/v1/avatars", files=files, timeout=120)
    assert uploaded.status_code == 200, uploaded.text
    avatar_id = uploaded.json()["avatar_id"]
    audio = clip(7.0, seconds=1.6)  # under single_chunk_below_s: one chunk, quick
    first = post_video(url, audio, avatar_id=avatar_id)
    assert first["stats"]["cache_hit"] is False
    before = httpx.get(url + first["url"], timeout=60).content

    serve.delete("lipsync")  # every replica goes, with the object-store level of both caches
    deploy(gpu_cluster["settings"])

    again = post_video(url, audio, avatar_id=avatar_id)
    assert again["video_id"] == first["video_id"] and again["stats"]["cache_hit"] is True
    assert httpx.get(url + again["url"], timeout=60).content == before
    listed = httpx.get(f"{url}/v1/avatars", timeout=60).json()
    assert avatar_id in {a["avatar_id"] for a in listed}
    assert httpx.get(f"{url}/v1/avatars/{avatar_id}", timeout=60).json() == uploaded.json()
