"""A live session's output as its viewers see it: fragments and events, from the live edge.

The session publishes each rendered fragment (its fMP4 bytes, and the raw frames and PCM
for the frames output) and each event into one ordered log; every viewer follows the log
from where it joined. A slow viewer that falls more than ``keep`` fragments behind skips
to what is kept rather than holding memory here; the ingress bounds what waits for a
socket (``serve_app/relay.py``), so a live session is never buffered for a viewer
without bound.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import AsyncIterator

import numpy as np

from wav2lip.live_audio import frame_sample
from wav2lip.live_encode import encode_jpeg, frame_message, to_pcm16

#: socket outputs (fmp4, frames, events: no media), the live.mp4 bytes, and for WebRTC peers in-process
#: the ``Fragment``s themselves (packets: encoded only; raw: with their raw frames)
OUTPUTS = ("fmp4", "frames", "events", "mp4", "packets", "raw")
_FRAGMENTS = ("packets", "raw")
_KEEP_RAW = ("frames", "raw")  #: outputs that need the fragments' raw frames


@dataclass
class Fragment:
    """Frames [start, start + n) of the session timeline, encoded once, framed per output on demand."""

    start: int
    media: bytes  #: moof + mdat (H.264 + Opus)
    frames: np.ndarray | None  #: (n, H, W, 3) uint8 BGR, kept only while a frames viewer watches
    pcm: np.ndarray  #: float32 16 kHz, the fragment's samples
    fps: float
    jpeg_quality: int
    video: list[tuple[int, bytes]] = field(default_factory=list)  #: H.264 access units (WebRTC), by timeline sample
    audio: list[tuple[int, bytes]] = field(default_factory=list)  #: Opus packets (WebRTC), by timeline sample
    _messages: list[bytes] | None = field(default=None, repr=False)

    def frame_messages(self) -> list[bytes]:
        """One binary message per frame (JPEG + its PCM); encoded at most once per fragment."""
        if self._messages is None:
            first = frame_sample(self.start, self.fps)
            out = []
            for i, frame in enumerate(self.frames):
                f = self.start + i
                a, b = frame_sample(f, self.fps) - first, frame_sample(f + 1, self.fps) - first
                out.append(frame_message(f, f / self.fps, encode_jpeg(frame, self.jpeg_quality),
                                         to_pcm16(self.pcm[a:b])))  # fmt: skip
            self._messages = out
        return self._messages


class Broadcast:
    """The ordered log of a session's fragments and events, followed by each viewer."""

    def __init__(self, init: bytes, keep: int):
        self.init = init
        self._log: deque[tuple[int, Fragment | dict]] = deque()
        self._seq = 0  #: sequence number of the next entry
        self._keep = keep
        self._changed = asyncio.Condition()
        self.viewers = 0
        self.frames_viewers = 0  #: viewers of the frames and raw outputs (fragments keep raw frames for them)
        self.last_viewer_left_at = time.monotonic()  #: with the last input, what the idle timeout counts from
        self.closed = False

    async def publish(self, entry: Fragment | dict) -> None:
        async with self._changed:
            self._log.append((self._seq, entry))
            self._seq += 1
            fragments = sum(isinstance(e, Fragment) for _, e in self._log)
            while fragments > self._keep:
                _, old = self._log.popleft()
                fragments -= isinstance(old, Fragment)
            self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self.closed = True
            self._changed.notify_all()

    async def follow(self, output: str, ready: dict) -> AsyncIterator[bytes | str | Fragment]:
        """``ready`` (text), the init segment (fmp4/mp4), then every later entry: bytes for
        media, text for events (none for mp4, which is bytes only); packets and raw yield
        only the ``Fragment``s themselves."""
        self.viewers += 1
        self.frames_viewers += output in _KEEP_RAW
        try:
            if output not in ("mp4", *_FRAGMENTS):
                yield json.dumps(ready)
            if output in ("fmp4", "mp4"):
                yield self.init
            seq = self._seq
            while True:
                async with self._changed:
                    await self._changed.wait_for(lambda: self.closed or self._seq > seq)
                    if self._log and self._log[0][0] > seq:
                        seq = self._log[0][0]  # fell behind the kept log: skip to what is kept
                    entries = [e for s, e in self._log if s >= seq]
                    seq = self._seq
                    closed = self.closed
                for entry in entries:
                    if output in _FRAGMENTS:
                        if isinstance(entry, Fragment):
                            yield entry
                    elif isinstance(entry, Fragment):
                        if output == "frames" and entry.frames is not None:  # JPEG off the event loop
                            for message in await asyncio.to_thread(entry.frame_messages):
                                yield message
                        elif output in ("fmp4", "mp4"):
                            yield entry.media
                    elif output != "mp4":
                        yield json.dumps(entry)
                if closed:
                    return
        finally:
            self.viewers -= 1
            self.frames_viewers -= output in _KEEP_RAW
            self.last_viewer_left_at = time.monotonic()
