"""``Combiner`` deployment: joins a request's segments by stream copy and muxes the audio once."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import numpy as np
from ray import serve

from wav2lip.encode import combine_segments, segment_format
from wav2lip.ffmpeg import set_ffmpeg_binary
from wav2lip.options import EncodeOptions


@serve.deployment(name="Combiner", max_ongoing_requests=8)
class Combiner:
    def __init__(self, ffmpeg: str | None):
        set_ffmpeg_binary(ffmpeg)

    async def combine(self, segments: list[bytes], samples_ref: list, enc: EncodeOptions) -> bytes:
        """The finished MP4 (faststart) from ordered segments and the request's audio."""
        samples: np.ndarray = await samples_ref[0]
        return await asyncio.to_thread(self._combine, segments, samples, enc)

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
