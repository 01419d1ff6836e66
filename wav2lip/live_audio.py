"""Audio of a live session: one growing 16 kHz timeline, client PCM resampled onto it.

A live session never has the whole speech, only what has arrived so far, yet every
frame must get the mel window the whole-audio recipe (``audio.mel_windows`` over
``melspectrogram`` of everything) would give it. A mel column depends only on the
800 samples around it (plus one sample before them, through pre-emphasis), so the
columns a fragment needs are computed from a short slice of the timeline that starts
on a hop boundary a few columns early: those first columns absorb the slice's own
edge (reflect padding, pre-emphasis of its first sample) and are thrown away.
Old samples are trimmed so hours of session keep a bounded buffer.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .audio import melspectrogram, window_starts
from .errors import InvalidSettings
from .hparams import HOP_LENGTH, MEL_STEP, N_FFT, SAMPLE_RATE

#: Columns computed before the first needed one and dropped: column c reads samples from
#: 200c - 400 on, pre-emphasis needs one more before them, so the 3rd column of a slice is
#: the first one its start (reflect padding, its unfiltered first sample) cannot touch.
MARGIN_COLUMNS = -(-(N_FFT // 2 + 1) // HOP_LENGTH)
_HALF_WINDOW = N_FFT // 2  #: samples a column reads past its centre
PCM_SAMPLE_BYTES = 2  #: PCM16LE mono
PCM_FULL_SCALE = 32768.0  #: int16 -> float [-1, 1)
MIN_CLIENT_RATE = 8_000  #: Hz, the lowest client capture rate accepted (telephone band)
MAX_CLIENT_RATE = 48_000  #: Hz, the highest (every browser's capture rate)
_INITIAL_CAPACITY = SAMPLE_RATE * 10  #: samples of buffer before the first growth


def frame_sample(frame: int, fps: float) -> int:
    """First 16 kHz sample of video frame ``frame``: frame f covers [frame_sample(f), frame_sample(f + 1))."""
    return round(frame * SAMPLE_RATE / fps)


def _window_starts(fps: float, start: int, stop: int) -> np.ndarray:
    """First mel column of frames [start, stop), regular windows only (the tail never comes live)."""
    # With this many columns every frame before ``stop`` is before the official tail frame.
    columns = int(stop * SAMPLE_RATE / HOP_LENGTH / fps) + 2 * MEL_STEP
    return window_starts(columns, fps, start, stop)


def _columns_end(last_column: int) -> int:
    """Samples a timeline needs so that mel column ``last_column`` sees no end padding."""
    return last_column * HOP_LENGTH + _HALF_WINDOW


class TimelineAudio:
    """A session's 16 kHz float32 audio from sample 0 on; only the recent part is kept.

    ``mel_windows(fps, start, stop)`` equals the whole-audio windows of frames
    [start, stop) once ``end >= samples_needed(fps, stop)``; before that it raises.
    """

    def __init__(self) -> None:
        self._buffer = np.zeros(_INITIAL_CAPACITY, np.float32)
        self._first = 0  #: timeline index of ``_buffer[0]``
        self._count = 0  #: samples held in ``_buffer``

    @property
    def start(self) -> int:
        """First timeline sample still kept."""
        return self._first

    @property
    def end(self) -> int:
        """Samples ever appended: the timeline's length."""
        return self._first + self._count

    def extend(self, samples: np.ndarray) -> None:
        """Append float32 16 kHz samples (sanitising them is the caller's job)."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        needed = self._count + samples.size
        if needed > self._buffer.size:
            grown = np.empty(max(needed, 2 * self._buffer.size), np.float32)
            grown[: self._count] = self._buffer[: self._count]
            self._buffer = grown
        self._buffer[self._count : needed] = samples
        self._count = needed

    def read(self, start: int, stop: int) -> np.ndarray:
        """A copy of timeline samples [start, stop); ``ValueError`` if trimmed or not there yet."""
        if start < self._first or stop > self.end or start > stop:
            raise ValueError(f"audio [{start}, {stop}) is not held: the timeline keeps [{self._first}, {self.end})")
        return self._buffer[start - self._first : stop - self._first].copy()

    def trim(self, before: int) -> None:
        """Forget samples before ``before`` (see ``keep_from`` for what a frame still needs)."""
        drop = min(max(0, before - self._first), self._count)
        if drop:
            self._buffer[: self._count - drop] = self._buffer[drop : self._count]
            self._first += drop
            self._count -= drop

    @staticmethod
    def samples_needed(fps: float, stop_frame: int) -> int:
        """Timeline length at which the windows of every frame before ``stop_frame`` are final."""
        if stop_frame <= 0:
            return 0
        last = int(_window_starts(fps, stop_frame - 1, stop_frame)[0])
        return _columns_end(last + MEL_STEP - 1)

    @staticmethod
    def keep_from(fps: float, frame: int) -> int:
        """First sample that the mel windows and the PCM of frames from ``frame`` on read: safe to trim to."""
        first = int(_window_starts(fps, frame, frame + 1)[0])
        return min(max(0, (first - MARGIN_COLUMNS) * HOP_LENGTH), frame_sample(frame, fps))

    def mel_windows(self, fps: float, start: int, stop: int, ahead: np.ndarray | None = None) -> np.ndarray:
        """(stop - start, 80, 16) float32 model windows of frames [start, stop), from a short slice.

        ``ahead``: samples that follow the timeline's end, read but not kept (a live
        session's look-ahead: the speech queued after this fragment, or silence). At the
        end of a session, pad with silence up to ``samples_needed`` (the whole-audio
        recipe would clamp the last windows instead).
        """
        starts = _window_starts(fps, start, stop)
        first, last = int(starts[0]), int(starts[-1]) + MEL_STEP - 1
        offset = min(first, MARGIN_COLUMNS)  # a slice from sample 0 is the whole audio's head: no margin
        begin, stop_sample = (first - offset) * HOP_LENGTH, _columns_end(last)
        if ahead is not None and stop_sample > self.end:
            extra = np.asarray(ahead, np.float32)[: stop_sample - self.end]
            held = self.read(begin, self.end)
            samples = np.concatenate([held, extra])
            if len(samples) < stop_sample - begin:
                raise ValueError(f"audio up to sample {stop_sample} is needed; the timeline and look-ahead end at "
                                 f"{begin + len(samples)}")  # fmt: skip
        else:
            samples = self.read(begin, stop_sample)
        mel = melspectrogram(samples)
        columns = starts - (first - offset)
        return np.ascontiguousarray(mel[:, columns[:, None] + np.arange(MEL_STEP)].transpose(1, 0, 2))


class PcmResampler:
    """Client audio (PCM16LE mono at ``rate``) to float32 16 kHz, piece by piece.

    The resampler keeps its filter state between pieces, so the output equals one
    conversion of the whole stream; ``flush`` returns the filter's tail at the end.
    """

    def __init__(self, rate: int):
        if isinstance(rate, bool) or int(rate) != rate or not MIN_CLIENT_RATE <= rate <= MAX_CLIENT_RATE:
            raise InvalidSettings(f"audio sample rate {rate!r} Hz is not a whole number in "
                                  f"[{MIN_CLIENT_RATE}, {MAX_CLIENT_RATE}]")
        self.rate = rate = int(rate)
        self._carry = b""  #: an odd trailing byte waiting for its pair
        self._pts = 0  #: input samples fed so far
        self._resampler = None
        if rate != SAMPLE_RATE:
            import av  # only live sessions need PyAV

            self._av = av
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def push(self, data: bytes) -> np.ndarray:
        """(n,) float32 16 kHz samples ready after this piece (possibly none)."""
        data = self._carry + bytes(data)
        whole = len(data) - len(data) % PCM_SAMPLE_BYTES
        self._carry = data[whole:]
        pcm = np.frombuffer(data[:whole], "<i2")
        if self._resampler is None:
            return (pcm / np.float32(PCM_FULL_SCALE)).astype(np.float32)
        if pcm.size == 0:
            return np.zeros(0, np.float32)
        frame = self._av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.rate)
        self._pts += pcm.size
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """The samples the resampler still holds (call once, at the end of the stream)."""
        self._carry = b""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames) -> np.ndarray:
        if not frames:
            return np.zeros(0, np.float32)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)

