"""``LipSyncWorker`` deployment: the model preloaded on its (fractional) GPU, one chunk per call.

The encoded chunk stays in this replica's object store (``ChunkResult.segment`` is a
``Ref``): the combiner or the stream registry fetches it from here, the ingress never.
A stream's chunk is packaged as a CMAF fragment here too, with its place on the
stream's timeline. Live sessions call ``render_live`` with a few frames each; Serve's
batching joins the calls that arrive together (from many sessions) into one model call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import ray
from ray import serve

from wav2lip import cmaf
from wav2lip.avatar import Avatar
from wav2lip.encode import segment_format
from wav2lip.options import RenderOptions
from wav2lip.pipeline import load_generator, render_segment
from wav2lip.render import Renderer

import numpy as np

from .records import ChunkJob, ChunkResult, LiveFrames
from .refs import Ref

log = logging.getLogger("ray.serve")
_AVATARS_KEPT = 4  #: decoded avatars kept per worker (chunks of one request share one)


class ChunkCancelled(Exception):
    """The chunk's caller went away; its render stopped early."""


@serve.deployment(name="LipSyncWorker")
class LipSyncWorker:
    def __init__(self, render: RenderOptions, checkpoint_dir: str, checkpoint_name: str | None, gpu_fraction: float,
                 live_batch_calls: int = 16, live_batch_wait_s: float = 0.005):  # fmt: skip
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        generator = load_generator(Path(checkpoint_dir) / checkpoint_name if checkpoint_name else None, checkpoint_dir)
        self.renderer = Renderer(generator, render)
        if self.renderer.device.type == "cuda" and 0 < gpu_fraction < 1:
            import torch

            torch.cuda.set_per_process_memory_fraction(gpu_fraction, self.renderer.device)
        self._avatars: OrderedDict[str, Avatar] = OrderedDict()
        self.chunks_rendered = 0
        self.live_calls = self.live_model_calls = self.live_frames = 0
        self._render_live_batch.set_max_batch_size(live_batch_calls)
        self._render_live_batch.set_batch_wait_timeout_s(live_batch_wait_s)
        self._model_lock = asyncio.Lock()  # one chunk on the model at a time; the next waits ready
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._node = ray.get_runtime_context().get_node_id()
        log.info("LipSyncWorker %s: %s on %s (%s), GPUs %s", self._replica, self.renderer.kind,
                 self.renderer.device, self.renderer.precision, self.gpu_ids)  # fmt: skip

    def info(self) -> dict:
        return {
            "renderer": self.renderer.kind,
            "model_id": self.renderer.model_id,
            "device": str(self.renderer.device),
            "precision": self.renderer.precision,
            "gpu_ids": self.gpu_ids,
            "node_id": self._node,
            "replica": self._replica,
            "pid": os.getpid(),
            "chunks_rendered": self.chunks_rendered,
            "live": {"calls": self.live_calls, "model_calls": self.live_model_calls, "frames": self.live_frames},
            "selection": self.renderer.describe(),  #: the mode and batch picked, and the measured figures why
        }

    async def _avatar(self, key: str, ref: Ref) -> Avatar:
        if key in self._avatars:
            self._avatars.move_to_end(key)
            return self._avatars[key]
        avatar = await asyncio.to_thread(Avatar.from_bytes, await ref.get())
        self._avatars[key] = avatar
        while len(self._avatars) > _AVATARS_KEPT:
            self._avatars.popitem(last=False)
        return avatar

    async def render_live(self, item: LiveFrames) -> np.ndarray:
        """(n, 96, 96, 3) uint8 predicted faces for one live fragment (batched with other sessions')."""
        return await self._render_live_batch(item)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)  # set from the settings in __init__
    async def _render_live_batch(self, items: list[LiveFrames]) -> list[np.ndarray]:
        crops = np.concatenate([i.crops for i in items])
        windows = np.concatenate([i.windows for i in items])
        positions = np.concatenate([i.positions for i in items])
        faces = await asyncio.to_thread(self.renderer.predict, crops, windows, positions)
        self.live_calls += len(items)
        self.live_model_calls += 1
        self.live_frames += len(crops)
        bounds = np.cumsum([len(i.crops) for i in items])[:-1]
        return np.split(faces, bounds)

    async def render_chunk(self, job: ChunkJob) -> ChunkResult:
        """The chunk, encoded. A cancelled call (request cancelled, client gone) stops the
        render at its next batch instead of finishing it for nobody."""
        if job.delay_s:
            await asyncio.sleep(job.delay_s)
        avatar = await self._avatar(job.avatar.key, job.avatar.ref)
        mel = await job.mel.get()
        audio = b"".join((await job.aac.get())[job.aac_start : job.aac_stop]) if job.fragment else None
        async with self._model_lock:
            stop = threading.Event()
            work = asyncio.ensure_future(asyncio.to_thread(self._render, job, avatar, mel, audio, stop))
            try:
                result = await asyncio.shield(work)
            except asyncio.CancelledError:
                stop.set()
                await asyncio.wait([work])  # keep the model lock until the thread has let go
                log.info("request %s chunk %d cancelled", job.request_id, job.index)
                raise
            self.chunks_rendered += 1
            return result

    def _render(self, job: ChunkJob, avatar: Avatar, mel, audio: bytes | None, stop: threading.Event) -> ChunkResult:
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()

        def check_cancelled(_frames: int) -> None:
            if stop.is_set():
                raise ChunkCancelled(f"chunk {job.index} of request {job.request_id} was cancelled")

        with tempfile.TemporaryDirectory(prefix="w2l-chunk-") as tmp:
            audio_path = None
            if audio is not None:
                audio_path = os.path.join(tmp, "audio.aac")
                Path(audio_path).write_bytes(audio)
            path = os.path.join(tmp, "chunk.mp4" if audio_path else f"chunk{segment_format(job.enc)[1]}")
            render_segment(self.renderer, avatar, mel, job.fps, job.start, job.stop, path, job.enc, job.loop, seconds,
                           check_cancelled, audio_path)  # fmt: skip
            segment = Path(path).read_bytes()
        init = None
        if job.fragment:  # its decode times moved to its place on the stream's timeline
            chunk_init, segment = cmaf.package(segment, job.index, job.start / job.fps, job.aac_start)
            init = Ref.put(chunk_init)
        seconds["wall"] = time.perf_counter() - t0
        log.info("request %s chunk %d: frames [%d, %d) in %.2f s", job.request_id, job.index, job.start, job.stop,
                 seconds["wall"])  # fmt: skip
        return ChunkResult(job.index, job.stop - job.start, Ref.put(segment), init, seconds, self._node, self._replica)

    def check_health(self) -> None:
        if self.renderer is None:
            raise RuntimeError("model not loaded")
