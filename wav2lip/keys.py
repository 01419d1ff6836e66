"""Content keys: every cache and share key of the product, built here with one version.

A key is a sha256 over length-prefixed parts (boundaries cannot collide), led by what
it names and ``KEY_VERSION``. Bump ``KEY_VERSION`` when the output for the same inputs
changes (rendering, preparation, normalisation, packaging): every old entry then
misses instead of being served.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass

KEY_VERSION = 4  #: one version for avatars, speech, results, aliases and streams


def content_key(*parts: bytes | str | dict | list | float | int | None) -> str:
    """Hex sha256 over ``parts``, each length-prefixed so boundaries cannot collide."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            data = part.encode()
        elif isinstance(part, (bytes, bytearray, memoryview)):
            data = bytes(part)
        else:
            if is_dataclass(part):
                part = asdict(part)
            data = json.dumps(part, sort_keys=True, default=str).encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def digest(data: bytes) -> str:
    """Hex sha256 of one byte string (uploads, sample buffers)."""
    return hashlib.sha256(data).hexdigest()


def avatar_key(media: bytes, options) -> str:
    """A prepared avatar: the media's bytes and how it was prepared (``AvatarOptions``)."""
    return content_key("avatar", KEY_VERSION, media, options)


def speech_key(text: str, voice_settings: str) -> str:
    """Synthesised speech: the text and the voice's settings string (model, rate, pauses)."""
    return content_key("speech", KEY_VERSION, text, voice_settings)


def result_key(avatar: str, samples_digest: str, renderer: dict, render: dict) -> str:
    """A finished video: prepared avatar key, the exact samples, what renders, how."""
    return content_key("video", KEY_VERSION, avatar, samples_digest, renderer, render)


def request_key(kind: str, speech, avatar: str, render: dict, renderer: dict) -> str:
    """What a request says before any work (upload digests or text+voice, avatar id or
    upload digest, settings): ``"alias"`` of a video result, or ``"stream"`` id."""
    return content_key(kind, KEY_VERSION, speech, avatar, render, renderer)
