"""The delivery pipeline: mParticle batches in, durable outbox, Button requests out.

`Pipeline` is the facade the servers and the CLI use. Layers, dependencies pointing one way:
`outbox` (durable per-key FIFO queue) and `worker` (the driver) know nothing of Button; `button/` holds the
Button client, answer classification and refund resolution; `ledger` remembers the orders Button holds and
`attribution` the tokens deep links taught, both in SQLite or (`redis_store`) shared in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prometheus_client import CollectorRegistry

from button_sidecar import Attribution, Transformer, TransformResult
from button_sidecar.pipeline.attribution import AttributionStore, SqliteAttributionStore, StoredAttribution
from button_sidecar.pipeline.button import ButtonClient, ButtonDeliveryService
from button_sidecar.pipeline.concurrency import IngestFirst
from button_sidecar.pipeline.ingest import (
    AttributionLookup,
    IngestResult,
    QueuedRequest,
    filter_reason,
    ingest_result,
    lookups_independent,
    plan_batch,
    wants_attribution,
)
from button_sidecar.pipeline.ledger import LedgerOrder, OrderLedger, SqliteOrderLedger
from button_sidecar.pipeline.offload import run_mapping
from button_sidecar.pipeline.outbox import Outbox, OutboxFull, OutboxLocked
from button_sidecar.pipeline.records import DeadLetter, EnqueueResult, KeyStatus, OutboxStats
from button_sidecar.pipeline.redis_store import RedisAttributionStore, RedisOrderLedger, StoreUnavailable
from button_sidecar.pipeline.retry import RetryPolicy
from button_sidecar.pipeline.settings import ForwardEnvironments, PipelineSettings, StoreBackend
from button_sidecar.pipeline.sqlite import StorageCorrupt, StorageError, StorageUnavailable
from button_sidecar.pipeline.worker import DeliveryEvent, DeliveryListener, DeliveryWorker
from button_sidecar.telemetry.metrics import (
    ATTRIBUTION_FOUND,
    ATTRIBUTION_NOT_FOUND,
    DUPLICATE_BATCH,
    DUPLICATE_ORDER,
    SidecarMetrics,
)

__all__ = [
    "AttributionLookup",
    "AttributionStore",
    "DeadLetter",
    "DeliveryEvent",
    "DeliveryListener",
    "ForwardEnvironments",
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
    "StorageCorrupt",
    "StorageError",
    "StorageUnavailable",
    "StoreBackend",
    "StoreUnavailable",
    "StoredAttribution",
]

logger = logging.getLogger(__name__)

# How often expired attributions and ledger orders are deleted; lookups ignore expired tokens meanwhile.
_PURGE_INTERVAL_SECS = 600.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _default_ledger(settings: PipelineSettings) -> OrderLedger:
    if settings.store_backend == "redis":
        assert settings.redis_url is not None  # PipelineSettings requires it with this backend
        return RedisOrderLedger(settings.redis_url, settings.redis_key_prefix, settings.ledger_retention_secs)
    return SqliteOrderLedger(settings.state_dir, settings.ledger_retention_secs)


def _default_attribution_store(settings: PipelineSettings) -> AttributionStore:
    window_ms = int(settings.attribution_window_secs * 1000)
    if settings.store_backend == "redis":
        assert settings.redis_url is not None  # PipelineSettings requires it with this backend
        return RedisAttributionStore(settings.redis_url, settings.redis_key_prefix, window_ms)
    return SqliteAttributionStore(settings.state_dir, window_ms)


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
    - Dropped on purpose, and counted: batches filtered by consent or by `forward_environments`, repeats of a
      `source_request_id` seen within `dedupe_window_secs`, creates of orders already in the ledger or the
      outbox, and app events without a Button application id (they cannot be authenticated).
    - When the outbox is full, `ingest` raises `OutboxFull` (or waits, with `when_full="block"`); nothing
      accepted earlier is dropped.
    - Counted here, so whichever server a batch came through: every batch and event handed in (unusable ones
      too: `IngestResult.unusable`, nothing queued), and every rejection by code.

    Attribution: the tokens a batch teaches (deep links) are written to the attribution store for the batch
    user's keys before the next batch of the same call is planned, and a create without a `btn_ref` of its
    own takes the newest token of any of its batch's keys whose deep link is less than
    `attribution_window_secs` older than the batch's receive time (`received_at_ms`, default now). With
    `store_backend="redis"` the store and the order ledger are shared by every sidecar on that Redis, so the
    deep link, the purchase and its refunds may reach different hosts.
    `attribution_lookup`, when given, replaces the store's lookup for creates (awaited with the batch
    user's keys, it returns the token to credit or None); tokens are still remembered in the store.
    """

    def __init__(
        self,
        settings: PipelineSettings,
        transformer: Transformer,
        *,
        registry: CollectorRegistry | None = None,
        ledger: OrderLedger | None = None,
        attribution_store: AttributionStore | None = None,
        attribution_lookup: AttributionLookup | None = None,
    ) -> None:
        self.settings = settings
        self.attribution_lookup = attribution_lookup
        self.metrics = SidecarMetrics(registry if registry is not None else CollectorRegistry())
        self._transformer = transformer
        self._ledger = ledger if ledger is not None else _default_ledger(settings)
        self._attributions = (
            attribution_store if attribution_store is not None else _default_attribution_store(settings)
        )
        self._background: list[asyncio.Task[None]] = []
        self._outbox = Outbox(
            settings.state_dir,
            max_rows=settings.max_queue_rows,
            max_bytes=settings.max_queue_bytes,
            when_full=settings.when_full,
            block_timeout_secs=settings.block_timeout_secs,
            dedupe_window_secs=settings.dedupe_window_secs,
            # The outcome of an order is kept as long as the ledger keeps the order.
            status_retention_secs=settings.ledger_retention_secs,
        )
        self._client = ButtonClient(
            settings.button_base_url,
            settings.api_key,
            app_base_url=settings.app_base_url,
            timeout_secs=settings.request_timeout_secs,
            metrics=self.metrics,
        )
        self._ingest_first = (
            IngestFirst(
                settings.concurrency,
                max_wait_secs=settings.ingest_first_max_wait_secs,
                on_yield=self.metrics.delivery_yields.inc,
            )
            if settings.ingest_first_max_wait_secs > 0
            else None
        )
        self._worker = DeliveryWorker(
            self._outbox,
            ButtonDeliveryService(self._client, self._ledger),
            settings.retry,
            concurrency=settings.concurrency,
            metrics=self.metrics,
            yield_to=self._ingest_first,
        )
        self._running = False
        self._ingesting = 0
        self._ingests_done = asyncio.Event()

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    def add_delivery_listener(self, listener: DeliveryListener) -> None:
        """Call `listener` with a `DeliveryEvent` for every attempt sent and every outcome recorded
        (delivered, retry scheduled, dead-lettered). It runs on the event loop and must be quick; what it
        raises is logged and ignored."""
        self._worker.add_listener(listener)

    async def start(self) -> None:
        """Open the outbox, ledger and attribution store, queue again what a crash left in flight, and start
        delivering. Raises `StoreUnavailable` when the Redis backend does not answer."""
        requeued = await self._outbox.open()
        if requeued:
            logger.info("Queued again %d request(s) left in flight by the previous run.", requeued)
        try:
            await self._ledger.open()
            await self._attributions.open()
            await self._client.start()
        except BaseException:
            # Release the state directory lock, so a corrected start can take it.
            await self._outbox.close()
            await self._ledger.close()
            await self._attributions.close()
            raise
        self._worker.start()
        self._background = [asyncio.create_task(self._purge_expired(), name="purge-expired")]
        if self._ingest_first is not None:
            self._background.append(asyncio.create_task(self._ingest_first.run(), name="ingest-first"))
        self._running = True

    async def stop(self, deadline_secs: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish for up to `deadline_secs`, keep the rest on disk.

        Ingest calls already under way finish first (their callers are owed an answer).
        """
        self._running = False
        while self._ingesting:
            self._ingests_done.clear()
            await self._ingests_done.wait()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._worker.stop(deadline_secs)
        await self._client.close()
        await self._outbox.close()
        await self._ledger.close()
        await self._attributions.close()

    async def ingest(self, raw: bytes | str, received_at_ms: int | None = None) -> IngestResult:
        """Map one mParticle batch (JSON) and queue its requests durably.

        `received_at_ms` (default: now) stands in for missing event timestamps and is the "now" of the
        attribution window. Raises `OutboxFull` when there is no room, `StoreUnavailable` when the Redis
        backend does not answer (nothing of the batch was queued then; tokens it taught may be remembered).
        """
        with self._admitted():
            result = await run_mapping(
                lambda: self._transformer.transform_json(raw, received_at_ms),
                len(raw),
                self.metrics.ingest_mapping_seconds,
            )
            return (await self._accept([result], received_at_ms))[0]

    async def ingest_many(self, raws: Sequence[bytes | str], received_at_ms: int | None = None) -> list[IngestResult]:
        """`ingest` for many batches (mapped in parallel in Rust), queued in one transaction: all or none."""
        with self._admitted():
            size = sum(map(len, raws))
            results = await run_mapping(
                lambda: self._transformer.transform_many(raws, received_at_ms),
                size,
                self.metrics.ingest_mapping_seconds,
            )
            return await self._accept(results, received_at_ms)

    async def ingest_results(
        self, results: Sequence[TransformResult], received_at_ms: int | None = None
    ) -> list[IngestResult]:
        """Queue batches the caller already mapped (the gRPC server maps protobuf bytes in Rust), in one
        transaction: all or none. Raises like `ingest`."""
        with self._admitted():
            return await self._accept(results, received_at_ms)

    @contextmanager
    def _admitted(self) -> Iterator[None]:
        """Admit one ingest call, counted so that `stop` can let it finish."""
        if not self._running:
            raise PipelineClosed("the pipeline is not running")
        if self._ingest_first is not None:
            self._ingest_first.ingest_seen()
        self._ingesting += 1
        try:
            yield
        finally:
            self._ingesting -= 1
            self._ingests_done.set()

    async def _accept(self, results: Sequence[TransformResult], received_at_ms: int | None) -> list[IngestResult]:
        now_ms = received_at_ms if received_at_ms is not None else _now_ms()
        lookup = self.attribution_lookup or (lambda keys: self._stored_btn_ref(keys, now_ms))
        filtered = [filter_reason(result, self.settings.forward_environments) for result in results]
        self.metrics.received_batches.inc(len(results))
        self.metrics.received_events.inc(sum(result.event_count for result in results))
        forwarded = [i for i, reason in enumerate(filtered) if reason is None]
        stored: dict[int, str | None] = {}  # by the batch's index
        started = time.perf_counter()
        # Tokens learned by this call, written alongside the outbox (awaited before the call answers).
        learned: list[Attribution] = []
        if lookups_independent([results[i] for i in forwarded]):
            # No batch looks up a key that an earlier batch of the call teaches, so every lookup finds what it
            # would find in turn: they go at once, and the tokens follow in one write.
            wanted = [i for i in forwarded if wants_attribution(results[i])]
            if len(wanted) == 1:  # most calls: awaited directly, no task (a SQLite lookup does not even suspend)
                stored = {wanted[0]: await lookup(results[wanted[0]].user_keys)}
            else:
                found = await asyncio.gather(*(lookup(results[i].user_keys) for i in wanted))
                stored = dict(zip(wanted, found, strict=True))
            learned = [a for i in forwarded for a in results[i].attributions]
        else:
            for i in forwarded:
                if wants_attribution(results[i]):
                    stored[i] = await lookup(results[i].user_keys)
                # Remembered before the next batch is looked up, so a deep link credits purchases in later
                # batches of the same call; purchases of its own batch follow the core's rule (a link at or
                # before them).
                await self._remember(results[i].attributions)
        decided = [(result, filtered[i], stored.get(i)) for i, result in enumerate(results)]
        # Asked last, right before the outbox write: a create whose earlier copy finishes delivery between the
        # two is queued again (Button answers 409 and it counts as delivered), so that gap is kept short.
        creates = {r.order_id for result in results for r in result.requests if r.kind == "create_order"}
        in_ledger = await self._ledger.known(creates)
        self.metrics.ingest_lookups_seconds.observe(time.perf_counter() - started)
        require = self.settings.require_btn_ref
        plans = [plan_batch(result, in_ledger, filtered, btn_ref, require) for result, filtered, btn_ref in decided]
        batches = [(plan.items, plan.result.source_request_id) for plan in plans]
        if any(items or batch_key is not None for items, batch_key in batches):
            writing = time.perf_counter()
            # Two databases, two threads: the tokens' commit does not wait for the outbox's. A token stored for a
            # call the outbox then refuses does no harm (`_remember` is idempotent).
            if learned:
                enqueued, _ = await asyncio.gather(self._outbox.enqueue_many(batches), self._remember(learned))
            else:  # most calls: no token learned, nothing to run alongside
                enqueued = await self._outbox.enqueue_many(batches)
            written = time.perf_counter() - writing
            self.metrics.ingest_outbox_seconds.observe(written)
            if self._ingest_first is not None:
                self._ingest_first.outbox_write_took(written)
        else:  # nothing to store in the outbox (e.g. unusable payloads only): no transaction, no fsync
            await self._remember(learned)
            enqueued = [EnqueueResult(duplicate_batch=False, seqs=()) for _ in plans]
        ingested = [ingest_result(plan, outcome) for plan, outcome in zip(plans, enqueued, strict=True)]
        # Counted once accepted, so a call refused as a whole (outbox full) and sent again counts once; by
        # label first (a labelled child is a locked lookup, and a bulk call queues hundreds of requests).
        rejected = Counter(rejection.code for outcome in ingested for rejection in outcome.rejections)
        queued = Counter(request.kind for outcome in ingested for request in outcome.queued)
        for code, count in rejected.items():
            self.metrics.rejected_events.labels(code=code).inc(count)
        for kind, count in queued.items():
            self.metrics.outbox_enqueued_requests.labels(kind=kind).inc(count)
        fresh = [outcome for outcome in ingested if not outcome.duplicate_batch]
        if len(fresh) < len(ingested):
            self.metrics.duplicates.labels(kind=DUPLICATE_BATCH).inc(len(ingested) - len(fresh))
        self.metrics.duplicates.labels(kind=DUPLICATE_ORDER).inc(sum(outcome.duplicate for outcome in fresh))
        for reason, count in Counter(o.filtered for o in fresh if o.filtered is not None).items():
            self.metrics.filtered_batches.labels(reason=reason).inc(count)
        return ingested

    async def _remember(self, tokens: Sequence[Attribution]) -> None:
        # Idempotent, so a batch refused later (outbox full) and sent again does no harm.
        if tokens:
            await self._attributions.remember(tokens)
            self.metrics.attributions_remembered.inc(len(tokens))

    async def _stored_btn_ref(self, keys: Sequence[str], now_ms: int) -> str | None:
        found = await self._attributions.lookup(keys, now_ms)
        self.metrics.attribution_lookups.labels(
            result=ATTRIBUTION_NOT_FOUND if found is None else ATTRIBUTION_FOUND
        ).inc()
        return None if found is None else found.btn_ref

    async def _purge_expired(self) -> None:
        """In the background, not on an ingest's path: tokens past the attribution window and ledger orders
        past their retention, at start and every `_PURGE_INTERVAL_SECS`."""
        while True:
            try:
                tokens = await self._attributions.purge(_now_ms())
                orders = await self._ledger.purge()
                if tokens or orders:
                    logger.debug("Deleted %d expired attribution(s) and %d ledger order(s).", tokens, orders)
            except Exception:  # e.g. the disk or Redis failing for a moment: the next round tries again
                logger.exception("Deleting expired attributions and ledger orders failed.")
            await asyncio.sleep(_PURGE_INTERVAL_SECS)

    async def current_attribution(self, user_key: str) -> StoredAttribution | None:
        """The token a purchase of `user_key` (e.g. `mpid:8675309`, `customer_id:c-42`) without one of its own
        would be credited with now: the store's newest inside the attribution window, or None. The
        `attribution_lookup` hook, if any, is not consulted."""
        return await self._attributions.lookup([user_key], _now_ms())

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
