"""Live sessions at the ingress: open one (resolve persona, avatar, voice, fps), relay a socket.

The session itself runs in the ``SessionHost`` deployment; an ingress replica holds no
session state, only the sockets connected to it: it forwards a socket's input to the
host (messages that arrive while a call is in flight go together in the next one) and
the host's output to the socket. A socket that drops loses nothing: reconnecting (to
any replica) continues at the live edge.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from fractions import Fraction

from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from actors.records import SessionSpec
from wav2lip.errors import InvalidSettings, Wav2LipError
from wav2lip.options import AvatarOptions, preset

from .errors import NotReady, error_body, error_code, status_for
from .personas import Personas
from .relay import ViewerTooSlow, bounded
from .session_schemas import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, SOCKET_OUTPUTS, SessionRequest, SocketMessage
from .settings import Settings

log = logging.getLogger("ray.serve")
_POLICY_VIOLATION = 1008  #: WebSocket close code when an HTTP refusal cannot be sent
_TRY_AGAIN_LATER = 1013  #: WebSocket close code for a viewer too slow for the live edge
_DEFAULT_SAMPLE_RATE = 16000
_CLOSE_WAIT_S = 10.0  #: how long a close message waits for the input before it to be applied
_FPS_DENOMINATOR = 1001  #: session rates are kept as simple fractions (30000/1001 and the like)
#: Messages one viewer may have waiting, per fragment the host keeps (frames + events each).
_WAITING_PER_FRAGMENT = 8


def session_urls(session_id: str) -> dict:
    base = f"/v1/sessions/{session_id}"
    return {"session_id": session_id, "ws": f"{base}/ws", "live_mp4": f"{base}/live.mp4", "status_url": base}


class SessionFlow:
    def __init__(self, settings: Settings, handles, personas: Personas):
        self.settings, self.h, self.personas = settings, handles, personas

    async def open(self, req: SessionRequest) -> dict:
        """Resolve what the session renders with, open it on the host; its status."""
        persona = self.personas.get(req.agent_type)
        voice = req.voice or persona.voice
        if voice not in {v["name"] for v in await self.h.tts.voices.remote()}:
            await self.h.tts.validate.remote("a", voice, persona.rate)  # raises the TTS's own "unknown voice"
        enc = preset(req.preset or persona.preset)
        avatar = await self.h.avatars.variant.remote(req.avatar_id or persona.avatar,
                                                     AvatarOptions(resize_factor=enc.resize_factor))  # fmt: skip
        fps = float(Fraction(req.fps or avatar.summary.get("fps") or enc.fps).limit_denominator(_FPS_DENOMINATOR))
        if not 1 <= fps <= 60:
            raise InvalidSettings(f"the avatar's frame rate {fps:g} is outside [1, 60]; give fps")
        try:
            renderer = (await self.h.worker.info.remote())["renderer"]
        except Exception as exc:  # noqa: BLE001 - no worker replica answering yet
            raise NotReady(f"no lip-sync worker is ready: {type(exc).__name__}") from None
        spec = SessionSpec(avatar, voice, persona.rate, fps, req.agent_type, idle_through_model=renderer != "fallback")
        return await self.h.sessions.open.remote(spec)

    # ---- the socket ----------------------------------------------------------------------
    async def connect(self, ws: WebSocket, session_id: str) -> None:
        """Check the key, the query and the session before the upgrade, then relay until either side ends."""
        try:
            self._authorise(ws)
            sample_rate, output = self._query(ws)
            await self.h.sessions.check.remote(session_id)
        except Wav2LipError as exc:
            return await _refuse(ws, exc)
        except Exception as exc:  # noqa: BLE001 - the session host is restarting
            return await _refuse(ws, NotReady(f"the session host is not answering: {type(exc).__name__}"))
        await ws.accept()
        send_lock = asyncio.Lock()

        async def send(message: bytes | str) -> None:
            async with send_lock:
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                else:
                    await ws.send_text(message)

        output_stream = self.watch(session_id, output)
        relay_out = asyncio.create_task(_relay_output(output_stream, send, ws))
        relay_in = asyncio.create_task(self._relay_input(ws, session_id, sample_rate, send))
        try:
            await asyncio.wait([relay_out, relay_in], return_when=asyncio.FIRST_COMPLETED)
        finally:
            relay_in.cancel()
            relay_out.cancel()
            if ws.client_state == WebSocketState.CONNECTED:
                try:
                    await ws.close()
                except Exception:  # noqa: BLE001 - the client may be gone already
                    pass

    def watch(self, session_id: str, output: str):
        """The host's output for one viewer, at most a bounded number of messages waiting here."""
        stream = self.h.sessions.options(stream=True).watch.remote(session_id, output)
        return bounded(stream, self.settings.session_keep_fragments * _WAITING_PER_FRAGMENT)

    def _authorise(self, ws: WebSocket) -> None:
        key = self.settings.api_key
        if not key:
            return
        given = ws.headers.get("authorization", "").encode()
        token = ws.query_params.get("token", "").encode()
        if not (hmac.compare_digest(given, f"Bearer {key}".encode()) or hmac.compare_digest(token, key.encode())):
            raise Unauthorized("send the API key as 'Authorization: Bearer <key>' or the query parameter token")

    @staticmethod
    def _query(ws: WebSocket) -> tuple[int, str]:
        q = ws.query_params
        raw = q.get("sample_rate", str(_DEFAULT_SAMPLE_RATE))
        if not (raw.isascii() and raw.isdigit()) or not MIN_SAMPLE_RATE <= int(raw) <= MAX_SAMPLE_RATE:
            raise InvalidSettings(f"sample_rate must be an integer in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}], got {raw!r}")
        output = q.get("output", SOCKET_OUTPUTS[0])
        if output not in SOCKET_OUTPUTS:
            raise InvalidSettings(f"output must be one of {', '.join(SOCKET_OUTPUTS)}, got {output!r}")
        return int(raw), output

    async def _relay_input(self, ws: WebSocket, session_id: str, sample_rate: int, send) -> None:
        inbox: asyncio.Queue = asyncio.Queue()
        forward = asyncio.create_task(self._forward(inbox, session_id, sample_rate, send))
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    inbox.put_nowait(("audio", message["bytes"]))
                    continue
                try:
                    parsed = SocketMessage.validate_json(message.get("text") or "")
                except ValidationError as exc:
                    await send(json.dumps(_bad_message(exc)))
                    continue
                inbox.put_nowait(("text", parsed.text) if parsed.type == "text" else (parsed.type,))
                if parsed.type == "close":
                    try:
                        await asyncio.wait_for(inbox.join(), _CLOSE_WAIT_S)
                    except asyncio.TimeoutError:
                        pass
                    return
        except WebSocketDisconnect:
            return
        finally:
            forward.cancel()

    async def _forward(self, inbox: asyncio.Queue, session_id: str, sample_rate: int, send) -> None:
        """One host call at a time; what arrived meanwhile goes in the next call, in order."""
        while True:
            items = [await inbox.get()]
            while not inbox.empty():
                items.append(inbox.get_nowait())
            try:
                for event in await self.h.sessions.input.remote(session_id, items, sample_rate):
                    await send(json.dumps(event))
            except Wav2LipError as exc:  # the session ended meanwhile
                await send(json.dumps({"type": "error", "pts": None, "code": error_code(exc), "message": exc.message}))
            except Exception as exc:  # noqa: BLE001 - host restarting, socket closing: say so, keep reading
                log.warning("session %s: input call failed: %s", session_id, exc)
                try:
                    await send(json.dumps({"type": "error", "pts": None, "code": "input_failed",
                                           "message": f"the session host did not take the input: {type(exc).__name__}"}))  # fmt: skip
                except Exception:  # noqa: BLE001 - the socket is gone too
                    return
            finally:
                for _ in items:
                    inbox.task_done()


class Unauthorized(Wav2LipError):
    code = "unauthorized"


async def _relay_output(stream, send, ws: WebSocket) -> None:
    try:
        async for message in stream:
            await send(message)
    except ViewerTooSlow as exc:
        await ws.close(code=_TRY_AGAIN_LATER, reason=f"too slow for the live edge: {exc}"[:120])


def _bad_message(exc: ValidationError) -> dict:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    detail = f"{where}: {first.get('msg', 'invalid')}" if where else first.get("msg", "invalid")
    return {"type": "error", "pts": None, "code": "invalid_message",
            "message": "a text message must be JSON {\"type\": \"text\", \"text\": ...} or {\"type\": "
                       f"\"end_of_speech\" | \"interrupt\" | \"close\"}} ({detail})"}  # fmt: skip


async def _refuse(ws: WebSocket, exc: Wav2LipError) -> None:
    """An HTTP answer instead of the upgrade (404, 422, 401), or a policy close where the server cannot."""
    status = 401 if isinstance(exc, Unauthorized) else status_for(exc)
    try:
        await ws.send_denial_response(JSONResponse(error_body(error_code(exc), exc.message), status_code=status))
    except RuntimeError:  # the server lacks the websocket.http.response extension
        await ws.close(code=_POLICY_VIOLATION, reason=f"{status} {exc.message}"[:120])
