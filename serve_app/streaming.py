"""Progressive streams: a short first chunk, a bounded window of chunks in flight, and
fragments published strictly in order while the rest renders.

``open`` validates the request and answers at once; the render then runs as a task on
this replica and publishes each chunk's CMAF fragment to the ``StreamRegistry`` (which
every replica reads). The audio is encoded to AAC once and each chunk gets its slice.
When the last fragment is out, the fragments are remuxed (stream copy) into the final
MP4, cached under the stream's id: the same frames the viewers saw.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from dataclasses import asdict

import numpy as np
import ray

from actors.lipsync import ChunkJob
from wav2lip import cmaf
from wav2lip.audio import frame_count, load_audio, melspectrogram
from wav2lip.errors import InvalidSettings
from wav2lip.storage import content_key

from .generation import VideoGenerator, _Render, watch
from .planner import plan_stream_chunks
from .schemas import VideoRequest

log = logging.getLogger("ray.serve")
_STREAM_VERSION = 1  #: bump when the fragments for the same inputs change


class StreamService:
    def __init__(self, gen: VideoGenerator, streams):
        self.gen = gen
        self.settings = gen.settings
        self.streams = streams
        self._tasks: set[asyncio.Task] = set()

    async def open(self, req: VideoRequest) -> dict:
        """The stream's record; an identical stream already running or done is shared, not re-rendered."""
        t_start = time.perf_counter()
        gen = self.gen
        req, persona = gen.prepare(req)
        if req.lossless:
            raise InvalidSettings("streams are H.264 + AAC; lossless output is for whole videos only")
        enc, opts = gen._settings_of(req)
        voice, rate = (req.voice or persona.voice, req.rate or persona.rate) if req.text is not None else (None, None)
        chunk_s = req.chunk_duration or self.settings.stream_chunk_duration_s
        info = await gen.info()
        speech = [req.text, voice, rate] if req.text is not None else hashlib.sha256(req.audio).hexdigest()
        avatar = hashlib.sha256(req.avatar).hexdigest() if req.avatar is not None else req.avatar_id
        stream_id = content_key(
            "stream", _STREAM_VERSION, speech, avatar, asdict(opts), req.fps, req.loop, asdict(enc), chunk_s,
            self.settings.stream_first_chunk_frames, info["model_id"], info["renderer"], info["precision"],
        )  # fmt: skip
        opened = await self.streams.open.remote(stream_id)
        if opened["attached"]:
            gen.metrics.streams.inc(tags={"outcome": "attached"})
            return opened["record"]
        try:
            gen._admit()
            samples = None
            if req.text is None:
                samples = await asyncio.to_thread(load_audio, req.audio, self.settings.max_audio_s)
            else:
                await gen.tts.is_cached.remote(req.text, voice, rate)  # validates text and voice now, not later
            render = await gen._start(req, enc, opts, t_start)
        except BaseException:
            await self.streams.discard.remote(stream_id)
            raise
        render.chunk_s = chunk_s
        task = asyncio.create_task(self._run(stream_id, render, samples, voice, rate))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return opened["record"]

    async def _run(self, stream_id: str, r: _Render, samples: np.ndarray | None, voice, rate) -> None:
        """Render, watching for a cancel request made through any replica; record the outcome."""
        with self.gen.busy():
            work = asyncio.create_task(self._render(stream_id, r, samples, voice, rate))
            outcome, value = await watch(work, self.settings.job_poll_s,
                                         lambda: self.streams.cancel_requested.remote(stream_id))  # fmt: skip
        if outcome == "failed":
            log.warning("stream %s failed: %s", stream_id, value["message"])
        final = "complete" if outcome == "succeeded" else outcome
        self.gen.metrics.streams.inc(tags={"outcome": final})
        await self.streams.finish.remote(stream_id, final,
                                         stats=value if outcome == "succeeded" else None,
                                         error=value if outcome == "failed" else None)  # fmt: skip

    async def _render(self, stream_id: str, r: _Render, samples: np.ndarray | None, voice, rate) -> dict:
        gen, settings = self.gen, self.settings
        if samples is None:
            t = time.perf_counter()
            speech = await gen.tts.speech.remote(r.req.text, voice, rate)
            samples = np.frombuffer(await speech["ref"][0], np.float32)
            r.stages["tts"] = time.perf_counter() - t
        t = time.perf_counter()
        mel, aac = await asyncio.gather(asyncio.to_thread(melspectrogram, samples),
                                        asyncio.to_thread(cmaf.encode_aac, samples, r.enc.audio_bitrate))  # fmt: skip
        r.stages["mel"] = time.perf_counter() - t
        n_frames = r.frames_total = frame_count(len(samples), r.fps)
        plan = plan_stream_chunks(n_frames, r.fps, settings.stream_first_chunk_frames, r.chunk_s,
                                  cmaf.aligned_frames(r.fps), settings.max_chunks)  # fmt: skip
        await self.streams.plan.remote(stream_id, [(b - a) / r.fps for a, b in plan])
        mel_ref = [ray.put(mel)]

        def start(index: int) -> tuple[int, asyncio.Future]:
            a, b = plan[index]
            first = cmaf.aac_frame_at(a / r.fps)
            last = cmaf.aac_frame_at(b / r.fps) if b < n_frames else len(aac)
            job = ChunkJob(r.request_id, index, a, b, r.fps, r.req.loop, r.enc, r.variant["key"], r.variant["ref"],
                           mel_ref, audio=b"".join(aac[first:last]))  # fmt: skip
            return first, asyncio.ensure_future(gen._render_with_retries(job, r))

        t_video = time.perf_counter()
        window: deque[tuple[int, asyncio.Future]] = deque()
        init, fragments, retries, nodes = None, [], 0, set()
        try:
            for index, (a, _) in enumerate(plan):
                while len(window) < settings.stream_window and index + len(window) < len(plan):
                    window.append(start(index + len(window)))
                audio_frame, task = window.popleft()
                result, tries = await task  # in order: later chunks may finish first and wait their turn
                chunk_init, media = await asyncio.to_thread(cmaf.package, result.segment, index, a / r.fps, audio_frame)
                if init is None:
                    init = chunk_init
                else:
                    cmaf.check_compatible(init, chunk_init)
                await self.streams.publish.remote(stream_id, index, media, chunk_init if index == 0 else None)
                if index == 0:
                    r.stages["first_fragment"] = time.perf_counter() - r.t_start
                    gen.metrics.first_fragment_seconds.observe(r.stages["first_fragment"])
                fragments.append(media)
                retries += tries
                nodes.add(result.node_id)
        except BaseException:
            for _, task in window:
                task.cancel()
            raise
        r.stages["render"] = time.perf_counter() - t_video
        t = time.perf_counter()
        video = await asyncio.to_thread(cmaf.remux_mp4, init, fragments)
        r.stages["combine"] = time.perf_counter() - t
        record = {"chunks": len(plan), "nodes": sorted(nodes), "n_frames": n_frames, "fps": r.fps}
        await gen.results.put.remote(stream_id, video, record)
        response = gen._response(r, stream_id, n_frames, len(plan), retries, False, sorted(nodes))
        log.info("stream %s: %d fragments, first after %.2f s, all after %.2f s", stream_id, len(plan),
                 r.stages["first_fragment"], response.stats.total_processing_time)  # fmt: skip
        return response.stats.model_dump()
