"""The ingress deployment: FastAPI routes and Python-handle methods over ``VideoGenerator``.

No ``from __future__ import annotations`` here: Serve and FastAPI read the route
signatures at run time, and string annotations on the class methods do not resolve.
"""


import logging
import pathlib

from fastapi import Depends, FastAPI, File, Form, HTTPException, Path, Query, Request, UploadFile
from pydantic import ValidationError
from ray import serve
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from wav2lip.avatar import DEFAULT_AVATAR_ID
from wav2lip.errors import InvalidSettings, UnsupportedMedia
from wav2lip.ffmpeg import set_ffmpeg_binary
from wav2lip.options import AvatarOptions

from .errors import STATUS, NotReady, RenderFailed
from .background import Background, JobRunner
from .generation import VideoGenerator
from .http import Edge, EdgeConfig, install_error_handlers, ranged_response
from .agents import load_personas
from .schemas import (
    AVATAR_ID_PATTERN,
    JOB_ID_PATTERN,
    VIDEO_ID_PATTERN,
    AgentInfo,
    AvatarRecord,
    ErrorBody,
    GenerateVideoRequest,
    Health,
    JobAccepted,
    JobStatus,
    STREAM_ID_PATTERN,
    StreamCreated,
    StreamStatus,
    VoiceRecord,
    VideoRequest,
    VideoResponse,
)
from .settings import Settings
from .retrying import RetryingHandle
from .streaming import StreamService

log = logging.getLogger("ray.serve")

api = FastAPI(
    title="Wav2Lip talking-head service",
    version="1.0.0",
    description="Text or audio in, a lip-synced MP4 of an avatar out. Errors are JSON {error, message}.",
    responses={s: {"model": ErrorBody} for s in sorted(set(STATUS.values()) | {400, 401, 403, 416, 422})},
)
install_error_handlers(api)
#: API key, CORS and the streaming upload limit; added at import (Starlette freezes
#: middleware once serving), configured from the settings when the replica starts.
edge = EdgeConfig()
api.add_middleware(Edge, config=edge)

#: Declared media types we accept for audio; anything else is refused (415) before decoding.
_AUDIO_TYPES = ("audio/", "video/", "application/octet-stream", "application/ogg")


def _request_from_form(**fields) -> VideoRequest:
    try:
        return VideoRequest(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidSettings(f"{where}: {first.get('msg')}") from None


async def _read_upload(upload: UploadFile | None, kinds: tuple[str, ...], what: str) -> bytes | None:
    if upload is None:
        return None
    declared = (upload.content_type or "application/octet-stream").lower()
    if not declared.startswith(kinds):
        raise UnsupportedMedia(f"{what} has media type {declared}; send one of {', '.join(kinds)}")
    return await upload.read()


async def _video_form(
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
    """The multipart form of ``/v1/videos`` and ``/v1/streams`` as one ``VideoRequest``."""
    audio_bytes = await _read_upload(audio, _AUDIO_TYPES, "the audio")
    avatar_bytes = await _read_upload(avatar, ("image/", "video/", "application/octet-stream"), "the avatar")
    return _request_from_form(
        audio=audio_bytes, text=text, agent_type=agent_type, voice=voice, rate=rate,
        avatar=avatar_bytes, avatar_id=avatar_id, fps=fps, preset=preset,
        chunk_duration=chunk_duration, enable_parallel=enable_parallel, pads=pads, box=box, nosmooth=nosmooth,
        loop=loop,
    )  # fmt: skip


def _stream_urls(stream_id: str) -> StreamCreated:
    base = f"/v1/streams/{stream_id}"
    return StreamCreated(id=stream_id, hls=f"{base}/index.m3u8", mp4=f"{base}/live.mp4", final=f"/v1/videos/{stream_id}",
                         status=f"{base}/status")  # fmt: skip


def _stream_status(record: dict) -> StreamStatus:
    return StreamStatus(id=record["id"], status=record["status"], fragments_published=record["published"],
                        fragments_total=record["fragments_total"], duration_s=round(record["duration_s"], 4),
                        codecs=record["codecs"], stats=record.get("stats"), error=record.get("error"))  # fmt: skip


#: Fragments never change once listed; the playlist and the status do.
_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
_NO_CACHE = {"Cache-Control": "no-cache"}

_DEMO_PAGE = (pathlib.Path(__file__).parent / "static" / "index.html").read_text()


def _running_workers(settings: Settings) -> int:
    """Worker replicas Serve reports RUNNING (the configured count if the controller cannot say)."""
    try:
        app = serve.get_replica_context().app_name
        states = serve.status().applications[app].deployments["LipSyncWorker"].replica_states
        return int(states.get("RUNNING", 0))
    except Exception:  # noqa: BLE001 - health must answer even if status is unavailable
        return settings.workers


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    def __init__(self, settings: Settings, worker, combiner, avatars, results, tts, jobs, streams):
        set_ffmpeg_binary(settings.ffmpeg_binary)
        edge.max_bytes, edge.api_key, edge.cors_origins = settings.max_upload_bytes, settings.api_key, settings.cors_origins
        self.settings = settings
        self.avatars = avatars
        self.tts = tts
        self.jobs = jobs
        self.personas = load_personas(settings.agents_file)
        self.generator = VideoGenerator(settings, worker, combiner, avatars, results, tts, jobs, self.personas)
        background = Background()
        self.job_runner = JobRunner(self.generator, jobs, background)
        self.streams = RetryingHandle(streams, settings.registry_retry_s)  # survives a registry restart
        self.streaming = StreamService(self.generator, streams, self.streams, background)

    # ---- Python handle API (same models as HTTP) -------------------------------------
    async def generate(self, request: VideoRequest) -> VideoResponse:
        """Render one request; ``video_bytes(video_id)`` reads the result."""
        return await self.generator.generate(request)

    async def video_bytes(self, video_id: str) -> bytes:
        return await self.generator.video_bytes(video_id)

    async def submit(self, request: VideoRequest) -> str:
        """Start a job; poll ``status(job_id)``, stop it with ``cancel(job_id)``."""
        return await self.job_runner.submit(request)

    async def status(self, job_id: str) -> JobStatus:
        job = await self.jobs.get.remote(job_id)
        url = f"/v1/videos/{job['video_id']}" if job.get("video_id") else None
        return JobStatus(**{k: job.get(k) for k in JobStatus.model_fields if k != "url"}, url=url)

    async def cancel(self, job_id: str) -> JobStatus:
        await self.jobs.cancel.remote(job_id)
        return await self.status(job_id)

    async def open_stream(self, request: VideoRequest) -> StreamCreated:
        """Start (or join) a progressive stream; its URLs. Read them over HTTP, or poll ``stream_status``."""
        record = await self.streaming.open(request)
        return _stream_urls(record["id"])

    async def stream_status(self, stream_id: str) -> StreamStatus:
        return _stream_status(await self.streams.get.remote(stream_id))

    async def _respond(self, request: VideoRequest, run_async: bool):
        if not run_async:
            return await self.generator.generate(request)
        job_id = await self.job_runner.submit(request)
        return JSONResponse(JobAccepted(job_id=job_id, status_url=f"/v1/jobs/{job_id}").model_dump(), status_code=202)

    # ---- HTTP -----------------------------------------------------------------------
    @api.post("/v1/videos", response_model=VideoResponse, summary="Render a lip-synced video",
              responses={202: {"model": JobAccepted, "description": "with async=true: the job was started"}})  # fmt: skip
    async def create_video(
        self,
        run_async: bool = Query(False, alias="async", description="answer 202 with a job id at once"),
        request: VideoRequest = Depends(_video_form),
    ) -> VideoResponse:
        return await self._respond(request, run_async)

    @api.post("/generate_video", response_model=VideoResponse, summary="The old VBVA API: text -> video",
              responses={202: {"model": JobAccepted, "description": "with async: the job was started"}})  # fmt: skip
    async def generate_video(
        self, body: GenerateVideoRequest,
        run_async: bool = Query(False, alias="async", description="answer 202 with a job id at once"),
    ) -> VideoResponse:  # fmt: skip
        return await self._respond(body.to_video_request(), run_async or body.run_async)

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
        return [VoiceRecord(**v) for v in await self.tts.voices.remote()]

    @api.get("/v1/videos/{video_id}", response_class=JSONResponse, summary="Download a video (MP4, ranges)",
             responses={200: {"content": {"video/mp4": {}}}, 206: {"content": {"video/mp4": {}}}})  # fmt: skip
    async def get_video(self, request: Request, video_id: str = Path(pattern=VIDEO_ID_PATTERN)):
        data = await self.generator.video_bytes(video_id)
        return ranged_response(data, request.headers.get("range"), "video/mp4")

    @api.post("/v1/avatars", response_model=AvatarRecord, summary="Register a face image or video")
    async def create_avatar(self, avatar: UploadFile = File(..., description="face image or video")) -> AvatarRecord:
        media = await _read_upload(avatar, ("image/", "video/", "application/octet-stream"), "the avatar")
        result = await self.avatars.register.remote(media, AvatarOptions())
        return AvatarRecord(**result["record"])

    @api.get("/v1/avatars", response_model=list[AvatarRecord], summary="List avatars")
    async def list_avatars(self) -> list[AvatarRecord]:
        return [AvatarRecord(**r) for r in await self.avatars.list.remote()]

    @api.get("/v1/avatars/{avatar_id}", response_model=AvatarRecord, summary="Describe one avatar")
    async def get_avatar(self, avatar_id: str = Path(pattern=AVATAR_ID_PATTERN)) -> AvatarRecord:
        return AvatarRecord(**await self.avatars.describe.remote(avatar_id))

    @api.delete("/v1/avatars/{avatar_id}", status_code=204, summary="Delete an uploaded avatar (idempotent)")
    async def delete_avatar(self, avatar_id: str = Path(pattern=AVATAR_ID_PATTERN)) -> Response:
        if avatar_id == DEFAULT_AVATAR_ID:
            raise HTTPException(403, "the default avatar cannot be deleted")
        await self.avatars.delete.remote(avatar_id)
        return Response(status_code=204)

    @api.delete("/v1/videos/{video_id}", status_code=204, summary="Delete a video (idempotent)")
    async def delete_video(self, video_id: str = Path(pattern=VIDEO_ID_PATTERN)) -> Response:
        await self.generator.results.delete.remote(video_id)
        return Response(status_code=204)

    @api.post("/v1/streams", status_code=201, response_model=StreamCreated, summary="Start a progressive stream",
              description="Same inputs as /v1/videos. Answers at once; the first fragment follows the first chunk.")  # fmt: skip
    async def create_stream(self, request: VideoRequest = Depends(_video_form)) -> StreamCreated:
        return await self.open_stream(request)

    @api.get("/v1/streams/{stream_id}/status", response_model=StreamStatus, summary="A stream's progress")
    async def get_stream_status(self, stream_id: str = Path(pattern=STREAM_ID_PATTERN)) -> StreamStatus:
        return await self.stream_status(stream_id)

    @api.get("/v1/streams/{stream_id}/index.m3u8", response_class=Response, summary="HLS playlist (EVENT)",
             responses={200: {"content": {"application/vnd.apple.mpegurl": {}}}})  # fmt: skip
    async def get_stream_playlist(self, stream_id: str = Path(pattern=STREAM_ID_PATTERN)) -> Response:
        text = await self.streams.playlist.remote(stream_id, self.settings.stream_wait_s)
        if text is None:
            raise NotReady(f"stream {stream_id} is still starting; retry in {self.settings.retry_after_s} s")
        return Response(text, media_type="application/vnd.apple.mpegurl", headers=_NO_CACHE)

    @api.get("/v1/streams/{stream_id}/init.mp4", response_class=Response, summary="The fMP4 init segment",
             responses={200: {"content": {"video/mp4": {}}}})  # fmt: skip
    async def get_stream_init(self, stream_id: str = Path(pattern=STREAM_ID_PATTERN)) -> Response:
        return Response(await self.streams.init.remote(stream_id), media_type="video/mp4", headers=_IMMUTABLE)

    @api.get("/v1/streams/{stream_id}/seg/{index}.m4s", response_class=Response, summary="One media fragment",
             responses={200: {"content": {"video/iso.segment": {}}}})  # fmt: skip
    async def get_stream_fragment(self, stream_id: str = Path(pattern=STREAM_ID_PATTERN),
                                  index: int = Path(ge=0, le=100_000)) -> Response:  # fmt: skip
        data = await self.streams.fragment.remote(stream_id, index)
        return Response(data, media_type="video/iso.segment", headers=_IMMUTABLE)

    @api.get("/v1/streams/{stream_id}/live.mp4", response_class=StreamingResponse,
             summary="The stream as one fragmented MP4, sent as fragments finish",
             responses={200: {"content": {"video/mp4": {}}}})  # fmt: skip
    async def get_stream_live(self, stream_id: str = Path(pattern=STREAM_ID_PATTERN)) -> StreamingResponse:
        record = await self.streams.get.remote(stream_id)  # unknown: 404 before any byte is sent
        if record["status"] in ("failed", "cancelled") and record["published"] == 0:
            raise RenderFailed(f"stream {stream_id} is {record['status']}: "
                               f"{(record.get('error') or {}).get('message', 'nothing was rendered')}")  # fmt: skip
        return StreamingResponse(self._live(stream_id), media_type="video/mp4", headers=_NO_CACHE)

    async def _live(self, stream_id: str):
        """init, then each fragment as it is published. A viewer leaving ends only this generator."""
        sent = 0
        while True:
            record = await self.streams.wait.remote(stream_id, sent, self.settings.stream_wait_s)
            if sent == 0 and record["published"] > 0:
                yield await self.streams.init.remote(stream_id)
            while sent < record["published"]:
                yield await self.streams.fragment.remote(stream_id, sent)
                sent += 1
            if record["status"] not in ("starting", "rendering"):
                return

    @api.delete("/v1/streams/{stream_id}", response_model=StreamStatus, summary="Cancel a stream, or delete a finished one")
    async def delete_stream(self, stream_id: str = Path(pattern=STREAM_ID_PATTERN)) -> StreamStatus:
        return _stream_status(await self.streams.cancel.remote(stream_id))

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo_page(self) -> HTMLResponse:
        """A small browser demo (no third-party assets): text in, the rendered video and its stats out."""
        return HTMLResponse(_DEMO_PAGE, headers={"Cache-Control": "no-cache"})

    @api.get("/healthz", response_model=Health, summary="Liveness and what renders")
    async def healthz(self) -> Health:
        try:
            info = await self.generator.info()
        except Exception as exc:  # no worker replica answering yet
            raise NotReady(f"no lip-sync worker is ready: {type(exc).__name__}") from None
        return Health(status="ok", model_loaded=True, renderer=info["renderer"], model_id=info["model_id"],
                      device=info["device"], precision=info["precision"], workers=_running_workers(self.settings))  # fmt: skip
