"""Service benchmark: the 9 s answer over HTTP next to the engine alone, cache hits,
throughput under concurrency, memory per replica.

    python -m bench serve [--quick]        (CPU; needs Ray, so not for the GPU machine)

Uses a random official-format checkpoint (the real model's cost), the default avatar
and the default settings for this machine (one worker owning all cores), in one run:

* engine alone: ``wav2lip.lip_sync`` on the fixture, warm, same precision;
* service: ``POST /v1/videos`` with the fixture, warm (distinct audio per run so that
  nothing is a cache hit), the service's overhead over the engine;
* cache hits: the same upload again (median and p90 of N);
* throughput: 1, 2 and 4 concurrent distinct requests, output seconds per wall second;
* memory: peak RSS of each replica process (VmHWM from /proc).
"""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

from .common import service_suite_args, DATA_DIR, machine_info, print_table, write_result

AUDIO = DATA_DIR / "speech_9s.wav"


def _variant(samples: np.ndarray, i: int) -> bytes:
    """The fixture with an inaudible change (distinct bytes, so no cache hit), as WAV."""
    buf = io.BytesIO()
    sf.write(buf, samples * (1.0 - 1e-4 * (i + 1)), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _rss_mb(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) / 1024
    return out


def random_checkpoint_dir(tmp: Path) -> Path:
    """A checkpoints/ folder holding a random official-format wav2lip_gan.pth (the real model's cost)."""
    from wav2lip import random_state_dict, save_official_checkpoint

    (tmp / "ckpt").mkdir(exist_ok=True)
    save_official_checkpoint(random_state_dict(0), tmp / "ckpt" / "wav2lip_gan.pth")
    return tmp / "ckpt"


@contextmanager
def local_service(**settings):
    """A local Ray + the app on a loopback port; yields (base url, Settings)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    from serve_app.app import APP_NAME, build_app
    from serve_app.settings import Settings

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="rb", dir="/tmp"))
    port = 8123
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = Settings(**settings)
    serve.run(build_app(config), name=APP_NAME, route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}", config
    finally:
        serve.shutdown()
        ray.shutdown()


def run(quick: bool = False) -> dict:
    import httpx
    from ray import serve

    from serve_app.app import APP_NAME
    from wav2lip import lip_sync, load_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="w2l-bench-"))
    checkpoint = random_checkpoint_dir(tmp) / "wav2lip_gan.pth"
    samples, _ = sf.read(AUDIO, dtype="float32")
    repeats = 2 if quick else 3
    results: dict = {"audio_s": len(samples) / 16000}

    # Engine alone, warm (same process threads as one worker owning the machine).
    model = load_checkpoint(checkpoint)
    engine_s = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        res = lip_sync(_variant(samples, 100 + i), tmp / "engine.mp4", generator=model)
        engine_s.append(time.perf_counter() - t)
    results["engine"] = {"seconds_warm": min(engine_s[1:]), "precision": res.precision, "frames": res.n_frames}
    del model

    with local_service(checkpoint_dir=tmp / "ckpt", data_dir=tmp / "data") as (base, settings):
        url = f"{base}/v1/videos"
        with httpx.Client(timeout=600) as client:
            def post(body: bytes) -> dict:
                r = client.post(url, files={"audio": ("a.wav", body, "audio/wav")})
                r.raise_for_status()
                return r.json()

            post(_variant(samples, 0))  # warm: model, avatar, caches
            service_s, stats = [], None
            for i in range(repeats):
                t = time.perf_counter()
                stats = post(_variant(samples, 1 + i))["stats"]
                service_s.append(time.perf_counter() - t)
            best = min(service_s)
            results["service"] = {"seconds_warm": best, "chunks": stats["total_chunks"], "stages": stats["stages"],
                                  "overhead_vs_engine": best / results["engine"]["seconds_warm"] - 1}  # fmt: skip

            hit_body = _variant(samples, 1)
            hits = []
            for _ in range(10 if quick else 30):
                t = time.perf_counter()
                assert post(hit_body)["stats"]["cache_hit"]
                hits.append((time.perf_counter() - t) * 1000)
            hits.sort()
            results["cache_hit_ms"] = {"median": statistics.median(hits), "p90": hits[int(0.9 * (len(hits) - 1))],
                                       "n": len(hits)}  # fmt: skip

        async def burst(n: int, offset: int) -> float:
            async with httpx.AsyncClient(timeout=900) as aclient:
                bodies = [_variant(samples, offset + i) for i in range(n)]
                t = time.perf_counter()
                rs = await asyncio.gather(*(aclient.post(url, files={"audio": ("a.wav", b, "audio/wav")}) for b in bodies))
                wall = time.perf_counter() - t
                assert all(r.status_code == 200 for r in rs), [r.text for r in rs if r.status_code != 200]
                return sum(r.json()["duration_s"] for r in rs) / wall

        levels = (1, 2) if quick else (1, 2, 4)
        results["throughput_output_s_per_s"] = {str(n): asyncio.run(burst(n, 1000 * n)) for n in levels}
        info = serve.get_deployment_handle("LipSyncWorker", APP_NAME).info.remote().result()
        results["worker_memory_mb"] = _rss_mb(info["pid"])
        results["settings"] = {"workers": settings.workers, "chunk_duration_s": settings.chunk_duration_s,
                               "threads": settings.torch_threads(), "renderer": info["renderer"],
                               "precision": info["precision"]}  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> int:
    args = service_suite_args("serve", argv)
    results = run(args.quick)
    e, s = results["engine"], results["service"]
    print_table("9 s answer, warm (seconds)", ["engine alone", "service (HTTP)", "overhead", "chunks", "precision"],
                [[e["seconds_warm"], s["seconds_warm"], f"{100 * s['overhead_vs_engine']:.1f}%", s["chunks"],
                  e["precision"]]])  # fmt: skip
    hit = results["cache_hit_ms"]
    print_table("cache hit (ms)", ["median", "p90", "n"], [[hit["median"], hit["p90"], hit["n"]]])
    print_table("throughput (output s per wall s)", ["concurrent", "output s/s"],
                [[int(k), v] for k, v in results["throughput_output_s_per_s"].items()])  # fmt: skip
    mem = results["worker_memory_mb"]
    print_table("worker replica memory (MB)", ["RSS", "peak RSS"], [[mem.get("VmRSS"), mem.get("VmHWM")]])
    path = write_result("serve", args.device, results, machine_info("cpu"))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
