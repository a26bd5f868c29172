"""The `button_sidecar.v1.Sidecar` gRPC service: protobuf in, pipeline calls, protobuf out, errors as status codes.

Ingest and IngestBulk take the request as raw bytes: the Rust core decodes the protobuf itself with the GIL
released, so no Python message object is built for a batch on the hot path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn

import grpc  # type: ignore[import-untyped]

from button_sidecar import Rejection, Transformer, TransformResult
from button_sidecar.pipeline import (
    IngestResult,
    KeyStatus,
    OutboxFull,
    Pipeline,
    PipelineClosed,
    StorageCorrupt,
    StorageUnavailable,
    StoreUnavailable,
)
from button_sidecar.pipeline.offload import run_mapping
from button_sidecar.server.health import ServingState
from button_sidecar.server.reachability import ButtonReachability
from button_sidecar.server.watch import SidecarEvent, WatchHub
from button_sidecar.telemetry.metrics import DUPLICATE_BATCH, DUPLICATE_ORDER, GrpcServerMetrics
from button_sidecar.v1 import sidecar_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Sidecar"].full_name

_USER_KEY_KINDS = ("mpid", "customer_id", "idfa", "gaid", "mp_deviceid")
_DRAINING = "the sidecar is shutting down; retry later or elsewhere"
_STORE_DOWN = "the shared store (Redis) did not answer; retry later"
_DEFAULT_DEAD_LETTERS = 100
_MAX_DEAD_LETTERS = 1000
_ORDER_STATES = {
    "queued": pb.OrderStatus.QUEUED,
    "in_flight": pb.OrderStatus.IN_FLIGHT,
    "delivered": pb.OrderStatus.DELIVERED,
    "dead": pb.OrderStatus.DEAD_LETTERED,
}


class InvalidArgument(ValueError):
    """The request cannot be served as it is; the message says why."""


class SidecarServicer:
    """The service's calls. Each raises pipeline errors; `add_to_server` maps them to status codes."""

    def __init__(
        self,
        pipeline: Pipeline,
        transformer: Transformer,
        hub: WatchHub,
        reachability: ButtonReachability,
    ) -> None:
        self._pipeline = pipeline
        self._transformer = transformer
        self._hub = hub
        self._reachability = reachability

    async def ingest(self, raw: bytes) -> pb.IngestResponse:
        result = await run_mapping(
            lambda: self._transformer.transform_ingest_request(raw),
            len(raw),
            self._pipeline.metrics.ingest_mapping_seconds,
        )
        # An unusable payload goes through the pipeline too (it queues nothing), so it is counted there.
        (ingested,) = await self._accept([result])
        if (unusable := ingested.unusable) is not None:
            raise InvalidArgument(f"the payload is unusable ({unusable.code}): {unusable.message}")
        return _response(ingested)

    async def ingest_bulk(self, raw: bytes) -> pb.IngestBulkResponse:
        try:
            results = await run_mapping(
                lambda: self._transformer.transform_ingest_bulk(raw),
                len(raw),
                self._pipeline.metrics.ingest_mapping_seconds,
            )
        except ValueError as error:
            raise InvalidArgument(f"the payload is unusable: {error}") from None
        responses = [_response(result) for result in await self._accept(results)]
        totals = pb.Counts()
        for response in responses:
            totals.accepted += response.counts.accepted
            totals.skipped += response.counts.skipped
            totals.filtered += response.counts.filtered
            totals.duplicate += response.counts.duplicate
            totals.rejected += response.counts.rejected
        return pb.IngestBulkResponse(results=responses, totals=totals)

    async def _accept(self, results: Sequence[TransformResult]) -> list[IngestResult]:
        ingested = await self._pipeline.ingest_results(results)
        if self._hub.watched:
            for result in ingested:
                _publish(self._hub, result)
        return ingested

    async def get_order(self, request: pb.GetOrderRequest) -> pb.OrderStatus:
        if not request.order_id:
            raise InvalidArgument("order_id: must not be empty")
        status = await self._pipeline.order_status(request.order_id)
        if status is None:
            return pb.OrderStatus(order_id=request.order_id, state=pb.OrderStatus.UNKNOWN)
        return _order_status(status)

    async def get_attribution(self, request: pb.GetAttributionRequest) -> pb.GetAttributionResponse:
        kind, _, user_id = request.user_key.partition(":")
        if kind not in _USER_KEY_KINDS or not user_id:
            raise InvalidArgument(f"user_key: must be one of {', '.join(k + ':<id>' for k in _USER_KEY_KINDS)}")
        found = await self._pipeline.current_attribution(request.user_key)
        if found is None:
            return pb.GetAttributionResponse(found=False)
        return pb.GetAttributionResponse(found=True, btn_ref=found.btn_ref, timestamp_ms=found.timestamp_ms)

    async def watch(self, request: pb.WatchRequest) -> AsyncIterator[pb.WatchEvent]:
        async with self._hub.subscribe() as events:
            async for event in events:
                yield pb.WatchEvent(
                    time_ms=event.time_ms,
                    type=event.type,
                    source_request_id=event.source_request_id,
                    order_id=event.order_id,
                    kind=event.kind,
                    status=event.status,
                    detail=event.detail,
                    attempt=event.attempt,
                )

    async def list_dead_letters(self, request: pb.ListDeadLettersRequest) -> pb.ListDeadLettersResponse:
        limit = min(request.limit or _DEFAULT_DEAD_LETTERS, _MAX_DEAD_LETTERS)
        return pb.ListDeadLettersResponse(
            dead_letters=[
                pb.DeadLetter(
                    id=dead.seq,
                    order_id=dead.order_key or "",
                    kind=dead.kind,
                    method=dead.method or "",
                    path=dead.path or "",
                    reason=dead.reason,
                    last_status=dead.last_status or 0,
                    last_response=dead.last_response or dead.last_error or "",
                    attempts=dead.attempts,
                    created_at_ms=round(dead.created_at * 1000),
                    dead_at_ms=round(dead.dead_at * 1000),
                )
                for dead in await self._pipeline.dead_letters(limit)
            ]
        )

    async def replay_dead_letters(self, request: pb.ReplayDeadLettersRequest) -> pb.ReplayDeadLettersResponse:
        if request.all == bool(request.ids):
            raise InvalidArgument("give either ids or all = true")
        return pb.ReplayDeadLettersResponse(replayed=await self._pipeline.replay(None if request.all else request.ids))

    async def get_stats(self, request: pb.GetStatsRequest) -> pb.Stats:
        stats = await self._pipeline.stats()
        registry = self._pipeline.registry
        duplicates = sum(
            registry.get_sample_value("button_sidecar_duplicates_total", {"kind": kind}) or 0.0
            for kind in (DUPLICATE_BATCH, DUPLICATE_ORDER)
        )
        return pb.Stats(
            queue_depth=stats.queued + stats.in_flight,
            oldest_age_seconds=stats.oldest_age_secs,
            delivered=stats.delivered,
            dead_letters=stats.dead,
            duplicates=int(duplicates),
            received_batches=int(registry.get_sample_value("button_sidecar_received_batches_total") or 0.0),
            button_reachable=await self._reachability.reachable(),
            button_base_url=self._reachability.base_url,
        )


# A batch may hold 100,000 bad events; listing every rejection would outgrow the response size limit (and
# stall the event loop) for a batch that was accepted. `counts.rejected` still counts them all.
MAX_LISTED_REJECTIONS = 1000


def _response(result: IngestResult) -> pb.IngestResponse:
    return pb.IngestResponse(
        counts=pb.Counts(
            accepted=result.accepted,
            skipped=result.skipped,
            filtered=1 if result.filtered else 0,
            duplicate=result.duplicate,
            rejected=len(result.rejections),
        ),
        rejections=[
            pb.Rejection(event_index=r.event_index, code=r.code, field=r.field, message=r.message)
            for r in result.rejections[:MAX_LISTED_REJECTIONS]
        ],
        queued=[pb.QueuedRequest(kind=q.kind, order_id=q.order_id, event_index=q.event_index) for q in result.queued],
        filtered_reason=result.filtered or "",
    )


def _publish(hub: WatchHub, result: IngestResult) -> None:
    source = result.source_request_id or ""
    note = (
        f"accepted {result.accepted}, skipped {result.skipped}, duplicate {result.duplicate}, "
        f"rejected {len(result.rejections)}" + (f", filtered: {result.filtered}" if result.filtered else "")
    )
    hub.publish(SidecarEvent("batch_received", source_request_id=source, detail=note))
    for rejection in result.rejections[:MAX_LISTED_REJECTIONS]:
        hub.publish(_rejected(result.source_request_id, rejection))
    for queued in result.queued:
        hub.publish(SidecarEvent("queued", order_id=queued.order_id, kind=queued.kind, source_request_id=source))


def _rejected(source_request_id: str | None, rejection: Rejection) -> SidecarEvent:
    # Code and field only: a rejection's message may quote the offending value.
    return SidecarEvent(
        "rejected", source_request_id=source_request_id or "", detail=f"{rejection.code} at {rejection.field}"
    )


def _order_status(status: KeyStatus) -> pb.OrderStatus:
    return pb.OrderStatus(
        order_id=status.order_key,
        state=_ORDER_STATES[status.state],
        attempts=status.attempts,
        last_error=status.last_error or "",
        last_status=status.last_status or 0,
        pending_requests=status.pending,
    )


# -- registration and status codes ---------------------------------------------------------------------


async def _abort(context: Any, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # it always raises; this line tells the type checker


def _refusal(error: Exception) -> tuple[grpc.StatusCode, str] | None:
    """The status code and message a pipeline error is answered with; None for anything else (a bug: gRPC
    answers UNKNOWN)."""
    if isinstance(error, InvalidArgument):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, OutboxFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
    if isinstance(error, PipelineClosed):
        return grpc.StatusCode.UNAVAILABLE, _DRAINING
    if isinstance(error, StoreUnavailable):
        return grpc.StatusCode.UNAVAILABLE, _STORE_DOWN
    if isinstance(error, StorageUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(error)
    if isinstance(error, StorageCorrupt):
        return grpc.StatusCode.DATA_LOSS, str(error)
    return None


def _unary(
    state: ServingState, method: str, call: Callable[[Any], Awaitable[Any]], metrics: GrpcServerMetrics
) -> Callable[[Any, Any], Awaitable[Any]]:
    # Resolved once: a labelled child is a locked lookup, and most calls answer OK.
    answered_ok = metrics.requests.labels(method=method, code=grpc.StatusCode.OK.name)
    duration = metrics.request_duration.labels(method=method)

    async def handle(request: Any, context: Any) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN  # until known otherwise: what gRPC answers for an unexpected error
        refusal: tuple[grpc.StatusCode, str] | None = None
        try:
            if state.draining:
                refusal = (grpc.StatusCode.UNAVAILABLE, _DRAINING)
            else:
                try:
                    response = await call(request)
                except asyncio.CancelledError:  # the caller went away (or its deadline passed)
                    code = grpc.StatusCode.CANCELLED
                    raise
                except Exception as error:
                    refusal = _refusal(error)
                    if refusal is None:
                        raise
            code = grpc.StatusCode.OK if refusal is None else refusal[0]
        finally:
            counter = (
                answered_ok if code is grpc.StatusCode.OK else metrics.requests.labels(method=method, code=code.name)
            )
            counter.inc()
            duration.observe(time.perf_counter() - started)
        # Refused after it is counted: `abort` sends the answer at once, and a scrape right after must see it.
        if refusal is not None:
            await _abort(context, *refusal)
        return response

    return handle


def add_to_server(servicer: SidecarServicer, state: ServingState, server: Any, metrics: GrpcServerMetrics) -> None:
    """Register the service's methods on a `grpc.aio.Server`; unary calls are counted and timed in `metrics`."""

    def unary(method: str, call: Callable[[Any], Awaitable[Any]], request_type: Any, response_type: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(
            _unary(state, method, call, metrics),
            # None hands the handler the raw bytes.
            request_deserializer=None if request_type is bytes else request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )

    async def watch(request: pb.WatchRequest, context: Any) -> AsyncIterator[pb.WatchEvent]:
        if state.draining:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, _DRAINING)
        async for event in servicer.watch(request):
            yield event

    unary_methods: dict[str, tuple[Callable[[Any], Awaitable[Any]], Any, Any]] = {
        "Ingest": (servicer.ingest, bytes, pb.IngestResponse),
        "IngestBulk": (servicer.ingest_bulk, bytes, pb.IngestBulkResponse),
        "GetOrder": (servicer.get_order, pb.GetOrderRequest, pb.OrderStatus),
        "GetAttribution": (servicer.get_attribution, pb.GetAttributionRequest, pb.GetAttributionResponse),
        "ListDeadLetters": (servicer.list_dead_letters, pb.ListDeadLettersRequest, pb.ListDeadLettersResponse),
        "ReplayDeadLetters": (servicer.replay_dead_letters, pb.ReplayDeadLettersRequest, pb.ReplayDeadLettersResponse),
        "GetStats": (servicer.get_stats, pb.GetStatsRequest, pb.Stats),
    }
    handlers = {method: unary(method, *spec) for method, spec in unary_methods.items()}
    handlers["Watch"] = grpc.unary_stream_rpc_method_handler(
        watch, request_deserializer=pb.WatchRequest.FromString, response_serializer=pb.WatchEvent.SerializeToString
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    # As the generated code does: lets gRPC route registered methods without a Python lookup per call.
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
