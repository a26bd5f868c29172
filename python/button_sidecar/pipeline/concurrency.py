"""Adaptive request concurrency (AIMD): back off when the receiver says it is overloaded, and while ingest
needs the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# Statuses by which a receiver says "too much", as opposed to failing for another reason.
OVERLOAD_STATUSES = frozenset({429, 503})


class AdaptiveConcurrency:
    """A limit on requests in flight between 1 and `maximum`, additive increase and multiplicative decrease.

    It starts at `maximum`, so a restart does not crawl back up (a known complaint about Vector's ARC,
    which starts at 1). Each success adds `1/limit` (about +1 per round of requests); an overload answer
    (429 or 503) multiplies it by `decrease_ratio`, at most once per `cooldown_secs`, so a burst of such
    answers to requests that were already in flight counts once.
    """

    def __init__(
        self,
        maximum: int,
        *,
        decrease_ratio: float = 0.5,
        cooldown_secs: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._maximum = float(maximum)
        self._limit = float(maximum)
        self._decrease_ratio = decrease_ratio
        self._cooldown_secs = cooldown_secs
        self._clock = clock
        self._last_decrease = float("-inf")

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    def on_success(self) -> None:
        self._limit = min(self._maximum, self._limit + 1.0 / self._limit)

    def on_overload(self) -> bool:
        """Lower the limit unless it was lowered within the cooldown; whether it was lowered now."""
        now = self._clock()
        if now - self._last_decrease < self._cooldown_secs:
            return False
        self._last_decrease = now
        self._limit = max(1.0, self._limit * self._decrease_ratio)
        return True


class IngestFirst:
    """Delivery yields the event loop to ingest: ingest callers wait on their answer, Button does not.

    Ingest and delivery share one event loop (and one GIL). While ingest calls arrive, a probe sleeps
    `probe_secs` at a time and measures how late it wakes up. Later than `lag_secs` (callbacks are queueing on
    the loop), or an ingest call's outbox write took longer than `slow_write_secs` since the last probe (it
    waited for the database thread, which delivery's writes share): delivery's limit halves. Otherwise it grows
    by one. Either at most once per `cooldown_secs`, never below 1.
    The limit grows by time, not by delivered requests: against a receiver answering at once, a round of
    requests takes a millisecond, and one more per round won back within milliseconds what a halving took.
    After `idle_secs` without an ingest call the limit is `maximum` again and the probe sleeps until the next
    call, costing nothing. Delivery never stops (the limit stays at least 1), and the limit is `maximum` while
    a request has waited longer than `max_wait_secs` or the outbox is at least `max_fill` full: a burst is
    absorbed by the outbox, a sustained load is delivered at full speed, and yielding is never why the outbox
    fills up and refuses ingest.
    """

    def __init__(
        self,
        maximum: int,
        *,
        max_wait_secs: float = 10.0,
        max_fill: float = 0.5,
        lag_secs: float = 0.002,
        slow_write_secs: float = 0.005,
        probe_secs: float = 0.005,
        cooldown_secs: float = 0.05,
        idle_secs: float = 1.0,
        on_yield: Callable[[], None] = lambda: None,
    ) -> None:
        self._maximum = maximum
        self._limit = maximum
        self._max_wait_secs = max_wait_secs
        self._max_fill = max_fill
        self._lag_secs = lag_secs
        self._slow_write_secs = slow_write_secs
        self._slow_write = False
        self._probe_secs = probe_secs
        self._cooldown_secs = cooldown_secs
        self._idle_secs = idle_secs
        self._on_yield = on_yield
        self._last_ingest = float("-inf")
        self._last_change = float("-inf")
        self._ingesting = asyncio.Event()

    def limit(self, oldest_wait_secs: float, outbox_fill: float) -> int:
        """The limit on requests in flight, given how long the oldest request has waited for delivery and how
        full the outbox is (`Outbox.fill`)."""
        if oldest_wait_secs > self._max_wait_secs or outbox_fill >= self._max_fill:
            return self._maximum
        return self._limit

    def ingest_seen(self) -> None:
        self._last_ingest = time.monotonic()
        self._ingesting.set()

    def outbox_write_took(self, secs: float) -> None:
        """An ingest call's outbox write took `secs` (from the call's start of it to its answer)."""
        if secs > self._slow_write_secs:
            self._slow_write = True

    async def run(self) -> None:
        """Probe the loop while ingest is active; runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            if time.monotonic() - self._last_ingest > self._idle_secs:
                self._limit = self._maximum
                self._ingesting.clear()
                await self._ingesting.wait()
                self._slow_write = False  # from before the pause: not this burst's
            due = loop.time() + self._probe_secs
            await asyncio.sleep(self._probe_secs)
            now = loop.time()
            if now - self._last_change < self._cooldown_secs:
                continue
            slow_write, self._slow_write = self._slow_write, False
            if now - due > self._lag_secs or slow_write:
                self._limit = max(1, self._limit // 2)
                self._last_change = now
                self._on_yield()
            elif self._limit < self._maximum:
                self._limit += 1
                self._last_change = now
