"""The ingress deployment: FastAPI routes and Python-handle methods, each one call into
the flow it serves (``videos``, ``jobs``, ``streams``) or one registry read.

It does no media work and never receives rendered bytes, except to serve a GET.
No ``from __future__ import annotations`` here: Serve and FastAPI read the route
signatures at run time, and string annotations on the class methods do not resolve.
"""

import logging
import pathlib

from fastapi import Depends, File, HTTPException, Path, Query, Request, UploadFile
from ray import serve
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from actors.pool import running_workers
from wav2lip.avatar import DEFAULT_AVATAR_ID
from wav2lip.options import AvatarOptions

from .admission import Admission
from .api import api, edge
from .personas import load_personas
from .background import Background
from .dispatch import ChunkDispatcher
from .errors import NotReady, RenderFailed
from .flow import FlowContext
from .forms import AVATAR_TYPES, async_field, read_upload, video_form
from .handles import Handles
from .http import ranged_response
from .jobs import JobFlow
from .metrics import ServiceMetrics
from .schemas import (
    AVATAR_ID_PATTERN,
    JOB_ID_PATTERN,
    STREAM_ID_PATTERN,
    VIDEO_ID_PATTERN,
    AgentInfo,
    AvatarRecord,
    GenerateVideoRequest,
    Health,
    JobAccepted,
    JobStatus,
    StreamCreated,
    StreamStatus,
    VideoRequest,
    VideoResponse,
    VoiceRecord,
)
from .session_routes import SessionRoutes
from .sessions import SessionFlow
from .settings import Settings
from .streams import StreamFlow, stream_status
from .videos import VideoFlow

log = logging.getLogger("ray.serve")



def _stream_urls(stream_id: str) -> StreamCreated:
    base = f"/v1/streams/{stream_id}"
    return StreamCreated(id=stream_id, hls=f"{base}/index.m3u8", mp4=f"{base}/live.mp4", final=f"/v1/videos/{stream_id}",
                         status=f"{base}/status")  # fmt: skip


#: Fragments never change once listed; the playlist and the status do.
_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
_NO_CACHE = {"Cache-Control": "no-cache"}

_DEMO_PAGE = (pathlib.Path(__file__).parent / "static" / "index.html").read_text()


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress(SessionRoutes):
    def __init__(self, settings: Settings, handles: Handles):
        edge.max_bytes, edge.api_key, edge.cors_origins = settings.max_upload_bytes, settings.api_key, settings.cors_origins
        edge.upload_timeout_s, edge.max_uploads = settings.upload_timeout_s, settings.max_uploads
        edge.retry_after_s = settings.retry_after_s
        self.settings = settings
        self.h = handles
        self.personas = load_personas(settings.agents_file)
        metrics = ServiceMetrics()
        self.dispatcher = ChunkDispatcher(handles.worker, settings)
        ctx = FlowContext(settings, handles, self.dispatcher,
                          Admission(settings.max_pending_requests, settings.retry_after_s, metrics), metrics,
                          self.personas)  # fmt: skip
        background = Background()
        self.videos = VideoFlow(ctx)
        self.jobs = JobFlow(ctx, self.videos, background)
        self.streams = StreamFlow(ctx, background)
        self.registry = self.streams.registry  # the stream registry, its calls retried while it restarts
        self.sessions = SessionFlow(settings, handles, self.personas)

    # ---- Python handle API (same models as HTTP) -------------------------------------
    async def generate(self, request: VideoRequest) -> VideoResponse:
        """Render one request; ``video_bytes(video_id)`` reads the result."""
        return await self.videos.generate(request)

    async def video_bytes(self, video_id: str) -> bytes:
        return await self.videos.video_bytes(video_id)

    async def submit(self, request: VideoRequest) -> str:
        """Start a job; poll ``status(job_id)``, stop it with ``cancel(job_id)``."""
        return await self.jobs.submit(request)

    async def status(self, job_id: str) -> JobStatus:
        return await self.jobs.status(job_id)

    async def cancel(self, job_id: str) -> JobStatus:
        return await self.jobs.cancel(job_id)

    async def open_stream(self, request: VideoRequest) -> StreamCreated:
        """Start (or join) a progressive stream; its URLs. Read them over HTTP, or poll ``stream_status``."""
        return _stream_urls((await self.streams.open(request))["id"])

    async def stream_status(self, stream_id: str) -> StreamStatus:
        return await self.streams.status(stream_id)

    async def _respond(self, request: VideoRequest, run_async: bool, warnings: list[str] = ()):
        if not run_async:
            return (await self.videos.generate(request)).model_copy(update={"warnings": list(warnings)})
        job_id = await self.jobs.submit(request)
        accepted = JobAccepted(job_id=job_id, status_url=f"/v1/jobs/{job_id}", warnings=list(warnings))
        return JSONResponse(accepted.model_dump(), status_code=202)

    # ---- HTTP -----------------------------------------------------------------------
    @api.post("/v1/videos", response_model=VideoResponse, summary="Render a lip-synced video",
              responses={202: {"model": JobAccepted, "description": "with async=true: the job was started"}})  # fmt: skip
    async def create_video(
        self,
        run_async: bool = Query(False, alias="async", description="answer 202 with a job id at once"),
        form_async: bool = Depends(async_field),
        request: VideoRequest = Depends(video_form),
    ) -> VideoResponse:
        return await self._respond(request, run_async or form_async)

    @api.post("/generate_video", response_model=VideoResponse, summary="The old VBVA API: text -> video",
              responses={202: {"model": JobAccepted, "description": "with async: the job was started"}})  # fmt: skip
    async def generate_video(
        self, body: GenerateVideoRequest,
        run_async: bool = Query(False, alias="async", description="answer 202 with a job id at once"),
    ) -> VideoResponse:  # fmt: skip
        ignored = [f"unknown field {name!r} was ignored" for name in sorted(body.model_extra or {})]
        return await self._respond(body.to_video_request(), run_async or body.run_async, ignored)

    @api.get("/v1/jobs/{job_id}", response_model=JobStatus, summary="Progress of an async render")
    async def get_job(self, job_id: str = Path(pattern=JOB_ID_PATTERN)) -> JobStatus:
        return await self.status(job_id)

    @api.delete("/v1/jobs/{job_id}", response_model=JobStatus, summary="Cancel an async render")
    async def delete_job(self, job_id: str = Path(pattern=JOB_ID_PATTERN)) -> JobStatus:
        return await self.cancel(job_id)

    @api.get("/v1/agents", response_model=list[AgentInfo], summary="Agent personas")
    async def list_agents(self) -> list[AgentInfo]:
        return [AgentInfo(agent_type=name, default=name == self.personas.default_agent, **p.model_dump())
                for name, p in sorted(self.personas.agents.items())]  # fmt: skip

    @api.get("/v1/voices", response_model=list[VoiceRecord], summary="TTS voices")
    async def list_voices(self) -> list[VoiceRecord]:
        return [VoiceRecord(**v) for v in await self.h.tts.voices.remote()]

    @api.get("/v1/videos/{video_id}", response_class=JSONResponse, summary="Download a video (MP4, ranges)",
             responses={200: {"content": {"video/mp4": {}}}, 206: {"content": {"video/mp4": {}}}})  # fmt: skip
    async def get_video(self, request: Request, video_id: str = Path(pattern=VIDEO_ID_PATTERN)):
        data = await self.videos.video_bytes(video_id)
        return ranged_response(data, request.headers.get("range"), "video/mp4")

    @api.post("/v1/avatars", response_model=AvatarRecord, summary="Register a face image or video")
    async def create_avatar(self, avatar: UploadFile = File(..., description="face image or video")) -> AvatarRecord:
        media = await read_upload(avatar, AVATAR_TYPES, "the avatar")
        _, record = await self.h.avatars.register.remote(media, AvatarOptions())
        return AvatarRecord(**record)

    @api.get("/v1/avatars", response_model=list[AvatarRecord], summary="List avatars")
    async def list_avatars(self) -> list[AvatarRecord]:
        return [AvatarRecord(**r) for r in await self.h.avatars.list.remote()]

    @api.get("/v1/avatars/{avatar_id}", response_model=AvatarRecord, summary="Describe one avatar")
    async def get_avatar(self, avatar_id: str = Path(pattern=AVATAR_ID_PATTERN)) -> AvatarRecord:
        return AvatarRecord(**await self.h.avatars.describe.remote(avatar_id))

    @api.delete("/v1/avatars/{avatar_id}", status_code=204, summary="Delete an uploaded avatar (idempotent)")
    async def delete_avatar(self, avatar_id: str = Path(pattern=AVATAR_ID_PATTERN)) -> Response:
        if avatar_id == DEFAULT_AVATAR_ID:
            raise HTTPException(403, "the default avatar cannot be deleted")
        await self.h.avatars.delete.remote(avatar_id)
        return Response(status_code=204)

    @api.delete("/v1/videos/{video_id}", status_code=204, summary="Delete a video (idempotent)")
    async def delete_video(self, video_id: str = Path(pattern=VIDEO_ID_PATTERN)) -> Response:
        await self.h.results.delete.remote(video_id)
        return Response(status_code=204)

    @api.post("/v1/streams", status_code=201, response_model=StreamCreated, summary="Start a progressive stream",
              description="Same inputs as /v1/videos. Answers at once; the first fragment follows the first chunk.")  # fmt: skip
    async def create_stream(self, request: VideoRequest = Depends(video_form)) -> StreamCreated:
        return await self.open_stream(request)

    @api.get("/v1/streams/{stream_id}/status", response_model=StreamStatus, summary="A stream's progress")
    async def get_stream_status(self, stream_id: str = Path(pattern=STREAM_ID_PATTERN)) -> StreamStatus:
        return await self.stream_status(stream_id)

    @api.get("/v1/streams/{stream_id}/index.m3u8", response_class=Response, summary="HLS playlist (EVENT)",
             responses={200: {"content": {"application/vnd.apple.mpegurl": {}}}})  # fmt: skip
    async def get_stream_playlist(self, stream_id: str = Path(pattern=STREAM_ID_PATTERN)) -> Response:
        text = await self.registry.playlist.remote(stream_id, self.settings.stream_wait_s)
        if text is None:
            raise NotReady(f"stream {stream_id} is still starting; retry in {self.settings.retry_after_s} s")
        return Response(text, media_type="application/vnd.apple.mpegurl", headers=_NO_CACHE)

    @api.get("/v1/streams/{stream_id}/init.mp4", response_class=Response, summary="The fMP4 init segment",
             responses={200: {"content": {"video/mp4": {}}}})  # fmt: skip
    async def get_stream_init(self, stream_id: str = Path(pattern=STREAM_ID_PATTERN)) -> Response:
        return Response(await self.registry.init.remote(stream_id), media_type="video/mp4", headers=_IMMUTABLE)

    @api.get("/v1/streams/{stream_id}/seg/{index}.m4s", response_class=Response, summary="One media fragment",
             responses={200: {"content": {"video/iso.segment": {}}}})  # fmt: skip
    async def get_stream_fragment(self, stream_id: str = Path(pattern=STREAM_ID_PATTERN),
                                  index: int = Path(ge=0, le=100_000)) -> Response:  # fmt: skip
        data = await self.registry.fragment.remote(stream_id, index)
        return Response(data, media_type="video/iso.segment", headers=_IMMUTABLE)

    @api.get("/v1/streams/{stream_id}/live.mp4", response_class=StreamingResponse,
             summary="The stream as one fragmented MP4, sent as fragments finish",
             responses={200: {"content": {"video/mp4": {}}}})  # fmt: skip
    async def get_stream_live(self, stream_id: str = Path(pattern=STREAM_ID_PATTERN)) -> StreamingResponse:
        record = await self.registry.get.remote(stream_id)  # unknown: 404 before any byte is sent
        if record["status"] in ("failed", "cancelled") and record["published"] == 0:
            raise RenderFailed(f"stream {stream_id} is {record['status']}: "
                               f"{(record.get('error') or {}).get('message', 'nothing was rendered')}")  # fmt: skip
        return StreamingResponse(self._live(stream_id), media_type="video/mp4", headers=_NO_CACHE)

    async def _live(self, stream_id: str):
        """init, then each fragment as it is published. A viewer leaving ends only this generator."""
        sent = 0
        while True:
            record = await self.registry.wait.remote(stream_id, sent, self.settings.stream_wait_s)
            if sent == 0 and record["published"] > 0:
                yield await self.registry.init.remote(stream_id)
            while sent < record["published"]:
                yield await self.registry.fragment.remote(stream_id, sent)
                sent += 1
            if record["status"] not in ("starting", "rendering"):
                return

    @api.delete("/v1/streams/{stream_id}", response_model=StreamStatus, summary="Cancel a stream, or delete a finished one")
    async def delete_stream(self, stream_id: str = Path(pattern=STREAM_ID_PATTERN)) -> StreamStatus:
        return stream_status(await self.registry.cancel.remote(stream_id))

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo_page(self) -> HTMLResponse:
        """A small browser demo (no third-party assets): text in, the rendered video and its stats out."""
        return HTMLResponse(_DEMO_PAGE, headers={"Cache-Control": "no-cache"})

    @api.get("/healthz", response_model=Health, summary="Liveness and what renders")
    async def healthz(self) -> Health:
        try:
            info = await self.dispatcher.renderer()
        except Exception as exc:  # no worker replica answering yet
            raise NotReady(f"no lip-sync worker is ready: {type(exc).__name__}") from None
        return Health(status="ok", model_loaded=True, renderer=info["renderer"], model_id=info["model_id"],
                      device=info["device"], precision=info["precision"], workers=running_workers(self.settings.workers),
                      selection=info.get("selection"))  # fmt: skip
