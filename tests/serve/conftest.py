"""One local Ray per test session (logical GPUs, small CPU share); Serve apps per module."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # before ray is imported
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import ray  # noqa: E402
from ray import serve  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """Ray with 2 logical CPUs and 2 logical GPUs (no real GPU needed)."""
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="rt", dir="/tmp"),
             runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}})  # fmt: skip
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def deploy(settings):
    """Run the app with ``settings`` under the name the product uses."""
    from serve_app.app import APP_NAME, build_app

    return serve.run(build_app(settings), name=APP_NAME, route_prefix="/")


@pytest.fixture(scope="session")
def speech_clips(tmp_path_factory) -> dict[str, Path]:
    """Short WAV slices of the 9 s fixture: 'a' 2.0 s, 'b' 2.4 s, and c0..c7 for concurrency."""
    samples, rate = sf.read(DATA / "speech_9s.wav", dtype="int16")
    out = tmp_path_factory.mktemp("clips")
    clips = {}
    spans = {"a": (8000, 8000 + 32000), "b": (40000, 40000 + 38400)}
    spans.update({f"c{i}": (4000 * i, 4000 * i + 16000 + 800 * i) for i in range(8)})
    for name, (a, b) in spans.items():
        path = out / f"{name}.wav"
        sf.write(path, samples[a:b], rate, subtype="PCM_16")
        clips[name] = path
    return clips


@pytest.fixture(scope="session")
def small_avatar(tmp_path_factory) -> Path:
    """The fixture face at 256x256 (faster renders)."""
    import cv2

    img = cv2.imread(str(DATA / "avatar.png"))
    path = tmp_path_factory.mktemp("avatar") / "small.png"
    cv2.imwrite(str(path), cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA))
    return path


def probe_streams(path: Path) -> str:
    """ffmpeg's description of the file's streams (there is no ffprobe in imageio-ffmpeg)."""
    from wav2lip.ffmpeg import ffmpeg_binary

    return subprocess.run([ffmpeg_binary(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def stream_durations(path: Path) -> dict[str, float]:
    """Seconds of the video and audio streams, by decoding each (exact, no probe)."""
    from wav2lip.ffmpeg import ffmpeg_binary

    out = {}
    for kind, sel in (("video", "0:v:0"), ("audio", "0:a:0")):
        err = subprocess.run([ffmpeg_binary(), "-hide_banner", "-i", str(path), "-map", sel, "-f", "null", "-"],
                             capture_output=True, text=True).stderr  # fmt: skip
        times = [line.split("time=")[1].split()[0] for line in err.splitlines() if "time=" in line]
        h, m, s = times[-1].split(":")
        out[kind] = int(h) * 3600 + int(m) * 60 + float(s)
    return out


def chunks_rendered(replicas: int = 2) -> int:
    """Chunks finished so far by all ``replicas`` LipSyncWorker replicas (each counts its own)."""
    handle = serve.get_deployment_handle("LipSyncWorker", "lipsync")
    seen = {}
    for _ in range(40):
        info = handle.info.remote().result()
        seen[info["replica"]] = info["chunks_rendered"]
        if len(seen) == replicas:
            break
    return sum(seen.values())


def wav_seconds(path: Path) -> float:
    info = sf.info(path)
    return info.frames / info.samplerate


__all__ = ["chunks_rendered", "deploy", "probe_streams", "stream_durations", "wav_seconds", "np"]
