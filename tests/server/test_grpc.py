"""Every RPC of a real `button-sidecar serve` subprocess over real sockets, with real SQLite and the real sandbox."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from button_sidecar.v1 import sidecar_pb2 as pb
from grpc_health.v1 import health_pb2  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # type: ignore[import-untyped]

from tests.attribution.helpers import MINUTE_MS, deep_link, now_ms, user_batch
from tests.conftest import Sandbox, wait_for
from tests.golden import case_input, golden_cases
from tests.pipeline.helpers import batch, purchase
from tests.server.helpers import (
    EMAIL,
    SidecarProcess,
    full_refund_batch,
    health_status,
    ingest_json,
    metric_samples,
    orders_arrive,
    purchase_batch,
    running_process,
    stub_for,
)
from tests.typed_batch import batch_from_json

UNUSABLE = {"invalid_json", "invalid_batch", "invalid_protobuf"}
# Golden cases without a timestamp take the receive time, which differs over gRPC.
GOLDEN_RECEIVED_AT = "2023-11-14T22:13:20.000Z"


@pytest.fixture
def stub(sidecar: SidecarProcess) -> Iterator[Any]:
    with stub_for(sidecar.address) as sidecar_stub:
        yield sidecar_stub


def rpc_error(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, **kwargs)
    return raised.value


def check_golden_responses(cases: list[dict[str, Any]], responses: list[pb.IngestResponse]) -> None:
    for case, response in zip(cases, responses, strict=True):
        expect = case["expect"]
        queued = [(q.kind, q.order_id, q.event_index) for q in response.queued]
        assert queued == [(r["kind"], r["order_id"], r["event_index"]) for r in expect["requests"]], case["name"]
        assert response.counts.accepted == len(expect["requests"])
        assert response.counts.rejected == len(expect["rejections"]) == len(response.rejections)
        got = {(r.event_index, r.code) for r in response.rejections}
        for want in expect["rejections"]:
            assert any((want["event_index"], code) in got for code in want.get("code_in", [want.get("code")]))


def check_golden_orders(cases: list[dict[str, Any]], sandbox: Sandbox, target: str) -> None:
    """Every create ends as the expected order at the sandbox; a refund is applied; a cancel of an order
    Button never had is a dead letter."""
    creates: dict[str, dict[str, Any]] = {}
    refunds: dict[str, int] = {}
    cancels: list[str] = []
    for case in cases:
        for request in case["expect"]["requests"]:
            if request["kind"] == "create_order":
                creates[request["order_id"]] = request.get("body") or request["body_contains"]
            elif request["kind"] == "refund":
                refunds[request["order_id"]] = request["body_contains"]["total"]
            elif request["kind"] == "cancel_order":
                cancels.append(request["order_id"])
    assert creates and refunds and cancels, "the golden set should cover creates, refunds and cancels"
    orders = orders_arrive(sandbox, creates)

    def refunded() -> bool:
        orders.update({str(o["order_id"]): o for o in sandbox.orders()})
        return all(
            orders[order_id]["total"] == creates[order_id]["total"] - total for order_id, total in refunds.items()
        )

    wait_for(refunded, what="partial refunds applied at the sandbox")
    for order_id, body in creates.items():
        order = orders[order_id]
        for key, value in body.items():
            # A refund changes the total (checked above) and the line items; the receive time differs.
            if (key in ("total", "line_items") and order_id in refunds) or value == GOLDEN_RECEIVED_AT:
                continue
            assert order[key] == value, (order_id, key)
    with stub_for(target) as stub:

        def dead() -> bool:
            states = [stub.GetOrder(pb.GetOrderRequest(order_id=o), timeout=5) for o in cancels]
            return all(s.state == pb.OrderStatus.DEAD_LETTERED for s in states)

        wait_for(dead, what="cancels of unknown orders to be dead letters")


def test_golden_json_batches_become_the_expected_orders(sidecar: SidecarProcess, sandbox: Sandbox, stub: Any) -> None:
    usable, responses = [], []
    for case in golden_cases():
        request = ingest_json(case_input(case))
        if any(r["event_index"] == -1 and r.get("code") in UNUSABLE for r in case["expect"]["rejections"]):
            error = rpc_error(stub.Ingest, request, timeout=5)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "invalid_json" in error.details() and "not valid JSON" in error.details()
            continue
        usable.append(case)
        responses.append(stub.Ingest(request, timeout=5))
    check_golden_responses(usable, responses)
    check_golden_orders(usable, sandbox, sidecar.address)


def test_typed_golden_batches_in_bulk_over_a_unix_socket(sandbox: Sandbox, tmp_path: Path, socket_dir: Path) -> None:
    cases = [case for case in golden_cases() if "input" in case]
    request = pb.IngestBulkRequest(
        batches=[pb.IngestRequest(batch=batch_from_json(json.dumps(case["input"]))) for case in cases]
    )
    with running_process(tmp_path, sandbox, listen=f"unix:{socket_dir / 'grpc.sock'}") as process:
        assert process.address.startswith("unix:")
        with stub_for(process.address) as stub:
            response = stub.IngestBulk(request, timeout=10)
        check_golden_responses(cases, list(response.results))
        assert response.totals.accepted == sum(r.counts.accepted for r in response.results) > 0
        assert response.totals.rejected == sum(r.counts.rejected for r in response.results) > 0
        check_golden_orders(cases, sandbox, process.address)


def test_health_and_reflection_answer(sidecar: SidecarProcess) -> None:
    for service in ("", "button_sidecar.v1.Sidecar"):
        assert health_status(sidecar.address, service) == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(sidecar.address) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {service.name for service in answer.list_services_response.service}
    assert {"button_sidecar.v1.Sidecar", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "a batch must be a JSON object"),
        (None, "payload: is empty"),
    ],
)
def test_unusable_payload_is_invalid_argument_with_the_reason(stub: Any, payload: bytes | None, reason: str) -> None:
    request = pb.IngestRequest() if payload is None else ingest_json(payload)
    error = rpc_error(stub.Ingest, request, timeout=5)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in error.details()


def test_bytes_that_are_not_a_protobuf_message_are_invalid_argument(sidecar: SidecarProcess) -> None:
    with grpc.insecure_channel(sidecar.address) as channel:
        for method, reason in (("Ingest", "invalid_protobuf"), ("IngestBulk", "not a valid IngestBulkRequest")):
            call = channel.unary_unary(f"/button_sidecar.v1.Sidecar/{method}")
            error = rpc_error(call, b"\xff\xff\xff", timeout=5)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert reason in error.details()


def test_oversize_message_is_resource_exhausted(stub: Any) -> None:
    error = rpc_error(stub.Ingest, ingest_json(b" " * (5 * 1024 * 1024)), timeout=10)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_order_states_dead_letters_and_replay(sidecar: SidecarProcess, sandbox: Sandbox, stub: Any) -> None:
    assert stub.GetOrder(pb.GetOrderRequest(order_id="never-seen"), timeout=5).state == pb.OrderStatus.UNKNOWN
    stub.Ingest(ingest_json(purchase_batch("states-1")), timeout=5)
    stub.Ingest(ingest_json(full_refund_batch("states-unknown")), timeout=5)
    orders_arrive(sandbox, ["states-1"])

    def settled() -> bool:
        delivered = stub.GetOrder(pb.GetOrderRequest(order_id="states-1"), timeout=5)
        dead = stub.GetOrder(pb.GetOrderRequest(order_id="states-unknown"), timeout=5)
        return bool(delivered.state == pb.OrderStatus.DELIVERED and dead.state == pb.OrderStatus.DEAD_LETTERED)

    wait_for(settled, what="one order delivered and one dead-lettered")
    dead = stub.GetOrder(pb.GetOrderRequest(order_id="states-unknown"), timeout=5)
    assert (dead.last_status, dead.attempts, dead.pending_requests) == (404, 1, 0)
    (letter,) = [
        d
        for d in stub.ListDeadLetters(pb.ListDeadLettersRequest(), timeout=5).dead_letters
        if d.order_id == "states-unknown"
    ]
    assert (letter.kind, letter.method, letter.reason, letter.last_status) == (
        "cancel_order",
        "DELETE",
        "unknown_order",
        404,
    )
    assert (
        letter.path == "/v1/order/states-unknown" and letter.last_response and letter.dead_at_ms >= letter.created_at_ms
    )

    assert stub.ReplayDeadLetters(pb.ReplayDeadLettersRequest(ids=[letter.id]), timeout=5).replayed == 1
    wait_for(
        lambda: (
            stub.GetOrder(pb.GetOrderRequest(order_id="states-unknown"), timeout=5).state
            == pb.OrderStatus.DEAD_LETTERED
            and any(
                d.id == letter.id for d in stub.ListDeadLetters(pb.ListDeadLettersRequest(), timeout=5).dead_letters
            )
        ),
        what="the replayed cancel to fail again",
    )
    requests = [r for r in sandbox.requests() if r["method"] == "DELETE"]
    assert len(requests) == 2  # sent again by the replay

    for bad in (pb.ReplayDeadLettersRequest(), pb.ReplayDeadLettersRequest(ids=[1], all=True)):
        assert rpc_error(stub.ReplayDeadLetters, bad, timeout=5).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_error(stub.GetOrder, pb.GetOrderRequest(), timeout=5).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stats_count_batches_deliveries_and_reachability(sidecar: SidecarProcess, sandbox: Sandbox, stub: Any) -> None:
    before = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    stub.Ingest(ingest_json(purchase_batch("stats-1", source_request_id="stats-req-1")), timeout=5)
    again = stub.Ingest(ingest_json(purchase_batch("stats-1", source_request_id="stats-req-1")), timeout=5)
    assert (again.counts.accepted, again.counts.duplicate) == (0, 1)
    orders_arrive(sandbox, ["stats-1"])
    wait_for(lambda: stub.GetStats(pb.GetStatsRequest(), timeout=10).queue_depth == 0, what="an empty queue")
    after = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    assert after.received_batches == before.received_batches + 2
    assert after.delivered == before.delivered + 1
    assert after.duplicates == before.duplicates + 1
    assert after.button_reachable and after.button_base_url == sandbox.url


def test_get_attribution_answers_from_the_store_a_deep_link_taught(
    sidecar: SidecarProcess, sandbox: Sandbox, stub: Any
) -> None:
    mpid, opened = 5550001, now_ms() - MINUTE_MS
    taught = stub.Ingest(ingest_json(user_batch(deep_link("srctok-grpc1", opened), mpid=mpid)), timeout=5)
    assert (taught.counts.accepted, taught.counts.skipped) == (0, 0)
    found = stub.GetAttribution(pb.GetAttributionRequest(user_key=f"mpid:{mpid}"), timeout=5)
    assert (found.found, found.btn_ref, found.timestamp_ms) == (True, "srctok-grpc1", opened)
    # A purchase of the same user without a token of its own, in a later batch, is credited with it.
    assert stub.Ingest(ingest_json(user_batch(purchase("attributed-1"), mpid=mpid)), timeout=5).counts.accepted == 1
    assert orders_arrive(sandbox, ["attributed-1"])["attributed-1"]["btn_ref"] == "srctok-grpc1"

    unknown = stub.GetAttribution(pb.GetAttributionRequest(user_key=f"mpid:{mpid + 1}"), timeout=5)
    assert (unknown.found, unknown.btn_ref, unknown.timestamp_ms) == (False, "", 0)
    for bad in ("", "mpid:", "email:jane@example.com"):
        error = rpc_error(stub.GetAttribution, pb.GetAttributionRequest(user_key=bad), timeout=5)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "user_key: must be one of mpid:<id>" in error.details()


def test_rejections_batches_and_calls_over_grpc_are_counted_in_the_metrics(sidecar: SidecarProcess, stub: Any) -> None:
    """The same counters as over HTTP (`/metrics` of the same process), unusable payloads included, and the
    gRPC calls by method and status code."""
    unaddressed = purchase("x")
    del unaddressed["data"]["product_action"]["transaction_id"]
    before, stats_before = metric_samples(sidecar.http_url), stub.GetStats(pb.GetStatsRequest(), timeout=10)
    response = stub.Ingest(ingest_json(batch(purchase("counted-1"), unaddressed)), timeout=5)
    assert (response.counts.accepted, response.counts.rejected) == (1, 1)
    assert rpc_error(stub.Ingest, ingest_json(b"{not json"), timeout=5).code() == grpc.StatusCode.INVALID_ARGUMENT
    after, stats_after = metric_samples(sidecar.http_url), stub.GetStats(pb.GetStatsRequest(), timeout=10)

    def added(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert added("button_sidecar_rejected_events_total", code="missing_order_id") == 1
    assert added("button_sidecar_rejected_events_total", code="invalid_json") == 1
    assert added("button_sidecar_received_batches_total") == 2
    assert stats_after.received_batches == stats_before.received_batches + 2
    # And the calls themselves, by method and status code (the GetStats before `after` was read included).
    assert added("button_sidecar_grpc_requests_total", method="Ingest", code="OK") == 1
    assert added("button_sidecar_grpc_requests_total", method="Ingest", code="INVALID_ARGUMENT") == 1
    assert added("button_sidecar_grpc_requests_total", method="GetStats", code="OK") == 1
    assert added("button_sidecar_grpc_request_duration_seconds_count", method="Ingest") == 2
    assert added("button_sidecar_grpc_request_duration_seconds_sum", method="Ingest") > 0
    # Where the calls' time went: both were mapped and looked up, only the usable one waited for the outbox.
    assert added("button_sidecar_ingest_stage_seconds_count", stage="mapping") == 2
    assert added("button_sidecar_ingest_stage_seconds_count", stage="lookups") == 2
    assert added("button_sidecar_ingest_stage_seconds_count", stage="outbox") == 1


def test_watch_shows_a_batch_coming_in_and_its_order_going_out_without_pii(
    sidecar: SidecarProcess, sandbox: Sandbox, stub: Any
) -> None:
    events: list[pb.WatchEvent] = []
    stream = stub.Watch(pb.WatchRequest(), timeout=30)

    def collect() -> None:
        try:
            events.extend(stream)
        except grpc.RpcError as error:  # cancelled below, when the test has seen enough
            assert error.code() == grpc.StatusCode.CANCELLED

    collector = threading.Thread(target=collect)
    collector.start()
    try:
        # The subscription starts asynchronously: nudge with unusable payloads until the stream sees one.
        def subscribed() -> bool:
            rpc_error(stub.Ingest, ingest_json(b"[]"), timeout=5)
            return bool(events)

        wait_for(subscribed, what="the Watch stream to start")
        stub.Ingest(ingest_json(purchase_batch("watch-1", email=EMAIL, source_request_id="watch-req-1")), timeout=5)
        wait_for(
            lambda: any(e.type == "delivered" and e.order_id == "watch-1" for e in events), what="the order delivered"
        )
    finally:
        stream.cancel()
        collector.join()
    received = [e for e in events if e.type == "batch_received" and e.source_request_id == "watch-req-1"]
    assert len(received) == 1 and "accepted 1" in received[0].detail
    (queued,) = [e for e in events if e.type == "queued" and e.order_id == "watch-1"]
    assert (queued.kind, queued.source_request_id) == ("create_order", "watch-req-1") and queued.time_ms > 0
    assert any(e.type == "rejected" and e.detail == "invalid_batch at $" for e in events)
    going_out = [(e.type, e.kind, e.attempt, e.status) for e in events if e.order_id == "watch-1"]
    assert going_out == [
        ("queued", "create_order", 0, 0),
        ("sent", "create_order", 1, 0),
        ("delivered", "create_order", 1, 200),
    ]
    for event in events:
        wire, text = event.SerializeToString(), str(event)
        for secret in (EMAIL, EMAIL.lower(), sandbox.api_key):
            assert secret.encode() not in wire and secret not in text
