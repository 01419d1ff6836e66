"""A WebRTC viewer of a live session (aiortc), for tests and benchmarks that are not async.

It runs its peer connection on an event loop of its own (a thread), offers to receive
video and audio, and keeps every decoded frame (BGR) and the audio (mono, 48 kHz).
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

OPUS_RATE = 48000


async def offer_sdp() -> tuple[RTCPeerConnection, str]:
    """A receive-only peer connection and its offer (every ICE candidate in it)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


class WebRTCViewer:
    def __init__(self, url: str, created: dict, timeout: float = 60.0):
        self.frames: list[tuple[float, np.ndarray]] = []  #: (arrival, BGR frame)
        self.audio_chunks: list[tuple[float, np.ndarray]] = []  #: (arrival, mono float at 48 kHz)
        self.codec: str | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.pc: RTCPeerConnection = self._call(self._connect(f"{url}{created['status_url']}/webrtc", timeout), timeout)

    def _call(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect(self, endpoint: str, timeout: float) -> RTCPeerConnection:
        pc, sdp = await offer_sdp()
        pc.on("track", lambda track: asyncio.ensure_future(self._pull(track)))
        async with httpx.AsyncClient() as client:
            response = await client.post(endpoint, json={"sdp": sdp, "type": "offer"}, timeout=timeout)
        if response.status_code != 200:
            await pc.close()
            raise RuntimeError(f"webrtc offer refused: {response.status_code} {response.text}")
        answer = response.json()
        self.codec = next((line.split()[1].split("/")[0] for line in answer["sdp"].splitlines()
                           if line.startswith("a=rtpmap:")), None)  # fmt: skip
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        return pc

    async def _pull(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.frames.append((time.monotonic(), frame.to_ndarray(format="bgr24")))
                else:
                    stereo = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
                    self.audio_chunks.append((time.monotonic(), stereo.mean(axis=1) / 32768))
        except MediaStreamError:
            return

    def wait_frames(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frames) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.frames)} of {count} WebRTC frames within {timeout} s")
            time.sleep(0.02)

    def audio(self) -> np.ndarray:
        """Every sample received so far, mono float at 48 kHz."""
        return np.concatenate([c for _, c in self.audio_chunks]) if self.audio_chunks else np.zeros(0)

    def first_loud(self, after: float, level: float, timeout: float = 30.0) -> float:
        """Arrival time of the first audio chunk after ``after`` whose peak reaches ``level``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, chunk in list(self.audio_chunks):
                if at >= after and np.abs(chunk).max() >= level:
                    return at
            time.sleep(0.005)
        raise TimeoutError(f"no audio at {level} within {timeout} s")

    @property
    def state(self) -> str:
        return self.pc.connectionState

    def close(self) -> None:
        try:
            self._call(self.pc.close(), 30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
