"""``Wav2LipVideoService`` in a real Pipecat pipeline against the fake session service (no Ray).

Source: ``WavSpeaker`` from the example (TTS frames from a WAV at real-time pace); sink: a
processor that records what reaches it. Each test speaks about a second, so the file runs in
a few seconds.
"""

from __future__ import annotations

import asyncio
import math
import time
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pipecat", reason="pipecat-ai is not installed (see integrations/pipecat/README.md)")

from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from wav2lip_pipecat import METADATA_KEY, Wav2LipParams, Wav2LipVideoService  # noqa: E402
from wav_to_mp4 import WavSpeaker, run as run_example  # noqa: E402

from .fake_service import IDLE_RGB, SPEECH_RGB, FakeSessionService  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
FPS, RATE, KEY = 25, 16000, "k3y"
FRAGMENT = 5
RUN_TIMEOUT_S = 30


def write_clip(path, seconds: float, rate: int = RATE, channels: int = 1, start_s: float = 0.5) -> bytes:
    """A slice of the 9 s speech fixture as a WAV (resampled/duplicated as asked); its PCM bytes."""
    with wave.open(str(DATA / "speech_9s.wav"), "rb") as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    part = samples[int(start_s * RATE) : int((start_s + seconds) * RATE)].astype(np.float64)
    if rate != RATE:
        n = int(round(len(part) * rate / RATE))
        part = np.interp(np.arange(n) * RATE / rate, np.arange(len(part)), part)
    pcm = np.repeat(part.round().astype("<i2")[:, None], channels, axis=1).tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return pcm


class Collector(FrameProcessor):
    """The pipeline's last processor: records (time, frame) of what the avatar pushes."""

    def __init__(self):
        super().__init__()
        self.items: list[tuple[float, object]] = []

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM and isinstance(frame, (OutputAudioRawFrame, OutputImageRawFrame,
                                                                         InterruptionFrame)):  # fmt: skip
            self.items.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)

    def images(self, after: float = -math.inf) -> list:
        return [f for t, f in self.items if isinstance(f, OutputImageRawFrame) and t > after]

    def speech_images(self) -> list:
        return [f for f in self.images() if f.metadata[METADATA_KEY]["speech"]]


async def run_pipeline(service, speaker, collector, *, pipeline_rate=RATE, params=None, during=None,
                       avatar_id="face", fps=FPS):  # fmt: skip
    """Run speaker -> avatar (on ``service.url``) -> collector until the speaker is done; the avatar."""
    avatar = Wav2LipVideoService(base_url=service.url, api_key=KEY, avatar_id=avatar_id, fps=fps, params=params)
    worker = PipelineWorker(Pipeline([speaker, avatar, collector]), params=PipelineParams(audio_out_sample_rate=pipeline_rate),
                            idle_timeout_secs=None, cancel_on_idle_timeout=False)  # fmt: skip

    async def drive():
        if during is not None:
            await during(worker)
        await speaker.done.wait()
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.wait_for(asyncio.gather(runner.run(), drive()), RUN_TIMEOUT_S)
    return avatar


def colour(image) -> tuple[int, int, int]:
    w, h = image.size
    rgb = np.frombuffer(image.image, np.uint8).reshape(h, w, 3)
    return tuple(int(v) for v in rgb[h // 2, w // 2])


def near(rgb, expected, tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(rgb, expected))


def test_speech_comes_back_as_aligned_frames_at_real_time(tmp_path):
    asyncio.run(_speech_comes_back_as_aligned_frames_at_real_time(tmp_path))


async def _speech_comes_back_as_aligned_frames_at_real_time(tmp_path):
    seconds = 1.23  # not a whole number of frames: the last frame is part speech
    pcm = write_clip(tmp_path / "clip.wav", seconds)
    speaker, collector = WavSpeaker(tmp_path / "clip.wav", end_after=False), Collector()
    async with FakeSessionService(fps=FPS, fragment_frames=FRAGMENT, api_key=KEY) as fake:
        await run_pipeline(fake, speaker, collector)
        session = fake.only()
    # the session: opened as asked, got exactly the PCM, end of speech, then closed
    assert session.body == {"avatar_id": "face", "fps": FPS}
    assert (session.sample_rate, session.output) == (RATE, "frames")
    assert bytes(session.received) == pcm
    assert session.messages == ["end_of_speech", "close"] and session.closed
    # downstream: image then its audio for every frame, none of the TTS audio itself
    frames = [f for _, f in collector.items]
    assert not any(isinstance(f, TTSAudioRawFrame) for f in frames)
    images, audio = frames[0::2], frames[1::2]
    assert all(isinstance(f, OutputImageRawFrame) for f in images) and len(images) == len(audio)
    assert all(a.metadata[METADATA_KEY] == i.metadata[METADATA_KEY] for i, a in zip(images, audio))
    per_frame = RATE // FPS * 2
    assert {len(a.audio) for a in audio} == {per_frame} and {a.sample_rate for a in audio} == {RATE}
    indices = [i.metadata[METADATA_KEY]["frame"] for i in images]
    assert indices == list(range(indices[0], indices[0] + len(indices)))  # no frame lost or repeated
    assert images[0].size == fake.size and images[0].sync_with_audio
    # speech: ceil(duration x fps) frames whose audio is the speech, idle frames silent around it
    speech = [n for n, i in enumerate(images) if i.metadata[METADATA_KEY]["speech"]]
    assert len(speech) == math.ceil(len(pcm) / per_frame) == 31
    assert speech == list(range(speech[0], speech[0] + len(speech))) and speech[0] > 0  # idle first
    spoken = b"".join(audio[n].audio for n in speech)
    assert spoken[: len(pcm)] == pcm and not any(spoken[len(pcm) :])
    assert all(not any(audio[n].audio) for n in range(len(images)) if n not in speech)
    assert near(colour(images[speech[0]]), SPEECH_RGB) and near(colour(images[0]), IDLE_RGB)
    # real-time pace: the speech frames span their duration on the wall clock
    times = [t for t, f in collector.items if f in [images[n] for n in (speech[0], speech[-1])]]
    assert times[1] - times[0] >= 0.8 * (len(speech) - 1) / FPS


def test_an_interruption_sends_interrupt_and_stops_speech_within_a_fragment(tmp_path):
    asyncio.run(_an_interruption_sends_interrupt_and_stops_speech_within_a_fragment(tmp_path))


async def _an_interruption_sends_interrupt_and_stops_speech_within_a_fragment(tmp_path):
    write_clip(tmp_path / "clip.wav", 2.0)
    speaker, collector = WavSpeaker(tmp_path / "clip.wav", end_after=False), Collector()
    marks: dict[str, float] = {}

    async def interrupt_mid_utterance(worker):
        while len(collector.speech_images()) < FRAGMENT + 2:
            await asyncio.sleep(0.01)
        await worker.queue_frame(InterruptionFrame())
        await asyncio.sleep(4 * FRAGMENT / FPS)  # idle fragments follow

    async with FakeSessionService(fps=FPS, fragment_frames=FRAGMENT, api_key=KEY) as fake:
        await run_pipeline(fake, speaker, collector, during=interrupt_mid_utterance)
        session = fake.only()
    assert session.messages[0] == "interrupt" and session.messages[-1] == "close"
    marks["at"] = next(t for t, f in collector.items if isinstance(f, InterruptionFrame))  # it passed the avatar
    assert bytes(speaker.sent).startswith(bytes(session.received)) and session.received
    after = collector.images(after=marks["at"])
    speech_after = [i for i in after if near(colour(i), SPEECH_RGB)]
    assert len(speech_after) <= FRAGMENT  # only the fragment in flight when it came
    assert after and near(colour(after[-1]), IDLE_RGB)
    audio_after = [f for t, f in collector.items if isinstance(f, OutputAudioRawFrame) and t > marks["at"]]
    assert audio_after and not any(any(a.audio) for a in audio_after)  # the in-flight speech is muted
    assert len(collector.speech_images()) < 2.0 * FPS


def test_other_rates_and_channels_are_resampled_to_the_socket_rate(tmp_path):
    asyncio.run(_other_rates_and_channels_are_resampled_to_the_socket_rate(tmp_path))


async def _other_rates_and_channels_are_resampled_to_the_socket_rate(tmp_path):
    seconds, tts_rate = 1.0, 24000
    write_clip(tmp_path / "stereo.wav", seconds, rate=tts_rate, channels=2)
    speaker, collector = WavSpeaker(tmp_path / "stereo.wav", end_after=False), Collector()
    params = Wav2LipParams(sample_rate=RATE, idle_frames=False)
    async with FakeSessionService(fps=FPS, fragment_frames=FRAGMENT, api_key=KEY) as fake:
        await run_pipeline(fake, speaker, collector, pipeline_rate=tts_rate, params=params)
        session = fake.only()
    assert session.sample_rate == RATE
    assert abs(len(session.received) / 2 / RATE - seconds) < 0.005  # the resampler tail is flushed
    images = collector.images()
    assert images and all(i.metadata[METADATA_KEY]["speech"] for i in images)  # no idle frames
    assert abs(len(images) - seconds * FPS) <= 1


def test_the_example_writes_an_mp4_of_the_speech(tmp_path):
    asyncio.run(_the_example_writes_an_mp4_of_the_speech(tmp_path))


async def _the_example_writes_an_mp4_of_the_speech(tmp_path):
    import av

    seconds = 1.0
    write_clip(tmp_path / "clip.wav", seconds)
    async with FakeSessionService(fps=FPS, fragment_frames=FRAGMENT) as fake:
        sink = await asyncio.wait_for(run_example(str(tmp_path / "clip.wav"), str(tmp_path / "out.mp4"),
                                                  url=fake.url, avatar_id="face", fps=FPS), RUN_TIMEOUT_S)  # fmt: skip
        assert fake.only().closed
    assert sink.frames == seconds * FPS
    with av.open(str(tmp_path / "out.mp4")) as mp4:
        video = sum(1 for _ in mp4.decode(video=0))
    with av.open(str(tmp_path / "out.mp4")) as mp4:
        samples = sum(f.samples for f in mp4.decode(audio=0))
    assert video == seconds * FPS
    assert abs(samples / RATE - seconds) < 0.1
