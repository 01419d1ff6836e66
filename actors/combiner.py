"""``Combiner`` deployment: joins a render's segments by stream copy, muxes the audio once,
and writes the finished video to the result store itself.

Segments come from the workers' object stores by reference and the video goes straight
to the store: the ingress only ever sees the metadata. A stream's fragments are read
from the stream registry and remuxed (stream copy, faststart) into its final MP4.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import numpy as np
from ray import serve
from ray.exceptions import ObjectLostError

from wav2lip import cmaf
from wav2lip.encode import combine_segments, segment_format
from wav2lip.options import EncodeOptions

from .records import CombineJob, SegmentsLost


@serve.deployment(name="Combiner", max_ongoing_requests=8)
class Combiner:
    def __init__(self, results, streams):
        self.results = results
        self.streams = streams

    async def combine(self, job: CombineJob) -> int:
        """Store the finished MP4 (faststart) under ``job.key``; its size in bytes.

        ``SegmentsLost`` names the segments whose worker replica died since rendering them.
        """
        segments, lost = [], []
        for index, ref in enumerate(job.segments):
            try:
                segments.append(await ref.get())
            except ObjectLostError:
                lost.append(index)
        if lost:
            raise SegmentsLost(lost)
        samples: np.ndarray = await job.samples.get()
        video = await asyncio.to_thread(self._combine, segments, samples, job.enc)
        await self.results.put.remote(job.key, video, job.record, job.alias)
        return len(video)

    async def finish_stream(self, stream_id: str, fragments: int, record: dict) -> int:
        """Remux a complete stream's fragments into its final MP4, stored under its id; the size."""
        init = await self.streams.init.remote(stream_id)
        media = [await self.streams.fragment.remote(stream_id, n) for n in range(fragments)]
        video = await asyncio.to_thread(cmaf.remux_mp4, init, media)
        await self.results.put.remote(stream_id, video, record)
        return len(video)

    @staticmethod
    def _combine(segments: list[bytes], samples: np.ndarray, enc: EncodeOptions) -> bytes:
        with tempfile.TemporaryDirectory(prefix="w2l-combine-") as tmp:
            paths = []
            for i, data in enumerate(segments):
                path = Path(tmp) / f"{i:05d}{segment_format(enc)[1]}"
                path.write_bytes(data)
                paths.append(path)
            out = combine_segments(paths, samples, os.path.join(tmp, "out.mkv" if enc.lossless else "out.mp4"), enc)
            return out.read_bytes()
