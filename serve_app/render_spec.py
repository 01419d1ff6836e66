"""What a request asks to render, resolved once: persona defaults, presets, avatar options.

Every flow (whole video, job, stream) starts from a ``RenderSpec``; the persona's voice,
rate, avatar and preset are filled in here and nowhere else.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field, replace

from wav2lip.errors import InputError, InvalidSettings
from wav2lip.keys import digest
from wav2lip.options import AvatarOptions, EncodeOptions, preset

from .personas import Personas
from .schemas import VideoRequest
from .settings import Settings


@dataclass(frozen=True)
class RenderSpec:
    """One render's settings; ``fps`` is settled once the avatar is known (``with_fps``)."""

    req: VideoRequest
    enc: EncodeOptions
    avatar_options: AvatarOptions
    chunk_s: float
    voice: str | None = None  #: text requests: the voice and rate that speak it
    rate: float | None = None
    fps: float = 0.0
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def text(self) -> str | None:
        return self.req.text

    def speech_identity(self):
        """What the speech is, before any work: the upload's digest, or text + voice + rate."""
        return [self.req.text, self.voice, self.rate] if self.req.text is not None else digest(self.req.audio)

    def avatar_identity(self) -> str:
        return digest(self.req.avatar) if self.req.avatar is not None else self.req.avatar_id

    def render_settings(self) -> dict:
        """The settings that change the frames or the encoding (part of every key)."""
        return {"avatar": asdict(self.avatar_options), "fps": self.req.fps, "loop": self.req.loop,
                "enc": asdict(self.enc)}  # fmt: skip

    def with_fps(self, video_fps: float | None) -> RenderSpec:
        """An explicit fps wins; else a video avatar's own rate; else the preset's."""
        return replace(self, fps=float(self.req.fps or video_fps or self.enc.fps))


def resolve(req: VideoRequest, settings: Settings, personas: Personas, stream: bool = False) -> RenderSpec:
    """The request checked for one speech source, with its persona's defaults filled in."""
    if req.text is not None and req.audio is not None:
        raise InputError("send either an audio file or text, not both")
    if req.text is None and not req.audio:
        raise InputError("send an audio file (field 'audio') or text (field 'text')")
    if stream and req.lossless:
        raise InvalidSettings("streams are H.264 + AAC; lossless output is for whole videos only")
    persona = personas.get(req.agent_type) if req.text is not None or req.agent_type else None
    voice = rate = None
    if persona is not None:
        updates = {"preset": req.preset or persona.preset}
        if req.avatar is None and req.avatar_id == "default":
            updates["avatar_id"] = persona.avatar
        req = req.model_copy(update=updates)
        if req.text is not None:
            voice, rate = req.voice or persona.voice, req.rate or persona.rate
    enc = preset(req.preset or settings.default_preset, lossless=req.lossless or None)
    opts = AvatarOptions(pads=req.pads or AvatarOptions().pads, box=req.box, smooth=not req.nosmooth,
                         resize_factor=enc.resize_factor)  # fmt: skip
    chunk_s = req.chunk_duration or (settings.stream_chunk_duration_s if stream else settings.chunk_duration_s)
    return RenderSpec(req, enc, opts, chunk_s, voice, rate)
