"""A headless Pipecat bot with a Wav2Lip avatar: a WAV file stands in for the TTS, an MP4 file for
the viewer. No audio device, no WebRTC, no network beyond the Wav2Lip service itself.

    python examples/wav_to_mp4.py speech.wav answer.mp4 --url http://localhost:8000 --agent-type general

``WavSpeaker`` pushes the WAV as ``TTSAudioRawFrame``s at real-time pace, between
``TTSStartedFrame`` and ``TTSStoppedFrame``, as a streaming TTS service would, then ends the
pipeline; ``Mp4FileSink`` writes each returned image and its audio (H.264 + AAC, PyAV).
Swap ``WavSpeaker`` for a real TTS and ``Mp4FileSink`` for ``transport.output()`` in a bot.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipecat.frames.frames import (
    EndFrame,
    EndWorkerFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner
from wav2lip_pipecat import Wav2LipParams, Wav2LipVideoService

CHUNK_S = 0.02  #: seconds of audio per TTSAudioRawFrame (what streaming TTS services push)
PCM16_WIDTH = 2  #: bytes per sample
VIDEO_CODEC, AUDIO_CODEC, PIXEL_FORMAT = "libx264", "aac", "yuv420p"


def read_wav(path: str | Path) -> tuple[bytes, int, int]:
    """(PCM16LE bytes, sample rate, channels) of a 16-bit PCM WAV file."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != PCM16_WIDTH:
            raise ValueError(f"{path}: 16-bit PCM WAV expected, got {8 * wav.getsampwidth()}-bit")
        return wav.readframes(wav.getnframes()), wav.getframerate(), wav.getnchannels()


class WavSpeaker(FrameProcessor):
    """Speaks a WAV file as a streaming TTS would: real-time ``TTSAudioRawFrame`` chunks."""

    def __init__(self, path: str | Path, *, chunk_s: float = CHUNK_S, end_after: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.pcm, self.sample_rate, self.channels = read_wav(path)
        self.chunk_s, self.end_after = chunk_s, end_after
        self.sent = bytearray()  #: what was pushed (an interruption stops it)
        self.done = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._task = self.create_task(self._speak(), "speak")
        elif isinstance(frame, InterruptionFrame) and self._task is not None:  # a TTS stops on it too
            await self.cancel_task(self._task)
            self._task = None
            self.done.set()

    async def _speak(self) -> None:
        step = round(self.sample_rate * self.chunk_s) * self.channels * PCM16_WIDTH
        await self.push_frame(TTSStartedFrame())
        start = time.monotonic()
        for i, at in enumerate(range(0, len(self.pcm), step)):
            await asyncio.sleep(max(0.0, start + i * self.chunk_s - time.monotonic()))
            chunk = self.pcm[at : at + step]
            self.sent += chunk
            await self.push_frame(TTSAudioRawFrame(chunk, self.sample_rate, self.channels))
        await self.push_frame(TTSStoppedFrame())
        self.done.set()
        if self.end_after:  # ask the worker to end: the avatar then finishes speaking first
            await self.push_frame(EndWorkerFrame(), FrameDirection.UPSTREAM)


class Mp4FileSink(FrameProcessor):
    """Writes the avatar's images and audio to an MP4 (one video frame per image at ``fps``)."""

    def __init__(self, path: str | Path, fps: float, **kwargs):
        super().__init__(**kwargs)
        self.path, self.fps = Path(path), Fraction(fps).limit_denominator(1001)
        self.frames = 0
        self._container = self._video = self._audio = None
        self._samples = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputImageRawFrame):
            self._write_image(frame)
        elif isinstance(frame, OutputAudioRawFrame):
            self._write_audio(frame)
        elif isinstance(frame, EndFrame):
            self.close()
        await self.push_frame(frame, direction)

    def _open(self, image: OutputImageRawFrame) -> None:
        self._container = av.open(str(self.path), "w")
        self._video = self._container.add_stream(VIDEO_CODEC, rate=self.fps)
        self._video.width, self._video.height = image.size
        self._video.pix_fmt = PIXEL_FORMAT

    def _write_image(self, image: OutputImageRawFrame) -> None:
        if self._container is None:
            self._open(image)
        width, height = image.size
        rgb = np.frombuffer(image.image, np.uint8).reshape(height, width, 3)
        picture = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        picture.pts = self.frames
        self.frames += 1
        self._container.mux(self._video.encode(picture))

    def _write_audio(self, audio: OutputAudioRawFrame) -> None:
        if self._container is None:  # audio before the first image: nothing to align it with
            return
        if self._audio is None:
            self._audio = self._container.add_stream(AUDIO_CODEC, rate=audio.sample_rate, layout="mono")
        samples = np.frombuffer(audio.audio, "<i2")[None, :]
        piece = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        piece.sample_rate, piece.pts = audio.sample_rate, self._samples
        self._samples += samples.shape[1]
        self._container.mux(self._audio.encode(piece))

    def close(self) -> None:
        if self._container is None:
            return
        for stream in (self._video, self._audio):
            if stream is not None:
                self._container.mux(stream.encode(None))
        self._container.close()
        self._container = None


async def run(wav: str, out: str, *, url: str, api_key: str | None = None, avatar_id: str | None = None,
              agent_type: str | None = None, fps: float = 25.0, idle_frames: bool = False) -> Mp4FileSink:  # fmt: skip
    """Speak ``wav`` through the avatar into ``out``; returns the sink (``frames`` written)."""
    speaker = WavSpeaker(wav)
    avatar = Wav2LipVideoService(base_url=url, api_key=api_key, avatar_id=avatar_id, agent_type=agent_type,
                                 fps=fps, params=Wav2LipParams(idle_frames=idle_frames))  # fmt: skip
    sink = Mp4FileSink(out, fps=fps)
    params = PipelineParams(audio_out_sample_rate=speaker.sample_rate)  # the TTS rate, as a real bot sets it
    worker = PipelineWorker(Pipeline([speaker, avatar, sink]), params=params, idle_timeout_secs=None)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()
    return sink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wav", help="16-bit PCM WAV: the bot's speech")
    parser.add_argument("out", help="the MP4 to write")
    parser.add_argument("--url", default="http://localhost:8000", help="the Wav2Lip service")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--avatar-id", default=None)
    parser.add_argument("--agent-type", default=None, help="a persona from the service's agents.yaml")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--idle-frames", action="store_true", help="also write the idle frames around the speech")
    args = parser.parse_args()
    sink = asyncio.run(run(args.wav, args.out, url=args.url, api_key=args.api_key, avatar_id=args.avatar_id,
                           agent_type=args.agent_type, fps=args.fps, idle_frames=args.idle_frames))  # fmt: skip
    print(f"wrote {sink.frames} frames ({sink.frames / args.fps:.2f} s) to {args.out}")


if __name__ == "__main__":
    main()
