"""Live encode: fMP4 fragments that play back to back (PyAV and ffmpeg), A/V aligned; frame messages."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import time

import av
import cv2
import numpy as np
import pytest

from wav2lip.errors import EncodeError, InputError, InvalidSettings
from wav2lip.ffmpeg import ffmpeg_binary
from wav2lip.hparams import SAMPLE_RATE
from wav2lip.live_audio import frame_sample
from wav2lip.live_encode import (
    OPUS_RATE,
    FragmentEncoder,
    encode_jpeg,
    frame_message,
    parse_frame_message,
    to_pcm16,
)

FPS = 25.0
SIZE = 256
FRAGMENT = 5
FRAGMENTS = 10
JOIN_FRAME = 500  #: a viewer joining 20 s into the session
OPUS_FRAME_S = 0.02
MAX_LAG_16K = 2  #: samples


def _images(start: int, count: int) -> np.ndarray:
    """A smooth BGR pattern that moves every frame."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    frames = [np.stack([128 + 100 * np.sin(x / 20 + f / 3), 128 + 100 * np.cos(y / 25 + f / 5),
                        128 + 80 * np.sin((x + y) / 30 + f / 4)], axis=-1)
              for f in range(start, start + count)]  # fmt: skip
    return np.stack(frames).astype(np.uint8)


def _chirp(n_samples: int) -> np.ndarray:
    t = np.arange(n_samples) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * (200 + 150 * (t % 4)) * (t % 4))).astype(np.float32)


def _session(start: int):
    """(encoder, init + fragments, input frames, input audio of those frames, seconds encoding)."""
    encoder = FragmentEncoder(SIZE, SIZE, FPS)
    stop = start + FRAGMENTS * FRAGMENT
    audio = _chirp(frame_sample(stop, FPS))
    images, fragments, spent = [], [], 0.0
    for first in range(start, stop, FRAGMENT):
        frames = _images(first, FRAGMENT)
        images.append(frames)
        begin = time.perf_counter()
        fragments.append(encoder.encode(frames, audio[frame_sample(first, FPS) : frame_sample(first + FRAGMENT, FPS)],
                                        first))  # fmt: skip
        spent += time.perf_counter() - begin
    data = encoder.init + b"".join(fragments)
    return encoder, data, np.concatenate(images), audio[frame_sample(start, FPS) :], spent


@pytest.fixture(scope="module", params=[0, JOIN_FRAME], ids=["from-start", "joined-mid-session"])
def session(request):
    encoder, data, images, audio, spent = _session(request.param)
    print(f"\nlive encode: {spent / (FRAGMENTS * FRAGMENT) * 1000:.2f} ms per {SIZE}x{SIZE} frame (video + audio)")
    yield request.param, encoder, data, images, audio
    encoder.close()


def _lag(decoded: np.ndarray, reference: np.ndarray, max_lag: int) -> int:
    """Samples by which ``decoded`` trails ``reference`` (cross-correlation peak)."""
    n = min(len(decoded), len(reference)) - 2 * max_lag
    body = decoded[max_lag : max_lag + n]
    scores = [np.dot(body, reference[max_lag - lag : max_lag - lag + n]) for lag in range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag


def _to_16k(samples: np.ndarray) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
    frame.sample_rate = OPUS_RATE
    out = resampler.resample(frame) + resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in out])


def test_codecs_and_a_stable_init(session):
    _, encoder, _, _, _ = session
    assert re.fullmatch(r"avc1\.[0-9a-f]{6},opus", encoder.codecs)
    assert encoder.init.startswith(b"\x00\x00\x00\x1cftyp") and b"moov" in encoder.init and b"moof" not in encoder.init
    # every fragment was checked against the init while encoding; a new encoder makes the same one
    other = FragmentEncoder(SIZE, SIZE, FPS)
    assert other.init == encoder.init
    other.close()


def test_video_decodes_with_frame_times_keyframes_and_content(session):
    start, _, data, images, _ = session
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == FRAGMENTS * FRAGMENT
    assert [round(float(f.pts * f.time_base) * FPS, 6) for f in frames] == list(range(start, start + len(frames)))
    with av.open(io.BytesIO(data)) as container:
        keys = [p.is_keyframe for p in container.demux(video=0) if p.size]
    assert keys == [i % FRAGMENT == 0 for i in range(len(frames))]  # an IDR at each fragment start, only there
    for frame, image in zip(frames, images):
        error = np.mean((frame.to_ndarray(format="bgr24").astype(np.float64) - image) ** 2)
        assert 10 * np.log10(255**2 / error) > 25


def test_audio_decodes_aligned_and_without_gaps(session):
    start, _, data, _, audio = session
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    assert frames[0].sample_rate == OPUS_RATE
    assert abs(float(frames[0].pts * frames[0].time_base) - start / FPS) < 1 / OPUS_RATE  # the pre-skip is undone
    ends = [f.pts + f.samples for f in frames[:-1]]
    assert ends == [f.pts for f in frames[1:]]  # contiguous, fragment after fragment
    decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    assert abs(len(decoded) / OPUS_RATE - len(audio) / SAMPLE_RATE) <= OPUS_FRAME_S
    lag = _lag(_to_16k(decoded), audio, max_lag=200)
    print(f"\nA/V lag (PyAV decode): {lag} samples at 16 kHz")
    assert abs(lag) <= MAX_LAG_16K


def test_ffmpeg_decodes_the_stream_without_errors(session):
    start, _, data, _, audio = session
    run = subprocess.run([ffmpeg_binary(), "-v", "error", "-i", "pipe:0", "-f", "null", "-"], input=data,
                         capture_output=True, timeout=60)  # fmt: skip
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr[-500:]
    # keep the stream's timestamps and pad from time 0: sample i of the output is at i / 16000 s
    run = subprocess.run([ffmpeg_binary(), "-v", "error", "-copyts", "-i", "pipe:0", "-map", "0:a",
                          "-af", "aresample=async=1:first_pts=0", "-ar", str(SAMPLE_RATE), "-f", "f32le", "pipe:1"],
                         input=data, capture_output=True, timeout=60, check=True)  # fmt: skip
    lag = _lag(np.frombuffer(run.stdout, np.float32)[frame_sample(start, FPS) :], audio, max_lag=200)
    print(f"\nA/V lag (ffmpeg decode): {lag} samples at 16 kHz")
    assert abs(lag) <= MAX_LAG_16K


def test_bad_encoder_settings_are_an_encode_error():
    with pytest.raises(EncodeError):
        FragmentEncoder(64, 48, FPS, preset="no-such-preset")


def test_fragments_must_match_their_frames_and_come_in_order():
    encoder = FragmentEncoder(64, 48, 30.0)
    frames = np.zeros((3, 48, 64, 3), np.uint8)
    samples = frame_sample(3, 30.0)
    with pytest.raises(InvalidSettings):
        encoder.encode(frames, np.zeros(samples - 1, np.float32), 0)  # audio of other frames
    with pytest.raises(InvalidSettings):
        encoder.encode(np.zeros((3, 48, 62, 3), np.uint8), np.zeros(samples, np.float32), 0)
    encoder.encode(frames, np.zeros(samples, np.float32), 0)
    with pytest.raises(InvalidSettings):
        encoder.encode(frames, np.zeros(samples, np.float32), 1)  # back in time
    with pytest.raises(InvalidSettings):
        FragmentEncoder(63, 48, 30.0)  # yuv420p needs even sizes
    encoder.close()


_MSE_APPEND = """async ([type, parts]) => {
  const out = {supported: MediaSource.isTypeSupported(type), ranges: []};
  const source = new MediaSource(), video = document.createElement("video");
  video.src = URL.createObjectURL(source);
  await new Promise(done => source.addEventListener("sourceopen", done, {once: true}));
  const buffer = source.addSourceBuffer(type);
  for (const part of parts) {
    buffer.appendBuffer(Uint8Array.from(atob(part), c => c.charCodeAt(0)));
    const ok = await new Promise(done => {
      buffer.onupdateend = () => done(true);
      buffer.onerror = () => done(false);
    });
    if (!ok) { out.error = video.error && video.error.message; return out; }
  }
  for (let i = 0; i < buffer.buffered.length; i++) out.ranges.push([buffer.buffered.start(i), buffer.buffered.end(i)]);
  return out;
}"""


def test_chromium_media_source_takes_the_stream(session):
    """Chrome is stricter than FFmpeg: e.g. it refuses an Opus entry whose dOps rate is not 48 kHz."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if chromium is None:
        pytest.skip("needs Debian's chromium")
    start, encoder, data, _, _ = session
    parts = [encoder.init, data[len(encoder.init) :]]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.set_content("<html><body></body></html>")
            result = page.evaluate(_MSE_APPEND, [f'video/mp4; codecs="{encoder.codecs}"',
                                                 [base64.b64encode(p).decode() for p in parts]])  # fmt: skip
        finally:
            browser.close()
    assert result["supported"] and "error" not in result, result
    (first, last), = result["ranges"]  # one range: no gap between fragments
    assert abs(first - start / FPS) < OPUS_FRAME_S and abs(last - (start + FRAGMENTS * FRAGMENT) / FPS) < OPUS_FRAME_S


# ---- frames mode -----------------------------------------------------------------------
def test_jpeg_and_pcm16():
    image = _images(0, 1)[0]
    decoded = cv2.imdecode(np.frombuffer(encode_jpeg(image, 90), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == image.shape and np.abs(decoded.astype(int) - image).mean() < 3
    pcm = np.frombuffer(to_pcm16(np.array([0.0, 0.5, -1.0, 2.0, -2.0], np.float32)), "<i2")
    assert pcm.tolist() == [0, 16383, -32767, 32767, -32767]


def test_frame_message_round_trip_and_errors():
    jpeg, pcm = b"\xff\xd8jpeg\xff\xd9", to_pcm16(np.zeros(640, np.float32))
    message = frame_message(7, 0.28, jpeg, pcm)
    assert message[:4] == b"W2LF"
    header, got_jpeg, got_pcm = parse_frame_message(message)
    assert header == {"frame": 7, "pts": 0.28, "jpeg_bytes": len(jpeg), "pcm_bytes": len(pcm), "sample_rate": 16000}
    assert (got_jpeg, got_pcm) == (jpeg, pcm)
    for bad in (b"XXXX" + message[4:], message[:-1], message + b"\x00", message[:6], b"W2LF\x00\x00\x00\x03abc"):
        with pytest.raises(InputError):
            parse_frame_message(bad)
