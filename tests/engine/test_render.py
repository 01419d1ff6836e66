"""Batched rendering (random official-format checkpoint), encoding, segment joins and failures."""

from __future__ import annotations

import re
import subprocess

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import torch

import wav2lip
from wav2lip import (
    AvatarOptions,
    EncodeError,
    EncodeOptions,
    InvalidSettings,
    RenderError,
    RenderOptions,
    Renderer,
    combine_segments,
    frame_count,
    lip_sync,
    load_checkpoint,
    melspectrogram,
    prepare_avatar,
    read_frames,
    render_segment,
)
from wav2lip.backends import check_mode
from wav2lip.encode import SegmentEncoder, segment_format
from wav2lip.ffmpeg import ffmpeg_binary

pytestmark = pytest.mark.timeout(240)

N = 40  #: frames rendered by the exactness tests (1.6 s of speech at 25 fps)
CHUNKS = [((0, 13), 5), ((13, 29), 16), ((29, N), 3)]  #: (frame range, batch size)
SHORT_SAMPLES = 25_600  #: 1.6 s -> 40 frames at 25 fps


def cpu(precision: str, batch_size: int = 16) -> RenderOptions:
    return RenderOptions(device="cpu", precision=precision, batch_size=batch_size)


def render(generator, avatar, mel, start, stop, options: RenderOptions) -> np.ndarray:
    return np.concatenate(list(Renderer(generator, options).iter_frames(avatar, mel, 25, start, stop)))


def probe(path) -> str:
    return subprocess.run([ffmpeg_binary(), "-nostdin", "-hide_banner", "-i", str(path)], capture_output=True).stderr.decode()


def streams(path) -> list[str]:
    return re.findall(r"Stream #0:\d+.*?: (Video|Audio): (\w+)", probe(path))


@pytest.fixture(scope="module")
def mel(speech_samples) -> np.ndarray:
    return melspectrogram(speech_samples)


@pytest.fixture(scope="module")
def small_avatar() -> wav2lip.Avatar:
    return prepare_avatar(wav2lip.DEFAULT_AVATAR_PATH, AvatarOptions(resize_factor=4))


@pytest.fixture(scope="module")
def video_avatar(data_dir) -> wav2lip.Avatar:
    return prepare_avatar(data_dir / "avatar_2s.mp4", AvatarOptions(resize_factor=2, max_frames=8))


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.slow)])  # bf16: a minute
def test_chunked_equals_single_pass(random_model, default_avatar, mel, precision):
    one = render(random_model, default_avatar, mel, 0, N, cpu(precision, 16))
    assert one.shape == (N, 512, 512, 3) and one.dtype == np.uint8
    parts = [render(random_model, default_avatar, mel, a, b, cpu(precision, bs)) for (a, b), bs in CHUNKS]
    # Identical, no tolerance: every frame depends only on its own crop and mel window, and on this
    # CPU the uint8 output is the same whatever the chunking and batch size (checked for 3, 5, 16).
    assert np.array_equal(np.concatenate(parts), one)


def test_only_the_face_box_changes(random_model, video_avatar, mel):
    n = 20
    frames = render(random_model, video_avatar, mel, 0, n, cpu("bf16", 8))
    idx = video_avatar.frame_indices(0, n)
    assert idx.tolist()[:10] == [0, 1, 2, 3, 4, 5, 6, 7, 6, 5]  # pingpong over 8 frames
    for i, k in enumerate(idx):
        y1, y2, x1, x2 = video_avatar.boxes[k]
        inside = np.zeros(frames.shape[1:3], bool)
        inside[y1:y2, x1:x2] = True
        source = video_avatar.frames[k]
        assert np.array_equal(frames[i][~inside], source[~inside]), i
        assert np.abs(frames[i][inside].astype(int) - source[inside]).mean() > 2, i


def official_style(model, avatar, mel, n: int, batch_size: int) -> np.ndarray:
    """The official inference loop, rewritten: batches as its datagen makes them, numpy preprocessing."""
    windows = wav2lip.mel_windows(mel, 25, 0, n)
    idx = avatar.frame_indices(0, n, "wrap")
    out = []
    for start in range(0, n, batch_size):
        img_batch, mel_batch, frames, coords = [], [], [], []
        for i in range(start, min(n, start + batch_size)):
            face = avatar.crops[idx[i]]
            masked = face.copy()
            masked[96 // 2 :] = 0
            img_batch.append(np.concatenate((masked, face), axis=2))
            mel_batch.append(windows[i])
            frames.append(avatar.frames[idx[i]].copy())
            coords.append(avatar.boxes[idx[i]])
        img_batch = np.asarray(img_batch) / 255.0  # float64
        mel_batch = np.asarray(mel_batch)
        mel_batch = np.reshape(mel_batch, [len(mel_batch), mel_batch.shape[1], mel_batch.shape[2], 1])
        img_t = torch.FloatTensor(np.transpose(img_batch, (0, 3, 1, 2)))
        mel_t = torch.FloatTensor(np.transpose(mel_batch, (0, 3, 1, 2)))
        with torch.no_grad():
            pred = model(mel_t, img_t)
        pred = pred.cpu().numpy().transpose(0, 2, 3, 1) * 255.0
        for p, f, (y1, y2, x1, x2) in zip(pred, frames, coords):
            p = cv2.resize(p.astype(np.uint8), (int(x2 - x1), int(y2 - y1)))
            f[y1:y2, x1:x2] = p
            out.append(f)
    return np.stack(out)


@pytest.mark.parametrize("batch_size, n", [(16, N), (1, 12)])
def test_fp32_equals_official_inference_bit_for_bit(random_checkpoint, random_model, default_avatar, mel, batch_size, n):
    reference = official_style(load_checkpoint(random_checkpoint), default_avatar, mel, n, batch_size)
    ours = render(random_model, default_avatar, mel, 0, n, cpu("fp32", batch_size))
    assert np.array_equal(ours, reference)


@pytest.fixture(scope="module")
def full_render(tmp_path_factory, data_dir, random_model):
    out = tmp_path_factory.mktemp("e2e") / "speech.mp4"
    render = RenderOptions(selection_dir=str(tmp_path_factory.mktemp("selection")))  # "auto": measured, kept there
    result = lip_sync(data_dir / "speech_9s.wav", out, generator=random_model, render=render,
                      avatar_options=AvatarOptions(resize_factor=4), fps=25)  # fmt: skip
    return out, result


def test_lip_sync_end_to_end(full_render, random_checkpoint):
    out, result = full_render
    assert out.is_file() and result.path == out
    n_frames, video_s = imageio_ffmpeg.count_frames_and_secs(str(out))
    assert result.n_frames == n_frames == frame_count(140_806, 25) == 220
    assert sorted(streams(out)) == [("Audio", "aac"), ("Video", "h264")]
    assert "128x128" in probe(out)
    audio = wav2lip.load_audio(out)
    assert abs(len(audio) - 140_806) <= 1024  # at most one AAC frame of padding
    assert abs(video_s - len(audio) / 16_000) < 1 / 25
    assert abs(result.duration_s - 8.8) < 1e-9 and result.audio_s == 140_806 / 16_000
    assert result.renderer == "wav2lip" and result.model_id == wav2lip.file_sha256(random_checkpoint)
    assert result.fps == 25.0 and result.device == "cpu" and result.precision in wav2lip.options.PRECISIONS[1:]
    assert result.selection["source"] == "measured" and result.selection["precision"] == result.precision
    assert {"decode", "mel", "avatar", "model", "paste", "encode", "combine", "total"} <= set(result.seconds)
    assert "renderer wav2lip" in result.summary()
    assert f"precision {result.precision}" in result.summary() and "ms/frame" in result.summary()


def test_fallback_renderer_is_reported(tmp_path, speech_samples, small_avatar):
    result = lip_sync(speech_samples[:8000], tmp_path / "fb.mp4", small_avatar)  # no checkpoint given
    assert result.renderer == "fallback" and result.model_id.startswith("fallback")
    assert result.n_frames == 13 and imageio_ffmpeg.count_frames_and_secs(str(result.path))[0] == 13


@pytest.fixture(scope="module")
def lossless_reference(random_model, speech_samples, small_avatar):
    """The frames the renderer yields for the first 1.6 s (bf16, batch 16)."""
    samples = speech_samples[:SHORT_SAMPLES]
    n = frame_count(len(samples), 25)
    assert n == N
    return samples, render(random_model, small_avatar, melspectrogram(samples), 0, n, cpu("bf16"))


def test_lossless_output_is_exact(tmp_path, random_model, small_avatar, lossless_reference):
    samples, expected = lossless_reference
    out = tmp_path / "exact.mkv"
    result = lip_sync(samples, out, small_avatar, generator=random_model, render=cpu("bf16"), enc=EncodeOptions(lossless=True))
    assert result.n_frames == N
    assert sorted(streams(out)) == [("Audio", "flac"), ("Video", "ffv1")]
    frames = read_frames(out)
    assert frames.shape == expected.shape == (N, 128, 128, 3)
    assert np.array_equal(frames, expected)
    assert np.array_equal(wav2lip.load_audio(out), samples)  # FLAC of float32 -> 16 bit is exact here


def _segments(tmp_path, renderer, avatar, mel, enc) -> list:
    suffix = segment_format(enc)[1]
    return [render_segment(renderer, avatar, mel, 25, a, b, tmp_path / f"seg{i}{suffix}", enc) for i, ((a, b), _) in enumerate(CHUNKS)]


def test_lossless_segments_join_exactly(tmp_path, random_model, small_avatar, lossless_reference):
    samples, expected = lossless_reference
    enc = EncodeOptions(lossless=True)
    segments = _segments(tmp_path, Renderer(random_model, cpu("bf16")), small_avatar, melspectrogram(samples), enc)
    assert [imageio_ffmpeg.count_frames_and_secs(str(s))[0] for s in segments] == [13, 16, 11]
    out = combine_segments(segments, samples, tmp_path / "joined.mkv", enc)
    assert np.array_equal(read_frames(out), expected)


def test_h264_segments_join_without_lost_frames(tmp_path, random_model, small_avatar, lossless_reference):
    samples, expected = lossless_reference
    enc = EncodeOptions()
    segments = _segments(tmp_path, Renderer(random_model, cpu("bf16")), small_avatar, melspectrogram(samples), enc)
    out = combine_segments(segments, samples, tmp_path / "joined.mp4", enc)
    n_frames, video_s = imageio_ffmpeg.count_frames_and_secs(str(out))
    assert n_frames == N and abs(video_s - N / 25) < 1 / 25
    assert sorted(streams(out)) == [("Audio", "aac"), ("Video", "h264")]
    frames = read_frames(out)
    assert frames.shape == expected.shape
    # The random model's mouth is noise that x264 cannot keep; the rest is the same picture, with
    # CRF 23 + 4:2:0 losses (measured mean abs difference ~5 on this detailed 128x128 photo).
    y1, y2, x1, x2 = small_avatar.boxes[0]
    outside = np.ones(frames.shape[1:3], bool)
    outside[y1:y2, x1:x2] = False
    assert np.abs(frames[:, outside].astype(int) - expected[:, outside]).mean() < 8


class Broken(torch.nn.Module):
    def forward(self, audio, face):
        raise RuntimeError("simulated device failure")


def test_failed_render_leaves_no_output(tmp_path, speech_samples, small_avatar):
    out = tmp_path / "never.mp4"
    with pytest.raises(RenderError, match="simulated device failure"):
        lip_sync(speech_samples[:16_000], out, small_avatar, generator=Broken())
    assert list(tmp_path.iterdir()) == []  # no output, no partial file, no temp folder


def test_invalid_frame_range_leaves_no_segment(tmp_path, random_model, small_avatar, mel):
    path = tmp_path / "seg.ts"
    with pytest.raises(InvalidSettings):
        render_segment(Renderer(random_model, cpu("bf16")), small_avatar, mel, 25, 5, 5, path, EncodeOptions())
    assert not path.exists()


def test_sink_failure_propagates_and_stops_the_sink(random_model, small_avatar, mel):
    calls = []

    def sink(frames):
        calls.append(len(frames))
        if len(calls) == 2:
            raise ValueError("disk full")

    renderer = Renderer(random_model, cpu("bf16", 4))
    with pytest.raises(ValueError, match="disk full"):
        renderer.render(small_avatar, mel, 25, 0, 24, sink)
    assert calls == [4, 4]


def test_ffmpeg_failure_is_encode_error_with_stderr(tmp_path):
    path = tmp_path / "seg.ts"
    with pytest.raises(EncodeError) as info:
        with SegmentEncoder(path, 64, 64, 25, EncodeOptions(x264_preset="no-such-preset")) as encoder:
            for _ in range(50):
                encoder.write(np.zeros((8, 64, 64, 3), np.uint8))
    assert "no-such-preset" in info.value.stderr_tail
    assert not path.exists()

    bogus = tmp_path / "bogus.ts"
    bogus.write_text("not a video")
    out = tmp_path / "out.mp4"
    with pytest.raises(EncodeError) as info:
        combine_segments([bogus], np.zeros(16_000, np.float32), out, EncodeOptions())
    assert "Invalid data" in info.value.stderr_tail
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bogus.ts"]
    with pytest.raises(EncodeError):
        combine_segments([], np.zeros(16_000, np.float32), out, EncodeOptions())


def test_wrong_frame_shape_is_encode_error(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    with SegmentEncoder(tmp_path / "s.ts", 64, 64, 25, EncodeOptions()) as encoder:
        with pytest.raises(EncodeError, match="do not fit"):
            encoder.write(np.zeros((2, 32, 64, 3), np.uint8))
        with pytest.raises(EncodeError, match="do not fit"):
            encoder.write(frames.astype(np.float32))
        encoder.write(frames)
    assert imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "s.ts"))[0] == 3


def test_precision_settings():
    # fp16 on the CPU is a mode now (autocast): "auto" measures it like the others.
    assert Renderer(Broken(), RenderOptions(device="cpu", precision="fp16", batch_size=4)).precision == "fp16"
    with pytest.raises(InvalidSettings, match="precision must be one of"):
        RenderOptions(precision="fp8")
    with pytest.raises(InvalidSettings, match="runs on cpu"):
        check_mode("openvino-fp32", torch.device("cuda"))
    with pytest.raises(InvalidSettings, match="unknown candidate"):
        RenderOptions(candidates=("fp32", "fp64"))
