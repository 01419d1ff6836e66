"""The multipart form of ``/v1/videos`` and ``/v1/streams``, read into one ``VideoRequest``.

No ``from __future__ import annotations``: FastAPI reads these signatures at run time.
"""

import inspect

from fastapi import File, Form, Request, UploadFile
from pydantic import ValidationError

from wav2lip.errors import InvalidSettings, UnsupportedMedia

from .schemas import AVATAR_ID_PATTERN, VideoRequest

#: Declared media types we accept for audio; anything else is refused (415) before decoding.
AUDIO_TYPES = ("audio/", "video/", "application/octet-stream", "application/ogg")
#: Declared media types accepted for an avatar upload.
AVATAR_TYPES = ("image/", "video/", "application/octet-stream")


def _request_from_form(**fields) -> VideoRequest:
    try:
        return VideoRequest(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidSettings(f"{where}: {first.get('msg')}") from None


async def read_upload(upload: UploadFile | None, kinds: tuple[str, ...], what: str) -> bytes | None:
    if upload is None:
        return None
    declared = (upload.content_type or "application/octet-stream").lower()
    if not declared.startswith(kinds):
        raise UnsupportedMedia(f"{what} has media type {declared}; send one of {', '.join(kinds)}")
    return await upload.read()


async def video_form(
    request: Request,
    audio: UploadFile | None = File(None, description="speech: wav, mp3, m4a, ogg, flac"),
    avatar: UploadFile | None = File(None, description="face image or video, instead of avatar_id"),
    avatar_id: str = Form("default", pattern=AVATAR_ID_PATTERN),
    fps: float | None = Form(None, ge=1, le=60),
    preset: str | None = Form(None),
    chunk_duration: float | None = Form(None, gt=0, le=60),
    enable_parallel: bool = Form(True),
    text: str | None = Form(None, description="text to speak instead of an audio file"),
    agent_type: str | None = Form(None, description="persona (GET /v1/agents)"),
    voice: str | None = Form(None, description="TTS voice (GET /v1/voices)"),
    rate: float | None = Form(None, ge=0.5, le=2.0, description="speaking rate"),
    pads: str | None = Form(None, description="top bottom left right, e.g. '0 10 0 0'"),
    box: str | None = Form(None, description="y1 y2 x1 x2"),
    nosmooth: bool = Form(False),
    loop: str = Form("pingpong"),
) -> VideoRequest:
    """The multipart form of ``/v1/videos`` and ``/v1/streams`` as one ``VideoRequest``.

    A field the form does not know (a misspelling, ``async`` on a stream) is refused, so
    that a different request than the one meant never runs.
    """
    extra = ("async",) if request.url.path == "/v1/videos" else ()
    unknown = sorted(set((await request.form()).keys()) - FORM_FIELDS - set(extra))
    if unknown:
        raise InvalidSettings(f"unknown form field(s) {', '.join(map(repr, unknown))}; "
                              f"known: {', '.join(sorted(FORM_FIELDS | set(extra)))}")  # fmt: skip
    audio_bytes = await read_upload(audio, AUDIO_TYPES, "the audio")
    avatar_bytes = await read_upload(avatar, AVATAR_TYPES, "the avatar")
    return _request_from_form(
        audio=audio_bytes, text=text, agent_type=agent_type, voice=voice, rate=rate,
        avatar=avatar_bytes, avatar_id=avatar_id, fps=fps, preset=preset,
        chunk_duration=chunk_duration, enable_parallel=enable_parallel, pads=pads, box=box, nosmooth=nosmooth,
        loop=loop,
    )  # fmt: skip


async def async_field(run_async: bool = Form(False, alias="async", description="answer 202 with a job id at once")) -> bool:
    """``async`` sent as a form field of ``/v1/videos`` (as well as in the query)."""
    return run_async


#: The form fields ``video_form`` reads.
FORM_FIELDS = frozenset(inspect.signature(video_form).parameters) - {"request"}
