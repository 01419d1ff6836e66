"""StreamRegistry on its own (no Serve): order, sharing, cancel, staleness, expiry, waits."""

from __future__ import annotations

import asyncio

import pytest

from actors.streams import StreamRegistry
from wav2lip.errors import NotFound


class FakeClock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


SID = "a" * 64


@pytest.fixture
def registry(tmp_path):
    clock = FakeClock()
    return StreamRegistry.func_or_class(str(tmp_path), retention_s=3600, stale_after_s=60, clock=clock), clock


def test_fragments_are_published_in_order_and_listed_only_whole(registry, tmp_path):
    reg, _ = registry

    async def scenario():
        assert (await reg.open(SID))["attached"] is False
        assert await reg.playlist(SID, 0.01) is None  # no plan yet: no header to promise
        await reg.start(SID, 1.28)
        with pytest.raises(ValueError, match="out of order"):
            await reg.publish(SID, 1, b"m1", 1.28)
        with pytest.raises(NotFound):
            await reg.fragment(SID, 0)
        await reg.publish(SID, 0, b"m0", 0.64, init=b"\x00\x00\x00\x08avcC")
        assert await reg.fragment(SID, 0) == b"m0" and (await reg.init(SID)).endswith(b"avcC")
        text = await reg.playlist(SID, 0.01)
        assert "#EXTINF:0.64000," in text and "seg/0.m4s" in text and "seg/1.m4s" not in text and "#EXT-X-TARGETDURATION:2" in text
        assert "ENDLIST" not in text
        assert (await reg.open(SID))["attached"] is True  # a second identical request joins this one
        await reg.plan(SID, 3, 2.42)
        assert (await reg.get(SID))["fragments_total"] == 3
        await reg.publish(SID, 1, b"m1", 1.28)
        await reg.publish(SID, 2, b"m2", 0.5)
        await reg.finish(SID, "complete", stats={"total_chunks": 3})
        assert (await reg.playlist(SID, 0.01)).endswith("#EXT-X-ENDLIST\n")
        assert (await reg.open(SID))["attached"] is True  # finished: served as it is
        with pytest.raises(NotFound):
            await reg.publish(SID, 3, b"m3", 0.5)  # nothing more after the end

    asyncio.run(scenario())
    assert not list(tmp_path.rglob("*.tmp"))


def test_cancel_failure_and_a_silent_renderer(registry):
    reg, clock = registry

    async def scenario():
        await reg.open(SID)
        await reg.start(SID, 1.0)
        assert await reg.cancel_requested(SID) is False
        assert (await reg.cancel(SID))["cancel_requested"] is True and await reg.cancel_requested(SID) is True
        await reg.finish(SID, "cancelled")
        assert (await reg.open(SID))["attached"] is False  # a cancelled stream is rendered afresh
        clock.now += 61  # its renderer went silent (replica died)
        state = await reg.get(SID)
        assert state["status"] == "failed" and state["error"]["error"] == "stream_lost"
        assert (await reg.cancel(SID))["status"] == "deleted"  # DELETE of an ended stream removes it
        with pytest.raises(NotFound):
            await reg.get(SID)

    asyncio.run(scenario())


def test_a_renderer_that_checks_in_stays_alive_between_fragments(registry):
    reg, clock = registry

    async def scenario():
        await reg.open(SID)
        await reg.start(SID, 1.0)
        for _ in range(5):  # a long chunk: no publish for 250 s, but the renderer keeps asking
            clock.now += 50
            assert await reg.cancel_requested(SID) is False
            assert (await reg.get(SID))["status"] == "rendering"
        clock.now += 61  # then it goes silent
        assert (await reg.get(SID))["status"] == "failed"

    asyncio.run(scenario())


def test_expired_streams_are_deleted_with_their_fragments(registry, tmp_path):
    reg, clock = registry
    media = tmp_path / "streams" / "media"

    async def scenario():
        await reg.open(SID)
        await reg.start(SID, 1.0)
        await reg.publish(SID, 0, b"m0", 1.0, init=b"init")
        await reg.finish(SID, "complete")
        assert len(list(media.glob("*.m4s"))) == 2
        clock.now += 3601
        await reg.open("b" * 64)  # opening another stream sweeps expired ones
        assert not list(media.glob(f"{SID}*"))
        with pytest.raises(NotFound):
            await reg.get(SID)

    asyncio.run(scenario())


def test_wait_wakes_on_publish_and_times_out(registry):
    reg, _ = registry

    async def scenario():
        await reg.open(SID)
        await reg.start(SID, 1.0)
        waiter = asyncio.create_task(reg.wait(SID, 0, 5.0))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await reg.publish(SID, 0, b"m0", 1.0, init=b"init")
        record = await asyncio.wait_for(waiter, 1.0)
        assert record["published"] == 1
        timed_out = await reg.wait(SID, 1, 0.05)  # nothing new: returns after the timeout
        assert timed_out["published"] == 1 and timed_out["status"] == "rendering"

    asyncio.run(scenario())
