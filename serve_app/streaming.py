"""Progressive streams: a short first chunk, a bounded window of chunks in flight, and
fragments published strictly in order while the rest renders.

``open`` validates the request and answers at once; the render then runs as a task on
this replica and publishes each chunk's CMAF fragment to the ``StreamRegistry`` (which
every replica reads). The audio is encoded to AAC once, fed as it becomes known, and
each chunk gets its slice; from text, chunks go out while later sentences are still
being synthesised, as soon as their mel windows and AAC frames are final.
When the last fragment is out, the fragments are remuxed (stream copy) into the final
MP4, cached under the stream's id: the same frames the viewers saw.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import asdict

import numpy as np
import ray

from actors.lipsync import ChunkJob
from wav2lip import cmaf
from wav2lip.audio import frame_count, load_audio, melspectrogram
from wav2lip.errors import InvalidSettings, RenderError
from wav2lip.storage import content_key

from .background import Background, watch
from .generation import VideoGenerator, RenderState, final_frames
from .planner import plan_stream_chunks, stream_chunk_frames
from .schemas import VideoRequest

log = logging.getLogger("ray.serve")
_STREAM_VERSION = 1  #: bump when the fragments for the same inputs change
_AAC_CATCH_UP_S = 2.0  #: the AAC encoder runs a few frames behind what it was fed; wait this long at most


class StreamService:
    def __init__(self, gen: VideoGenerator, registry, streams, background: Background):
        """``registry``: the StreamRegistry handle (``open`` is not retried: a lost reply would look
        like someone else's stream); ``streams``: the same, its idempotent calls retried."""
        self.gen = gen
        self.settings = gen.settings
        self.registry = registry
        self.streams = streams
        self.background = background

    async def open(self, req: VideoRequest) -> dict:
        """The stream's record; an identical stream already running or done is shared, not re-rendered."""
        t_start = time.perf_counter()
        gen = self.gen
        req, persona = gen.prepare(req)
        if req.lossless:
            raise InvalidSettings("streams are H.264 + AAC; lossless output is for whole videos only")
        enc, opts = gen.settings_of(req)
        voice, rate = (req.voice or persona.voice, req.rate or persona.rate) if req.text is not None else (None, None)
        chunk_s = req.chunk_duration or self.settings.stream_chunk_duration_s
        info = await gen.info()
        speech = [req.text, voice, rate] if req.text is not None else hashlib.sha256(req.audio).hexdigest()
        avatar = hashlib.sha256(req.avatar).hexdigest() if req.avatar is not None else req.avatar_id
        stream_id = content_key(
            "stream", _STREAM_VERSION, speech, avatar, asdict(opts), req.fps, req.loop, asdict(enc), chunk_s,
            self.settings.stream_first_chunk_frames, info["model_id"], info["renderer"], info["precision"],
        )  # fmt: skip
        opened = await self.registry.open.remote(stream_id)
        if opened["attached"]:
            gen.metrics.streams.inc(tags={"outcome": "attached"})
            return opened["record"]
        try:
            gen.admit()
            samples = None
            if req.text is None:
                samples = await asyncio.to_thread(load_audio, req.audio, self.settings.max_audio_s)
            else:
                await gen.tts.is_cached.remote(req.text, voice, rate)  # validates text and voice now, not later
            render = await gen.start_render(req, enc, opts, t_start)
        except BaseException:
            await self.streams.discard.remote(stream_id)
            raise
        render.chunk_s = chunk_s
        self.background.spawn(self._run(stream_id, render, samples, voice, rate))
        return opened["record"]

    async def _run(self, stream_id: str, r: RenderState, samples: np.ndarray | None, voice, rate) -> None:
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

    async def _speech(self, r: RenderState, samples: np.ndarray | None, voice, rate):
        """The speech as it becomes known: an upload at once, text sentence by sentence."""
        if samples is not None:
            yield samples
            return
        t = time.perf_counter()
        async for part in self.gen.tts.options(stream=True).stream.remote(r.req.text, voice, rate):
            yield part
        r.stages["tts"] = time.perf_counter() - t

    async def _render(self, stream_id: str, r: RenderState, samples: np.ndarray | None, voice, rate) -> dict:
        """Chunks go out as soon as their mel windows and AAC frames are final (text: while
        later sentences are still being synthesised); fragments are published in order."""
        gen, settings = self.gen, self.settings
        grid = cmaf.aligned_frames(r.fps)
        first, per = stream_chunk_frames(r.fps, settings.stream_first_chunk_frames, r.chunk_s, grid)
        await self.streams.start.remote(stream_id, max(first, per + grid - 1) / r.fps)
        aac = cmaf.AacEncoder(r.enc.audio_bitrate)
        slots = asyncio.Semaphore(settings.stream_window)
        queue: asyncio.Queue = asyncio.Queue()
        tasks: list[asyncio.Future] = []

        async def dispatch(index: int, a: int, b: int, aac_stop: int, mel_ref: list) -> None:
            await slots.acquire()  # at most stream_window chunks in flight
            aac_start = cmaf.aac_frame_at(a / r.fps)
            job = ChunkJob(r.request_id, index, a, b, r.fps, r.req.loop, r.enc, r.variant["key"], r.variant["ref"],
                           mel_ref, audio=b"".join(aac.frames(aac_start, aac_stop)))  # fmt: skip
            tasks.append(asyncio.ensure_future(gen.render_chunk(job, r)))
            await queue.put((index, a, b, aac_start, tasks[-1]))

        async def produce() -> tuple[int, int]:
            parts, known, sent = [], 0, []
            try:
                async for part in self._speech(r, samples, voice, rate):
                    parts.append(part)
                    known += len(part)
                    await asyncio.to_thread(aac.feed, part)
                    if r.req.text is None:
                        continue  # the whole upload is known: plan it all below
                    safe, ready = final_frames(known, r.fps), []
                    while True:  # chunks whose end is a grid step inside the final frames are settled
                        a = sent[-1][1] if sent else 0
                        b = first if not sent else a + per
                        if b + grid > safe or not await asyncio.to_thread(aac.wait_for, cmaf.aac_frame_at(b / r.fps),
                                                                           _AAC_CATCH_UP_S):  # fmt: skip
                            break
                        ready.append((len(sent), a, b))
                        sent.append((a, b))
                    if ready:
                        mel_ref = [ray.put(await asyncio.to_thread(melspectrogram, np.concatenate(parts)))]
                        for index, a, b in ready:
                            await dispatch(index, a, b, cmaf.aac_frame_at(b / r.fps), mel_ref)
                speech = np.concatenate(parts)
                aac_frames = len(await asyncio.to_thread(aac.close))
                t = time.perf_counter()
                mel = await asyncio.to_thread(melspectrogram, speech)
                r.stages["mel"] = time.perf_counter() - t
                n_frames = r.frames_total = frame_count(len(speech), r.fps)
                plan = plan_stream_chunks(n_frames, r.fps, settings.stream_first_chunk_frames, r.chunk_s, grid)
                if plan[: len(sent)] != sent:
                    raise RenderError(f"stream plan changed under sent chunks: {sent} vs {plan[: len(sent)]}")
                await self.streams.plan.remote(stream_id, len(plan), n_frames / r.fps)
                mel_ref = [ray.put(mel)]
                for index in range(len(sent), len(plan)):
                    a, b = plan[index]
                    await dispatch(index, a, b, cmaf.aac_frame_at(b / r.fps) if b < n_frames else aac_frames, mel_ref)
                return n_frames, len(plan)
            finally:
                queue.put_nowait(None)  # the consumer stops; an error surfaces when it awaits us

        t_video = time.perf_counter()
        producer = asyncio.create_task(produce())
        init, fragments, retries, nodes = None, [], 0, set()
        try:
            while (item := await queue.get()) is not None:
                index, a, b, aac_start, task = item
                result, tries = await task  # in order: later chunks may finish first and wait their turn
                slots.release()
                chunk_init, media = await asyncio.to_thread(cmaf.package, result.segment, index, a / r.fps, aac_start)
                if init is None:
                    init = chunk_init
                else:
                    cmaf.check_compatible(init, chunk_init)
                await self.streams.publish.remote(stream_id, index, media, (b - a) / r.fps,
                                                  chunk_init if index == 0 else None)  # fmt: skip
                if index == 0:
                    r.stages["first_fragment"] = time.perf_counter() - r.t_start
                    gen.metrics.first_fragment_seconds.observe(r.stages["first_fragment"])
                fragments.append(media)
                retries += tries
                nodes.add(result.node_id)
            n_frames, total = await producer
        except BaseException:
            producer.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.to_thread(aac.abort)
            raise
        r.stages["render"] = time.perf_counter() - t_video
        t = time.perf_counter()
        video = await asyncio.to_thread(cmaf.remux_mp4, init, fragments)
        r.stages["combine"] = time.perf_counter() - t
        record = {"chunks": total, "nodes": sorted(nodes), "n_frames": n_frames, "fps": r.fps}
        await gen.results.put.remote(stream_id, video, record)
        response = gen.response_for(r, stream_id, n_frames, total, retries, False, sorted(nodes))
        log.info("stream %s: %d fragments, first after %.2f s, all after %.2f s", stream_id, total,
                 r.stages["first_fragment"], response.stats.total_processing_time)  # fmt: skip
        return response.stats.model_dump()
