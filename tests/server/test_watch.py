"""The Watch hub: fan-out to every watcher, a slow watcher misses events instead of slowing ingest, close ends all."""

from __future__ import annotations

import asyncio

from button_sidecar.server.watch import SidecarEvent, WatchHub


def test_every_watcher_gets_every_event_and_close_ends_the_streams() -> None:
    async def scenario() -> None:
        hub = WatchHub()
        assert not hub.watched
        async with hub.subscribe() as first, hub.subscribe() as second:
            assert hub.watched
            hub.publish(SidecarEvent("queued", order_id="o-1"))
            hub.close()
            assert [e.order_id async for e in first] == ["o-1"]
            assert [e.order_id async for e in second] == ["o-1"]
        async with hub.subscribe() as late:  # after close: ends at once
            assert [e async for e in late] == []
        assert not hub.watched

    asyncio.run(scenario())


def test_a_watcher_that_falls_behind_misses_events() -> None:
    async def scenario() -> None:
        hub = WatchHub(queue_size=2)
        async with hub.subscribe() as events:
            for i in range(5):
                hub.publish(SidecarEvent("queued", order_id=f"o-{i}"))  # never blocks
            hub.close()
            assert [e.order_id async for e in events] == ["o-0", "o-1"]

    asyncio.run(scenario())
