"""Pure media helpers: TTS audio to the socket's mono PCM, a session frame to Pipecat frames, pacing."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipecat.frames.frames import OutputImageRawFrame, SpeechOutputAudioRawFrame
from wav2lip_client import Frame as SessionFrame

PCM16 = np.dtype("<i2")  #: the socket's and Pipecat's sample format: 16-bit little-endian
METADATA_KEY = "wav2lip"  #: pushed frames carry ``metadata["wav2lip"] = {frame, pts, speech}``


def to_mono(pcm16: bytes, channels: int) -> bytes:
    """Interleaved PCM16 with ``channels`` channels as mono (the socket takes mono only)."""
    if channels <= 1:
        return pcm16
    samples = np.frombuffer(pcm16, PCM16)
    samples = samples[: len(samples) // channels * channels].reshape(-1, channels)
    return samples.mean(axis=1).round().astype(PCM16).tobytes()


@dataclass
class AvatarFrame:
    """One decoded session frame: the image and the audio it owns, pushed together."""

    index: int
    pts: float  #: seconds on the session timeline
    image: OutputImageRawFrame
    audio: SpeechOutputAudioRawFrame
    speech: bool


def rgb_of(jpeg: bytes) -> tuple[bytes, tuple[int, int]]:
    """A JPEG as RGB bytes and (width, height); CPU work, run off the event loop."""
    with Image.open(io.BytesIO(jpeg)) as image:
        rgb = image.convert("RGB")
    return rgb.tobytes(), rgb.size


def avatar_frame(frame: SessionFrame, rgb: tuple[bytes, tuple[int, int]], speech: bool, muted: bool) -> AvatarFrame:
    """A frames-mode message as Pipecat frames: the RGB image (synced with audio) and its PCM.

    The audio is a ``SpeechOutputAudioRawFrame``, as Pipecat's avatar services push for a
    continuous stream that is mostly silence between utterances: the output transport then
    tells speech from silence itself. ``muted`` zeroes the audio (frames already rendered when
    an interruption came), keeping its length so audio and video stay aligned.
    """
    image = OutputImageRawFrame(image=rgb[0], size=rgb[1], format="RGB")
    image.sync_with_audio = True  # shown once the audio before it has played, i.e. with its own
    pcm = bytes(len(frame.pcm)) if muted else frame.pcm
    audio = SpeechOutputAudioRawFrame(audio=pcm, sample_rate=frame.sample_rate, num_channels=1)
    info = {"frame": frame.index, "pts": frame.pts, "speech": speech}
    image.metadata[METADATA_KEY] = audio.metadata[METADATA_KEY] = info
    return AvatarFrame(frame.index, frame.pts, image, audio, speech)


class Pacer:
    """Waits until each frame is due: the first frame anchors session time to the loop clock.

    A frame later than ``max_lag_s`` (the network stalled, the session re-anchored after
    falling behind) re-anchors the clock instead of being rushed out with those behind it.
    """

    def __init__(self, max_lag_s: float):
        self.max_lag_s = max_lag_s
        self._anchor: float | None = None

    def reset(self) -> None:
        self._anchor = None

    async def wait(self, pts: float) -> None:
        now = asyncio.get_running_loop().time()
        if self._anchor is None or now - (self._anchor + pts) > self.max_lag_s:
            self._anchor = now - pts
        delay = self._anchor + pts - now
        if delay > 0:
            await asyncio.sleep(delay)
