"""WebRTC benchmark: speech latency through a peer connection, and what peers cost the SessionHost.

    python -m bench webrtc [--quick] [--seconds 10]   (CPU; needs Ray and aiortc)

One live-worker replica, the default avatar at the ``balanced`` preset (25 fps), the
weights-free renderer; an aiortc receiver on loopback stands in for the browser.

* **latency**: an idle session gets 2 s of speech (PCM at once, then ``end_of_speech``) on
  an ``output=events`` socket; from the first byte sent to the arrival at the WebRTC
  receiver of the first audio that holds speech (video and audio go out on one clock, so
  the first speaking frame arrives with it), median and p95;
* **cost**: CPU seconds per second of the ``SessionHost`` process (``/proc``) for one
  session watched by the events socket alone, then by 1 and 4 H.264 peers (the session's
  own packets), and by 1 VP8 peer (aiortc encodes per peer; a deployment of its own).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


from .common import machine_info, print_table, write_result
from .live_client import Viewer, open_session
from .serve import local_service
from .session import _speech
from .webrtc_client import WebRTCViewer

LOUD = 0.05  #: peak level that counts as speech in the received audio
PRESET = "balanced"


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _host_pid() -> int:
    from ray import serve

    return serve.get_deployment_handle("SessionHost", "lipsync").stats.remote().result()["pid"]


def _latency(url: str, runs: int) -> dict:
    created = open_session(url, preset=PRESET)
    events, peer = Viewer(url, created, output="events"), WebRTCViewer(url, created)
    clip = _speech()[8000:40000].tobytes()
    out = []
    try:
        events.wait_event("ready")
        peer.wait_frames(50)
        for _ in range(runs):
            n = len(events.events)
            sent = time.monotonic()
            events.send_pcm(clip, piece_bytes=len(clip))
            events.send(type="end_of_speech")
            out.append((peer.first_loud(sent, LOUD) - sent) * 1000)
            events.wait_event("speech_ended", after=n, timeout=60)
            time.sleep(1.0)
    finally:
        events.close()
        peer.close()
    return {"runs": runs, "median_ms": round(statistics.median(out), 1),
            "p95_ms": round(sorted(out)[max(0, round(0.95 * len(out)) - 1)], 1), "all_ms": [round(x, 1) for x in out]}


def _cost(url: str, peers: int, seconds: float) -> dict:
    created = open_session(url, preset=PRESET)
    events = Viewer(url, created, output="events")
    viewers = []
    try:
        events.wait_event("ready")
        viewers = [WebRTCViewer(url, created) for _ in range(peers)]
        for v in viewers:
            v.wait_frames(25)
        pid = _host_pid()
        before, start = _cpu_seconds(pid), time.monotonic()
        frames = [len(v.frames) for v in viewers]
        time.sleep(seconds)
        wall = time.monotonic() - start
        used = _cpu_seconds(pid) - before
        fps = [round((len(v.frames) - f) / wall, 1) for v, f in zip(viewers, frames)]
        codec = viewers[0].codec if viewers else None
    finally:
        for v in viewers:
            v.close()
        events.close()
    return {"peers": peers, "codec": codec, "host_cpu_per_s": round(used / wall, 3), "received_fps": fps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench webrtc")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    runs = 3 if args.quick else 7
    results: dict = {"preset": PRESET, "seconds": args.seconds}
    with tempfile.TemporaryDirectory() as tmp:
        with local_service(data_dir=Path(tmp) / "h264", workers=1, sessions_per_worker=16) as (url, _):
            results["latency"] = _latency(url, runs)
            results["cost"] = [_cost(url, n, args.seconds) for n in (0, 1, 4)]
    with tempfile.TemporaryDirectory() as tmp:
        with local_service(data_dir=Path(tmp) / "vp8", workers=1, sessions_per_worker=16,
                           webrtc_video_codec="VP8") as (url, _):  # fmt: skip
            results["cost"].append(_cost(url, 1, args.seconds))
    lat = results["latency"]
    print_table("WebRTC speech latency (PCM sent -> speech audio received; video on the same clock)",
                ["runs", "median ms", "p95 ms"], [[lat["runs"], lat["median_ms"], lat["p95_ms"]]])  # fmt: skip
    print_table("SessionHost CPU per WebRTC peer (one session)", ["peers", "codec", "host CPU s/s", "received fps"],
                [[c["peers"], c["codec"] or "-", c["host_cpu_per_s"], c["received_fps"]] for c in results["cost"]])  # fmt: skip
    path = write_result("webrtc", args.device, results, machine_info(args.device))
    print(f"wrote {path}")
    return 0
