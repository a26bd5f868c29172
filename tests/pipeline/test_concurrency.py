"""AdaptiveConcurrency: additive increase on success, multiplicative decrease on 429/503; IngestFirst: the
same, decreased while ingest calls wait on a late event loop."""

from __future__ import annotations

import asyncio
import time

from button_sidecar.pipeline.concurrency import AdaptiveConcurrency, IngestFirst


def test_starts_at_the_maximum_halves_on_overload_and_climbs_back() -> None:
    now = [0.0]
    limit = AdaptiveConcurrency(16, cooldown_secs=1.0, clock=lambda: now[0])
    assert limit.limit == 16
    limit.on_overload()
    assert limit.limit == 8
    limit.on_overload()  # same burst (within the cooldown): counted once
    assert limit.limit == 8
    now[0] += 1.0
    limit.on_overload()
    assert limit.limit == 4
    for _ in range(5):  # about one round of successes adds one
        limit.on_success()
    assert limit.limit == 5
    for _ in range(1000):
        limit.on_success()
    assert limit.limit == 16  # never above the maximum


def test_never_below_one() -> None:
    now = [0.0]
    limit = AdaptiveConcurrency(2, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 5.0
        limit.on_overload()
    assert limit.limit == 1


def test_ingest_first_halves_delivery_while_the_loop_runs_late_during_ingest_and_resets_when_idle() -> None:
    async def scenario() -> None:
        yields: list[None] = []
        first = IngestFirst(
            16,
            max_wait_secs=10.0,
            lag_secs=0.002,
            probe_secs=0.001,
            cooldown_secs=0.0,
            idle_secs=1.0,
            on_yield=lambda: yields.append(None),
        )
        probe = asyncio.create_task(first.run())
        try:
            await asyncio.sleep(0.05)
            time.sleep(0.02)  # the loop is late, but no ingest call is waiting: nothing to yield to
            await asyncio.sleep(0.01)
            assert (first.limit(0.0), yields) == (16, [])
            first.ingest_seen()
            await asyncio.sleep(0.005)
            for _ in range(3):
                time.sleep(0.01)  # a callback holds the loop while ingest calls arrive
                await asyncio.sleep(0.005)
            assert first.limit(0.0) <= 4 and len(yields) >= 2
            for _ in range(6):
                time.sleep(0.01)
                await asyncio.sleep(0.005)
            assert first.limit(0.0) == 1  # never below one: delivery goes on
            assert first.limit(10.5) == 16  # a request waited longer than max_wait_secs: no yielding
            first.on_success()
            assert first.limit(0.0) == 2
            await asyncio.sleep(1.5)  # no ingest for longer than idle_secs
            assert first.limit(0.0) == 16
        finally:
            probe.cancel()

    asyncio.run(scenario())
