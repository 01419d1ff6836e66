"""What a live session's speaker sends, applied in order: PCM, texts, end of speech, interrupt.

Client audio is resampled onto the session's 16 kHz timeline and queued under the
``SpeechQueue``'s limits; texts are spoken by the TTS deployment sentence by sentence,
in order with whatever followed them; an interruption drops everything queued and makes
the next fragment idle. The real-time loop that plays the queue is ``LiveSession``
(``actors/live_session.py``), which inherits this.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np

from wav2lip.errors import InputError, Wav2LipError
from wav2lip.hparams import SAMPLE_RATE
from wav2lip.live_audio import PcmResampler

log = logging.getLogger("ray.serve")
_ROOM_POLL_S = 0.05  #: how often a text's speech waits for room in a full queue
_RESAMPLERS_KEPT = 4  #: client sample rates whose resampler state is kept (one per socket, usually)


@dataclass(frozen=True)
class LiveSettings:
    """How every session runs (from the service settings: ``session_*``)."""

    fragment_frames: int = 5
    lead_s: float = 0.2
    lookahead_wait_s: float = 0.1
    max_queue_s: float = 30.0
    max_input_rate: float = 2.0
    max_pending_texts: int = 8
    behind_after_s: float = 0.5
    stats_every_s: float = 2.0
    jpeg_quality: int = 80
    crf: int = 28
    x264_preset: str = "ultrafast"
    audio_bitrate: int = 32000
    render_attempts: int = 3
    render_timeout_s: float = 2.0
    keep_fragments: int = 16


class InputTooFast(InputError):
    """Input arrived faster than the session may queue it; the excess was dropped."""

    code = "input_too_fast"


class SpeechInput:
    """The input half of a ``LiveSession`` (its attributes are set by ``LiveSession.__init__``)."""

    async def input(self, items: list[tuple], sample_rate: int) -> list[dict]:
        """Apply the client's messages in order; the error events for the sender (the session lives on)."""
        errors = []
        self.last_input_at = self.clock()
        for kind, *value in items:
            if self.closed:
                break
            try:
                if kind == "audio":
                    samples = self._resampler(sample_rate).push(value[0])
                    self._after_texts(("samples", samples)) or self._push(samples)
                elif kind == "text":
                    await self._queue_text(value[0])
                elif kind == "end_of_speech":
                    self._after_texts(("end",)) or self.queue.end()
                elif kind == "interrupt":
                    await self.interrupt()
                elif kind == "close":
                    await self.close()
            except Wav2LipError as exc:
                errors.append(self._event("error", code=exc.code, message=exc.message))
            except Exception as exc:  # noqa: BLE001 - e.g. the TTS replica lost: this message fails, not the socket
                log.warning("session %s: %s message failed: %s", self.id, kind, exc)
                errors.append(self._event("error", code="input_failed", message=f"{kind}: {type(exc).__name__}"))
        return errors

    def _resampler(self, rate: int) -> PcmResampler:
        if rate not in self._resamplers:
            while len(self._resamplers) >= _RESAMPLERS_KEPT:
                self._resamplers.pop(next(iter(self._resamplers)))
            self._resamplers[rate] = PcmResampler(rate)
        return self._resamplers[rate]

    def _push(self, samples: np.ndarray, limited: bool = True) -> None:
        dropped = self.queue.push(samples, limited)
        if dropped:
            self.counts["dropped_s"] += dropped / SAMPLE_RATE
            raise InputTooFast(f"{dropped / SAMPLE_RATE:.2f} s of audio dropped: input faster than "
                               f"{self.settings.max_input_rate:g}x real time, or over "
                               f"{self.settings.max_queue_s:g} s queued")  # fmt: skip

    def _after_texts(self, item: tuple) -> bool:
        """Queue ``item`` behind texts still being spoken (order kept); False when none are."""
        if self._pending.empty() and not self._speaking_text:
            return False
        if item[0] == "samples":
            if self._samples_waiting + len(item[1]) > self.queue.room:
                raise InputTooFast(f"{len(item[1]) / SAMPLE_RATE:.2f} s of audio dropped: over "
                                   f"{self.settings.max_queue_s:g} s waiting behind texts")  # fmt: skip
            self._samples_waiting += len(item[1])
        self._pending.put_nowait(item)
        return True

    async def _queue_text(self, text: str) -> None:
        if self._texts_waiting >= self.settings.max_pending_texts:
            raise InputTooFast(f"{self._texts_waiting} texts are waiting to be spoken; this one was dropped")
        await self.tts.validate.remote(text, self.spec.voice, self.spec.rate)  # empty, too long: error at once
        self._texts_waiting += 1
        self._pending.put_nowait(("text", text))

    async def _speak_pending(self) -> None:
        """Speak queued texts sentence by sentence as TTS makes them (and apply what followed each)."""
        while True:
            kind, *value = await self._pending.get()
            try:
                if kind == "text":
                    self._texts_waiting -= 1
                    self._speaking_text = True
                    await self._speak(value[0])
                elif kind == "samples":
                    self._samples_waiting -= len(value[0])
                    self._push(value[0])
                else:
                    self.queue.end()
            except Wav2LipError as exc:
                await self.broadcast.publish(self._event("error", code=exc.code, message=exc.message))
            except Exception as exc:  # noqa: BLE001 - TTS replica lost: say so, keep the session
                await self.broadcast.publish(self._event("error", code="tts_failed", message=str(exc)[:300]))
            finally:
                self._speaking_text = not self._pending.empty()

    async def _speak(self, text: str) -> None:
        """One text's speech, sentence by sentence; a full queue makes TTS wait, never drops speech."""
        stream = self.tts.options(stream=True).stream.remote(text, self.spec.voice, self.spec.rate)
        try:
            async for part in stream:
                while len(part) > self.queue.room:
                    await asyncio.sleep(_ROOM_POLL_S)
                self._push(part, limited=False)
            self.queue.end()
        finally:
            stream.cancel()  # interrupted (or failed): the TTS replica stops synthesising for nobody

    async def interrupt(self) -> None:
        """Stop speaking now: queued speech and texts not yet spoken are dropped."""
        if self.closed:
            return
        waiting = self.speaking or self._speaking_text or not self._pending.empty() or self.queue.queued
        self._pump.cancel()
        self._pending = asyncio.Queue()
        self._speaking_text = False
        self._texts_waiting = self._samples_waiting = 0
        self._pump = asyncio.create_task(self._speak_pending())
        self.queue.clear()
        self._resamplers.clear()  # their filter tails belong to the dropped speech
        if waiting:
            self.counts["interruptions"] += 1
            self._interrupted = True  # said just before the next fragment, which is idle
