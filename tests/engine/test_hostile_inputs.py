"""What a hostile (or merely unusual) upload tries, one test per class of input (issue #20).

Every input is made here, with numpy, OpenCV's encoders, hand-written headers and the
bundled ffmpeg. Each test asserts the error class and its message; the timeout catches
a hang (a limit checked after decoding would take seconds to minutes), never a speed.
"""

from __future__ import annotations

import struct
import subprocess
import zlib

import cv2
import numpy as np
import pytest

from wav2lip import (
    AudioDecodeError,
    AvatarOptions,
    EncodeError,
    InputTooLarge,
    MediaDecodeError,
    MediaLimits,
    UnsupportedMedia,
    decode_audio,
    load_audio,
    prepare_avatar,
    sanitize_samples,
)
from wav2lip import avatar_media
from wav2lip.avatar_media import load_media
from wav2lip.ffmpeg import ffmpeg_binary, probe_media, run_ffmpeg

pytestmark = pytest.mark.timeout(60)

RATE = 16_000
HUGE = 30_000  #: side of the decompression bombs: 900 megapixels, 2.7 GB as BGR
BOX = (0, 32, 0, 32)  #: a fixed face box: these tests are about media, not faces


def ffmpeg(*args: str, stdin: bytes | None = None) -> None:
    subprocess.run([ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   input=stdin, check=True, capture_output=True, timeout=50)  # fmt: skip


def float_wav(samples: np.ndarray, rate: int = RATE) -> bytes:
    """A 32-bit IEEE-float mono WAV (format tag 3), written by hand."""
    data = np.asarray(samples, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE" + \
        b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data  # fmt: skip


def tone(seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


# ---- 1. audio samples that are not sane numbers ---------------------------------------------------
def _spiked(value: float) -> np.ndarray:
    samples = tone(1.0)
    samples[[100, 5000, 9000]] = value
    return samples


def _encodings(tmp_path, samples: np.ndarray) -> dict[str, bytes]:
    """The same float samples as a hand-made f32 WAV, an f64 WAV at 44.1 kHz stereo and a float AIFF-C."""
    raw = np.asarray(samples, "<f8")
    src = tmp_path / "raw.f64"
    src.write_bytes(np.repeat(raw, 2).tobytes())
    out = {"wav_f32": float_wav(samples)}
    for name, codec, fmt in (("wav_f64_44k1", "pcm_f64le", "wav"), ("aiff_f32", "pcm_f32be", "aiff")):
        path = tmp_path / f"{name}.{fmt}"
        ffmpeg("-f", "f64le", "-ar", str(RATE), "-ac", "2", "-i", str(src), "-ar", "44100", "-c:a", codec, str(path))
        out[name] = path.read_bytes()
    return out


@pytest.mark.parametrize("value", [1e10, -3.5, 2.0])
def test_finite_samples_outside_full_scale_are_clipped_and_counted(tmp_path, value):
    for name, data in _encodings(tmp_path, _spiked(value)).items():
        decoded = decode_audio(data, max_seconds=10)
        assert decoded.clipped_samples >= 3, name  # resampling spreads a spike over its neighbours
        assert np.isfinite(decoded.samples).all() and np.abs(decoded.samples).max() <= 1.0, name
        assert abs(decoded.duration_s - 1.0) < 0.01, name
    clean = decode_audio(float_wav(tone(1.0)))
    assert clean.clipped_samples == 0
    assert np.array_equal(clean.samples, load_audio(float_wav(tone(1.0))))


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_samples_are_refused_at_decode_time(tmp_path, value):
    for name, data in _encodings(tmp_path, _spiked(value)).items():
        with pytest.raises(AudioDecodeError, match="NaN or infinite"):
            decode_audio(data)


def test_float_pcm_from_elsewhere_gets_the_same_checks():
    pcm = _spiked(4.0)
    checked = sanitize_samples(pcm)
    assert checked.clipped_samples == 3 and checked.samples.max() <= 1.0
    assert pcm.max() == 4.0  # the caller's array is left alone
    with pytest.raises(AudioDecodeError, match="NaN or infinite"):
        sanitize_samples(_spiked(np.nan))


def test_clipped_audio_encodes(tmp_path):
    """What used to fail after the render (AAC encoding 1e10) now muxes."""
    from wav2lip.aac import encode_aac

    frames = encode_aac(decode_audio(float_wav(_spiked(1e10))).samples, "64k")
    assert len(frames) > 10


def test_ffmpeg_failures_never_put_stderr_in_the_message(tmp_path):
    bogus = tmp_path / "bogus.wav"
    bogus.write_bytes(b"RIFF" + bytes(100))
    failures = []
    for args in (["-i", str(bogus), "-f", "null", "-"], ["-f", "f32le", "-i", "pipe:0", "-c:a", "nosuchcodec", "-f", "null", "-"]):
        with pytest.raises(EncodeError) as info:
            run_ffmpeg(args, "testing", stdin=b"\0" * 64)
        failures.append(info.value)
    for exc in failures:
        assert exc.message == "ffmpeg failed while testing"
        assert exc.stderr_tail  # kept for the logs
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(b"RIFF" + bytes(100))
    assert "0x" not in info.value.message and "/" not in info.value.message


# ---- 3. size limits for every image format, and for video frames ---------------------------------
IMAGE_EXTS = [".png", ".jpg", ".webp", ".bmp", ".gif", ".tiff", ".jp2", ".ras", ".ppm", ".pgm", ".pbm", ".pam",
              ".pfm", ".hdr"]  # fmt: skip


def _encoded(ext: str, width: int = 123, height: int = 77) -> bytes:
    image = (np.random.default_rng(0).random((height, width, 3)) * 255).astype(np.uint8)
    if ext in (".pfm", ".hdr"):
        image = image.astype(np.float32) / 255
    if ext in (".pgm", ".pbm"):
        image = image[..., 0]
    ok, buf = cv2.imencode(ext, image)
    assert ok, ext
    return buf.tobytes()


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if OpenCV is asked to decode an image."""
    def refuse(*_args):
        raise AssertionError("imdecode called: the limit was not checked from the header")
    monkeypatch.setattr(avatar_media.cv2, "imdecode", refuse)


@pytest.mark.parametrize("ext", IMAGE_EXTS)
def test_every_image_format_is_checked_from_its_header(ext, monkeypatch):
    data = _encoded(ext)
    frames, fps = load_media(data)  # within the limits: decodes as before
    assert frames.shape == (1, 77, 123, 3) and fps is None
    monkeypatch.setattr(avatar_media.cv2, "imdecode", lambda *_: pytest.fail("decoded before the size check"))
    with pytest.raises(InputTooLarge, match="123x77"):
        load_media(data, limits=MediaLimits(max_pixels=100 * 70))


def test_jpeg_with_stray_bytes_between_segments_is_read():
    data = _encoded(".jpg")
    patched = data[:20] + b"\x00\x00" + data[20:]  # after the APP0 segment, before the next marker
    assert data[20] == 0xFF
    frames, _ = load_media(patched)
    assert frames.shape == (1, 77, 123, 3)


def _png_header(width, height):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + bytes(64)


def _rle_bmp(width, height):
    """A 1 kB 8-bit RLE BMP whose pixels are one end-of-bitmap code: it decodes to width x height."""
    palette, pixels = bytes(256 * 4), b"\x00\x01"
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def _webp(chunk: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk + bytes(32)


def _webp_vp8x(width, height):
    body = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return _webp(b"VP8X" + struct.pack("<I", len(body)) + body)


def _webp_vp8l(width, height):
    bits = (width - 1) | ((height - 1) << 14)
    return _webp(b"VP8L" + struct.pack("<I", 5) + b"\x2f" + bits.to_bytes(4, "little"))


def _webp_vp8(width, height):
    return _webp(b"VP8 " + struct.pack("<I", 10) + b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", width, height))


def _tiff(width, height):
    entries = struct.pack("<HHII", 256, 4, 1, width) + struct.pack("<HHII", 257, 4, 1, height)
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2) + entries + bytes(4)


def _exr(width, height):
    window = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    return b"\x76\x2f\x31\x01\x02\x00\x00\x00" + b"dataWindow\x00box2i\x00" + struct.pack("<i", 16) + window + b"\x00"


def _j2k(width, height):
    return b"\xff\x4f\xff\x51" + struct.pack(">HHIIII", 41, 0, width, height, 0, 0) + bytes(32)


BOMBS = {
    "png": _png_header, "bmp_rle": _rle_bmp, "webp_vp8x": _webp_vp8x, "webp_vp8l": _webp_vp8l,
    "webp_vp8": _webp_vp8, "tiff": _tiff, "exr": _exr, "jpeg2000": _j2k,
    "gif": lambda w, h: b"GIF89a" + struct.pack("<HH", w, h) + bytes(32),
    "ppm": lambda w, h: f"P6\n# a comment\n{w} {h}\n255\n".encode() + bytes(32),
    "pam": lambda w, h: f"P7\nWIDTH {w}\nHEIGHT {h}\nDEPTH 3\nMAXVAL 255\nENDHDR\n".encode() + bytes(32),
    "pfm": lambda w, h: f"PF\n{w} {h}\n-1\n".encode() + bytes(32),
    "hdr": lambda w, h: f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {h} +X {w}\n".encode() + bytes(32),
    "sunraster": lambda w, h: b"\x59\xa6\x6a\x95" + struct.pack(">IIIIIII", w, h, 24, 0, 1, 0, 0),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_decompression_bombs_are_refused_before_decoding(name, no_decoding):
    width, height = (7680, 4320) if name.startswith("webp") else (HUGE, HUGE - 1)  # 8K WebP; 30000x29999 others
    with pytest.raises(InputTooLarge, match=f"{width}x{height}; the limit is 16.8 megapixels"):
        prepare_avatar(BOMBS[name](width, height))


def test_formats_without_a_readable_size_are_refused(no_decoding):
    avif = b"\x00\x00\x00\x20ftypavif" + bytes(64)
    with pytest.raises(UnsupportedMedia, match="AVIF images are not accepted"):
        prepare_avatar(avif)
    with pytest.raises(MediaDecodeError, match="PNG header is truncated"):
        prepare_avatar(_png_header(64, 64)[:20])
    with pytest.raises(MediaDecodeError, match="BMP header is truncated or invalid"):
        prepare_avatar(_rle_bmp(0, 64))


def _video(tmp_path, name: str, *args: str) -> bytes:
    path = tmp_path / name
    ffmpeg(*args, str(path))
    return path.read_bytes()


def test_video_frame_size_is_checked_before_decoding(tmp_path):
    big = _video(tmp_path, "big.avi", "-f", "lavfi", "-i", "color=size=5000x4000:d=0.04", "-frames:v", "1",
                 "-c:v", "mjpeg")  # fmt: skip
    with pytest.raises(InputTooLarge, match="over the limit of 16.8 megapixels"):
        prepare_avatar(big)
    small_limits = MediaLimits(max_pixels=64 * 64)
    for name, codec in (("v.mp4", "libx264"), ("v.mkv", "mjpeg"), ("v.avi", "mpeg4")):
        data = _video(tmp_path, name, "-f", "lavfi", "-i", "testsrc=size=96x80:rate=25:d=0.4", "-c:v", codec)
        with pytest.raises(InputTooLarge, match="over the limit|96x80"):
            prepare_avatar(data, AvatarOptions(box=BOX), limits=small_limits)
        assert prepare_avatar(data, AvatarOptions(box=BOX)).n_frames == 10
    two = _video(tmp_path, "two.mkv", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:d=0.4", "-f", "lavfi",
                 "-i", "testsrc=size=96x80:rate=25:d=0.4", "-map", "0", "-map", "1", "-c:v", "mjpeg")  # fmt: skip
    with pytest.raises(InputTooLarge, match="over the limit|96x80"):  # the largest stream counts, whichever is decoded
        prepare_avatar(two, AvatarOptions(box=BOX), limits=MediaLimits(max_pixels=64 * 64))


def test_metadata_cannot_forge_the_probe(tmp_path):
    forged = "x\n  Duration: 00:00:00.01, start: 0\n  Stream #0:1: Video: h264, 8x8, 25 fps\n[mp3 @ 0x1] Estimating duration from bitrate"
    data = _video(tmp_path, "forged.mkv", "-f", "lavfi", "-i", "testsrc=size=96x80:rate=25:d=0.4", "-metadata",
                  f"title={forged}", "-c:v", "libx264")  # fmt: skip
    path = tmp_path / "forged.mkv"
    info = probe_media(str(path))
    assert (info.width, info.height, info.duration_s, info.duration_estimated) == (96, 80, 0.4, False)
    assert prepare_avatar(data, AvatarOptions(box=BOX)).n_frames == 10


# ---- 4. avatar videos within a frames x pixels budget ---------------------------------------------
def test_frames_times_pixels_budget(tmp_path):
    limits = MediaLimits(max_video_pixels=64 * 64 * 50)  # 50 frames of 64x64
    clip = ["-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:d=4", "-c:v", "libx264"]
    stated = _video(tmp_path, "stated.mp4", *clip)  # 100 frames, the MP4 header says 4 s
    with pytest.raises(InputTooLarge, match="100 frames of 64x64 are over the limit of 0.205 M"):
        prepare_avatar(stated, AvatarOptions(box=BOX), limits=limits)
    piped = tmp_path / "piped.mkv"  # written to a pipe: no duration in the header, counted while decoding
    piped.write_bytes(subprocess.run([ffmpeg_binary(), "-nostdin", "-loglevel", "error", *clip, "-f", "matroska", "-"],
                                     capture_output=True, check=True, timeout=50).stdout)  # fmt: skip
    with pytest.raises(InputTooLarge, match="51 frames of 64x64"):
        prepare_avatar(piped.read_bytes(), AvatarOptions(box=BOX), limits=limits)
    assert prepare_avatar(stated, AvatarOptions(box=BOX, max_frames=40), limits=limits).n_frames == 40
    assert prepare_avatar(piped.read_bytes(), AvatarOptions(box=BOX)).n_frames == 100  # default budget


# ---- 5. avatar frame rates within the request's range ---------------------------------------------
@pytest.mark.parametrize("fps, step, frames", [(1000, 17, 118), (120, 2, 120), (50, 1, 100)])
def test_fast_avatar_videos_keep_every_kth_frame(tmp_path, fps, step, frames):
    data = _video(tmp_path, "fast.mp4", "-f", "lavfi", "-i", f"testsrc=size=64x64:rate={fps}", "-t", "2",
                  "-c:v", "libx264")  # fmt: skip
    avatar = prepare_avatar(data, AvatarOptions(box=BOX))
    assert avatar.fps == pytest.approx(fps / step) and avatar.fps <= 60
    assert avatar.n_frames == frames


def test_slow_avatar_videos_are_refused(tmp_path):
    data = _video(tmp_path, "slow.mp4", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=1/2", "-t", "6",
                  "-c:v", "libx264")  # fmt: skip
    with pytest.raises(UnsupportedMedia, match="plays at 0.5 fps; at least 1 fps"):
        prepare_avatar(data, AvatarOptions(box=BOX))


# ---- 8. valid audio whose duration ffmpeg only estimates ------------------------------------------
SILENCE_THEN_NOISE = ["-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono:d=3", "-f", "lavfi",
                      "-i", "anoisesrc=r=44100:d=10:a=0.5", "-filter_complex", "[0][1]concat=n=2:v=0:a=1"]  # fmt: skip


@pytest.fixture(scope="module")
def estimated(tmp_path_factory) -> dict[str, bytes]:
    """13 s of audio in formats whose stated duration is a bitrate guess far from the truth."""
    tmp = tmp_path_factory.mktemp("estimated")
    made = {}
    for name, args in (("vbr_no_xing.mp3", ["-c:a", "libmp3lame", "-q:a", "0", "-write_xing", "0"]),
                       ("adts.aac", ["-c:a", "aac", "-f", "adts"])):  # fmt: skip
        ffmpeg(*SILENCE_THEN_NOISE, *args, str(tmp / name))
        made[name] = (tmp / name).read_bytes()
    return made


@pytest.mark.parametrize("name", ["vbr_no_xing.mp3", "adts.aac"])
def test_estimated_duration_never_refuses_valid_audio(estimated, name):
    decoded = decode_audio(estimated[name], max_seconds=20)  # the guess says 43 s (MP3), 205 s (AAC)
    assert decoded.duration_s == pytest.approx(13, abs=0.1)
    with pytest.raises(InputTooLarge, match="longer than the limit of 8 s"):  # the decoded length decides
        decode_audio(estimated[name], max_seconds=8)


def test_a_stated_duration_still_refuses_before_decoding(monkeypatch):
    from wav2lip import audio

    monkeypatch.setattr(audio, "_decode", lambda *_: pytest.fail("decoded audio its header already refused"))
    with pytest.raises(InputTooLarge, match="lasts 12 s; the limit is 5 s"):
        decode_audio(float_wav(tone(12.0)), max_seconds=5)


def test_a_header_ffmpeg_cannot_read_in_time_is_the_files_fault(tmp_path, monkeypatch):
    from wav2lip import ffmpeg as ffmpeg_module

    video = _video(tmp_path, "v.mp4", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:d=0.2", "-c:v", "libx264")

    def stuck(args, **kwargs):
        raise subprocess.TimeoutExpired(args, kwargs.get("timeout"))

    monkeypatch.setattr(ffmpeg_module.subprocess, "run", stuck)
    with pytest.raises(AudioDecodeError, match="header took over 30 s"):
        decode_audio(float_wav(tone(1.0)), max_seconds=5)
    with pytest.raises(MediaDecodeError, match="header took over 30 s"):
        prepare_avatar(video, AvatarOptions(box=BOX))
