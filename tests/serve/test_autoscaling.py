"""Serve autoscaling of the LipSyncWorker pool: up under sustained load, back down when idle.

Uses the session Ray (``conftest.ray_cluster``: 2 CPUs, 2 logical GPUs). The pool starts at
one worker and may grow to three: 3 x 0.5 CPU for workers plus small shares for the CPU
services (ingress, combiner, registries, cache, jobs: 0.05 each; TTS 0.1) fit in 2 CPUs, and
3 x 0.5 GPU in 2. Load: six requests in flight at all times, each a different 2 s clip cut in 0.2 s
chunks (10 chunks each, never a cache hit), so the workers' queues stay far above the
target of one ongoing chunk per worker.
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from ray import serve

from serve_app.schemas import VideoRequest
from serve_app.settings import RenderSettings, Settings

from .conftest import DATA, deploy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # slow: skipped by default (CI budget)
CONCURRENCY = 6
LOAD_S = 40  #: longest time the load is kept up waiting for a scale-up
IDLE_S = 60  #: longest wait for the pool to shrink back once idle
MAX_REQUESTS = 60  #: a bound on the load, whatever happens


@pytest.fixture(scope="module")
def autoscaling_app(ray_cluster, tmp_path_factory):
    settings = Settings(
        workers=1, max_workers=3, upscale_delay_s=0.5, downscale_delay_s=2, target_ongoing_per_worker=1,
        worker_cpus=0.5, worker_gpus=0.5, service_cpus=0.05, tts_cpus=0.1, data_dir=tmp_path_factory.mktemp("data"),
        render=RenderSettings(threads=1),
    )  # fmt: skip
    deploy(settings)
    yield settings
    serve.delete("lipsync")


def worker_replicas() -> dict[str, int]:
    status = serve.status().applications["lipsync"].deployments["LipSyncWorker"]
    return dict(status.replica_states)


def unique_clip(i: int, seconds: float = 2.0) -> bytes:
    """A 2 s WAV: a slice of the speech fixture, offset and scaled by ``i`` (a new cache key each)."""
    samples, rate = sf.read(DATA / "speech_9s.wav", dtype="float32")
    n = int(seconds * rate)
    a = (i * rate // 7) % (len(samples) - n)
    out = np.clip(samples[a : a + n] * (1.0 - 0.002 * (i % 50)), -1, 1)
    buf = io.BytesIO()
    sf.write(buf, out, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_worker_pool_scales_up_under_load_and_back_down(autoscaling_app):
    assert worker_replicas().get("RUNNING") == 1
    handle = serve.get_app_handle("lipsync")
    stop = threading.Event()
    issued, done, errors = [0], [0], []
    lock = threading.Lock()

    def client():
        while not stop.is_set():
            with lock:
                if issued[0] >= MAX_REQUESTS:
                    return
                i = issued[0]
                issued[0] += 1
            try:
                result = handle.generate.remote(VideoRequest(audio=unique_clip(i), chunk_duration=0.2)).result(
                    timeout_s=120
                )
                assert result.stats.total_chunks >= 10 and not result.stats.cache_hit
                with lock:
                    done[0] += 1
            except Exception as exc:  # reported below, never swallowed
                errors.append(repr(exc))
                return

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CONCURRENCY)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    peak, up_after = 1, None
    while time.monotonic() - t0 < LOAD_S and not errors:
        running = worker_replicas().get("RUNNING", 0)
        peak = max(peak, running)
        if running > 1:
            up_after = time.monotonic() - t0
            break
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=150)
    assert not errors, errors[:3]
    assert up_after is not None, f"LipSyncWorker stayed at {peak} replica(s) through {LOAD_S} s of load"
    assert done[0] >= 1

    t1 = time.monotonic()
    replicas = worker_replicas()
    while time.monotonic() - t1 < IDLE_S and replicas != {"RUNNING": 1}:
        time.sleep(1)
        replicas = worker_replicas()
    assert replicas == {"RUNNING": 1}, f"still {replicas} {IDLE_S} s after the load ended"
    print(f"scaled up after {up_after:.1f} s of load (peak {peak}), down {time.monotonic() - t1:.1f} s after it; "
          f"{done[0]} requests rendered")  # fmt: skip
