"""The delivery pipeline: mParticle batches in, durable outbox, Button requests out.

`Pipeline` is the facade the servers and the CLI use. Layers, dependencies pointing one way:
`outbox` (durable per-key FIFO queue) and `worker` (the driver) know nothing of Button; `button/` holds the
Button client, answer classification and refund resolution; `ledger` remembers the orders Button holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prometheus_client import CollectorRegistry

from button_sidecar import Transformer, TransformResult
from button_sidecar.pipeline.button import ButtonClient, ButtonDeliveryService
from button_sidecar.pipeline.ingest import (
    AttributionLookup,
    IngestResult,
    PlannedBatch,
    QueuedRequest,
    ingest_result,
    plan_batch,
)
from button_sidecar.pipeline.ledger import LedgerOrder, OrderLedger, SqliteOrderLedger
from button_sidecar.pipeline.outbox import Outbox, OutboxFull, OutboxLocked
from button_sidecar.pipeline.records import DeadLetter, KeyStatus, OutboxStats
from button_sidecar.pipeline.retry import RetryPolicy
from button_sidecar.pipeline.settings import PipelineSettings
from button_sidecar.pipeline.worker import DeliveryWorker
from button_sidecar.telemetry.metrics import DUPLICATE_BATCH, DUPLICATE_ORDER, SidecarMetrics

__all__ = [
    "AttributionLookup",
    "DeadLetter",
    "IngestResult",
    "KeyStatus",
    "LedgerOrder",
    "OrderLedger",
    "OutboxFull",
    "OutboxLocked",
    "OutboxStats",
    "Pipeline",
    "PipelineClosed",
    "PipelineSettings",
    "QueuedRequest",
    "RetryPolicy",
]

logger = logging.getLogger(__name__)


class PipelineClosed(RuntimeError):
    """The pipeline is not running (not started yet, or stopping): nothing was accepted."""


class Pipeline:
    """Ingest mParticle batches and deliver what they map to, reliably, to Button.

    Delivery semantics:
    - `ingest` returns only once every request the batch produced is durable on disk (SQLite, fsync);
      from then on each is delivered at least once, across crashes and restarts. Button may see a request
      twice after a crash (an unacknowledged attempt is sent again); a create answered "already exists"
      counts as delivered.
    - Requests of one order go out in ingest order, one at a time; different orders go out in parallel.
    - Connection errors, timeouts, 408, 429 and 5xx are retried with capped exponential backoff and full
      jitter (`Retry-After` is a floor). A request is given up only after `retry.max_attempts` attempts AND
      `retry.max_age_secs`; it then becomes a dead letter, as does any other 4xx at once (with Button's
      message) and a refund of an order unknown to the ledger and to Button. Dead letters are kept until
      purged and can be replayed.
    - Dropped on purpose, and counted: batches filtered by consent, repeats of a `source_request_id` seen
      within `dedupe_window_secs`, and creates of orders already in the ledger or the outbox.
    - When the outbox is full, `ingest` raises `OutboxFull` (or waits, with `when_full="block"`); nothing
      accepted earlier is dropped.

    `attribution_lookup` is the hook of the attribution store: for a create without a `btn_ref` of its own
    it is awaited with the batch user's keys and may return the token to credit. None (the default) leaves
    such orders without a token.
    """

    def __init__(
        self,
        settings: PipelineSettings,
        transformer: Transformer,
        *,
        registry: CollectorRegistry | None = None,
        ledger: OrderLedger | None = None,
        attribution_lookup: AttributionLookup | None = None,
    ) -> None:
        self.settings = settings
        self.attribution_lookup = attribution_lookup
        self.metrics = SidecarMetrics(registry if registry is not None else CollectorRegistry())
        self._transformer = transformer
        self._ledger: OrderLedger = ledger if ledger is not None else SqliteOrderLedger(settings.state_dir)
        self._outbox = Outbox(
            settings.state_dir,
            max_rows=settings.max_queue_rows,
            max_bytes=settings.max_queue_bytes,
            when_full=settings.when_full,
            block_timeout_secs=settings.block_timeout_secs,
            dedupe_window_secs=settings.dedupe_window_secs,
        )
        self._client = ButtonClient(
            settings.button_base_url,
            settings.api_key,
            max_connections=settings.concurrency,
            timeout_secs=settings.request_timeout_secs,
            metrics=self.metrics,
        )
        self._worker = DeliveryWorker(
            self._outbox,
            ButtonDeliveryService(self._client, self._ledger),
            settings.retry,
            concurrency=settings.concurrency,
            metrics=self.metrics,
        )
        self._running = False
        self._ingesting = 0
        self._ingests_done = asyncio.Event()

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    async def start(self) -> None:
        """Open the outbox and ledger, queue again what a crash left in flight, and start delivering."""
        requeued = await self._outbox.open()
        if requeued:
            logger.info("Queued again %d request(s) left in flight by the previous run.", requeued)
        try:
            await self._ledger.open()
            await self._client.start()
        except BaseException:
            # Release the state directory lock, so a corrected start can take it.
            await self._outbox.close()
            await self._ledger.close()
            raise
        self._worker.start()
        self._running = True

    async def stop(self, deadline_secs: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish for up to `deadline_secs`, keep the rest on disk.

        Ingest calls already under way finish first (their callers are owed an answer).
        """
        self._running = False
        while self._ingesting:
            self._ingests_done.clear()
            await self._ingests_done.wait()
        await self._worker.stop(deadline_secs)
        await self._client.close()
        await self._outbox.close()
        await self._ledger.close()

    async def ingest(self, raw: bytes | str, received_at_ms: int | None = None) -> IngestResult:
        """Map one mParticle batch (JSON) and queue its requests durably.

        Raises `OutboxFull` when there is no room (nothing of the batch was queued then).
        """
        with self._admitted():
            # The Rust core releases the GIL, so mapping in a thread leaves the event loop free.
            result = await asyncio.to_thread(self._transformer.transform_json, raw, received_at_ms)
            return (await self._accept([result]))[0]

    async def ingest_many(self, raws: Sequence[bytes | str], received_at_ms: int | None = None) -> list[IngestResult]:
        """`ingest` for many batches (mapped in parallel in Rust), queued in one transaction: all or none."""
        with self._admitted():
            results = await asyncio.to_thread(self._transformer.transform_many, raws, received_at_ms)
            return await self._accept(results)

    async def ingest_results(self, results: Sequence[TransformResult]) -> list[IngestResult]:
        """Queue batches the caller already mapped (the gRPC server maps protobuf bytes in Rust), in one
        transaction: all or none. Raises `OutboxFull` like `ingest`."""
        with self._admitted():
            return await self._accept(results)

    @contextmanager
    def _admitted(self) -> Iterator[None]:
        """Admit one ingest call, counted so that `stop` can let it finish."""
        if not self._running:
            raise PipelineClosed("the pipeline is not running")
        self._ingesting += 1
        try:
            yield
        finally:
            self._ingesting -= 1
            self._ingests_done.set()

    async def _accept(self, results: Sequence[TransformResult]) -> list[IngestResult]:
        for result in results:
            self.metrics.received_events.inc(result.event_count)
        creates = {r.order_id for result in results for r in result.requests if r.kind == "create_order"}
        in_ledger = await self._ledger.known(creates)
        plans: list[PlannedBatch] = [await plan_batch(result, in_ledger, self.attribution_lookup) for result in results]
        enqueued = await self._outbox.enqueue_many([(plan.items, plan.result.source_request_id) for plan in plans])
        ingested = [ingest_result(plan, outcome) for plan, outcome in zip(plans, enqueued, strict=True)]
        for outcome in ingested:
            for queued in outcome.queued:
                self.metrics.outbox_enqueued_requests.labels(kind=queued.kind).inc()
            if outcome.duplicate_batch:
                self.metrics.duplicates.labels(kind=DUPLICATE_BATCH).inc()
            else:
                self.metrics.duplicates.labels(kind=DUPLICATE_ORDER).inc(outcome.duplicate)
        return ingested

    async def order_status(self, order_id: str) -> KeyStatus | None:
        """The delivery state of an order id: queued, in_flight, delivered or dead; None if never seen."""
        return await self._outbox.key_status(order_id)

    async def dead_letters(self, limit: int = 1000, after_seq: int = 0) -> list[DeadLetter]:
        """Dead letters (reason, last status, Button's message, attempts), by seq, for paging."""
        return await self._outbox.dead_letters(limit, after_seq)

    async def replay(self, seqs: Sequence[int] | None = None) -> int:
        """Queue dead letters again (all when `seqs` is None), attempts reset; returns how many."""
        return await self._outbox.replay(seqs)

    async def purge(self, seqs: Sequence[int] | None = None) -> int:
        """Delete dead letters for good (all when `seqs` is None); returns how many."""
        return await self._outbox.purge(seqs)

    async def stats(self) -> OutboxStats:
        """Queue depth by state, pending bytes, age of the oldest pending request, delivered so far."""
        return await self._outbox.stats()
