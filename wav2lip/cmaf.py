"""Fragmented MP4 (CMAF) for progressive delivery: one artefact, served as HLS or one fMP4.

Each chunk is encoded by ffmpeg into a small stand-alone fragmented MP4 (H.264 starting
on an IDR frame, plus its slice of the request's AAC). ``package`` splits that file into
the init segment (``ftyp`` + ``moov``, the same for every chunk of a stream) and a media
segment (``moof`` + ``mdat``) whose decode times are moved to the chunk's place on the
stream's timeline, so the fragments play back to back with continuous timestamps.

The audio is encoded to AAC once per stream (``wav2lip/aac.py``) and cut between AAC
frames; chunk boundaries on the grid where video and AAC frames meet give fragments whose
two tracks start and end together.
Only box headers and two integer fields are rewritten here; ffmpeg writes the boxes.
"""

from __future__ import annotations

import math
import struct
import tempfile
from pathlib import Path

from .aac import AAC_FRAME
from .errors import EncodeError
from .ffmpeg import input_args, run_ffmpeg
from .hparams import SAMPLE_RATE

#: ffmpeg flags for a stand-alone fragmented MP4 whose moof offsets are self-relative;
#: delay_moov: the moov waits for the first packets, so the AAC config from ADTS is in it.
FRAGMENT_MOVFLAGS = "+frag_keyframe+empty_moov+delay_moov+default_base_moof"
_SEQUENCE_STRIDE = 1000  #: mfhd sequence numbers: fragment n uses n*stride + 1, n*stride + 2, ...
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex", b"edts", b"dinf"}


# ---- boxes -----------------------------------------------------------------------------
def _boxes(data: bytes | bytearray, start: int = 0, end: int | None = None):
    """(type, offset, size, header size) of each box in ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise EncodeError(f"malformed MP4 box {kind!r} at byte {pos}")
        yield kind, pos, size, header
        pos += size


def _find(data, kind: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """Every ``kind`` box under [start, end), searching container boxes depth-first."""
    found = []
    for k, pos, size, header in _boxes(data, start, end):
        if k == kind:
            found.append((pos, size, header))
        if k in _CONTAINERS:
            found += _find(data, kind, pos + header, pos + size)
    return found


def _tracks(init: bytes) -> dict[int, tuple[bytes, int]]:
    """track_ID -> (handler type, media timescale) from an init segment."""
    tracks = {}
    for pos, size, header in _find(init, b"trak", 0, len(init)):
        (tkhd, _, _), (mdhd, _, _), (hdlr, _, _) = (_find(init, k, pos + header, pos + size)[0]
                                                    for k in (b"tkhd", b"mdhd", b"hdlr"))  # fmt: skip
        wide = init[tkhd + 8] == 1
        track_id = struct.unpack_from(">I", init, tkhd + (28 if wide else 20))[0]
        timescale = struct.unpack_from(">I", init, mdhd + (28 if init[mdhd + 8] == 1 else 20))[0]
        tracks[track_id] = (bytes(init[hdlr + 16 : hdlr + 20]), timescale)
    return tracks


def split(data: bytes) -> tuple[bytes, bytes]:
    """A stand-alone fragmented MP4 -> (init segment, media segment); trailers are dropped."""
    init, media, kinds = bytearray(), bytearray(), set()
    for kind, pos, size, _ in _boxes(data):
        kinds.add(kind)
        if kind in (b"ftyp", b"moov"):
            init += data[pos : pos + size]
        elif kind in (b"moof", b"mdat"):
            media += data[pos : pos + size]
    if b"moov" not in kinds or b"moof" not in kinds:
        raise EncodeError("the chunk is not a fragmented MP4 (no moov or no moof)")
    return bytes(init), bytes(media)


def package(data: bytes, index: int, start_s: float, audio_frame: int) -> tuple[bytes, bytes]:
    """(init, media) of chunk ``index``, its media moved to ``start_s`` on the stream's timeline.

    ``audio_frame`` is the stream AAC frame the chunk's audio slice starts with. Decode
    times (tfdt) are offsets from the chunk's own zero, so adding the chunk's start keeps
    every sample's duration and order exactly as ffmpeg wrote it.
    """
    init, media = split(data)
    tracks = _tracks(init)
    out = bytearray(media)
    for n, (pos, size, header) in enumerate(_find(out, b"moof", 0, len(out))):
        (mfhd, _, _), = _find(out, b"mfhd", pos + header, pos + size)
        struct.pack_into(">I", out, mfhd + 12, index * _SEQUENCE_STRIDE + n + 1)
        for traf, tsize, theader in _find(out, b"traf", pos + header, pos + size):
            (tfhd, _, _), = _find(out, b"tfhd", traf + theader, traf + tsize)
            (tfdt, _, _), = _find(out, b"tfdt", traf + theader, traf + tsize)
            handler, timescale = tracks[struct.unpack_from(">I", out, tfhd + 12)[0]]
            if handler == b"soun":
                base = audio_frame * AAC_FRAME * timescale // SAMPLE_RATE
            else:
                base = round(start_s * timescale)
            if out[tfdt + 8] == 1:
                struct.pack_into(">Q", out, tfdt + 12, struct.unpack_from(">Q", out, tfdt + 12)[0] + base)
            else:
                value = struct.unpack_from(">I", out, tfdt + 12)[0] + base
                if value >= 1 << 32:
                    raise EncodeError("decode time overflows a version-0 tfdt")
                struct.pack_into(">I", out, tfdt + 12, value)
    return init, bytes(out)


def _avc_config(init: bytes) -> bytes:
    pos = init.find(b"avcC")
    return init[pos - 4 : pos - 4 + struct.unpack_from(">I", init, pos - 4)[0]] if pos >= 4 else b""


def check_compatible(init: bytes, other: bytes) -> None:
    """Fragments of one stream must share the init: same tracks, timescales and H.264 setup.

    Inits of two chunks differ only in the informative bitrates (esds, btrt), which
    ffmpeg measures per file; decoders do not use them.
    """
    if _tracks(init) != _tracks(other) or _avc_config(init) != _avc_config(other):
        raise EncodeError("a chunk was encoded with other track or codec settings than the stream's first chunk")


def codecs(init: bytes) -> str:
    """RFC 6381 codecs of an init segment, e.g. ``avc1.64001f,mp4a.40.2`` (for MSE and HLS)."""
    found = []
    pos = init.find(b"avcC")  # inside the avc1 sample entry: profile, compatibility, level follow the version
    if pos >= 4:
        found.append(f"avc1.{init[pos + 5 : pos + 8].hex()}")
    if init.find(b"mp4a") >= 0:
        found.append("mp4a.40.2")
    return ",".join(found)


# ---- playlist and final file -----------------------------------------------------------
def hls_playlist(durations: list[float], target_s: float, ended: bool, init_uri: str = "init.mp4",
                 segment_uri: str = "seg/{n}.m4s") -> str:  # fmt: skip
    """An HLS EVENT playlist of the published fragments; ``#EXT-X-ENDLIST`` once ``ended``.

    The header never changes and lines are only appended, as RFC 8216 asks of EVENT
    playlists; ``target_s`` must bound every fragment's duration for the stream's life.
    """
    lines = [
        "#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{max(1, math.ceil(target_s))}",
        "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-INDEPENDENT-SEGMENTS",
        f'#EXT-X-MAP:URI="{init_uri}"',
    ]  # fmt: skip
    for n, seconds in enumerate(durations):
        lines += [f"#EXTINF:{seconds:.5f},", segment_uri.format(n=n)]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def remux_mp4(init: bytes, fragments: list[bytes]) -> bytes:
    """The fragments as one progressive MP4 (stream copy, faststart): the same frames as the stream."""
    with tempfile.TemporaryDirectory(prefix="w2l-cmaf-") as tmp:
        live, out = Path(tmp) / "live.mp4", Path(tmp) / "final.mp4"
        with open(live, "wb") as fh:
            fh.write(init)
            for fragment in fragments:
                fh.write(fragment)
        run_ffmpeg([*input_args(str(live), "mp4"), "-map", "0", "-c", "copy", "-movflags", "+faststart", "-f", "mp4",
                    str(out)], "remuxing the stream into one MP4")  # fmt: skip
        return out.read_bytes()
