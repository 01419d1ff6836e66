"""``serve_app.relay.bounded``: a slow consumer is cut off, never buffered without bound."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.relay import ViewerTooSlow, bounded


class FakeStream:
    """Yields ``n`` messages as fast as it can, like a host that never waits for its viewer."""

    def __init__(self, n: int):
        self.n, self.cancelled = n, False

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        for i in range(self.n):
            yield i
            await asyncio.sleep(0)

    def cancel(self):
        self.cancelled = True


def test_a_consumer_that_keeps_up_gets_everything_in_order():
    async def run():
        stream = FakeStream(50)
        return [m async for m in bounded(stream, 100)], stream

    got, stream = asyncio.run(run())
    assert got == list(range(50)) and stream.cancelled


def test_a_slow_consumer_is_cut_off_at_the_limit():
    async def run():
        stream, got = FakeStream(10_000), []
        with pytest.raises(ViewerTooSlow):
            async for m in bounded(stream, 20):
                got.append(m)
                await asyncio.sleep(0.01)  # slower than the stream
        return got, stream

    got, stream = asyncio.run(run())
    assert got == list(range(len(got))) and 0 < len(got) <= 21 and stream.cancelled
