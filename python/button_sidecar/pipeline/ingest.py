"""From a transformed batch to outbox items: duplicate creates, the attribution hook, and the result."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

import orjson

from button_sidecar import Attribution, ButtonRequest, Rejection, TransformResult
from button_sidecar.pipeline.records import EnqueueResult, OutboxItem

AttributionLookup = Callable[[Sequence[str]], Awaitable[str | None]]
"""Given a batch user's keys (`mpid:...`, `customer_id:...`, `idfa:...`), the `btn_ref` to credit an order
with that carries none of its own, or None."""


@dataclass(frozen=True, slots=True)
class QueuedRequest:
    """A request made durable in the outbox."""

    kind: str
    order_id: str
    """Empty for activity and app events."""
    event_index: int
    seq: int
    """Its outbox row id (what dead-letter listing and replay use)."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What became of one ingested batch. Everything in `queued` is on disk when this is returned."""

    accepted: int
    """Requests written to the outbox (`len(queued)`)."""
    skipped: int
    """Events understood but not mapped to a request (e.g. unsupported event types); not errors."""
    filtered: str | None
    """Why consent filtered the whole batch (`gdpr_consent`, `ccpa_opt_out`); None when it was not."""
    duplicate: int
    """Requests not queued because they repeat earlier input: order creates already in the ledger or
    the outbox, or every request of a batch whose `source_request_id` was seen within the window."""
    duplicate_batch: bool
    """The batch's `source_request_id` was seen within the dedupe window, so nothing of it was queued."""
    rejections: tuple[Rejection, ...]
    """Bad events (or the whole payload, event_index -1), each with code, field and message."""
    queued: tuple[QueuedRequest, ...]
    attributions: tuple[Attribution, ...]
    """btn_ref tokens the batch taught (for the attribution store)."""
    source_request_id: str | None


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    """A transformed batch, decided on: what to enqueue, and which creates are repeats."""

    result: TransformResult
    requests: tuple[ButtonRequest, ...]
    """The requests offered to the outbox, parallel to `items`."""
    items: tuple[OutboxItem, ...]
    ledger_duplicates: int


async def plan_batch(
    result: TransformResult, in_ledger: Collection[str], attribution_lookup: AttributionLookup | None
) -> PlannedBatch:
    """Drop creates of orders already in the ledger and turn the rest into outbox items.

    Each create carries its order id as dedupe key, so the outbox skips it while a create of the same order
    is still pending (also one earlier in the same batch). Requests of one order share its order id as
    ordering key; activity and app events have none, so they never wait for each other.
    """
    requests: list[ButtonRequest] = []
    items: list[OutboxItem] = []
    ledger_duplicates = 0
    for request in result.requests:  # none when consent filtered the batch
        is_create = request.kind == "create_order"
        if is_create and request.order_id in in_ledger:
            ledger_duplicates += 1
            continue
        body = request.body
        if is_create and body is not None and attribution_lookup is not None:
            body = await _with_attribution(body, result.user_keys, attribution_lookup)
        requests.append(request)
        items.append(
            OutboxItem(
                kind=request.kind,
                method=request.method,
                path=request.path,
                body=body,
                order_key=request.order_id or None,
                dedupe_key=request.order_id if is_create else None,
            )
        )
    return PlannedBatch(result, tuple(requests), tuple(items), ledger_duplicates)


async def _with_attribution(body: bytes, user_keys: Sequence[str], lookup: AttributionLookup) -> bytes:
    order = orjson.loads(body)
    if "btn_ref" in order:
        return body
    btn_ref = await lookup(user_keys)
    if btn_ref is None:
        return body
    order["btn_ref"] = btn_ref
    return orjson.dumps(order)


def ingest_result(plan: PlannedBatch, enqueued: EnqueueResult) -> IngestResult:
    result = plan.result
    if enqueued.duplicate_batch:
        queued: tuple[QueuedRequest, ...] = ()
        duplicate = len(result.requests)
    else:
        queued = tuple(
            QueuedRequest(request.kind, request.order_id, request.event_index, seq)
            for request, seq in zip(plan.requests, enqueued.seqs, strict=True)
            if seq is not None
        )
        duplicate = plan.ledger_duplicates + sum(1 for seq in enqueued.seqs if seq is None)
    return IngestResult(
        accepted=len(queued),
        skipped=len(result.skipped),
        filtered=result.filtered,
        duplicate=duplicate,
        duplicate_batch=enqueued.duplicate_batch,
        rejections=tuple(result.rejections),
        queued=queued,
        attributions=tuple(result.attributions),
        source_request_id=result.source_request_id,
    )
