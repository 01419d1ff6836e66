"""The Serve application end to end: placement, HTTP, handles, caching, errors."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray
from ray import serve

from serve_app.schemas import VideoRequest
from serve_app.settings import RenderSettings, Settings
from wav2lip.audio import frame_count, load_audio
from wav2lip.encode import read_frames

from .conftest import chunks_rendered, deploy, probe_streams, stream_durations

pytestmark = pytest.mark.timeout(300)
UPLOAD_LIMIT = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def service(ray_cluster, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    settings = Settings(
        workers=2, worker_gpus=0.5, worker_cpus=0.5, data_dir=data_dir, single_chunk_below_s=0.0,
        chunk_duration_s=1.0, max_upload_bytes=UPLOAD_LIMIT, render=RenderSettings(threads=1),
    )  # fmt: skip
    deploy(settings)
    yield {"url": ray_cluster, "settings": settings, "data_dir": data_dir}


def post_video(url: str, audio: Path | bytes, timeout: float = 120, **fields) -> httpx.Response:
    content = audio.read_bytes() if isinstance(audio, Path) else audio
    files = {"audio": ("speech.wav", content, "audio/wav")}
    if "avatar" in fields:
        avatar = fields.pop("avatar")
        files["avatar"] = ("face.png", avatar.read_bytes(), "image/png")
    return httpx.post(f"{url}/v1/videos", files=files, data={k: str(v) for k, v in fields.items()}, timeout=timeout)


def test_workers_have_fractional_gpus(service):
    status = serve.status().applications["lipsync"].deployments["LipSyncWorker"]
    assert status.replica_states.get("RUNNING") == 2
    handle = serve.get_deployment_handle("LipSyncWorker", "lipsync")
    seen = {}
    for _ in range(40):
        info = handle.info.remote().result()
        seen[info["replica"]] = info
        if len(seen) == 2:
            break
    assert len(seen) == 2, "requests never reached the second replica"
    for info in seen.values():
        assert len(info["gpu_ids"]) == 1  # a 0.5 share of one logical GPU
        assert info["renderer"] == "fallback" and info["device"] == "cpu"
    assert ray.available_resources().get("GPU", 0) <= 1.0  # 2 x 0.5 of the 2 logical GPUs are held


def test_http_end_to_end_mp4(service, speech_clips, small_avatar, tmp_path):
    r = post_video(service["url"], speech_clips["a"], avatar=small_avatar)
    assert r.status_code == 200, r.text
    body = r.json()
    stats = body["stats"]
    n = frame_count(len(load_audio(speech_clips["a"])), 25)
    assert body["url"] == f"/v1/videos/{body['video_id']}"
    assert stats["total_chunks"] == 2 and stats["parallel_processing"] and not stats["cache_hit"]
    assert stats["renderer"] == "fallback" and stats["optimization_level"] == "balanced"
    for key in ("total_chunks", "successful_chunks", "failed_chunks", "parallel_processing", "chunk_duration",
                "total_processing_time", "audio_generation_time", "video_generation_time", "optimization_level",
                "speed_multiplier", "target_achieved", "real_time_factor", "cache_hit", "renderer"):  # fmt: skip
        assert key in stats
    assert math.isclose(stats["speed_multiplier"] * stats["real_time_factor"], 1.0, rel_tol=0.02)
    assert {"decode", "mel", "render", "encode", "combine"} <= set(stats["stages"])
    video = httpx.get(service["url"] + body["url"], timeout=30)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    path = tmp_path / "out.mp4"
    path.write_bytes(video.content)
    streams = [line for line in probe_streams(path).splitlines() if "Stream #" in line]
    assert len(streams) == 2 and "Video: h264" in streams[0] and "Audio: aac" in streams[1]
    frames = read_frames(path)
    assert len(frames) == n == 50 and frames.shape[1:] == (256, 256, 3)
    durations = stream_durations(path)
    assert abs(durations["video"] - n / 25) < 1e-3
    assert abs(durations["video"] - durations["audio"]) <= 1 / 25
    assert abs(body["duration_s"] - n / 25) < 1e-6
    ranged = httpx.get(service["url"] + body["url"], headers={"Range": "bytes=10-99"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == video.content[10:100]
    assert ranged.headers["content-range"] == f"bytes 10-99/{len(video.content)}"


def test_second_request_is_cache_hit_with_identical_bytes(service, speech_clips):
    first = post_video(service["url"], speech_clips["b"]).json()
    second = post_video(service["url"], speech_clips["b"]).json()
    assert first["video_id"] == second["video_id"]
    assert not first["stats"]["cache_hit"] and second["stats"]["cache_hit"]
    a = httpx.get(service["url"] + first["url"], timeout=30).content
    b = httpx.get(service["url"] + second["url"], timeout=30).content
    assert a == b and len(a) > 1000


def test_chunked_render_equals_single_pass(service, speech_clips, tmp_path):
    """Lossless output of a 3-chunk service render == the engine's one-pass render, frame for frame."""
    from wav2lip.fallback import FallbackGenerator
    from wav2lip.options import RenderOptions, preset
    from wav2lip.pipeline import lip_sync

    handle = serve.get_app_handle("lipsync")
    audio = speech_clips["c3"].read_bytes()
    many = handle.generate.remote(VideoRequest(audio=audio, lossless=True, chunk_duration=0.4)).result()
    assert many.stats.total_chunks >= 3
    served = tmp_path / "served.mkv"
    served.write_bytes(handle.video_bytes.remote(many.video_id).result())
    info = serve.get_deployment_handle("LipSyncWorker", "lipsync").info.remote().result()
    single = lip_sync(audio, tmp_path / "single.mkv", generator=FallbackGenerator(),
                      render=RenderOptions(device="cpu", precision=info["precision"]), enc=preset("balanced", lossless=True))  # fmt: skip
    a, b = read_frames(served), read_frames(single.path)
    assert a.shape == b.shape and a.shape[0] == frame_count(len(load_audio(audio)), 25) == single.n_frames
    assert np.array_equal(a, b)


def test_python_handle_matches_http(service, speech_clips):
    handle = serve.get_app_handle("lipsync")
    audio = speech_clips["a"].read_bytes()
    via_handle = handle.generate.remote(VideoRequest(audio=audio, avatar_id="default")).result()
    via_http = post_video(service["url"], audio).json()
    assert via_handle.video_id == via_http["video_id"]
    data = handle.video_bytes.remote(via_handle.video_id).result()
    assert data == httpx.get(service["url"] + via_http["url"], timeout=30).content


def test_eight_concurrent_requests(service, speech_clips):
    async def run():
        async with httpx.AsyncClient(timeout=240) as client:
            async def one(i):
                files = {"audio": ("s.wav", speech_clips[f"c{i}"].read_bytes(), "audio/wav")}
                return await client.post(f"{service['url']}/v1/videos", files=files)

            return await asyncio.gather(*(one(i) for i in range(8)))

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 8
    assert len({r.json()["video_id"] for r in responses}) == 8


def test_avatar_registration(service, small_avatar):
    url = service["url"]
    files = {"avatar": ("face.png", small_avatar.read_bytes(), "image/png")}
    first = httpx.post(f"{url}/v1/avatars", files=files, timeout=60)
    again = httpx.post(f"{url}/v1/avatars", files=files, timeout=60)
    assert first.status_code == 200, first.text
    record = first.json()
    assert record == again.json() and len(record["avatar_id"]) == 64
    assert record["frames"] == 1 and record["width"] == 256 and len(record["face_box"]) == 4
    listed = httpx.get(f"{url}/v1/avatars", timeout=30).json()
    assert {"default", record["avatar_id"]} <= {a["avatar_id"] for a in listed}
    assert httpx.get(f"{url}/v1/avatars/{record['avatar_id']}", timeout=30).json() == record
    default = httpx.get(f"{url}/v1/avatars/default", timeout=30).json()
    assert default["face_box"] == [66, 171, 177, 272]


def test_healthz(service):
    body = httpx.get(f"{service['url']}/healthz", timeout=30).json()
    assert body["status"] == "ok" and body["model_loaded"] and body["renderer"] == "fallback"
    assert body["workers"] == 2  # replicas RUNNING, from Serve


@pytest.mark.parametrize(
    "case, status, code",
    [
        ("not_audio", 422, "undecodable_audio"),
        ("wrong_type", 415, "unsupported_media"),
        ("unknown_avatar", 404, "not_found"),
        ("traversal", 422, "invalid_settings"),
        ("bad_preset", 422, "invalid_settings"),
        ("bad_pads", 422, "invalid_settings"),
        ("no_face", 422, "no_face_detected"),
        ("too_large", 413, "input_too_large"),
        ("no_audio", 400, "invalid_input"),
    ],
)
def test_bad_requests_get_clear_json_errors(service, speech_clips, tmp_path, case, status, code):
    import cv2

    url = service["url"]
    wav = speech_clips["a"].read_bytes()
    if case == "not_audio":
        r = post_video(url, b"this is not audio at all" * 10)
    elif case == "wrong_type":
        r = httpx.post(f"{url}/v1/videos", files={"audio": ("x.txt", b"hello", "text/plain")}, timeout=30)
    elif case == "unknown_avatar":
        r = post_video(url, wav, avatar_id="ab" * 32)
    elif case == "traversal":
        r = post_video(url, wav, avatar_id="../../etc/passwd")
    elif case == "bad_preset":
        r = post_video(url, wav, preset="turbo")
    elif case == "bad_pads":
        r = post_video(url, wav, pads="1 2 3")
    elif case == "no_face":
        flat = tmp_path / "flat.png"
        cv2.imwrite(str(flat), np.full((128, 128, 3), 127, np.uint8))
        r = post_video(url, wav, avatar=flat)
    elif case == "too_large":
        r = post_video(url, b"\0" * (UPLOAD_LIMIT + 1024))
    else:
        r = httpx.post(f"{url}/v1/videos", data={"avatar_id": "default"}, timeout=30)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and body["message"]
    assert set(body) == {"error", "message"}


def test_video_id_is_validated(service):
    for bad in ("..%2F..%2Fetc%2Fpasswd", "xyz", "A" * 64):
        r = httpx.get(f"{service['url']}/v1/videos/{bad}", timeout=30)
        assert r.status_code in (404, 422) and "error" in r.json()
    missing = httpx.get(f"{service['url']}/v1/videos/{'0' * 64}", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_disk_cache_survives_restart_and_corruption_is_recomputed(service, speech_clips):
    url = service["url"]
    first = post_video(url, speech_clips["b"]).json()  # cached by an earlier test or now
    other = post_video(url, speech_clips["c5"]).json()
    serve.delete("lipsync")
    deploy(service["settings"])
    hit = post_video(url, speech_clips["b"]).json()
    assert hit["video_id"] == first["video_id"] and hit["stats"]["cache_hit"]
    # Corrupt the other entry on disk (memory is empty after the restart): detected, recomputed.
    entry = Path(service["data_dir"]) / "results" / f"{other['video_id']}.mp4"
    blob = bytearray(entry.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    entry.write_bytes(bytes(blob))
    again = post_video(url, speech_clips["c5"]).json()
    assert again["video_id"] == other["video_id"] and not again["stats"]["cache_hit"]
    video = httpx.get(url + again["url"], timeout=30)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"


def test_identical_requests_in_flight_render_once(service, speech_clips):
    """A second identical request attaches to the render under way instead of rendering again."""
    import io

    import soundfile as sf

    samples, rate = sf.read(Path(__file__).parents[1] / "data" / "speech_9s.wav", dtype="int16")
    buf = io.BytesIO()
    sf.write(buf, samples[60_000:84_000], rate, format="WAV", subtype="PCM_16")  # used by no other test
    audio = buf.getvalue()
    before = chunks_rendered()

    async def two():
        async with httpx.AsyncClient(timeout=120) as client:
            files = {"audio": ("same.wav", audio, "audio/wav")}
            return await asyncio.gather(*(client.post(f"{service['url']}/v1/videos", files=files) for _ in range(2)))

    first, second = asyncio.run(two())
    assert first.status_code == second.status_code == 200
    assert first.json()["video_id"] == second.json()["video_id"]
    chunks = first.json()["stats"]["total_chunks"]
    assert chunks_rendered() - before == chunks  # rendered once, not twice


def test_demo_page_is_self_contained(service):
    page = httpx.get(f"{service['url']}/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "/v1/streams" in html and "MediaSource" in html and "/v1/agents" in html and "<video" in html
    assert "http://" not in html and "https://" not in html  # no third-party CDN or assets
