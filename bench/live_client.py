"""A small client for live sessions (tests and `bench session`): opens one, watches its socket
in a thread, decodes what came."""

from __future__ import annotations

import io
import json
import threading
import time

import av
import httpx
import numpy as np
from websockets.sync.client import connect



def open_session(url: str, **body) -> dict:
    response = httpx.post(f"{url}/v1/sessions", json=body, timeout=60)
    assert response.status_code == 201, response.text
    return response.json()


class Viewer:
    """One socket on a session: events, init and fragments (or frame messages) with arrival times."""

    def __init__(self, url: str, created: dict, output: str = "fmp4", sample_rate: int = 16000, **query):
        ws_url = url.replace("http://", "ws://") + created["ws"]
        params = "&".join(f"{k}={v}" for k, v in {"output": output, "sample_rate": sample_rate, **query}.items())
        self.ws = connect(f"{ws_url}?{params}", max_size=None, open_timeout=30)
        self.output = output
        self.events: list[tuple[float, dict]] = []
        self.media: list[tuple[float, bytes]] = []  #: init first (fmp4), then fragments; or frame messages
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.ws:
                now = time.monotonic()
                if isinstance(message, str):
                    self.events.append((now, json.loads(message)))
                else:
                    self.media.append((now, message))
        except Exception:  # noqa: BLE001 - the socket closed
            pass
        finally:
            self.closed.set()

    def send_pcm(self, pcm16: bytes, piece_bytes: int = 3200, pace_s: float = 0.0) -> None:
        for i in range(0, len(pcm16), piece_bytes):
            self.ws.send(pcm16[i : i + piece_bytes])
            if pace_s:
                time.sleep(pace_s)

    def send(self, **message) -> None:
        self.ws.send(json.dumps(message))

    def wait_event(self, kind: str, timeout: float = 30.0, after: int = 0) -> dict:
        """The first event of ``kind`` (from the ``after``-th event on), waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, event in self.events[after:]:
                if event["type"] == kind:
                    return event
            if self.closed.is_set():
                break
            time.sleep(0.02)
        raise AssertionError(f"no {kind!r} event within {timeout} s; got {[e['type'] for _, e in self.events]}")

    def wait_media(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.media) < count and time.monotonic() < deadline and not self.closed.is_set():
            time.sleep(0.02)
        assert len(self.media) >= count, f"{len(self.media)} media messages within {timeout} s, wanted {count}"

    def close(self) -> None:
        self.ws.close()
        self._thread.join(10)

    def kinds(self) -> list[str]:
        return [e["type"] for _, e in self.events]


def decode_live(data: bytes) -> tuple[list[float], list[np.ndarray], np.ndarray, float]:
    """Video frame times and frames (BGR), audio as float32 16 kHz mono, and the audio's start time."""
    times, frames, audio, audio_start = [], [], [], None
    with av.open(io.BytesIO(data), format="mp4") as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                times.append(float(frame.time))
                frames.append(frame.to_ndarray(format="bgr24"))
            else:
                if audio_start is None:
                    audio_start = float(frame.time)
                for out in resampler.resample(frame):
                    audio.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            audio.append(out.to_ndarray().reshape(-1))
    return times, frames, np.concatenate(audio) if audio else np.zeros(0, np.float32), audio_start or 0.0


def best_lag(signal: np.ndarray, reference: np.ndarray, around: int, radius: int) -> int:
    """The offset (samples) in [around - radius, around + radius] where ``reference`` best matches ``signal``."""
    best, best_score = around, -np.inf
    ref = reference / (np.linalg.norm(reference) + 1e-9)
    for lag in range(max(0, around - radius), around + radius + 1):
        piece = signal[lag : lag + len(reference)]
        if len(piece) < len(reference):
            break
        score = float(np.dot(piece, ref) / (np.linalg.norm(piece) + 1e-9))
        if score > best_score:
            best, best_score = lag, score
    return best
