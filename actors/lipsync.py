"""``LipSyncWorker`` deployment: the model preloaded on its (fractional) GPU, one chunk per call."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray import serve

from wav2lip.avatar import Avatar
from wav2lip.encode import segment_format
from wav2lip.ffmpeg import set_ffmpeg_binary
from wav2lip.options import EncodeOptions, RenderOptions
from wav2lip.pipeline import load_generator, render_segment
from wav2lip.render import Renderer

log = logging.getLogger("ray.serve")
_AVATARS_KEPT = 4  #: decoded avatars kept per worker (chunks of one request share one)


@dataclass
class ChunkJob:
    """One chunk of a request: frames [start, stop) of the output."""

    request_id: str
    index: int
    start: int
    stop: int
    fps: float
    loop: str
    enc: EncodeOptions
    avatar_key: str
    avatar_ref: list  #: [ObjectRef to Avatar bytes], wrapped so Serve passes the ref itself
    mel_ref: list  #: [ObjectRef to the whole-audio mel], computed once per request
    audio: bytes | None = None  #: this chunk's AAC frames (ADTS): the segment becomes a CMAF fragment
    attempt: int = 0
    delay_s: float = 0.0  #: injected wait before rendering (fault-injection setting; 0 in production)


class ChunkCancelled(Exception):
    """The chunk's caller went away; its render stopped early."""


@dataclass
class ChunkResult:
    index: int
    segment: bytes
    n_frames: int
    seconds: dict = field(default_factory=dict)
    node_id: str = ""
    replica: str = ""


@serve.deployment(name="LipSyncWorker")
class LipSyncWorker:
    def __init__(self, render: RenderOptions, checkpoint_dir: str, checkpoint_name: str | None, ffmpeg: str | None,
                 gpu_fraction: float):  # fmt: skip
        set_ffmpeg_binary(ffmpeg)
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        generator = load_generator(Path(checkpoint_dir) / checkpoint_name if checkpoint_name else None, checkpoint_dir)
        self.renderer = Renderer(generator, render)
        if self.renderer.device.type == "cuda" and 0 < gpu_fraction < 1:
            import torch

            torch.cuda.set_per_process_memory_fraction(gpu_fraction, self.renderer.device)
        self._avatars: OrderedDict[str, Avatar] = OrderedDict()
        self.chunks_rendered = 0
        self._model_lock = asyncio.Lock()  # one chunk on the model at a time; the next waits ready
        self._replica = serve.get_replica_context().replica_id.unique_id
        log.info("LipSyncWorker %s: %s on %s (%s), GPUs %s", self._replica, self.renderer.kind,
                 self.renderer.device, self.renderer.precision, self.gpu_ids)  # fmt: skip

    def info(self) -> dict:
        return {
            "renderer": self.renderer.kind,
            "model_id": self.renderer.model_id,
            "device": str(self.renderer.device),
            "precision": self.renderer.precision,
            "gpu_ids": self.gpu_ids,
            "node_id": ray.get_runtime_context().get_node_id(),
            "replica": self._replica,
            "pid": os.getpid(),
            "chunks_rendered": self.chunks_rendered,
        }

    async def _avatar(self, key: str, ref_box: list) -> Avatar:
        if key in self._avatars:
            self._avatars.move_to_end(key)
            return self._avatars[key]
        avatar = await asyncio.to_thread(Avatar.from_bytes, await ref_box[0])
        self._avatars[key] = avatar
        while len(self._avatars) > _AVATARS_KEPT:
            self._avatars.popitem(last=False)
        return avatar

    async def render_chunk(self, job: ChunkJob) -> ChunkResult:
        """The chunk's encoded segment. A cancelled call (request cancelled, client gone)
        stops the render at its next batch instead of finishing it for nobody."""
        if job.delay_s:
            await asyncio.sleep(job.delay_s)
        avatar = await self._avatar(job.avatar_key, job.avatar_ref)
        mel = await job.mel_ref[0]
        async with self._model_lock:
            stop = threading.Event()
            work = asyncio.ensure_future(asyncio.to_thread(self._render, job, avatar, mel, stop))
            try:
                result = await asyncio.shield(work)
            except asyncio.CancelledError:
                stop.set()
                await asyncio.wait([work])  # keep the model lock until the thread has let go
                log.info("request %s chunk %d cancelled", job.request_id, job.index)
                raise
            self.chunks_rendered += 1
            return result

    def _render(self, job: ChunkJob, avatar: Avatar, mel, stop: threading.Event) -> ChunkResult:
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()

        def check_cancelled(_frames: int) -> None:
            if stop.is_set():
                raise ChunkCancelled(f"chunk {job.index} of request {job.request_id} was cancelled")

        with tempfile.TemporaryDirectory(prefix="w2l-chunk-") as tmp:
            audio = None
            if job.audio is not None:
                audio = os.path.join(tmp, "audio.aac")
                Path(audio).write_bytes(job.audio)
            path = os.path.join(tmp, "chunk.mp4" if audio else f"chunk{segment_format(job.enc)[1]}")
            render_segment(self.renderer, avatar, mel, job.fps, job.start, job.stop, path, job.enc, job.loop, seconds,
                           check_cancelled, audio)  # fmt: skip
            log.info("request %s chunk %d: frames [%d, %d) in %.2f s", job.request_id, job.index, job.start, job.stop,
                     time.perf_counter() - t0)  # fmt: skip
            segment = Path(path).read_bytes()
        seconds["wall"] = time.perf_counter() - t0
        return ChunkResult(job.index, segment, job.stop - job.start, seconds, ray.get_runtime_context().get_node_id(),
                           self._replica)  # fmt: skip

    def check_health(self) -> None:
        if self.renderer is None:
            raise RuntimeError("model not loaded")
