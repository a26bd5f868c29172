"""The in-process hub of what comes in and goes out, for the `Watch` stream.

Publishers (the servicer for what comes in, the `Sidecar` for the pipeline's `DeliveryEvent`s) hand it
`SidecarEvent`s; every watcher gets its own bounded queue, so a slow watcher misses events instead of slowing
ingest down. Events carry ids, codes and counts only: never an email, a hash input, a request body or the API key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

logger = logging.getLogger(__name__)

EventType = Literal["batch_received", "rejected", "queued", "sent", "delivered", "retry_scheduled", "dead_lettered"]

# Enough for a burst of large batches; a watcher further behind than this misses events.
_QUEUE_SIZE = 4096


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class SidecarEvent:
    """One thing that happened, redacted: ids, codes and counts only."""

    type: EventType
    order_id: str = ""
    kind: str = ""
    """The request kind (`create_order`, ...), where there is one."""
    source_request_id: str = ""
    status: int = 0
    """Button's HTTP status, when there is one."""
    detail: str = ""
    """A rejection code and field, a dead-letter reason or a short note; never personal data."""
    attempt: int = 0
    time_ms: int = field(default_factory=_now_ms)


class WatchHub:
    """Fan-out of `SidecarEvent`s to any number of watchers; use it from the event loop only."""

    def __init__(self, queue_size: int = _QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._queues: set[asyncio.Queue[SidecarEvent | None]] = set()
        self._closed = False

    @property
    def watched(self) -> bool:
        """Whether anyone is watching (publishers skip building events when not)."""
        return bool(self._queues)

    def publish(self, event: SidecarEvent) -> None:
        for queue in self._queues:
            if queue.qsize() >= self._queue_size:
                logger.debug("A watcher fell behind; it misses a %s event.", event.type)
            else:
                queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[SidecarEvent]]:
        """Events published from now on, until the hub closes or the caller leaves the block."""
        # One slot more than the events, so `close` always finds room for its end marker.
        queue: asyncio.Queue[SidecarEvent | None] = asyncio.Queue(self._queue_size + 1)
        if self._closed:
            queue.put_nowait(None)
        else:
            self._queues.add(queue)
        try:
            yield _drain(queue)
        finally:
            self._queues.discard(queue)

    def close(self) -> None:
        """End every subscription (at shutdown); later subscriptions end at once."""
        self._closed = True
        for queue in self._queues:
            queue.put_nowait(None)
        self._queues.clear()


async def _drain(queue: asyncio.Queue[SidecarEvent | None]) -> AsyncIterator[SidecarEvent]:
    while (event := await queue.get()) is not None:
        yield event
