"""Renders that outlive their request: asynchronous jobs, and the cancel watch they share
with progressive streams.

Such a render runs as a task on the replica that accepted it; its state lives in a
registry deployment (jobs or streams), which is also where a cancel request made
through any ingress replica lands. ``watch`` polls for that request and turns the
render's end into the outcome the registry records.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine

from wav2lip.errors import Wav2LipError

from .errors import error_body, error_code
from .generation import VideoGenerator
from .schemas import VideoRequest

log = logging.getLogger("ray.serve")


async def watch(work: asyncio.Task, poll_s: float, cancel_requested) -> tuple[str, object]:
    """Await a background render, cancelling it once ``await cancel_requested()`` says so.

    ``("succeeded", result)``, ``("cancelled", None)`` or ``("failed", error body)``.
    """
    while not work.done():
        await asyncio.wait([work], timeout=poll_s)
        if not work.done() and await cancel_requested():
            work.cancel()
    try:
        return "succeeded", work.result()
    except asyncio.CancelledError:
        return "cancelled", None
    except Wav2LipError as exc:
        return "failed", error_body(error_code(exc), exc.message)
    except Exception as exc:  # our bug: recorded on the job or stream, logged here
        log.exception("background render failed")
        return "failed", error_body("internal_error", str(exc)[:300])


class Background:
    """This replica's background tasks, referenced until done (asyncio keeps only weak ones)."""

    def __init__(self):
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


class JobRunner:
    """``POST /v1/videos?async=true``: a render as a job whose state is in the job registry."""

    def __init__(self, gen: VideoGenerator, jobs, background: Background):
        self.gen = gen
        self.jobs = jobs
        self.background = background

    async def submit(self, req: VideoRequest) -> str:
        """Start ``req`` as a job on this replica; its id."""
        self.gen.admit()  # a full replica answers 503 now, not a 202 for a job that fails at once
        job_id = uuid.uuid4().hex
        await self.jobs.create.remote(job_id)
        self.background.spawn(self._run(job_id, req))
        return job_id

    async def _run(self, job_id: str, req: VideoRequest) -> None:
        render = asyncio.create_task(self.gen.generate(req, job_id))
        await self.jobs.update.remote(job_id, status="running")
        outcome, value = await watch(render, self.gen.settings.job_poll_s,
                                     lambda: self.jobs.cancel_requested.remote(job_id))  # fmt: skip
        if outcome == "succeeded":
            await self.jobs.update.remote(job_id, status="succeeded", video_id=value.video_id,
                                          duration_s=value.duration_s, stats=value.stats.model_dump())  # fmt: skip
        else:
            await self.jobs.update.remote(job_id, status=outcome, error=value)
