"""One live session: a real-time loop that renders the session's timeline fragment by fragment.

The timeline never stops while someone watches: each fragment of ``fragment_frames``
frames is speech when speech is queued and silence otherwise, rendered ``lead_s`` before
it is due and published to the viewers (``Broadcast``). Video and audio come from one
timeline (frame f owns samples [f * 16000 / fps, (f + 1) * 16000 / fps)), so they cannot
drift however long the session lives. An utterance starts once its first fragment and
the model's look-ahead are queued (or the speaker has finished, or paused), so speech
streamed at real time plays without gaps; an interruption drops what is queued and the
next fragment is idle. Frames go to the worker pool one fragment per call; with many
sessions the pool batches them into one model call. A worker that fails is retried on
another; if every attempt fails the fragment shows the avatar unsynced, the session lives.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from wav2lip.avatar import Avatar
from wav2lip.errors import InputError, Wav2LipError
from wav2lip.hparams import SAMPLE_RATE
from wav2lip.live_audio import PcmResampler, TimelineAudio, frame_sample
from wav2lip.live_encode import FragmentEncoder
from wav2lip.paste import paste_faces

from .broadcast import Broadcast, Fragment
from .records import LiveFrames, SessionSpec
from .speech_queue import SpeechQueue

log = logging.getLogger("ray.serve")
_NO_VIEWER_POLL_S = 0.02  #: how often a session without viewers looks for one
_RENDER_TIMES_KEPT = 100  #: fragments the stats' render-time figures cover
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


class LiveSession:
    def __init__(self, session_id: str, spec: SessionSpec, avatar: Avatar, settings: LiveSettings, worker, tts,
                 clock=time.monotonic):  # fmt: skip
        self.id, self.spec, self.avatar, self.settings = session_id, spec, avatar, settings
        self.worker, self.tts, self.clock = worker, tts, clock
        self.fps = spec.fps
        self.height, self.width = avatar.height // 2 * 2, avatar.width // 2 * 2  # H.264 4:2:0 wants even sides
        self.encoder = FragmentEncoder(self.width, self.height, self.fps, crf=settings.crf,
                                       preset=settings.x264_preset, audio_bitrate=settings.audio_bitrate)  # fmt: skip
        self.broadcast = Broadcast(self.encoder.init, settings.keep_fragments)
        self.queue = SpeechQueue(settings.max_queue_s, settings.max_input_rate, clock)
        self.timeline = TimelineAudio()
        self.frame = 0  #: the next frame to render
        self.speaking = False
        self.spoken_samples = 0
        self.closed = False
        self.created_at = self.last_input_at = clock()
        self.counts = {"fragments": 0, "behind": 0, "render_failures": 0, "interruptions": 0, "dropped_s": 0.0}
        self._render_ms: deque[float] = deque(maxlen=_RENDER_TIMES_KEPT)
        self._resamplers: dict[int, PcmResampler] = {}
        self._pending: asyncio.Queue = asyncio.Queue()  #: texts (and what follows them), spoken in order
        self._t0: float | None = None  #: when frame 0 was due (re-anchored after a pause or a stall)
        self._speaking_text = False  #: a text is being synthesised (its speech is still arriving)
        self._texts_waiting = 0  #: texts queued in ``_pending``, not yet being spoken
        self._samples_waiting = 0  #: client audio queued in ``_pending`` behind texts
        self._interrupted = False  #: the next fragment starts with an ``interrupted`` event
        self._later: list[dict] = []  #: events about the fragment being rendered
        self._stats_at = clock()
        self._pump = asyncio.create_task(self._speak_pending())
        self._loop = asyncio.create_task(self._run())

    # ---- input -------------------------------------------------------------------------
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

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._pump.cancel()
            self._loop.cancel()
            await self.broadcast.close()
            self.encoder.close()

    # ---- the real-time loop ------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while not self.closed:
                if self.broadcast.viewers == 0:
                    self._t0 = None  # nobody watching: the timeline waits (speech stays queued)
                    await asyncio.sleep(_NO_VIEWER_POLL_S)
                    continue
                now = self.clock()
                if self._t0 is None:
                    self._t0 = self._aligned(now - self.frame / self.fps)
                due = self._t0 + self.frame / self.fps
                if due - self.settings.lead_s > now:
                    await asyncio.sleep(due - self.settings.lead_s - now)
                await self._fragment(due)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # our bug: end the session visibly rather than freeze it
            log.exception("session %s failed", self.id)
            await self.broadcast.publish(self._event("error", code="session_failed", message=str(exc)[:300]))
            await self.close()

    def _aligned(self, t0: float) -> float:
        """``t0`` moved forward onto the host's fragment grid: sessions at one rate then send their
        fragments to the workers at the same moments, so the workers can batch them together."""
        period = self.settings.fragment_frames / self.fps
        return -(-t0 // period) * period

    def _speech(self, a: int, b: int) -> np.ndarray:
        """The fragment's samples: queued speech once an utterance may start, else silence."""
        need = frame_sample(b, self.fps) - frame_sample(a, self.fps)
        ahead = self.timeline.samples_needed(self.fps, b) - frame_sample(b, self.fps)
        quiet = self.clock() - self.queue.last_input_at >= self.settings.lookahead_wait_s and not self._speaking_text
        if self._interrupted:  # the fragment in flight when it came kept its speech; this one is idle
            self._interrupted = self.speaking = False
            self._publish_later(self._event("interrupted", pts=a / self.fps))
        if not self.speaking and self.queue.queued and (self.queue.queued >= need + ahead or self.queue.ended or quiet):
            self.speaking = True
            self._publish_later(self._event("speech_started", pts=a / self.fps))
        samples = self.queue.take(need) if self.speaking else np.zeros(0, np.float32)
        self.spoken_samples += len(samples)
        if self.speaking and not self.queue.queued and (self.queue.ended or quiet):
            self.speaking = False
            self._publish_later(self._event("speech_ended", pts=(frame_sample(a, self.fps) + len(samples)) / SAMPLE_RATE))
        return np.concatenate([samples, np.zeros(need - len(samples), np.float32)])

    async def _fragment(self, due: float) -> None:
        t0 = self.clock()
        a, b = self.frame, self.frame + self.settings.fragment_frames
        self._later: list[dict] = []
        pcm = self._speech(a, b)
        self.timeline.extend(pcm)
        need = self.timeline.samples_needed(self.fps, b) - self.timeline.end
        ahead = self.queue.peek(need) if self.speaking else np.zeros(0, np.float32)
        ahead = np.concatenate([ahead, np.zeros(max(0, need - len(ahead)), np.float32)])
        idx = self.avatar.frame_indices(a, b, "pingpong")
        frames = self.avatar.frames[idx]
        if self.avatar.n_frames == 1 or self.spec.idle_through_model or pcm.any() or ahead.any():
            windows = self.timeline.mel_windows(self.fps, a, b, ahead=ahead)
            faces = await self._predict(LiveFrames(self.avatar.crops[idx], windows, np.arange(a, b, dtype=np.int64)))
            if faces is not None:
                paste_faces(frames, self.avatar.boxes[idx], faces)
        frames = np.ascontiguousarray(frames[:, : self.height, : self.width])
        media = await asyncio.to_thread(self.encoder.encode, frames, pcm, a)
        for event in self._later:
            await self.broadcast.publish(event)
        raw = frames if self.broadcast.frames_viewers else None  # raw frames are kept only for the frames output
        await self.broadcast.publish(Fragment(a, media, raw, pcm, self.fps, self.settings.jpeg_quality))
        self.frame = b
        self.timeline.trim(self.timeline.keep_from(self.fps, b))
        self.counts["fragments"] += 1
        self._render_ms.append((self.clock() - t0) * 1000)
        await self._keep_time(due)

    def _publish_later(self, event: dict) -> None:
        """Events that describe a fragment go out just before it."""
        self._later.append(event)

    async def _predict(self, item: LiveFrames) -> np.ndarray | None:
        """The worker's faces, retried (another replica when one fails); None when every attempt failed."""
        last = None
        for _ in range(self.settings.render_attempts):
            response = self.worker.render_live.remote(item)
            try:
                return await asyncio.wait_for(response, self.settings.render_timeout_s)
            except asyncio.CancelledError:
                response.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - replica died or timed out: try again
                response.cancel()
                last = exc
        self.counts["render_failures"] += 1
        log.warning("session %s: fragment at frame %d unsynced: %s", self.id, item.positions[0], last)
        await self.broadcast.publish(self._event("error", code="render_failed",
                                                 message=f"a fragment could not be lip-synced: {type(last).__name__}"))  # fmt: skip
        return None

    async def _keep_time(self, due: float) -> None:
        now = self.clock()
        late = now - due
        if late > self.settings.behind_after_s:
            self.counts["behind"] += 1
            self._t0 = self._aligned(now - self.frame / self.fps)  # re-anchor: never race to catch up
            await self.broadcast.publish(self._event("behind", lag_s=round(late, 3)))
        if now - self._stats_at >= self.settings.stats_every_s:
            self._stats_at = now
            await self.broadcast.publish(self._event("stats", **self.stats()))

    # ---- what is said about it ---------------------------------------------------------
    def _event(self, kind: str, pts: float | None = None, **fields) -> dict:
        return {"type": kind, "pts": round(self.frame / self.fps if pts is None else pts, 4), **fields}

    def stats(self) -> dict:
        times = list(self._render_ms)
        return {"frames": self.frame, "fragments": self.counts["fragments"], "behind": self.counts["behind"],
                "render_failures": self.counts["render_failures"], "interruptions": self.counts["interruptions"],
                "dropped_s": round(self.counts["dropped_s"], 3), "queue_s": round(self.queue.seconds, 3),
                "render_ms_median": round(statistics.median(times), 2) if times else None,
                "render_ms_max": round(max(times), 2) if times else None}  # fmt: skip

    def status(self) -> dict:
        return {"session_id": self.id, "state": "closed" if self.closed else "speaking" if self.speaking else "idle",
                "fps": self.fps, "width": self.width, "height": self.height, "pts": round(self.frame / self.fps, 4),
                "spoken_s": round(self.spoken_samples / SAMPLE_RATE, 3), "queue_s": round(self.queue.seconds, 3),
                "viewers": self.broadcast.viewers, "stats": self.stats()}  # fmt: skip

    def ready(self, output: str) -> dict:
        """The first event a viewer gets: what it will receive."""
        return self._event("ready", session_id=self.id, output=output, codecs=self.encoder.codecs, fps=self.fps,
                           width=self.width, height=self.height, sample_rate=SAMPLE_RATE,
                           fragment_frames=self.settings.fragment_frames)  # fmt: skip
