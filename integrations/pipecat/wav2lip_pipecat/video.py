"""Wav2Lip live-session avatar for Pipecat: TTS audio in, the lip-synced face and its audio out.

The service opens one live session (``output=frames``) when the pipeline starts. TTS audio goes
into the session instead of downstream; what comes back is one JPEG and the PCM it owns per
video frame, pushed as an image and its audio so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from loguru import logger

from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.services.ai_service import AIService
from pipecat.services.settings import ServiceSettings
from pipecat.utils.errors import ErrorCategory
from wav2lip_client import AsyncClient, AsyncSession, Disconnected, Event, ServiceError
from wav2lip_client import Frame as SessionFrame

from .media import AvatarFrame, Pacer, avatar_frame, rgb_of, to_mono
from .params import Wav2LipParams, socket_rate

DEFAULT_BASE_URL = "http://localhost:8000"
_ENDED = ("speech_ended", "interrupted")  #: events after which later frames are idle


@dataclass
class Wav2LipVideoSettings(ServiceSettings):
    """Settings for the Wav2Lip video service (none change at run time: a session is fixed)."""


class Wav2LipVideoService(AIService):
    """An avatar for a Pipecat bot: a live session on the Wav2Lip service.

    Place it after the TTS service. ``TTSAudioRawFrame`` goes to the session (not downstream);
    ``TTSStoppedFrame`` is ``end_of_speech``; ``InterruptionFrame`` is ``interrupt`` and drops
    the frames not yet pushed. Each returned frame becomes an ``OutputImageRawFrame`` (RGB,
    ``sync_with_audio``) followed by the ``SpeechOutputAudioRawFrame`` it owns.
    """

    Settings = Wav2LipVideoSettings
    Params = Wav2LipParams
    _settings: Settings

    def __init__(self, *, base_url: str = DEFAULT_BASE_URL, api_key: str | None = None,
                 avatar_id: str | None = None, agent_type: str | None = None, voice: str | None = None,
                 preset: str | None = None, fps: float | None = None, params: Wav2LipParams | None = None,
                 settings: Settings | None = None, **kwargs):  # fmt: skip
        """Args: ``base_url`` and ``api_key`` of the service; ``avatar_id`` or ``agent_type`` (a
        persona from its ``agents.yaml``), optional ``voice``, ``preset``, ``fps`` of the session;
        ``params`` for pacing, idle frames and timeouts (``Wav2LipVideoService.Params``)."""
        default_settings = Wav2LipVideoSettings(model=None)
        if settings is not None:
            default_settings.apply_update(settings)
        super().__init__(settings=default_settings, **kwargs)
        self._base_url, self._api_key = base_url, api_key
        self._session_fields = dict(avatar_id=avatar_id, agent_type=agent_type, voice=voice, preset=preset, fps=fps)
        self._params = params or Wav2LipParams()
        self._pipeline_rate = self._params.sample_rate or 0
        self._client: AsyncClient | None = None
        self._session: AsyncSession | None = None
        self._resampler = create_stream_resampler(clear_after_secs=None)  # flushed per utterance instead
        self._pacer = Pacer(self._params.max_lag_s)
        self._out: asyncio.Queue[tuple[int, AvatarFrame]] = asyncio.Queue()
        self._epoch = 0  #: bumped by each interruption: frames read before it are never pushed
        self._tasks: list[asyncio.Task] = []
        self._closing = False
        self._speaking = False  #: the frames arriving now are speech
        self._speech_until: float | None = None  #: session time from which frames are idle again
        self._speech_end = -math.inf  #: where the last utterance ended (kept: the drain waits for it)
        self._interrupting = False  #: interrupt sent; mute speech until the session confirms
        self._utterance_open = False  #: audio sent since the last end_of_speech
        self._unspoken = False  #: audio sent that the session has not finished speaking
        self._spoken = asyncio.Event()
        self._last_pts = -math.inf  #: the newest frame the push task has handled
        self._awaiting_first_frame = False

    # ---- what the session said ----------------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        return self._session.session_id if self._session else None

    @property
    def ready(self) -> dict | None:
        """The session's ``ready`` event (``fps``, ``width``, ``height``, ``sample_rate``, ...)."""
        return self._session.ready if self._session else None

    def can_generate_metrics(self) -> bool:
        return True

    # ---- lifecycle ------------------------------------------------------------------------------
    async def setup(self, setup: FrameProcessorSetup):
        await super().setup(setup)
        self._pipeline_rate = setup.audio_out_sample_rate

    async def start(self, frame: StartFrame):
        await super().start(frame)
        await self._open()

    async def stop(self, frame: EndFrame):
        await super().stop(frame)
        await self._drain()
        await self._close()

    async def cancel(self, frame: CancelFrame):
        await super().cancel(frame)
        await self._close()

    async def cleanup(self):
        await super().cleanup()
        await self._close()

    async def _open(self) -> None:
        rate = socket_rate(self._params.sample_rate, self._pipeline_rate)
        self._client = AsyncClient(self._base_url, api_key=self._api_key, timeout=self._params.request_timeout_s,
                                   ws_open_timeout=self._params.open_timeout_s)  # fmt: skip
        try:
            self._session = await self._client.session(**self._session_fields, output="frames", sample_rate=rate)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the service without a session
            await self.push_error(f"{self}: could not open a Wav2Lip session: {exc}", exception=exc,
                                  force_treat_as_permanent=True)  # fmt: skip
            return
        logger.info(f"{self}: session {self.session_id} open ({rate} Hz in, {self.ready})")

    def _start_tasks(self) -> None:
        """Receive and push only once ``StartFrame`` is downstream (nothing may precede it)."""
        if self._session is not None and not self._tasks:
            self._tasks = [self.create_task(self._receive(), "receive"), self.create_task(self._push(), "push")]

    async def _drain(self) -> None:
        """Let the session finish what it was given (``EndFrame`` is graceful), within a timeout."""
        if self._session is None or not self._tasks:
            return
        try:
            await asyncio.wait_for(self._spoken_and_pushed(), self._params.drain_timeout_s)
        except asyncio.TimeoutError:
            logger.warning(f"{self}: speech not finished after {self._params.drain_timeout_s} s; closing")
        except (Disconnected, ServiceError) as exc:
            logger.warning(f"{self}: session gone while draining: {exc}")

    async def _spoken_and_pushed(self) -> None:
        await self._end_of_speech()
        while True:  # an utterance ended after our end_of_speech, and nothing is queued behind it
            self._spoken.clear()
            status = await self._session.status()
            if not self._unspoken and status.state != "speaking" and status.queue_s == 0:
                break
            await self._spoken.wait()
        while self._last_pts < self._speech_end:  # the frames up to the end of speech are pushed
            await asyncio.sleep(1 / float((self.ready or {}).get("fps") or 25))

    async def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        for task in self._tasks:
            await self.cancel_task(task)
        self._tasks = []
        if self._session is not None:
            try:
                await self._session.close(timeout=self._params.close_timeout_s)
            except Exception as exc:  # noqa: BLE001 - closing: the session ends on its idle timeout anyway
                logger.warning(f"{self}: closing session {self.session_id}: {exc}")
            logger.info(f"{self}: session {self.session_id} closed")
        if self._client is not None:
            await self._client.close()

    # ---- frames from the pipeline ---------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            await self._send_audio(frame)  # the session returns it, aligned with the video
        elif isinstance(frame, TTSStartedFrame):
            await self.start_ttfb_metrics()
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSStoppedFrame):
            await self._end_of_speech()
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt()
            await self.push_frame(frame, direction)
        elif isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._start_tasks()
        else:
            await self.push_frame(frame, direction)

    async def _send_audio(self, frame: TTSAudioRawFrame) -> None:
        if self._session is None or self._closing:
            return
        rate = self._session.sample_rate
        pcm = to_mono(frame.audio, frame.num_channels)
        if frame.sample_rate != rate:
            pcm = await self._resampler.resample(pcm, frame.sample_rate, rate)
        if not pcm:
            return
        self._utterance_open = self._unspoken = self._awaiting_first_frame = True
        await self._send(self._session.send_audio(pcm))

    async def _end_of_speech(self) -> None:
        if self._session is not None and self._utterance_open and not self._closing:
            self._utterance_open = False
            tail = await self._resampler.flush()  # the filter's last milliseconds of this utterance
            if tail:
                await self._send(self._session.send_audio(tail))
            await self._send(self._session.end_of_speech())

    async def _interrupt(self) -> None:
        while not self._out.empty():  # frames not pushed yet belong to the interrupted speech
            self._out.get_nowait()
        self._epoch += 1
        self._pacer.reset()
        await self._resampler.reset()  # its filter tail is the dropped speech
        self._utterance_open = self._awaiting_first_frame = False
        if self._session is not None and not self._closing:
            self._interrupting = True
            await self._send(self._session.interrupt())

    async def _send(self, sending) -> None:
        try:
            await sending
        except Disconnected as exc:
            await self.push_error(f"{self}: the session socket closed: {exc}", exception=exc,
                                  category=ErrorCategory.CONNECTIVITY)  # fmt: skip

    # ---- frames from the session ----------------------------------------------------------------
    async def _receive(self) -> None:
        async for item in self._session:
            if isinstance(item, Event):
                await self._on_event(item)
            elif isinstance(item, SessionFrame):
                epoch, speech, muted = self._epoch, self._is_speech(item.pts), self._interrupting
                rgb = await asyncio.to_thread(rgb_of, item.jpeg)
                await self._out.put((epoch, avatar_frame(item, rgb, speech, speech and muted)))
        if not self._closing:
            code, reason = self._session.close_code, self._session.close_reason
            await self.push_error(f"{self}: the session socket closed ({code} {reason})",
                                  category=ErrorCategory.CONNECTIVITY)  # fmt: skip

    def _is_speech(self, pts: float) -> bool:
        if self._speech_until is not None and pts >= self._speech_until:
            self._speaking, self._speech_until = False, None
        return self._speaking

    async def _on_event(self, event: Event) -> None:
        if event.type == "speech_started":
            self._speaking, self._speech_until, self._interrupting = True, None, False
        elif event.type in _ENDED:
            self._speech_until = self._speech_end = event.pts if event.pts is not None else -math.inf
            self._interrupting = False
            if not self._utterance_open:  # everything we sent was before this end
                self._unspoken = False
                self._spoken.set()
        elif event.type == "error":
            category = ErrorCategory.RATE_LIMIT if event.code == "input_too_fast" else ErrorCategory.SERVER
            await self.push_error(f"{self}: session error {event.code}: {event.message}", category=category)
        elif event.type == "behind":
            logger.warning(f"{self}: the session fell behind real time by {event.data.get('lag_s')} s")

    async def _push(self) -> None:
        while True:
            epoch, frame = await self._out.get()
            if self._params.pace:
                await self._pacer.wait(frame.pts)
            if epoch != self._epoch:  # read, or waiting here, when an interruption came
                continue
            if frame.speech or self._params.idle_frames:
                if frame.speech and self._awaiting_first_frame:
                    self._awaiting_first_frame = False
                    await self.stop_ttfb_metrics()
                await self.push_frame(frame.image)
                await self.push_frame(frame.audio)
            self._last_pts = frame.pts
