"""Speech waiting to be played in a live session: a bounded, rate-limited FIFO of samples.

Input is accepted while a token bucket allows it: the bucket holds ``max_queue_s`` seconds
and refills at ``max_rate`` seconds per second, so a TTS burst goes through but input
faster than ``max_rate`` x real time, sustained, is dropped (the session answers
``input_too_fast``). Nothing beyond ``max_queue_s`` is ever queued.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from wav2lip.hparams import SAMPLE_RATE


class SpeechQueue:
    def __init__(self, max_queue_s: float, max_rate: float, clock=time.monotonic):
        self._parts: deque[np.ndarray] = deque()
        self.queued = 0  #: samples waiting
        self._capacity = max_queue_s * SAMPLE_RATE
        self._rate = max_rate * SAMPLE_RATE
        self._tokens = self._capacity
        self._clock = clock
        self._at = clock()
        self.last_input_at = float("-inf")
        self.ended = False  #: the speaker said what is queued is all (end_of_speech, or a text fully spoken)

    @property
    def seconds(self) -> float:
        return self.queued / SAMPLE_RATE

    @property
    def room(self) -> int:
        """Samples that may still be queued."""
        return int(self._capacity - self.queued)

    def push(self, samples: np.ndarray, limited: bool = True) -> int:
        """Queue what the limits allow (``limited``: client audio counts against the rate);
        returns the samples dropped."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        self.last_input_at = now
        room = int(min(self._tokens if limited else len(samples), self._capacity - self.queued))
        kept = samples[: max(0, room)]
        if len(kept):
            self._parts.append(np.asarray(kept, np.float32))
            self.queued += len(kept)
            if limited:
                self._tokens -= len(kept)
            self.ended = False
        return len(samples) - len(kept)

    def end(self) -> None:
        self.ended = True

    def clear(self) -> int:
        """Drop everything queued (an interruption); returns the samples dropped."""
        dropped, self.queued = self.queued, 0
        self._parts.clear()
        self.ended = False
        return dropped

    def peek(self, n: int) -> np.ndarray:
        """Up to ``n`` samples from the front, left queued."""
        out, need = [], n
        for part in self._parts:
            if need <= 0:
                break
            out.append(part[:need])
            need -= len(out[-1])
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def take(self, n: int) -> np.ndarray:
        """Up to ``n`` samples from the front, removed."""
        out, need = [], n
        while need > 0 and self._parts:
            part = self._parts[0]
            if len(part) <= need:
                out.append(self._parts.popleft())
            else:
                out.append(part[:need])
                self._parts[0] = part[need:]
            need -= len(out[-1])
        taken = np.concatenate(out) if out else np.zeros(0, np.float32)
        self.queued -= len(taken)
        return taken
