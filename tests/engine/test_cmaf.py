"""CMAF fragments: AAC encoded once and sliced, chunks packaged onto one timeline, HLS text."""

from __future__ import annotations

import math
import re
import struct
from fractions import Fraction

import numpy as np
import pytest

import wav2lip
from wav2lip import aac, cmaf
from wav2lip.audio import frame_count, melspectrogram
from wav2lip.encode import read_frames
from wav2lip.errors import EncodeError
from wav2lip.fallback import FallbackGenerator
from wav2lip.options import AvatarOptions, RenderOptions, preset
from wav2lip.pipeline import render_segment
from wav2lip.render import Renderer

from ..media import packet_times

FPS = 25.0


def test_aac_is_encoded_once_into_frames_that_cover_the_audio(speech_samples):
    frames = aac.encode_aac(speech_samples, "64k")
    assert len(frames) == math.ceil(len(speech_samples) / aac.AAC_FRAME)  # the priming frame is gone
    assert all(f[0] == 0xFF and f[1] & 0xF0 == 0xF0 for f in frames)


def test_aac_fed_in_pieces_equals_one_encode(speech_samples):
    """What lets text streams package chunks while later sentences are still synthesised."""
    whole = aac.encode_aac(speech_samples, "64k")
    encoder = aac.AacEncoder("64k")
    fed = 0
    for piece in np.array_split(speech_samples, 7):
        encoder.feed(piece)
        fed += len(piece)
        settled = fed // aac.AAC_FRAME - 3  # the encoder runs a few frames behind its input
        assert encoder.wait_for(settled, 10.0)
        assert encoder.frames(0, settled) == whole[:settled]  # frames already out never change
    assert encoder.close() == whole


@pytest.mark.parametrize("fps, grid", [(25, 8), (50, 16), (30, 48), (12, 1), (29.97, 1)])
def test_aligned_frames_is_where_video_and_aac_frames_meet(fps, grid):
    assert aac.aligned_frames(fps) == grid
    if grid > 1:
        assert (Fraction(grid) / Fraction(fps) * 16000) % 1024 == 0


@pytest.fixture(scope="module")
def stream(tmp_path_factory, data_dir, speech_samples):
    """The 9 s fixture as four CMAF fragments (16 frames first), packaged like the service does."""
    tmp = tmp_path_factory.mktemp("cmaf")
    avatar = wav2lip.prepare_avatar(data_dir / "avatar.png", AvatarOptions(resize_factor=4))
    renderer = Renderer(FallbackGenerator(), RenderOptions(device="cpu"))
    mel = melspectrogram(speech_samples)
    frames = aac.encode_aac(speech_samples, "64k")
    n = frame_count(len(speech_samples), FPS)
    bounds = [0, 16, 88, 160, n]
    init, fragments, firsts = None, [], []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        first = aac.aac_frame_at(a / FPS)
        last = aac.aac_frame_at(b / FPS) if b < n else len(frames)
        (tmp / "a.aac").write_bytes(b"".join(frames[first:last]))
        path = render_segment(renderer, avatar, mel, FPS, a, b, tmp / f"{i}.mp4", preset("balanced"),
                              audio=tmp / "a.aac")  # fmt: skip
        chunk_init, media = cmaf.package(path.read_bytes(), i, a / FPS, first)
        init = init or chunk_init
        cmaf.check_compatible(init, chunk_init)
        fragments.append(media)
        firsts.append(first)
    live = tmp / "live.mp4"
    live.write_bytes(init + b"".join(fragments))
    final = tmp / "final.mp4"
    final.write_bytes(cmaf.remux_mp4(init, fragments))
    return {"init": init, "fragments": fragments, "bounds": bounds, "firsts": firsts, "live": live, "final": final,
            "n": n, "aac": frames}  # fmt: skip


def tfdts(media: bytes) -> list[int]:
    out, pos = [], 0
    while (pos := media.find(b"tfdt", pos)) > 0:
        out.append(struct.unpack_from(">Q", media, pos + 8)[0] if media[pos + 4] == 1 else
                   struct.unpack_from(">I", media, pos + 8)[0])  # fmt: skip
        pos += 4
    return out


def test_fragments_sit_back_to_back_on_one_timeline(stream):
    live = packet_times(stream["live"])
    video, audio = live[0], live[1]
    assert len(video) == stream["n"] and len(audio) == len(stream["aac"])
    for track in (video, audio):
        assert track[0][0] == 0.0
        for (t0, d0), (t1, _) in zip(track, track[1:]):
            assert abs(t1 - (t0 + d0)) < 1e-6
    for i, media in enumerate(stream["fragments"]):
        v, a = tfdts(media)  # video track first, then audio, as ffmpeg writes them
        assert v / 12800 == pytest.approx(stream["bounds"][i] / FPS) and a == stream["firsts"][i] * aac.AAC_FRAME
        assert a / 16000 == pytest.approx(v / 12800)  # on the 0.32 s grid both tracks start together


def test_final_mp4_holds_the_stream_frames_with_faststart(stream):
    final = stream["final"].read_bytes()
    assert final.find(b"moov") < final.find(b"mdat")
    assert np.array_equal(read_frames(stream["final"]), read_frames(stream["live"]))
    assert packet_times(stream["final"]) == packet_times(stream["live"])


def test_codecs_and_init_checks(stream, tmp_path, data_dir):
    assert re.fullmatch(r"avc1\.64[0-9a-f]{4},mp4a\.40\.2", cmaf.codecs(stream["init"]))  # x264 High, AAC-LC
    with pytest.raises(EncodeError):
        cmaf.split(stream["final"].read_bytes())  # a progressive MP4 is not a fragment
    other = wav2lip.prepare_avatar(data_dir / "avatar.png", AvatarOptions(resize_factor=8))  # another size
    renderer = Renderer(FallbackGenerator(), RenderOptions(device="cpu"))
    (tmp_path / "a.aac").write_bytes(b"".join(stream["aac"][:5]))
    mel = np.zeros((80, 200), np.float32)
    path = render_segment(renderer, other, mel, FPS, 0, 8, tmp_path / "x.mp4", preset("balanced"), audio=tmp_path / "a.aac")
    with pytest.raises(EncodeError, match="other track or codec settings"):
        cmaf.check_compatible(stream["init"], cmaf.package(path.read_bytes(), 0, 0.0, 0)[0])


def test_hls_playlist_only_grows_and_ends_with_endlist():
    growing = cmaf.hls_playlist([0.64], 1.28, False)
    later = cmaf.hls_playlist([0.64, 1.28], 1.28, False)
    done = cmaf.hls_playlist([0.64, 1.28], 1.28, True)
    assert later.startswith(growing) and done.startswith(later) and done.endswith("#EXT-X-ENDLIST\n")
    assert growing == (
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:EVENT\n"
        '#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:0.64000,\nseg/0.m4s\n'
    )
