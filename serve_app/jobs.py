"""Jobs (``POST /v1/videos?async=true``): a whole-video render whose state is in the job registry."""

from __future__ import annotations

import asyncio
import uuid

from .background import Background, watch
from .flow import FlowContext
from .schemas import JobStatus, VideoRequest
from .videos import VideoFlow


class JobFlow:
    def __init__(self, ctx: FlowContext, videos: VideoFlow, background: Background):
        self.settings = ctx.settings
        self.jobs = ctx.handles.jobs  #: the JobRegistry
        self.admission = ctx.admission
        self.videos = videos
        self.background = background

    async def submit(self, req: VideoRequest) -> str:
        """Start ``req`` as a job on this replica; its id. A full replica answers 503 now,
        not a 202 for a job that fails at once: the job holds its slot from here."""
        slot = self.admission.reserve()
        try:
            job_id = uuid.uuid4().hex
            await self.jobs.create.remote(job_id)
        except BaseException:
            slot.release()
            raise
        self.background.spawn(self._run(job_id, req, slot))
        return job_id

    async def status(self, job_id: str) -> JobStatus:
        job = await self.jobs.get.remote(job_id)
        url = f"/v1/videos/{job.video_id}" if job.video_id else None
        return JobStatus(**{k: getattr(job, k) for k in JobStatus.model_fields if k != "url"}, url=url)

    async def cancel(self, job_id: str) -> JobStatus:
        await self.jobs.cancel.remote(job_id)
        return await self.status(job_id)

    async def _run(self, job_id: str, req: VideoRequest, slot) -> None:
        async def progress(done: int, total: int) -> None:
            await self.jobs.update.remote(job_id, status="running", frames_done=done, frames_total=total)

        render = asyncio.create_task(self.videos.generate(req, progress, slot))
        await self.jobs.update.remote(job_id, status="running")
        outcome, value = await watch(render, self.settings.job_poll_s,
                                     lambda: self.jobs.cancel_requested.remote(job_id))  # fmt: skip
        if outcome == "succeeded":
            await self.jobs.update.remote(job_id, status="succeeded", video_id=value.video_id,
                                          duration_s=value.duration_s, stats=value.stats.model_dump())  # fmt: skip
        else:
            await self.jobs.update.remote(job_id, status=outcome, error=value)
