"""Ingress cost: CPU seconds and bytes the ingress replica spends per output second.

    python -m bench ingress [--quick]        (CPU; needs Ray; part of ``bench serve`` too)

The weights-free renderer (fast workers, as on a GPU, so the service's own overhead
shows), one worker, the 60 s fixture, warm, distinct audio per run. For a whole render
(``POST /v1/videos``) and a progressive stream (``POST /v1/streams``, waited for through
``/status`` once a second) it reads, before and after, from ``/proc`` of every Serve
replica process of the app (found by the process title Ray gives them):

* CPU seconds (user + system, the process and the children it waited for: ffmpeg);
* the same CPU figure over an idle stretch as long as the run (Serve's own replica
  housekeeping: health checks, metrics, long polls), reported beside it;
* bytes read by the ingress process (``rchar``: sockets and files). The request's own
  upload is read once on its way in and is reported beside it; everything above that
  came from other deployments (segments, videos, arrays) or the Ray runtime.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

from .common import DATA_DIR, machine_info, print_table, service_suite_args, write_result
from .serve import _variant, local_service

AUDIO_60S = DATA_DIR / "speech_long_60s.wav"
_TITLE = "ServeReplica:lipsync:"
_POLL_S = 1.0


def replica_pids() -> dict[str, int]:
    """Deployment name -> pid of each Serve replica process of the app (one per name: the first)."""
    found: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if _TITLE in cmdline:
            name = cmdline.split(_TITLE, 1)[1].split()[0].split("\x00")[0].split(".")[0]  # "Ingress.method" while busy
            found.setdefault(name, int(entry))
    return found


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def _rchar(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def _snapshot(pids: dict[str, int]) -> dict:
    return {"cpu": {name: _cpu_s(pid) for name, pid in pids.items()}, "ingress_rchar": _rchar(pids["Ingress"])}


def _delta(before: dict, after: dict, output_s: float, upload_bytes: int, wall_s: float, idle_cpu_s: float) -> dict:
    cpu = {name: after["cpu"][name] - before["cpu"][name] for name in before["cpu"] if name in after["cpu"]}
    received = after["ingress_rchar"] - before["ingress_rchar"]
    return {
        "output_s": output_s,
        "wall_s": round(wall_s, 2),
        "ingress_idle_cpu_s": round(idle_cpu_s, 3),
        "ingress_cpu_ms_per_output_s_beyond_idle": round(1000 * (cpu.get("Ingress", 0.0) - idle_cpu_s) / output_s, 2),
        "cpu_s": {k: round(v, 3) for k, v in sorted(cpu.items())},
        "ingress_cpu_ms_per_output_s": round(1000 * cpu.get("Ingress", 0.0) / output_s, 2),
        "all_cpu_s_per_output_s": round(sum(cpu.values()) / output_s, 4),
        "ingress_bytes_read": received,
        "upload_bytes": upload_bytes,
        "ingress_bytes_beyond_upload": received - upload_bytes,
    }


def run(quick: bool = False) -> dict:
    import httpx

    samples, _ = sf.read(AUDIO_60S, dtype="float32")
    output_s = len(samples) / 16000
    tmp = Path(tempfile.mkdtemp(prefix="w2l-bench-ingress-"))
    results: dict = {"audio_s": output_s, "renderer": "fallback"}
    with local_service(checkpoint_dir=tmp / "none", data_dir=tmp / "data") as (base, settings):
        with httpx.Client(base_url=base, timeout=900) as client:
            client.post("/v1/videos", files={"audio": ("w.wav", _variant(samples[:32000], 0), "audio/wav")}).raise_for_status()
            pids = replica_pids()
            results["replicas"] = sorted(pids)
            runs = 1 if quick else 2
            for kind, path in (("render", "/v1/videos"), ("stream", "/v1/streams")):
                measured = []
                for i in range(runs):
                    body = _variant(samples, (10 if kind == "render" else 20) + i)
                    before, t0 = _snapshot(pids), time.perf_counter()
                    r = client.post(path, files={"audio": ("a.wav", body, "audio/wav")})
                    r.raise_for_status()
                    if kind == "stream":
                        status_url = r.json()["status"]
                        while (status := client.get(status_url).json()["status"]) in ("starting", "rendering"):
                            time.sleep(_POLL_S)
                        assert status == "complete", status
                    after, wall_s = _snapshot(pids), time.perf_counter() - t0
                    idle_from = _cpu_s(pids["Ingress"])
                    time.sleep(wall_s)  # the same stretch with nothing to do
                    idle_cpu_s = _cpu_s(pids["Ingress"]) - idle_from
                    measured.append(_delta(before, after, output_s, len(body), wall_s, idle_cpu_s))
                results[kind] = min(measured, key=lambda m: m["ingress_cpu_ms_per_output_s"])
    return results


def print_results(results: dict) -> None:
    rows = []
    for kind in ("render", "stream"):
        m = results[kind]
        rows.append([kind, m["wall_s"], m["cpu_s"].get("Ingress"), m["ingress_idle_cpu_s"], m["ingress_cpu_ms_per_output_s"],
                     m["ingress_cpu_ms_per_output_s_beyond_idle"], m["all_cpu_s_per_output_s"],
                     m["ingress_bytes_beyond_upload"], m["upload_bytes"]])  # fmt: skip
    print_table(f"ingress cost, {results['audio_s']:.0f} s output, weights-free renderer",
                ["flow", "wall s", "ingress CPU s", "same time idle, CPU s", "ingress CPU ms / output s",
                 "beyond idle, ms / output s", "all replicas CPU s / output s",
                 "ingress bytes read beyond the upload", "upload bytes"], rows)  # fmt: skip
    for kind in ("render", "stream"):
        print(f"{kind}: CPU seconds per replica: {results[kind]['cpu_s']}")


def main(argv: list[str] | None = None) -> int:
    args = service_suite_args("ingress", argv)
    results = run(args.quick)
    print_results(results)
    path = write_result("ingress", "cpu", results, machine_info("cpu"))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
