"""Chunk plans: whole-file chunks and progressive-stream chunks on the A/V grid."""

from __future__ import annotations

import pytest

from serve_app.planner import plan_chunks, plan_stream_chunks


def covers(plan, n):
    return plan[0][0] == 0 and plan[-1][1] == n and all(b == c for (_, b), (c, _) in zip(plan, plan[1:]))


@pytest.mark.parametrize("n", [1, 15, 16, 17, 24, 220, 1500])
def test_stream_plan_starts_short_and_keeps_to_the_grid(n):
    plan = plan_stream_chunks(n, 25.0, 16, 1.28, grid=8)
    assert covers(plan, n)
    assert plan[0] == (0, min(n, 16))
    assert all(b % 8 == 0 for _, b in plan[:-1])  # every inner boundary on the 0.32 s grid
    assert all(b - a <= 32 + 7 for a, b in plan)  # a short remainder joins the chunk before it
    if n > 24:
        assert plan[-1][1] - plan[-1][0] >= 8


def test_stream_plan_chunks_do_not_depend_on_later_audio():
    """What lets chunks go out while the speech is still growing."""
    for n in range(1, 400):
        plan = plan_stream_chunks(n, 25.0, 16, 1.28, grid=8)
        for m in range(n, 420):
            longer = plan_stream_chunks(m, 25.0, 16, 1.28, grid=8)
            settled = [c for c in plan if c[1] + 8 <= n]
            assert longer[: len(settled)] == settled


def test_stream_plan_without_a_grid():
    plan = plan_stream_chunks(106, 12.0, 16, 3.0, grid=1)
    assert plan == [(0, 16), (16, 52), (52, 88), (88, 106)]


def test_whole_file_plan_is_even():
    plan = plan_chunks(220, 25.0, 3.0)
    assert covers(plan, 220) and len(plan) == 3 and max(b - a for a, b in plan) - min(b - a for a, b in plan) <= 1
    assert plan_chunks(40, 25.0, 0.5, single_chunk_below_s=2.0) == [(0, 40)]
