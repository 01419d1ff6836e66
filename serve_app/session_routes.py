"""The live-session routes and Python-handle methods of the ingress (a base class of ``Ingress``).

Each is one call into ``SessionFlow`` or the ``SessionHost``; the protocol is in the README.
No ``from __future__ import annotations``: FastAPI reads these signatures at run time.
"""

from fastapi import Path, WebSocket
from starlette.responses import JSONResponse, StreamingResponse

from .api import api
from .session_schemas import (
    SESSION_ID_PATTERN,
    SessionCreated,
    SessionRequest,
    SessionStatus,
    WebRTCAnswer,
    WebRTCOffer,
)
from .sessions import session_urls

_NO_CACHE = {"Cache-Control": "no-cache"}


class SessionRoutes:
    # ---- Python handle API ----------------------------------------------------------------
    async def open_session(self, request: SessionRequest) -> SessionCreated:
        """Open a live session; connect to its ``ws`` (or read ``live_mp4``) to watch and speak."""
        status = await self.sessions.open(request)
        return SessionCreated(**session_urls(status["session_id"]))

    async def session_status(self, session_id: str) -> SessionStatus:
        return SessionStatus(**await self.h.sessions.status.remote(session_id))

    async def close_session(self, session_id: str) -> SessionStatus:
        return SessionStatus(**await self.h.sessions.close.remote(session_id))

    async def session_input(self, session_id: str, items: list[tuple], sample_rate: int = 16000) -> list[dict]:
        """What a socket would send, from Python: ``("audio", pcm16le)``, ``("text", str)``,
        ``("end_of_speech",)``, ``("interrupt",)``, ``("close",)``; the error events."""
        return await self.h.sessions.input.remote(session_id, items, sample_rate)

    async def session_webrtc(self, session_id: str, offer: WebRTCOffer) -> WebRTCAnswer:
        """A WebRTC peer for the session: the SDP answer to a browser's offer."""
        return WebRTCAnswer(**await self.h.sessions.webrtc.remote(session_id, offer.sdp, offer.type))

    # ---- HTTP -----------------------------------------------------------------------------
    @api.post("/v1/sessions", status_code=201, response_model=SessionCreated, summary="Open a live session",
              responses={503: {"description": "every worker's share of sessions is taken (Retry-After)"}})  # fmt: skip
    async def create_session(self, request: SessionRequest) -> JSONResponse:
        created = await self.open_session(request)
        return JSONResponse(created.model_dump(), status_code=201, headers={"Location": created.status_url})

    @api.get("/v1/sessions/{session_id}", response_model=SessionStatus, summary="A live session's state")
    async def get_session(self, session_id: str = Path(pattern=SESSION_ID_PATTERN)) -> SessionStatus:
        return await self.session_status(session_id)

    @api.delete("/v1/sessions/{session_id}", response_model=SessionStatus, summary="End a live session")
    async def delete_session(self, session_id: str = Path(pattern=SESSION_ID_PATTERN)) -> SessionStatus:
        return await self.close_session(session_id)

    @api.get("/v1/sessions/{session_id}/live.mp4", response_class=StreamingResponse,
             summary="The session as one fragmented MP4 from the live edge (no events, no input)",
             responses={200: {"content": {"video/mp4": {}}}})  # fmt: skip
    async def get_session_live(self, session_id: str = Path(pattern=SESSION_ID_PATTERN)) -> StreamingResponse:
        await self.h.sessions.check.remote(session_id)  # unknown: 404 before any byte
        return StreamingResponse(self.sessions.watch(session_id, "mp4"), media_type="video/mp4", headers=_NO_CACHE)

    @api.post("/v1/sessions/{session_id}/webrtc", response_model=WebRTCAnswer,
              summary="Watch a live session over WebRTC: an SDP offer in, the answer out",
              responses={503: {"description": "the session host holds its most peer connections (Retry-After)"}})  # fmt: skip
    async def post_session_webrtc(self, offer: WebRTCOffer,
                                  session_id: str = Path(pattern=SESSION_ID_PATTERN)) -> WebRTCAnswer:  # fmt: skip
        return await self.session_webrtc(session_id, offer)

    @api.websocket("/v1/sessions/{session_id}/ws")
    async def session_socket(self, websocket: WebSocket, session_id: str) -> None:
        """Query: ``sample_rate`` (8000-48000), ``output`` (fmp4 | frames | events), ``token`` (the API key, for browsers)."""
        await self.sessions.connect(websocket, session_id)
