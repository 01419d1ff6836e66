"""Live output: fMP4 fragments (H.264 + Opus) for MSE, or one JPEG + PCM message per frame.

A session keeps one H.264 and one Opus encoder for its whole life (no seams, no encoder
start-up per fragment); each fragment's packets are muxed by FFmpeg's mp4 muxer into a
throw-away in-memory file whose ``moof`` + ``mdat`` are kept, decode times moved to the
fragment's place on the session timeline. Every fragment starts on an IDR frame, so a
viewer may join with the init segment and any fragment.

Opus starts with a pre-skip (encoder look-ahead, 312 samples at 48 kHz) that decoders
drop. As the Opus-in-ISOBMFF spec asks, the audio track has an edit list shifting it by
the pre-skip and its decode times are packet times plus the pre-skip (never negative):
decoded audio lines up with the input. Opus encodes the 16 kHz speech as it is, but the
track and its OpusHead say 48 kHz (Chrome refuses a dOps rate unlike the sample entry's).
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

from .cmaf import _find, _tracks, codecs, split
from .errors import EncodeError, InputError, InvalidSettings
from .hparams import SAMPLE_RATE
from .live_audio import frame_sample

#: mp4 muxer flags: self-contained fragments, moov without samples, offsets relative to moof.
FRAGMENT_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "avoid_negative_ts": "disabled"}
OPUS_RATE = 48_000  #: Hz, the Opus track's timescale in the MP4 (Opus always decodes to 48 kHz)
OPUS_FRAME_MS = 20  #: Opus packet duration
OPUS_FRAME = SAMPLE_RATE * OPUS_FRAME_MS // 1000  #: input samples per Opus packet
_OPUS_PRESKIP_AT = 10  #: byte offset of the little-endian pre-skip in the OpusHead extradata
_OPUS_INPUT_RATE_AT = 12  #: ... and of its input sample rate
_FPS_DENOMINATOR = 1001  #: fps as a fraction: 25, 30, 30000/1001, ...
_SEQUENCE_STRIDE = 16  #: mfhd sequence numbers: fragment n uses n*stride + 1, + 2, ...
FRAME_MAGIC = b"W2LF"  #: frames-mode message tag
_HEADER_LENGTH = struct.Struct(">I")
PCM16_SCALE = 32767  #: float [-1, 1] -> int16


@dataclass(frozen=True)
class EncodedFragment:
    """A fragment as fMP4 bytes (MSE) and as the packets inside them (RTP: WebRTC sends these).

    Packets are ``(timeline sample at 16 kHz, bytes)``: H.264 access units in Annex B (the
    first, an IDR, led by the SPS and PPS) and Opus packets of 20 ms.
    """

    media: bytes
    video: list[tuple[int, bytes]]
    audio: list[tuple[int, bytes]]


class FragmentEncoder:
    """One session's encoders: ``init`` once, then ``encode`` per fragment, in timeline order."""

    def __init__(self, width: int, height: int, fps: float, *, crf: int = 28, preset: str = "ultrafast",
                 audio_bitrate: int = 32000):  # fmt: skip
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise InvalidSettings(f"live video must have a positive, even width and height, not {width}x{height}")
        self.width, self.height, self.fps = width, height, fps
        self._rate = Fraction(fps).limit_denominator(_FPS_DENOMINATOR)
        # The template container is never written to: its streams own the persistent encoders,
        # opened (with global headers) by writing its header, so their setup is known up front.
        self._template = av.open(io.BytesIO(), "w", format="mp4", options=FRAGMENT_OPTIONS)
        try:
            video = self._template.add_stream("libx264", rate=self._rate)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.codec_context.max_b_frames = 0
            video.codec_context.options = {
                "preset": preset, "tune": "zerolatency", "crf": str(crf), "forced-idr": "1",
                "x264-params": "scenecut=0:keyint=infinite",  # keyframes only where a fragment starts
            }  # fmt: skip
            audio = self._template.add_stream("libopus", rate=SAMPLE_RATE, layout="mono")
            audio.codec_context.bit_rate = audio_bitrate
            audio.codec_context.options = {"frame_duration": str(OPUS_FRAME_MS)}
            self._template.start_encoding()
        except (av.FFmpegError, ValueError) as exc:
            raise EncodeError(f"could not open the live encoders (libx264 {width}x{height} preset {preset} crf {crf}, "
                              f"libopus {audio_bitrate} b/s)", str(exc)) from None
        self._video, self._audio = video, audio
        head = bytearray(audio.codec_context.extradata)
        self._preskip = struct.unpack_from("<H", head, _OPUS_PRESKIP_AT)[0]
        struct.pack_into("<I", head, _OPUS_INPUT_RATE_AT, OPUS_RATE)
        self._opus_head = bytes(head)
        self._raw_init = _split_init(self._mux([], []))
        self._init = _with_audio_edit(self._raw_init, self._preskip)
        self._tracks = _tracks(self._init)
        self._video_scale = next(scale for kind, scale in self._tracks.values() if kind == b"vide")
        self._codecs = f"{codecs(self._init)},opus"
        self._next_frame: int | None = None  #: frame the next fragment must start at
        self._pending = np.zeros(0, np.float32)  #: audio short of a whole Opus packet
        self._pending_at = 0  #: timeline sample of ``_pending[0]``
        self._fragments = 0

    @property
    def init(self) -> bytes:
        """The init segment (ftyp + moov, both tracks): append it to the SourceBuffer first."""
        return self._init

    @property
    def codecs(self) -> str:
        """RFC 6381 codecs for ``MediaSource.isTypeSupported``, e.g. ``avc1.42c01f,opus``."""
        return self._codecs

    def encode(self, frames: np.ndarray, pcm: np.ndarray, start_frame: int) -> bytes:
        """The fMP4 media segment of ``encode_fragment``."""
        return self.encode_fragment(frames, pcm, start_frame).media

    def encode_fragment(self, frames: np.ndarray, pcm: np.ndarray, start_frame: int) -> EncodedFragment:
        """One media segment for frames [start_frame, start_frame + n) (BGR) and their audio.

        ``pcm`` is float32 16 kHz, exactly the samples of those frames. Audio shorter
        than an Opus packet waits for the next fragment, so each fragment's audio
        continues where the previous one's ended. Fragments go in timeline order; a
        gap (frames skipped) is allowed and restarts the audio clock at the new frame.
        """
        frames = np.asarray(frames)
        n = len(frames)
        expected = frame_sample(start_frame + n, self.fps) - frame_sample(start_frame, self.fps)
        if n == 0 or frames.shape[1:] != (self.height, self.width, 3) or frames.dtype != np.uint8:
            raise InvalidSettings(f"frames must be (n > 0, {self.height}, {self.width}, 3) uint8 BGR, not "
                                  f"{frames.shape} {frames.dtype}")  # fmt: skip
        if len(pcm) != expected:
            raise InvalidSettings(f"{n} frames from frame {start_frame} have {expected} audio samples, not {len(pcm)}")
        if self._next_frame is not None and start_frame < self._next_frame:
            raise InvalidSettings(f"fragment at frame {start_frame} comes before frame {self._next_frame}")
        if start_frame != self._next_frame:  # the first fragment, or a gap: the audio clock restarts here
            self._pending, self._pending_at = np.zeros(0, np.float32), frame_sample(start_frame, self.fps)
        try:
            video, audio = self._encode_video(frames, start_frame), self._encode_audio(np.asarray(pcm, np.float32))
            audio_start = audio[0].pts * audio[0].time_base if audio else None  # before muxing rebases it
            packets = self._packets(video, audio, start_frame)  # before muxing takes the packets
            data = self._mux(video, audio)
        except av.FFmpegError as exc:
            raise EncodeError(f"encoding the live fragment at frame {start_frame} failed", str(exc)) from None
        if len(video) != n:
            raise EncodeError(f"the H.264 encoder returned {len(video)} packets for {n} frames")
        init, media = split(data)
        if init != self._raw_init:
            raise EncodeError("a live fragment was muxed with another init segment than the session's")
        bases = {b"vide": round(start_frame * self._video_scale / self._rate)}
        if audio_start is not None:
            bases[b"soun"] = round(audio_start * OPUS_RATE) + self._preskip
        self._next_frame = start_frame + n
        self._fragments += 1
        return EncodedFragment(self._retime(media, bases), *packets)

    def close(self) -> None:
        """Release the encoders (what they still hold is dropped: a live stream has no end)."""
        self._template.close()

    # ---- internals ---------------------------------------------------------------------
    def _encode_video(self, frames: np.ndarray, start_frame: int) -> list:
        packets = []
        for i, image in enumerate(frames):
            # OpenCV's BT.601 limited-range I420 is what swscale would give, 4x faster
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
            frame.pts, frame.time_base = start_frame + i, 1 / self._rate
            if i == 0:
                frame.pict_type = av.video.frame.PictureType.I  # with forced-idr: an IDR frame
            packets += self._video.codec_context.encode(frame)
        return packets

    def _encode_audio(self, pcm: np.ndarray) -> list:
        samples = np.concatenate([self._pending, pcm.reshape(-1)])
        whole = len(samples) - len(samples) % OPUS_FRAME
        packets = []
        for at in range(0, whole, OPUS_FRAME):
            frame = av.AudioFrame.from_ndarray(samples[None, at : at + OPUS_FRAME], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, self._pending_at + at, Fraction(1, SAMPLE_RATE)
            packets += self._audio.codec_context.encode(frame)
        self._pending, self._pending_at = samples[whole:], self._pending_at + whole
        return packets

    def _packets(self, video: list, audio: list, start_frame: int) -> tuple[list, list]:
        """The packets' bytes on the 16 kHz timeline (Opus pts lag the input by the pre-skip)."""
        headers = bytes(self._video.codec_context.extradata)  # Annex B SPS + PPS
        au = [(frame_sample(start_frame + i, self.fps), (headers if p.is_keyframe else b"") + bytes(p))
              for i, p in enumerate(video)]  # fmt: skip
        preskip = self._preskip * SAMPLE_RATE // OPUS_RATE
        return au, [(int(p.pts) + preskip, bytes(p)) for p in audio]

    def _mux(self, video: list, audio: list) -> bytes:
        """A stand-alone fragmented MP4 of these packets (only the header when there are none)."""
        out = io.BytesIO()
        with av.open(out, "w", format="mp4", options=FRAGMENT_OPTIONS) as container:
            v = container.add_stream_from_template(self._video)
            a = container.add_stream_from_template(self._audio)
            a.codec_context.sample_rate = OPUS_RATE  # the track's timescale; packets are rescaled to it
            a.codec_context.extradata = self._opus_head
            container.start_encoding()
            for stream, packets in ((v, video), (a, audio)):
                for packet in packets:
                    packet.stream = stream
                    container.mux(packet)
        return out.getvalue()

    def _retime(self, media: bytes, bases: dict[bytes, int]) -> bytes:
        """Number the moofs and move each track's decode times so its first one is ``bases[handler]``."""
        out = bytearray(media)
        shift: dict[bytes, int] = {}
        for n, (pos, size, header) in enumerate(_find(out, b"moof", 0, len(out))):
            (mfhd, _, _), = _find(out, b"mfhd", pos + header, pos + size)
            struct.pack_into(">I", out, mfhd + 12, self._fragments * _SEQUENCE_STRIDE + n + 1)
            for traf, tsize, theader in _find(out, b"traf", pos + header, pos + size):
                (tfhd, _, _), = _find(out, b"tfhd", traf + theader, traf + tsize)
                (tfdt, _, _), = _find(out, b"tfdt", traf + theader, traf + tsize)
                handler = self._tracks[struct.unpack_from(">I", out, tfhd + 12)[0]][0]
                if out[tfdt + 8] != 1:
                    raise EncodeError("the muxer wrote a version-0 tfdt")
                written = struct.unpack_from(">Q", out, tfdt + 12)[0]
                # the muxer's times are right relative to each other (later moofs of this file)
                shift.setdefault(handler, bases[handler] - written)
                struct.pack_into(">Q", out, tfdt + 12, written + shift[handler])
        return bytes(out)


def _split_init(data: bytes) -> bytes:
    """The ftyp + moov of a stand-alone fragmented MP4 (or of its header alone)."""
    return data[: next(pos + size for pos, size, _ in _find(data, b"moov", 0, len(data)))]


def _with_audio_edit(init: bytes, preskip: int) -> bytes:
    """``init`` with an edit list on the audio track: presentation = decode time - ``preskip``."""
    out = bytearray(init)
    (moov, moov_size, _), = _find(out, b"moov", 0, len(out))
    for trak, size, header in _find(out, b"trak", 0, len(out)):
        (hdlr, _, _), = _find(out, b"hdlr", trak + header, trak + size)
        if out[hdlr + 16 : hdlr + 20] != b"soun":
            continue
        (tkhd, tkhd_size, _), = _find(out, b"tkhd", trak + header, trak + size)
        # version 0 elst, one entry: duration 0 (the whole, fragmented track), media_time, rate 1.0
        elst = struct.pack(">I4sIIIIHH", 28, b"elst", 0, 1, 0, preskip, 1, 0)
        edts = struct.pack(">I4s", 8 + len(elst), b"edts") + elst
        out[tkhd + tkhd_size : tkhd + tkhd_size] = edts
        struct.pack_into(">I", out, trak, size + len(edts))
        struct.pack_into(">I", out, moov, moov_size + len(edts))
        return bytes(out)
    raise EncodeError("the init segment has no audio track")


# ---- frames mode -----------------------------------------------------------------------
def encode_jpeg(frame_bgr: np.ndarray, quality: int) -> bytes:
    """One BGR frame as JPEG (``quality`` 1-100)."""
    ok, data = cv2.imencode(".jpg", frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise EncodeError("OpenCV could not encode the frame as JPEG")
    return data.tobytes()


def to_pcm16(samples: np.ndarray) -> bytes:
    """float32 samples -> PCM16LE bytes (clipped to [-1, 1])."""
    return (np.clip(samples, -1.0, 1.0) * PCM16_SCALE).astype("<i2").tobytes()


def frame_message(frame: int, pts: float, jpeg: bytes, pcm16: bytes, sample_rate: int = SAMPLE_RATE) -> bytes:
    """One binary WebSocket message: magic, header length, JSON header, JPEG, PCM16LE mono."""
    header = json.dumps({"frame": frame, "pts": pts, "jpeg_bytes": len(jpeg), "pcm_bytes": len(pcm16),
                         "sample_rate": sample_rate}, separators=(",", ":")).encode()  # fmt: skip
    return b"".join((FRAME_MAGIC, _HEADER_LENGTH.pack(len(header)), header, jpeg, pcm16))


def parse_frame_message(data: bytes) -> tuple[dict, bytes, bytes]:
    """(header, jpeg, pcm16) of a ``frame_message``; ``InputError`` if it is not one."""
    data = bytes(data)
    start = len(FRAME_MAGIC) + _HEADER_LENGTH.size
    if len(data) < start or not data.startswith(FRAME_MAGIC):
        raise InputError("not a frame message (bad magic)")
    (length,) = _HEADER_LENGTH.unpack_from(data, len(FRAME_MAGIC))
    try:
        header = json.loads(data[start : start + length])
        jpeg_bytes, pcm_bytes = int(header["jpeg_bytes"]), int(header["pcm_bytes"])
    except (ValueError, KeyError, TypeError):
        raise InputError("the frame message header is not valid JSON with jpeg_bytes and pcm_bytes") from None
    body = start + length
    if min(jpeg_bytes, pcm_bytes) < 0 or body + jpeg_bytes + pcm_bytes != len(data):
        raise InputError("the frame message lengths do not match its size")
    return header, data[body : body + jpeg_bytes], data[body + jpeg_bytes :]
