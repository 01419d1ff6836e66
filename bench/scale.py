"""Scale curve: throughput with 1, 2 and 4 lip-sync worker replicas on this machine.

    python -m bench scale [--quick]        (CPU; needs Ray)

Each configuration gets the same cores (torch threads per worker = cores / workers) and
the same load: 4 concurrent distinct 9 s requests with a random official-format
checkpoint. Reports output seconds per wall second and the mean request latency. On a
GPU cluster the same deployment scales by GPU fractions; see docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

from .common import service_suite_args, machine_info, print_table, write_result
from .serve import AUDIO, _variant, local_service, random_checkpoint_dir

CONCURRENT = 4


def run(quick: bool = False) -> dict:
    import httpx

    samples, _ = sf.read(AUDIO, dtype="float32")
    tmp = Path(tempfile.mkdtemp(prefix="w2l-bench-scale-"))
    ckpt = random_checkpoint_dir(tmp)
    results: dict = {"concurrent_requests": CONCURRENT, "replicas": {}}
    for workers in (1, 2) if quick else (1, 2, 4):
        with local_service(checkpoint_dir=ckpt, data_dir=tmp / f"data{workers}", workers=workers,
                           worker_cpus=0.25, service_cpus=0.05, tts_cpus=0.05) as (base, settings):  # fmt: skip
            url = f"{base}/v1/videos"

            async def burst(offset: int) -> tuple[float, float]:
                async with httpx.AsyncClient(timeout=900) as client:
                    async def one(i):
                        t0 = time.perf_counter()
                        r = await client.post(url, files={"audio": ("a.wav", _variant(samples, offset + i), "audio/wav")})
                        r.raise_for_status()
                        return r.json()["duration_s"], time.perf_counter() - t0

                    t = time.perf_counter()
                    done = await asyncio.gather(*(one(i) for i in range(CONCURRENT)))
                    wall = time.perf_counter() - t
                    return sum(d for d, _ in done) / wall, sum(lat for _, lat in done) / len(done)

            asyncio.run(burst(10_000 * workers))  # warm every replica
            throughput, latency = asyncio.run(burst(10_000 * workers + 100))
            results["replicas"][str(workers)] = {"output_s_per_s": throughput, "mean_latency_s": latency,
                                                 "torch_threads": settings.torch_threads()}  # fmt: skip
            if workers == 2:
                results["split"] = split_threshold(url, samples)
    return results


def split_threshold(url: str, samples) -> dict:
    """Latency of one request, whole vs split in two chunks, by clip length (2 workers).

    Where splitting stops paying is the ``single_chunk_below_s`` setting's measure.
    """
    import httpx

    out = {}
    with httpx.Client(timeout=600) as client:
        for seconds in (1.0, 2.0, 4.0, 8.0):
            clip = samples[: int(seconds * 16000)]
            row = {}
            for mode, fields in (("one_chunk", {"enable_parallel": "false"}),
                                 ("two_chunks", {"chunk_duration": str(seconds / 2)})):  # fmt: skip
                best = None
                for rep in range(2):
                    body = _variant(clip, 20_000 + int(seconds * 100) + rep * 7 + len(mode))
                    t = time.perf_counter()
                    client.post(url, files={"audio": ("a.wav", body, "audio/wav")}, data=fields).raise_for_status()
                    took = time.perf_counter() - t
                    best = took if best is None else min(best, took)
                row[mode] = best
            out[f"{seconds:g}"] = row
    return out


def main(argv: list[str] | None = None) -> int:
    args = service_suite_args("scale", argv)
    results = run(args.quick)
    print_table(f"throughput with {CONCURRENT} concurrent 9 s requests", ["workers", "torch threads each",
                "output s/s", "mean latency s"],
                [[int(k), v["torch_threads"], v["output_s_per_s"], v["mean_latency_s"]]
                 for k, v in results["replicas"].items()])  # fmt: skip
    if "split" in results:
        print_table("one request on 2 workers: whole vs split in two (seconds)", ["clip s", "one chunk", "two chunks"],
                    [[float(k), v["one_chunk"], v["two_chunks"]] for k, v in results["split"].items()])  # fmt: skip
    print(f"\nwrote {write_result('scale', args.device, results, machine_info('cpu'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
