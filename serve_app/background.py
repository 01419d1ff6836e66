"""Renders that outlive their request (jobs and streams): the task set that keeps them,
and the cancel watch they share.

Such a render runs as a task on the replica that accepted it; its state lives in a
registry deployment (jobs or streams), which is also where a cancel request made
through any ingress replica lands. ``watch`` polls for that request and turns the
render's end into the outcome the registry records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine

from wav2lip.errors import Wav2LipError

from .errors import error_body, error_code

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
    except Exception:  # our bug: logged here, recorded without internals
        log.exception("background render failed")
        return "failed", error_body("internal_error", "the render failed on our side; it was logged")


class Background:
    """This replica's background tasks, referenced until done (asyncio keeps only weak ones)."""

    def __init__(self):
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
