"""AAC for streams: one encode of a request's audio, fed as it arrives, cut between frames.

The audio of a stream is encoded to AAC once and cut between AAC frames (1024 samples),
never re-encoded per chunk (re-encoding would add an encoder delay and a click at every
seam); ``wav2lip/cmaf.py`` packages each chunk's slice of it. At 25 fps and 16 kHz, video
and AAC frames align every 0.32 s (8 frames): ``aligned_frames`` gives that grid.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from fractions import Fraction

import numpy as np

from .errors import EncodeError
from .ffmpeg import base_args, failure, stderr_tail
from .hparams import SAMPLE_RATE

AAC_FRAME = 1024  #: samples per AAC-LC frame
#: ffmpeg's AAC encoder emits one frame of encoder delay first (pts -1024 in an MP4).
_AAC_PRIMING_FRAMES = 1


class AacEncoder:
    """One AAC encode of a stream's audio, fed as the audio arrives (e.g. sentence by sentence).

    ffmpeg reads float32 PCM on stdin and writes ADTS on stdout; a reader thread splits
    the output into frames as they come, so the first chunks can be packaged while later
    speech is still being synthesised. The frames equal those of a one-shot encode of the
    same samples (the encoder works on fixed 1024-sample frames whatever the writes).
    Frame k holds samples [1024 k, 1024 (k+1)): the encoder's priming frame is dropped.
    """

    def __init__(self, bitrate: str):
        args = base_args() + [
            "-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:0", "-c:a", "aac", "-b:a", bitrate,
            "-flush_packets", "1", "-f", "adts", "pipe:1",
        ]  # fmt: skip
        self._err = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err)
        self._frames: list[bytes] = []
        self._changed = threading.Condition()
        self._failure: str | None = None
        self._reader = threading.Thread(target=self._read, name="aac-reader", daemon=True)
        self._reader.start()

    def feed(self, samples: np.ndarray) -> None:
        """Append 16 kHz float32 samples (blocks while ffmpeg's pipe is full)."""
        try:
            self._proc.stdin.write(np.ascontiguousarray(samples, np.float32).tobytes())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._fail("encoding the audio to AAC")

    def wait_for(self, count: int, timeout_s: float | None = None) -> bool:
        """Block until ``count`` frames are finished (or the encoder ended); whether they are."""
        with self._changed:
            self._changed.wait_for(lambda: self._failure is not None or not self._reader.is_alive()
                                   or len(self._frames) - _AAC_PRIMING_FRAMES >= count, timeout_s)  # fmt: skip
            return len(self._frames) - _AAC_PRIMING_FRAMES >= count

    def frames(self, start: int = 0, stop: int | None = None) -> list[bytes]:
        with self._changed:
            return self._frames[_AAC_PRIMING_FRAMES:][start:stop]

    def close(self) -> list[bytes]:
        """No more audio: flush the encoder; every frame."""
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        self._reader.join()
        if self._proc.wait() != 0 or self._failure:
            self._fail("finishing the AAC encode")
        self._err.close()
        return self.frames()

    def abort(self) -> None:
        """Stop without a result."""
        self._stop()
        self._err.close()

    def _stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._reader.join()

    def _read(self) -> None:
        buffer = bytearray()
        while chunk := self._proc.stdout.read1(65536):
            buffer += chunk
            found = []
            while len(buffer) >= 7:
                if buffer[0] != 0xFF or buffer[1] & 0xF0 != 0xF0:
                    self._failure = "ADTS sync lost"
                    break
                length = ((buffer[3] & 0x03) << 11) | (buffer[4] << 3) | (buffer[5] >> 5)
                if len(buffer) < length:
                    break
                found.append(bytes(buffer[:length]))
                del buffer[:length]
            with self._changed:
                self._frames += found
                self._changed.notify_all()
            if self._failure:
                break
        with self._changed:
            self._changed.notify_all()

    def _fail(self, what: str):
        self._stop()
        self._err.seek(0)
        tail = stderr_tail(self._err.read())
        self._err.close()
        if self._failure:  # our own finding (e.g. "ADTS sync lost"), not ffmpeg's words
            raise EncodeError(f"ffmpeg failed while {what}: {self._failure}", tail)
        raise failure(what, tail)


def encode_aac(samples: np.ndarray, bitrate: str) -> list[bytes]:
    """16 kHz float32 samples -> ADTS AAC frames; frame k holds samples [1024 k, 1024 (k+1))."""
    encoder = AacEncoder(bitrate)
    encoder.feed(samples)  # the reader thread drains ffmpeg's output meanwhile: no deadlock
    return encoder.close()


def aac_frame_at(seconds: float) -> int:
    """Index of the AAC frame that starts nearest ``seconds``."""
    return round(seconds * SAMPLE_RATE / AAC_FRAME)


def aligned_frames(fps: float, limit: int = 64) -> int:
    """Smallest count of video frames that is a whole number of AAC frames (1 if > ``limit``)."""
    per_frame = Fraction(SAMPLE_RATE) / Fraction(fps).limit_denominator(1001) / AAC_FRAME
    grid = per_frame.denominator  # k * per_frame is whole exactly when the denominator divides k
    return grid if grid <= limit else 1
