"""A session's output on its way to one slow or fast consumer, never buffered without bound.

Serve's streaming calls have no backpressure: the host yields each fragment as it is
made, and whatever the consumer (a socket, a ``live.mp4`` response) has not taken yet
waits in this process. ``bounded`` lets at most ``limit`` messages wait; a consumer that
falls further behind is cut off (``ViewerTooSlow``) and reconnects at the live edge.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from ray.serve.exceptions import RequestCancelledError

_END = object()


class ViewerTooSlow(Exception):
    """The consumer fell more than the limit behind the live edge."""


async def bounded(stream, limit: int) -> AsyncIterator:
    """The messages of ``stream`` (a streaming ``DeploymentResponseGenerator``), at most ``limit`` waiting."""
    waiting: asyncio.Queue = asyncio.Queue()
    overflow = asyncio.Event()

    async def fill() -> None:
        try:
            async for message in stream:
                if waiting.qsize() >= limit:
                    overflow.set()
                    return
                waiting.put_nowait(message)
        except RequestCancelledError:
            pass
        finally:
            waiting.put_nowait(_END)

    filler = asyncio.create_task(fill())
    try:
        while (message := await waiting.get()) is not _END:
            yield message
        if overflow.is_set():
            raise ViewerTooSlow(f"more than {limit} messages waited for this viewer")
        await filler  # the stream's own error, if it ended with one
    finally:
        filler.cancel()
        stream.cancel()
