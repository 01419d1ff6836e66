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

import numpy as np

from wav2lip.avatar import Avatar
from wav2lip.hparams import SAMPLE_RATE
from wav2lip.live_audio import PcmResampler, TimelineAudio, frame_sample
from wav2lip.live_encode import FragmentEncoder
from wav2lip.paste import paste_faces

from .broadcast import Broadcast, Fragment
from .records import LiveFrames, SessionSpec
from .speech_input import LiveSettings, SpeechInput
from .speech_queue import SpeechQueue

log = logging.getLogger("ray.serve")
_NO_VIEWER_POLL_S = 0.02  #: how often a session without viewers looks for one
_RENDER_TIMES_KEPT = 100  #: fragments the stats' render-time figures cover


class LiveSession(SpeechInput):
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
        encoded = await asyncio.to_thread(self.encoder.encode_fragment, frames, pcm, a)
        for event in self._later:
            await self.broadcast.publish(event)
        raw = frames if self.broadcast.frames_viewers else None  # kept only for frames viewers and VP8 peers
        await self.broadcast.publish(Fragment(a, encoded.media, raw, pcm, self.fps, self.settings.jpeg_quality,
                                              encoded.video, encoded.audio))  # fmt: skip
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
