"""Text -> talking video: the old /generate_video body, personas, TTS caching and pipelining."""

from __future__ import annotations

import subprocess

import httpx
import numpy as np
import pytest
from ray import serve

from serve_app.schemas import VideoRequest
from serve_app.settings import RenderSettings, Settings
from wav2lip.audio import frame_count
from wav2lip.encode import read_frames

from .conftest import deploy, probe_streams, stream_durations

pytestmark = pytest.mark.timeout(300)
TEXT = "Hello there. This is a short test of the talking head. It has three sentences."


@pytest.fixture(scope="module")
def service(ray_cluster, tmp_path_factory):
    settings = Settings(
        workers=2, worker_gpus=0.5, worker_cpus=0.5, data_dir=tmp_path_factory.mktemp("data"),
        single_chunk_below_s=0.0, render=RenderSettings(threads=1),
    )  # fmt: skip
    deploy(settings)
    return {"url": ray_cluster, "settings": settings}


def old_body(message: str, **extra) -> dict:
    body = {"message": message, "agent_type": "general", "enable_parallel": True, "chunk_duration": 6,
            "use_ultra_fast": False}  # fmt: skip
    body.update(extra)
    return body


def test_generate_video_with_the_old_body(service, tmp_path):
    url = service["url"]
    r = httpx.post(f"{url}/generate_video", json=old_body("Good morning! How can I help you today?",
                                                              use_ultra_fast=True, chunk_duration=1), timeout=120)  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    stats = body["stats"]
    assert stats["optimization_level"] == "ultra_fast" and stats["audio_generation_time"] > 0
    assert not stats["cache_hit"] and stats["total_chunks"] >= 2
    path = tmp_path / "hello.mp4"
    path.write_bytes(httpx.get(url + body["url"], timeout=30).content)
    streams = [line for line in probe_streams(path).splitlines() if "Stream #" in line]
    assert "Video: h264" in streams[0] and "12 fps" in streams[0] and "Audio: aac" in streams[1]
    durations = stream_durations(path)
    assert abs(durations["video"] - durations["audio"]) <= 1 / 12
    assert abs(durations["video"] - body["duration_s"]) < 0.011  # ffmpeg prints 10 ms steps and 1.0 < body["duration_s"] < 6.0
    frames = read_frames(path)
    assert frames.shape[1:] == (128, 128, 3) and len(frames) == round(body["duration_s"] * 12)
    again = httpx.post(f"{url}/generate_video", json=old_body("Good morning! How can I help you today?",
                                                                  use_ultra_fast=True, chunk_duration=1), timeout=120)  # fmt: skip
    assert again.json()["video_id"] == body["video_id"] and again.json()["stats"]["cache_hit"]


def test_pipelined_text_equals_unpipelined_render(service, tmp_path):
    """Chunks start while later sentences are synthesised; every frame equals a one-pass render."""
    from wav2lip.fallback import FallbackGenerator
    from wav2lip.options import RenderOptions, preset
    from wav2lip.pipeline import lip_sync
    from wav2lip.tts import SpeechSynthesizer

    handle = serve.get_app_handle("lipsync")
    resp = handle.generate.remote(VideoRequest(text=TEXT, lossless=True, chunk_duration=0.4)).result()
    stages = resp.stats.stages
    assert resp.stats.total_chunks >= 6 and 0 < stages["first_chunk"] < resp.stats.total_processing_time
    served = tmp_path / "served.mkv"
    served.write_bytes(handle.video_bytes.remote(resp.video_id).result())
    samples = SpeechSynthesizer().synthesize(TEXT)  # the canonical audio: deterministic
    info = serve.get_deployment_handle("LipSyncWorker", "lipsync").info.remote().result()
    single = lip_sync(samples, tmp_path / "single.mkv", generator=FallbackGenerator(),
                      render=RenderOptions(device="cpu", precision=info["precision"]), enc=preset("balanced", lossless=True))  # fmt: skip
    a, b = read_frames(served), read_frames(single.path)
    assert len(a) == frame_count(len(samples), 25) == len(b)
    assert np.array_equal(a, b)


def test_text_on_v1_videos_and_personas(service):
    url = service["url"]
    agents = httpx.get(f"{url}/v1/agents", timeout=30).json()
    names = {a["agent_type"]: a for a in agents}
    assert {"general", "support", "presenter"} <= set(names) and names["general"]["default"]
    voices = httpx.get(f"{url}/v1/voices", timeout=30).json()
    assert "en_US-joe-medium" in {v["name"] for v in voices}
    r = httpx.post(f"{url}/v1/videos", data={"text": "Presenting our new product.", "agent_type": "presenter"},
                   timeout=120)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["stats"]["optimization_level"] == "quality"  # the presenter persona's preset
    slow = httpx.post(f"{url}/v1/videos", data={"text": "Presenting our new product.", "agent_type": "support"},
                      timeout=120).json()  # fmt: skip
    assert slow["duration_s"] > r.json()["duration_s"]  # support speaks at rate 0.9


@pytest.mark.parametrize(
    "message, status, code",
    [
        ("", 422, "empty_text"),
        ("   \n\t ", 422, "empty_text"),
        ("😀🎉👍", 422, "empty_text"),
        ("x" * 5001, 413, "input_too_large"),
    ],
)
def test_bad_text(service, message, status, code):
    r = httpx.post(f"{service['url']}/generate_video", json=old_body(message), timeout=60)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and r.json()["message"]


def test_unknown_agent_and_mixed_scripts(service):
    url = service["url"]
    r = httpx.post(f"{url}/generate_video", json=old_body("Hello.", agent_type="pirate"), timeout=60)
    assert r.status_code == 422 and "general" in r.json()["message"] and "pirate" in r.json()["message"]
    odd = httpx.post(f"{url}/generate_video", json=old_body("Hi 😀 Привет\x07 there\x00, café."), timeout=120)
    assert odd.status_code == 200, odd.text
    both = httpx.post(f"{url}/v1/videos", data={"text": "Hi."},
                      files={"audio": ("a.wav", b"RIFF0000WAVE", "audio/wav")}, timeout=60)  # fmt: skip
    assert both.status_code == 400 and both.json()["error"] == "invalid_input"
    malformed = httpx.post(f"{url}/generate_video", content=b"{not json", headers={"content-type": "application/json"},
                           timeout=30)  # fmt: skip
    assert malformed.status_code == 400 and malformed.json()["error"] == "malformed_request"


def test_cli_text(tmp_path):
    import sys

    out = tmp_path / "hello.mp4"
    proc = subprocess.run([sys.executable, "-m", "wav2lip", "--text", "Hello there", "--out", str(out), "--quiet",
                           "--preset", "ultra_fast"], capture_output=True, text=True, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[2])})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 1000 and "renderer fallback" in proc.stdout
