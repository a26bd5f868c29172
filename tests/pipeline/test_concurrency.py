"""AdaptiveConcurrency: additive increase on success, multiplicative decrease on 429/503; IngestFirst: halved
while ingest calls wait (a late event loop, a slow outbox write), one more per cooldown otherwise, never while a
request waited too long or the outbox is half full."""

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


def test_ingest_first_halves_delivery_while_ingest_waits_climbs_back_by_time_and_resets_when_idle() -> None:
    async def scenario() -> None:
        yields: list[None] = []
        first = IngestFirst(
            16,
            max_wait_secs=10.0,
            lag_secs=0.002,
            slow_write_secs=0.005,
            probe_secs=0.001,
            cooldown_secs=0.2,
            idle_secs=1.0,
            on_yield=lambda: yields.append(None),
        )
        probe = asyncio.create_task(first.run())
        try:
            await asyncio.sleep(0.05)
            time.sleep(0.02)  # the loop is late, but no ingest call is waiting: nothing to yield to
            first.outbox_write_took(0.5)  # nor is a slow write without ingest calls
            await asyncio.sleep(0.01)
            assert (first.limit(0.0, 0.0), yields) == (16, [])
            first.ingest_seen()
            await asyncio.sleep(0.005)
            time.sleep(0.01)  # a callback holds the loop while ingest calls arrive
            await asyncio.sleep(0.005)
            assert (first.limit(0.0, 0.0), len(yields)) == (8, 1)
            first.outbox_write_took(0.001)  # a quick write says nothing
            first.outbox_write_took(0.02)  # an ingest call waited for its outbox write: halved after the cooldown
            await asyncio.sleep(0.05)
            assert first.limit(0.0, 0.0) == 8
            await asyncio.sleep(0.2)
            assert (first.limit(0.0, 0.0), len(yields)) == (4, 2)
            assert first.limit(10.5, 0.0) == 16  # a request waited longer than max_wait_secs: no yielding
            assert first.limit(0.0, 0.49) == 4
            assert first.limit(0.0, 0.5) == 16  # the outbox is half full: no yielding, so it does not fill up
            # On time and no slow write: one more per cooldown, whatever was delivered meanwhile.
            first.ingest_seen()
            await asyncio.sleep(0.5)
            assert 5 <= first.limit(0.0, 0.0) <= 7 and len(yields) == 2
            for _ in range(8):
                first.ingest_seen()
                first.outbox_write_took(0.02)
                await asyncio.sleep(0.2)
            assert first.limit(0.0, 0.0) == 1  # never below one: delivery goes on
            await asyncio.sleep(1.5)  # no ingest for longer than idle_secs
            assert first.limit(0.0, 0.0) == 16
        finally:
            probe.cancel()

    asyncio.run(scenario())
