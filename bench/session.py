"""Live-session benchmark: speech latency, sessions per worker, A/V offset over a long session.

    python -m bench session [--quick] [--long-s 600] [--checkpoint]   (CPU; needs Ray)

One live-worker replica, the default avatar at the ``balanced`` preset (25 fps) unless
said otherwise (``--preset``), the weights-free renderer (``--checkpoint``: a random official-format
checkpoint, the real model's cost). Three measurements:

* **latency**: an idle session gets 2 s of speech (PCM, all at once as a TTS would send
  it, then ``end_of_speech``; and again streamed at exactly real time in 100 ms pieces):
  from the first byte sent to the arrival of the first fragment that holds speech,
  median and p95 over the runs;
* **capacity**: 1, 2, 4, … sessions speaking continuously (real-time PCM) for
  ``--seconds``: ``behind`` events, the fragments' arrival jitter, and frames per model
  call (the worker's batching);
* **drift**: one session speaking on and off for ``--long-s`` seconds: the offset of the
  decoded audio from the speech sent, at the start and at the end (cross-correlation).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from .common import machine_info, print_table, write_result
from .live_client import Viewer, best_lag, decode_live, open_session
from .serve import local_service, random_checkpoint_dir

SPEECH = Path(__file__).resolve().parent.parent / "tests" / "data" / "speech_9s.wav"
PIECE_S = 0.1  #: real-time PCM goes in pieces this long


def _speech() -> np.ndarray:
    samples, rate = sf.read(SPEECH, dtype="int16")
    assert rate == 16000
    return samples


def _first_speech_arrival(viewer: Viewer, after_event: int, timeout: float = 30.0) -> float:
    """Arrival time of the first fragment at or after the speech_started event."""
    started = viewer.wait_event("speech_started", timeout, after=after_event)
    start_pts = started["pts"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for at, event in viewer.events:
            if event is started:
                # the fragment it describes is the first media message after it
                later = [t for t, _ in viewer.media if t >= at]
                if later:
                    return later[0]
        time.sleep(0.01)
    raise RuntimeError(f"no fragment after speech_started at {start_pts}")


def latency(url: str, avatar: dict, runs: int, speech: np.ndarray) -> dict:
    created = open_session(url, **avatar)
    viewer = Viewer(url, created)
    out = {}
    try:
        viewer.wait_media(6)
        for mode in ("burst", "real_time"):
            figures = []
            for i in range(runs):
                clip = speech[16000 * i % 64000 :][:32000].tobytes()
                n_events = len(viewer.events)
                t0 = time.monotonic()
                if mode == "burst":
                    viewer.send_pcm(clip, piece_bytes=len(clip))
                    viewer.send(type="end_of_speech")
                    arrived = _first_speech_arrival(viewer, n_events)
                else:
                    sender = threading.Thread(target=viewer.send_pcm, args=(clip, int(PIECE_S * 32000), PIECE_S))
                    sender.start()
                    arrived = _first_speech_arrival(viewer, n_events)
                    sender.join()
                    viewer.send(type="end_of_speech")
                figures.append((arrived - t0) * 1000)
                viewer.wait_event("speech_ended", 30, after=n_events)
                time.sleep(0.5)
            out[mode] = {"median_ms": round(statistics.median(figures), 1),
                         "p95_ms": round(float(np.percentile(figures, 95)), 1), "runs": [round(f, 1) for f in figures]}  # fmt: skip
    finally:
        viewer.close()
    return out


def _speak_continuously(viewer: Viewer, speech: np.ndarray, seconds: float, stop: threading.Event) -> None:
    piece = int(PIECE_S * 16000)
    t0, i = time.monotonic(), 0
    while not stop.is_set() and time.monotonic() - t0 < seconds:
        a = (i * piece) % (len(speech) - piece)
        viewer.ws.send(speech[a : a + piece].tobytes())
        i += 1
        time.sleep(max(0.0, t0 + i * PIECE_S - time.monotonic()))


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a local process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def capacity(url: str, avatar: dict, counts: list[int], seconds: float, speech: np.ndarray, worker, host) -> list[dict]:
    rows = []
    pids = {"host": host.stats.remote().result()["pid"], "worker": worker.info.remote().result()["pid"]}
    for n in counts:
        sessions = [open_session(url, **avatar) for _ in range(n)]
        viewers = [Viewer(url, s) for s in sessions]
        for v in viewers:
            v.wait_media(2)
        before = worker.info.remote().result()["live"]
        cpu_before = {k: _cpu_s(pid) for k, pid in pids.items()}
        t_start = time.monotonic()
        stop = threading.Event()
        speakers = [threading.Thread(target=_speak_continuously, args=(v, speech, seconds, stop)) for v in viewers]
        marks = [len(v.media) for v in viewers]
        for t in speakers:
            t.start()
        for t in speakers:
            t.join()
        after = worker.info.remote().result()["live"]
        elapsed = time.monotonic() - t_start
        cpu = {k: (_cpu_s(pid) - cpu_before[k]) / elapsed for k, pid in pids.items()}
        gaps, behind = [], 0
        for v, mark in zip(viewers, marks):
            times = [t for t, _ in v.media[mark:]]
            gaps += list(np.diff(times) * 1000)
            behind += sum(1 for _, e in v.events if e["type"] == "behind")
        for v, s in zip(viewers, sessions):
            v.close()
            httpx.delete(url + s["status_url"], timeout=30)
        calls = after["model_calls"] - before["model_calls"]
        rows.append({"sessions": n, "behind_events": behind,
                     "fragment_gap_ms_median": round(statistics.median(gaps), 1) if gaps else None,
                     "fragment_gap_ms_p95": round(float(np.percentile(gaps, 95)), 1) if gaps else None,
                     "frames_per_model_call": round((after["frames"] - before["frames"]) / calls, 1) if calls else None,
                     "calls_per_model_call": round((after["calls"] - before["calls"]) / calls, 2) if calls else None,
                     "host_cores": round(cpu["host"], 3), "worker_cores": round(cpu["worker"], 3)})  # fmt: skip
    return rows


def drift(url: str, avatar: dict, seconds: float, speech: np.ndarray) -> dict:
    """Offsets (samples) of the decoded audio from the speech sent, for the first and last utterances."""
    created = open_session(url, **avatar)
    viewer = Viewer(url, created)
    clip = speech[:32000]
    offsets = []
    try:
        viewer.wait_media(3)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            n_events, mark = len(viewer.events), len(viewer.media)
            viewer.send_pcm(clip.tobytes(), piece_bytes=len(clip) * 2)
            viewer.send(type="end_of_speech")
            started = viewer.wait_event("speech_started", 30, after=n_events)
            viewer.wait_event("speech_ended", 30, after=n_events)
            time.sleep(0.5)
            if not offsets or time.monotonic() - t0 >= seconds - 10:
                data = viewer.media[0][1] + b"".join(m for _, m in viewer.media[max(1, mark - 2) :])
                times, _, audio, audio_start = decode_live(data)
                at = round((started["pts"] - audio_start) * 16000)
                found = best_lag(audio, clip.astype(np.float32) / 32768, at, 1600)
                offsets.append({"pts": started["pts"], "offset_samples": found - at})
            time.sleep(2.0)
    finally:
        viewer.close()
    return {"seconds": seconds, "first": offsets[0], "last": offsets[-1], "measured": len(offsets)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench session")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--checkpoint", action="store_true", help="a random official-format checkpoint (the real model)")
    parser.add_argument("--preset", default="balanced", help="the sessions' preset (resolution, fps)")
    parser.add_argument("--seconds", type=float, default=20.0, help="capacity: seconds each level speaks")
    parser.add_argument("--long-s", type=float, default=600.0, help="drift: length of the long session")
    parser.add_argument("--max-sessions", type=int, default=8)
    args = parser.parse_args(argv)
    speech = _speech()
    runs = 3 if args.quick else 10
    long_s = min(args.long_s, 60.0) if args.quick else args.long_s
    counts = [n for n in (1, 2, 4, 8, 16, 32) if n <= args.max_sessions]
    with tempfile.TemporaryDirectory() as tmp:
        extra = {"checkpoint_dir": random_checkpoint_dir(Path(tmp))} if args.checkpoint else {}
        with local_service(data_dir=Path(tmp) / "data", workers=1, sessions_per_worker=64, **extra) as (url, _):
            from ray import serve

            worker = serve.get_deployment_handle("LiveWorker", "lipsync")
            avatar = {"preset": args.preset}
            results = {"preset": args.preset, "renderer": worker.info.remote().result()["renderer"],
                       "latency": latency(url, avatar, runs, speech)}  # fmt: skip
            host = serve.get_deployment_handle("SessionHost", "lipsync")
            results["capacity"] = capacity(url, avatar, counts, args.seconds, speech, worker, host)
            results["drift"] = drift(url, avatar, long_s, speech)
    machine = machine_info(args.device)
    print_table("speech latency (first audio byte sent -> first speaking fragment received)", ["input", "median ms", "p95 ms"],
                [[k, v["median_ms"], v["p95_ms"]] for k, v in results["latency"].items()])  # fmt: skip
    print_table("sessions on one worker (real-time speech)", list(results["capacity"][0]),
                [list(r.values()) for r in results["capacity"]])  # fmt: skip
    print(f"drift over {results['drift']['seconds']:.0f} s: first {results['drift']['first']}, last {results['drift']['last']}")
    print(write_result("session", args.device, results, machine))
    return 0
