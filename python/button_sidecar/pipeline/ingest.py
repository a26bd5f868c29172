"""From a transformed batch to outbox items: filters, duplicate creates, the attribution lookup, and the result."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from button_sidecar import Attribution, ButtonRequest, Rejection, TransformResult
from button_sidecar.pipeline.button import APP_KINDS, application_id_of
from button_sidecar.pipeline.records import EnqueueResult, OutboxItem
from button_sidecar.pipeline.settings import ForwardEnvironments

AttributionLookup = Callable[[Sequence[str]], Awaitable[str | None]]
"""Given a batch user's keys (`mpid:...`, `customer_id:...`, `idfa:...`), the `btn_ref` to credit an order
with that carries none of its own, or None."""

#: Batch-level rejection codes that make the payload unusable as a whole (not JSON, not a batch, not a valid
#: protobuf message): a single-batch call fails with them (gRPC INVALID_ARGUMENT, HTTP 400).
UNUSABLE_CODES: Final = frozenset({"invalid_json", "invalid_batch", "invalid_protobuf"})


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
    """Events understood but not mapped to a request (e.g. unsupported event types, or an app event of a
    platform without a Button application id); not errors."""
    filtered: str | None
    """Why the whole batch was dropped: consent (`gdpr_consent`, `ccpa_opt_out`) or its environment is not
    forwarded (`environment`); None when it was not. A filtered batch queues nothing and teaches no token."""
    duplicate: int
    """Requests not queued because they repeat earlier input: order creates already in the ledger or
    the outbox, or every request of a batch whose `source_request_id` was seen within the window."""
    duplicate_batch: bool
    """The batch's `source_request_id` was seen within the dedupe window, so nothing of it was queued."""
    rejections: tuple[Rejection, ...]
    """Bad events (or the whole payload, event_index -1), each with code, field and message."""
    queued: tuple[QueuedRequest, ...]
    attributions: tuple[Attribution, ...]
    """btn_ref tokens the batch taught, now in the attribution store."""
    source_request_id: str | None

    @property
    def unusable(self) -> Rejection | None:
        """The rejection that makes the whole payload unusable (see `UNUSABLE_CODES`), or None."""
        return unusable_rejection(self.rejections)


def unusable_rejection(rejections: Sequence[Rejection]) -> Rejection | None:
    """The batch-level rejection among `rejections` with one of the `UNUSABLE_CODES`, or None."""
    return next((r for r in rejections if r.event_index < 0 and r.code in UNUSABLE_CODES), None)


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    """A transformed batch, decided on: what to enqueue, which creates are repeats, what it taught."""

    result: TransformResult
    requests: tuple[ButtonRequest, ...]
    """The requests offered to the outbox, parallel to `items`."""
    items: tuple[OutboxItem, ...]
    ledger_duplicates: int
    skipped: int
    filtered: str | None
    attributions: tuple[Attribution, ...]
    """What to remember in the attribution store (nothing when the batch is filtered)."""


def filter_reason(result: TransformResult, forward_environments: ForwardEnvironments) -> str | None:
    """Why the whole batch is dropped: consent (decided by the core), else an environment not forwarded.

    mParticle sends `development` or `production` (matched ignoring case and surrounding white space);
    anything else, and no environment, counts as production, as mParticle does.
    """
    if result.filtered is not None:
        return result.filtered
    if unusable_rejection(result.rejections) is not None:
        return None  # no batch, so no environment: nothing to filter
    environment = "development" if (result.environment or "").strip().lower() == "development" else "production"
    if forward_environments not in ("both", environment):
        return "environment"
    return None


def wants_attribution(result: TransformResult) -> bool:
    """Whether the batch has user keys and a create without a `btn_ref` of its own, i.e. a token to look up."""
    return bool(result.user_keys) and any(
        request.kind == "create_order" and request.body is not None and request.btn_ref is None
        for request in result.requests
    )


def lookups_independent(results: Sequence[TransformResult]) -> bool:
    """Whether no batch that looks up a token (`wants_attribution`) shares a user key with a token taught by an
    earlier batch of `results`: then the order of lookups and remembers within the call changes nothing."""
    taught: set[str] = set()
    for result in results:
        if taught and wants_attribution(result) and not taught.isdisjoint(result.user_keys):
            return False
        for attribution in result.attributions:
            taught.update(attribution.user_keys)
    return True


def plan_batch(
    result: TransformResult,
    in_ledger: Collection[str],
    filtered: str | None,
    stored_btn_ref: str | None,
    require_btn_ref: bool = False,
) -> PlannedBatch:
    """Drop creates of orders already in the ledger and turn the rest into outbox items.

    Each create carries its order id as dedupe key, so the outbox skips it while a create of the same order
    is still pending (also one earlier in the same batch). Requests of one order share its order id as
    ordering key; activity and app events have none, so they never wait for each other. A create without a
    `btn_ref` of its own gets `stored_btn_ref` (the attribution store's token for the batch's user keys);
    with `require_btn_ref`, a create that still has none is counted as skipped.
    An app event or activity without an `application_id` cannot be authenticated at Button, so it is
    counted as skipped, as the core does for activity of a platform without an application id.
    """
    skipped = len(result.skipped)
    if filtered is not None:
        return PlannedBatch(result, (), (), 0, skipped, filtered, ())
    requests: list[ButtonRequest] = []
    items: list[OutboxItem] = []
    ledger_duplicates = 0
    for request in result.requests:
        is_create = request.kind == "create_order"
        if is_create and request.order_id in in_ledger:
            ledger_duplicates += 1
            continue
        if request.kind in APP_KINDS and application_id_of(request.body) is None:
            skipped += 1
            continue
        body = request.body
        if is_create and body is not None and request.btn_ref is None:
            if stored_btn_ref is not None:
                body = orjson.dumps({**orjson.loads(body), "btn_ref": stored_btn_ref})
            elif require_btn_ref:
                skipped += 1
                continue
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
    return PlannedBatch(
        result, tuple(requests), tuple(items), ledger_duplicates, skipped, None, tuple(result.attributions)
    )


def ingest_result(plan: PlannedBatch, enqueued: EnqueueResult) -> IngestResult:
    result = plan.result
    if enqueued.duplicate_batch:
        queued: tuple[QueuedRequest, ...] = ()
        duplicate = len(plan.requests) + plan.ledger_duplicates
    else:
        queued = tuple(
            QueuedRequest(request.kind, request.order_id, request.event_index, seq)
            for request, seq in zip(plan.requests, enqueued.seqs, strict=True)
            if seq is not None
        )
        duplicate = plan.ledger_duplicates + sum(1 for seq in enqueued.seqs if seq is None)
    return IngestResult(
        accepted=len(queued),
        skipped=plan.skipped,
        filtered=plan.filtered,
        duplicate=duplicate,
        duplicate_batch=enqueued.duplicate_batch,
        rejections=tuple(result.rejections),
        queued=queued,
        attributions=plan.attributions,
        source_request_id=result.source_request_id,
    )
