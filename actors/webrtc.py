"""WebRTC viewers of live sessions (aiortc): one peer connection per browser, beside its session.

Peer connections live in the ``SessionHost`` replica, next to the sessions they show, and
the ingress carries only the SDP offer and answer. With H.264 (preferred; every major
browser has it) a peer sends the session's own encoded packets, the ones its fMP4
fragments hold, so a viewer costs no encoding, and every fragment starting on an IDR frame
lets a peer join at any fragment. With VP8 (a browser without H.264) aiortc encodes the
raw frames per peer. Both tracks are paced by one clock counted in audio samples: frame f
is sent when the timeline reaches sample ``frame_sample(f)``, so the RTCP sender reports
the browser lip-syncs by agree with what it hears. A peer that fails, closes or never
connects ends only itself; a closed session ends its peers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from fractions import Fraction

import av
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.sdp import SessionDescription

from wav2lip.errors import InvalidSettings, RetryLater
from wav2lip.hparams import SAMPLE_RATE
from wav2lip.live_audio import frame_sample

from .broadcast import Broadcast

log = logging.getLogger("ray.serve")
VIDEO_CLOCK = 90000  #: RTP video clock rate (Hz)
AUDIO_FRAME_S = 0.02  #: the session's Opus packets are 20 ms


@dataclass(frozen=True)
class WebRTCSettings:
    max_peers: int = 32  #: peer connections one SessionHost replica holds (503 beyond)
    connect_timeout_s: float = 15.0  #: a peer not connected by then is closed
    ice_servers: tuple[dict, ...] = ()  #: ``{"urls", "username"?, "credential"?}``: STUN/TURN behind NAT
    video_codec: str = "H264"  #: preferred video codec (the other is kept as a fallback)
    jitter_s: float = 0.1  #: playout delay that absorbs uneven fragment arrival
    max_late_s: float = 0.5  #: a peer this late re-anchors its clock instead of rushing
    queue_fragments: int = 8  #: fragments waiting for a slow peer before the oldest are dropped
    retry_after_s: int = 2


class PeersFull(RetryLater):
    """The replica holds its most peer connections; retry after ``retry_after_s``."""

    code = "webrtc_full"


class _Clock:
    """A peer's media clock: sample s of the session timeline is due at ``anchor + s / 16000``."""

    def __init__(self, jitter_s: float, max_late_s: float):
        self.jitter_s, self.max_late_s = jitter_s, max_late_s
        self.anchor: float | None = None

    def arrived(self, sample: int) -> None:
        """Samples from ``sample`` on have arrived: the clock runs ``jitter_s`` behind the earliest
        arrival seen, so a slow first fragment does not delay the peer for the rest of its life."""
        earliest = time.monotonic() + self.jitter_s - sample / SAMPLE_RATE
        if self.anchor is None or earliest < self.anchor:
            self.anchor = earliest

    async def wait(self, sample: int) -> None:
        now = time.monotonic()
        due = self.anchor + sample / SAMPLE_RATE  # set by ``arrived`` before any sample is queued
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > self.max_late_s:  # the session fell behind real time: carry on from now
            self.anchor += now - due


class _Feed:
    """A session's fragments as the two tracks' items (started by the first ``recv``).

    Video items are ``(timeline sample, H.264 access unit)``, or ``(sample, BGR frame)``
    when the peer encodes (VP8); audio items are ``(sample, Opus packet)``.
    """

    def __init__(self, broadcast: Broadcast, fps: float, settings: WebRTCSettings):
        self.broadcast, self.fps = broadcast, fps
        self.encoded = True  #: H.264 negotiated: send the session's packets
        self.clock = _Clock(settings.jitter_s, settings.max_late_s)
        per_second = max(1, round(fps)) + round(1 / AUDIO_FRAME_S)  # generous: a fragment is at most a second
        self.video: asyncio.Queue = asyncio.Queue(settings.queue_fragments * per_second)
        self.audio: asyncio.Queue = asyncio.Queue(settings.queue_fragments * per_second)
        self.task: asyncio.Task | None = None
        self.ended = asyncio.Event()

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.ended.set()

    async def _run(self) -> None:
        try:
            async for fragment in self.broadcast.follow("packets" if self.encoded else "raw", {}):
                if self.encoded:
                    video = fragment.video
                elif fragment.frames is not None:  # None: published before this viewer joined
                    video = [(frame_sample(fragment.start + i, self.fps), image) for i, image in enumerate(fragment.frames)]
                else:
                    continue
                self.clock.arrived(frame_sample(fragment.start, self.fps))
                for item in video:
                    _put(self.video, item)
                for item in fragment.audio:
                    _put(self.audio, item)
        finally:
            self.ended.set()
            for queue in (self.video, self.audio):
                _put(queue, None)

    async def next(self, queue: asyncio.Queue):
        self.start()
        item = await queue.get()
        if item is None:
            _put(queue, None)  # the other end of the queue may ask again
            raise MediaStreamError
        sample, _ = item
        await self.clock.wait(sample)
        return item


def _put(queue: asyncio.Queue, item) -> None:
    """Put, dropping the oldest item when a slow peer let the queue fill."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


class _VideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, feed: _Feed):
        super().__init__()
        self.feed = feed

    async def recv(self) -> av.Packet | av.VideoFrame:
        sample, payload = await self.feed.next(self.feed.video)
        if isinstance(payload, bytes):
            out = av.Packet(payload)
        else:
            out = av.VideoFrame.from_ndarray(payload, format="bgr24")
        out.pts, out.time_base = sample * VIDEO_CLOCK // SAMPLE_RATE, Fraction(1, VIDEO_CLOCK)
        return out


class _AudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, feed: _Feed):
        super().__init__()
        self.feed = feed

    async def recv(self) -> av.Packet:
        sample, payload = await self.feed.next(self.feed.audio)
        packet = av.Packet(payload)
        packet.pts, packet.time_base = sample, Fraction(1, SAMPLE_RATE)
        return packet


@dataclass
class _Peer:
    pc: RTCPeerConnection
    feed: _Feed
    connected: asyncio.Event
    watcher: asyncio.Task | None = None  #: ``WebRTCPeers._watch`` (held: a task nobody holds may vanish)


class WebRTCPeers:
    """The peer connections of one ``SessionHost`` replica."""

    def __init__(self, settings: WebRTCSettings):
        self.settings = settings
        self.peers: dict[str, _Peer] = {}

    def _configuration(self) -> RTCConfiguration:
        # An empty list, not None: aiortc would otherwise ask a public STUN server.
        return RTCConfiguration(iceServers=[RTCIceServer(**server) for server in self.settings.ice_servers])

    async def answer(self, session_id: str, broadcast: Broadcast, fps: float, sdp: str, kind: str) -> dict:
        """The SDP answer to a browser's offer; its tracks show the session from the live edge."""
        if len(self.peers) >= self.settings.max_peers:
            raise PeersFull(f"{len(self.peers)} WebRTC peers are connected, the most this host takes; "
                            f"retry in {self.settings.retry_after_s} s", self.settings.retry_after_s)  # fmt: skip
        peer_id = uuid.uuid4().hex
        pc, feed = RTCPeerConnection(self._configuration()), _Feed(broadcast, fps, self.settings)
        peer = self.peers[peer_id] = _Peer(pc, feed, asyncio.Event())

        @pc.on("connectionstatechange")
        async def _changed() -> None:
            if pc.connectionState == "connected":
                peer.connected.set()
            elif pc.connectionState in ("failed", "closed"):
                await self._end(peer_id, pc.connectionState)

        try:
            await self._negotiate(pc, feed, sdp, kind)
        except BaseException:
            await self._end(peer_id, "refused")
            raise
        peer.watcher = asyncio.create_task(self._watch(peer_id, peer))
        log.info("session %s: WebRTC peer %s (%d peers)", session_id, peer_id, len(self.peers))
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    async def _negotiate(self, pc: RTCPeerConnection, feed: _Feed, sdp: str, kind: str) -> None:
        """Our sending transceivers first (aiortc negotiates codecs when the offer is applied)."""
        try:
            offered = {media.kind: [c.mimeType.split("/")[-1] for c in media.rtp.codecs]
                       for media in SessionDescription.parse(sdp).media}  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - aiortc's parser raises whatever the text trips
            raise InvalidSettings(f"the SDP offer is not valid: {type(exc).__name__}: {exc}"[:300]) from None
        if "video" not in offered:
            raise InvalidSettings("the SDP offer has no video media section (offer to receive video and audio)")
        video = pc.addTransceiver(_VideoTrack(feed), direction="sendonly")
        if self.settings.video_codec in offered["video"]:
            # only the preferred codec (and its retransmissions): aiortc would keep the offer's order
            wanted = (f"video/{self.settings.video_codec}", "video/rtx")
            video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in wanted])
        if "audio" in offered:
            pc.addTransceiver(_AudioTrack(feed), direction="sendonly")
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except Exception as exc:  # noqa: BLE001 - an offer aiortc cannot answer (no common codec, ...)
            raise InvalidSettings(f"the SDP offer cannot be answered: {type(exc).__name__}: {exc}"[:300]) from None
        await pc.setLocalDescription(await pc.createAnswer())
        feed.encoded = _video_codecs(pc.localDescription.sdp)[:1] == ["H264"]

    async def _watch(self, peer_id: str, peer: _Peer) -> None:
        """End the peer if it never connects, or when its session ends."""
        try:
            await asyncio.wait_for(peer.connected.wait(), self.settings.connect_timeout_s)
        except asyncio.TimeoutError:
            return await self._end(peer_id, "not connected in time")
        await peer.feed.ended.wait()
        await self._end(peer_id, "session ended")

    async def _end(self, peer_id: str, why: str) -> None:
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return
        peer.feed.stop()
        await peer.pc.close()
        log.info("WebRTC peer %s ended: %s (%d peers)", peer_id, why, len(self.peers))

    async def close(self) -> None:
        for peer_id in list(self.peers):
            await self._end(peer_id, "host closing")


def _video_codecs(sdp: str) -> list[str]:
    """The video codecs of an SDP's video section, in its order (``H264``, ``VP8``, ...)."""
    for media in SessionDescription.parse(sdp).media:
        if media.kind == "video":
            return [codec.mimeType.split("/")[-1] for codec in media.rtp.codecs]
    return []
