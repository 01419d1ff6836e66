"""Retention and deletion of avatars and videos; handed-out URLs under cache pressure."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from actors.results import ResultStore
from serve_app.settings import RenderSettings, Settings
from wav2lip.errors import Expired

from .conftest import deploy

pytestmark = pytest.mark.timeout(300)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_expiry_and_eviction_order_with_an_injected_clock(ray_cluster, tmp_path):
    """Unit level (the deployment's class in this process): no sleeping for hours."""
    clock = FakeClock()
    video = b"\0\0\0\x18ftypmp42" + bytes(10_000)
    cache = ResultStore.func_or_class(str(tmp_path), 1 << 20, 25_000, retention_s=3600, clock=clock)
    run = asyncio.run
    run(cache.put("a" * 64, video, {"chunks": 1}))
    clock.now += 1800
    run(cache.put("b" * 64, video, {"chunks": 1}))
    clock.now += 1801  # "a" has expired, "b" has not
    run(cache.put("c" * 64, video, {"chunks": 1}))  # over the disk budget: the expired one goes first
    assert run(cache.get("b" * 64)) is not None and run(cache.get("c" * 64)) is not None
    with pytest.raises(Expired, match="retention"):
        run(cache.get("a" * 64))
    assert run(cache.get("d" * 64)) is None  # unknown: a 404, not a 410
    run(cache.put("e" * 64, video, {"chunks": 1}))  # nothing expired left: an unexpired one must go...
    gone = []
    for key in ("b" * 64, "c" * 64):
        try:
            run(cache.get(key))
        except Expired as exc:  # ...and its URL then says so (410), never a silent 404
            gone.append(str(exc))
    assert len(gone) == 1 and "evicted" in gone[0]
    clock.now += 3601
    with pytest.raises(Expired):
        run(cache.get("e" * 64))
    run(cache.delete("e" * 64))
    assert run(cache.get("e" * 64)) is None  # deleted: forgotten


def test_delete_and_retention_over_http(ray_cluster, tmp_path, speech_clips, small_avatar):
    url = ray_cluster
    deploy(Settings(workers=1, worker_gpus=0.5, data_dir=tmp_path, retention_s=4.0, render=RenderSettings(threads=1)))
    files = {"avatar": ("f.png", small_avatar.read_bytes(), "image/png")}
    avatar_id = httpx.post(f"{url}/v1/avatars", files=files, timeout=60).json()["avatar_id"]
    wav = {"audio": ("a.wav", speech_clips["a"].read_bytes(), "audio/wav")}
    body = httpx.post(f"{url}/v1/videos", files=wav, data={"avatar_id": avatar_id}, timeout=120).json()
    assert httpx.get(url + body["url"], timeout=30).status_code == 200
    assert httpx.delete(url + body["url"], timeout=30).status_code == 204
    assert httpx.get(url + body["url"], timeout=30).status_code == 404
    assert httpx.delete(url + body["url"], timeout=30).status_code == 204  # idempotent
    assert httpx.delete(f"{url}/v1/avatars/{avatar_id}", timeout=30).status_code == 204
    assert httpx.get(f"{url}/v1/avatars/{avatar_id}", timeout=30).status_code == 404
    assert avatar_id not in {a["avatar_id"] for a in httpx.get(f"{url}/v1/avatars", timeout=30).json()}
    assert not list((tmp_path / "avatars").glob(f"{avatar_id}.media"))
    forbidden = httpx.delete(f"{url}/v1/avatars/default", timeout=30)
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"

    avatar_id = httpx.post(f"{url}/v1/avatars", files=files, timeout=60).json()["avatar_id"]
    body = httpx.post(f"{url}/v1/videos", files=wav, data={"avatar_id": avatar_id}, timeout=120).json()
    time.sleep(4.5)  # the 4 s retention of this test's config
    expired = httpx.get(url + body["url"], timeout=30)
    assert expired.status_code == 410 and expired.json()["error"] == "expired"
    gone = httpx.get(f"{url}/v1/avatars/{avatar_id}", timeout=30)
    assert gone.status_code == 410
    assert httpx.get(f"{url}/v1/videos/{'f' * 64}", timeout=30).status_code == 404
