"""The delivery driver: lease due requests from the outbox, send them, and settle each row by its outcome.

It knows nothing of Button: a `DeliveryService` builds and sends the requests and says what the answer
means (`Delivered`, `Retry` or `Reject`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from button_sidecar.pipeline.concurrency import OVERLOAD_STATUSES, AdaptiveConcurrency, IngestFirst
from button_sidecar.pipeline.outbox import Outbox
from button_sidecar.pipeline.records import OutboxRow
from button_sidecar.pipeline.retry import Delivered, Outcome, Reject, Retry, RetryPolicy
from button_sidecar.telemetry.metrics import SidecarMetrics

logger = logging.getLogger(__name__)

# Even with nothing to do, look at the outbox this often (and refresh the depth gauges).
_IDLE_POLL_SECS = 1.0
# A delivery event's detail is a reason, not a message: an error text longer than this is cut.
_MAX_DETAIL_CHARS: Final = 200


def _lease_ahead(limit: int) -> int:
    """How many rows to hold leased beyond the free slots: a quarter of the limit covers the slots that free up
    during one lease at full speed (~3 ms of a 25 ms round trip at 64 in flight)."""
    return max(1, limit // 4)


DeliveryEventType = Literal["sent", "delivered", "retry_scheduled", "dead_lettered"]


@dataclass(frozen=True, slots=True)
class DeliveryEvent:
    """One step of a request's delivery, for watchers: ids, kind, status and a short reason only; never a
    body, an email or its hash, the receiver's message or the API key."""

    type: DeliveryEventType
    """`sent` (an attempt goes out), then `delivered`, `retry_scheduled` or `dead_lettered` (its outcome,
    reported once the outbox recorded it)."""
    order_id: str
    """Empty for activity and app events."""
    kind: str
    """The request kind as sent (a partial refund is sent as `update_order` or `cancel_order`)."""
    attempt: int
    """This attempt's number, from 1 (1 again after a dead letter is replayed)."""
    status: int | None
    """The receiver's HTTP status, when it answered."""
    detail: str
    """`sent`: empty. `delivered`: `duplicate` when the receiver already had the request. `retry_scheduled`:
    the failure (`HTTP 503`, `timed out`, ...) and the wait. `dead_lettered`: the dead-letter reason."""


DeliveryListener = Callable[[DeliveryEvent], None]


@dataclass(frozen=True, slots=True)
class Request:
    """What goes out for one outbox row."""

    kind: str
    method: str | None
    path: str | None
    body: bytes | None

    @classmethod
    def of(cls, row: OutboxRow) -> Request:
        return cls(row.kind, row.method, row.path, row.body)


class DeliveryService(Protocol):
    """The receiver-specific half of delivery."""

    async def prepare(self, row: OutboxRow) -> Request | Outcome:
        """The request to send for `row`, or the outcome right away when it cannot be sent.

        A request different from the row's own is written back to the row before it is sent, so every
        retry sends the same request.
        """
        ...

    async def send(self, row: OutboxRow, request: Request) -> Outcome: ...

    async def delivered(self, row: OutboxRow, request: Request, outcome: Delivered) -> None:
        """Record a success before the row is acknowledged (the next request of its key may depend on it)."""
        ...


class DeliveryWorker:
    """Delivers outbox rows, with at most `concurrency` requests in flight.

    A request's slot is free again once its answer is in; its outcome is recorded after that, the row staying
    in flight until then, so its key's next request waits. Rows are leased a few ahead of the free slots, so a
    freed slot does not wait for a lease; rows leased and not sent at shutdown are queued again. At most twice
    `concurrency` rows are unsettled (leased ahead, sending or being recorded).

    The limit adapts below `concurrency` while the receiver answers 429 or 503 (`AdaptiveConcurrency`), and
    while ingest needs the event loop (`yield_to`, an `IngestFirst`).
    Delivery is at-least-once: a row is acknowledged only after the receiver confirmed it; a crash or a
    shutdown in the middle leaves the row to be sent again. Transient failures (`Retry`) are rescheduled
    with the `RetryPolicy` backoff until it gives up (attempt count AND age exceeded), and then
    dead-lettered as `retries_exhausted`; permanent failures (`Reject`) are dead-lettered at once. Dead
    letters are kept for listing and replay; nothing is dropped silently.
    """

    def __init__(
        self,
        outbox: Outbox,
        service: DeliveryService,
        policy: RetryPolicy,
        *,
        concurrency: int,
        metrics: SidecarMetrics,
        yield_to: IngestFirst | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._service = service
        self._policy = policy
        self._concurrency = AdaptiveConcurrency(concurrency)
        self._yield_to = yield_to
        self._metrics = metrics
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        # Every row leased and not yet settled, by its task; of them, `_sending` still wait for an answer.
        self._in_flight: dict[asyncio.Task[None], int] = {}
        self._sending = 0
        # Rows leased ahead, waiting for a slot; and the lease under way, if any (the loop never awaits one).
        self._ready: deque[OutboxRow] = deque()
        self._leasing: asyncio.Task[None] | None = None
        self._next_due: float | None = None
        # Whether a lease may find due rows, and how many times the outbox said it has new work.
        self._more_due = True
        self._work_seen = 0
        self._last_gauges = 0.0
        self._oldest_wait_secs = 0.0
        self._listeners: list[DeliveryListener] = []
        outbox.on_work(self._work_arrived)

    def add_listener(self, listener: DeliveryListener) -> None:
        """Call `listener` on the event loop with every `DeliveryEvent`; it must be quick, and what it raises
        is logged and ignored (watching never holds up or breaks delivery)."""
        self._listeners.append(listener)

    def _emit(
        self, type_: DeliveryEventType, row: OutboxRow, kind: str, status: int | None = None, detail: str = ""
    ) -> None:
        if not self._listeners:
            return
        event = DeliveryEvent(type_, row.order_key or "", kind, row.attempts + 1, status, detail[:_MAX_DETAIL_CHARS])
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("A delivery listener failed on a %s event.", type_)

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="delivery-worker")

    async def stop(self, deadline_secs: float) -> int:
        """Stop leasing, let in-flight requests finish for up to `deadline_secs`, then abandon the rest.

        Abandoned rows go back to the queue unchanged. Returns how many were abandoned.
        """
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._leasing is not None:
            await self._leasing
        # Rows leased ahead were never sent.
        abandoned = [row.seq for row in self._ready]
        self._ready.clear()
        if self._in_flight:
            _, pending = await asyncio.wait(self._in_flight, timeout=deadline_secs)
            abandoned += [self._in_flight[task] for task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if abandoned:
            await self._outbox.release(abandoned)
            logger.info("Left %d in-flight request(s) queued at shutdown.", len(abandoned))
        return len(abandoned)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            limit = self._limit()
            while self._ready and self._sending < limit:
                self._start(self._ready.popleft())
            if self._leasing is None and self._more_due:
                # Rows for the free slots and `_lease_ahead` more, so that a slot freed while a lease is under way
                # (a lease waits its turn on the database thread) starts its next request at once; at most twice
                # the limit leased and not yet settled.
                wanted = min(limit - self._sending + _lease_ahead(limit), 2 * limit - len(self._in_flight))
                wanted -= len(self._ready)
                if wanted > 0:
                    self._leasing = asyncio.create_task(self._lease(wanted), name="delivery-lease")
            await self._refresh_gauges()
            timeout = _IDLE_POLL_SECS
            if not self._more_due and self._next_due is not None:
                timeout = min(timeout, self._next_due - self._clock())
            try:
                # `asyncio.timeout`, not `wait_for`: no task per wait (this loop runs about once per delivered
                # request at full speed).
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self._wake.wait()
            except TimeoutError:
                self._more_due = True  # a retry fell due, or the idle poll: look again

    def _work_arrived(self) -> None:
        self._more_due = True
        self._work_seen += 1
        self._wake.set()

    async def _lease(self, wanted: int) -> None:
        work_seen = self._work_seen
        try:
            rows, self._next_due = await self._outbox.lease(wanted)
        except Exception:  # a disk error must not end delivery for good
            logger.exception("Leasing from the outbox failed; trying again.")
            rows, self._next_due = [], None
        self._ready.extend(rows)
        # Fewer than wanted: nothing else is due before `_next_due`, unless the outbox had new work meanwhile.
        self._more_due = len(rows) == wanted or self._work_seen != work_seen
        self._leasing = None
        self._wake.set()

    def _start(self, row: OutboxRow) -> None:
        self._sending += 1
        task = asyncio.create_task(self._deliver(row), name=f"deliver-{row.seq}")
        self._in_flight[task] = row.seq
        task.add_done_callback(self._finished)

    def _limit(self) -> int:
        limit = self._concurrency.limit
        if self._yield_to is None:
            return limit
        return min(limit, self._yield_to.limit(self._oldest_wait_secs, self._outbox.fill()))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._wake.set()

    async def _refresh_gauges(self) -> None:
        now = self._clock()
        if now - self._last_gauges < _IDLE_POLL_SECS:
            return
        self._last_gauges = now
        try:
            stats = await self._outbox.stats()
        except Exception:  # the gauges are informational; delivery goes on
            logger.exception("Reading the outbox statistics failed.")
            return
        self._metrics.outbox_depth.set(stats.queued + stats.in_flight)
        self._metrics.outbox_oldest_age.set(stats.oldest_age_secs)
        self._oldest_wait_secs = stats.oldest_age_secs

    async def _deliver(self, row: OutboxRow) -> None:
        kind = row.kind
        request: Request | None = None
        outcome: Outcome
        try:
            try:
                prepared = await self._service.prepare(row)
                if isinstance(prepared, Request):
                    kind, request = prepared.kind, prepared
                    if prepared != Request.of(row):
                        await self._outbox.rewrite(row.seq, kind, prepared.method, prepared.path, prepared.body)
                    self._emit("sent", row, kind)
                    outcome = await self._service.send(row, prepared)
                else:
                    outcome = prepared
            finally:
                # The answer is in: its slot goes to the next request while this outcome is recorded. The row
                # stays in flight until then, so the next request of its key still waits for it.
                self._sending -= 1
                self._wake.set()
            if request is not None and isinstance(outcome, Delivered):
                await self._service.delivered(row, request, outcome)
        except Exception as error:  # a bug must cost a retry, not the row
            logger.exception("Delivering request %d failed unexpectedly.", row.seq)
            outcome = Retry(f"internal error: {type(error).__name__}")
        try:
            await self._settle(row, kind, outcome)
        except Exception:
            # The row stays in flight and is queued again on the next start: at-least-once holds.
            logger.exception("Recording the outcome of request %d failed.", row.seq)

    async def _settle(self, row: OutboxRow, kind: str, outcome: Outcome) -> None:
        self._adapt(outcome)
        if isinstance(outcome, Delivered):
            await self._outbox.ack(row.seq, outcome.status)
            self._metrics.delivered_requests.labels(kind=kind).inc()
            self._emit("delivered", row, kind, outcome.status, "duplicate" if outcome.duplicate else "")
            return
        attempts = row.attempts + 1
        if isinstance(outcome, Reject):
            await self._dead_letter(
                row, kind, outcome.reason, f"rejected: {outcome.reason}", outcome.status, outcome.message
            )
            return
        now = self._clock()
        if self._policy.gives_up(attempts, now - row.cycle_started_at):
            await self._dead_letter(row, kind, "retries_exhausted", outcome.error, outcome.status, outcome.response)
            return
        delay = self._policy.backoff(attempts, outcome.retry_after_secs)
        await self._outbox.reschedule(row.seq, now + delay, outcome.error, outcome.status, outcome.response)
        self._metrics.delivery_retries.inc()
        # With an HTTP answer, its status only: an error text may then quote the receiver's message.
        failure = outcome.error if outcome.status is None else f"HTTP {outcome.status}"
        self._emit("retry_scheduled", row, kind, outcome.status, f"{failure}; next attempt in {delay:.1f} s")
        logger.debug("Request %d (%s) failed with %s; retrying in %.1f s.", row.seq, kind, outcome.error, delay)

    def _adapt(self, outcome: Outcome) -> None:
        if isinstance(outcome, Delivered):
            self._concurrency.on_success()
        elif isinstance(outcome, Retry) and outcome.status in OVERLOAD_STATUSES:
            self._concurrency.on_overload()
        self._metrics.delivery_concurrency_limit.set(self._limit())

    async def _dead_letter(
        self, row: OutboxRow, kind: str, reason: str, error: str, status: int | None, response: str | None
    ) -> None:
        await self._outbox.dead_letter(row.seq, reason, error, status, response)
        self._metrics.dead_letters.labels(reason=reason).inc()
        self._emit("dead_lettered", row, kind, status, reason)
        logger.warning("Request %d (%s) is a dead letter: %s (%s).", row.seq, kind, reason, error)
