"""SIGTERM on a real `button-sidecar serve` subprocess: drain within the deadline, lose nothing across a restart."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from button_sidecar.v1 import sidecar_pb2 as pb
from grpc_health.v1 import health_pb2  # type: ignore[import-untyped]

from tests.conftest import Sandbox, wait_for
from tests.server.helpers import (
    health_status,
    ingest_json,
    orders_arrive,
    purchase_batch,
    running_process,
    start_sidecar,
    stub_for,
)

DEADLINE_SECS = 1.0
ORDERS = [f"sigterm-{i}" for i in range(6)]


def test_sigterm_drains_within_the_deadline_and_a_restart_delivers_the_rest(tmp_path: Path, sandbox: Sandbox) -> None:
    # Answers slower than the deadline: the deliveries in flight at SIGTERM cannot finish and must stay queued.
    sandbox.set_faults(latency_ms=4000)
    state = tmp_path / "state"
    drain = f"shutdown_deadline_secs = {DEADLINE_SECS}\n"
    first = start_sidecar(tmp_path / "first", sandbox, delivery_toml=drain, state_dir=state)
    try:
        with stub_for(first.address) as stub:
            for order_id in ORDERS:
                assert stub.Ingest(ingest_json(purchase_batch(order_id)), timeout=5).counts.accepted == 1
            wait_for(lambda: stub.GetStats(pb.GetStatsRequest(), timeout=10).queue_depth == len(ORDERS), what="queue")
            time.sleep(0.3)  # the deliveries are under way
            sent_at = time.monotonic()
            first.process.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            # Draining: health says NOT_SERVING and new calls are refused.
            assert health_status(first.address) == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as refused:
                stub.Ingest(ingest_json(purchase_batch("sigterm-late")), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert first.process.wait(timeout=DEADLINE_SECS + 5) == 0
        took = time.monotonic() - sent_at
    finally:
        if first.process.poll() is None:
            first.process.kill()
            first.process.wait()
    assert took < DEADLINE_SECS + 3, f"draining took {took:.1f} s"
    assert "Shutting down" in first.output() and sandbox.api_key not in first.output()
    assert sandbox.orders() == []  # the slow deliveries were cut off at the deadline

    sandbox.clear_faults()
    with running_process(tmp_path / "second", sandbox, state_dir=state) as second:
        orders = orders_arrive(sandbox, ORDERS)
        with stub_for(second.address) as stub:
            wait_for(lambda: stub.GetStats(pb.GetStatsRequest(), timeout=10).queue_depth == 0, what="an empty queue")
            states = {stub.GetOrder(pb.GetOrderRequest(order_id=o), timeout=5).state for o in ORDERS}
            assert states == {pb.OrderStatus.DELIVERED}
    assert sorted(orders) == sorted(ORDERS) and "sigterm-late" not in orders
    created = Counter(r["order_id"] for r in sandbox.requests() if r["path"] == "/v1/order" and r["status"] == 200)
    assert created == Counter(ORDERS)  # each stayed queued and went out once after the restart


def test_sigterm_while_button_is_down_keeps_everything_for_the_next_start(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.set_faults(outage_s=60)
    state = tmp_path / "state"
    first = start_sidecar(tmp_path / "first", sandbox, state_dir=state)
    with stub_for(first.address) as stub:
        for order_id in ORDERS:
            stub.Ingest(ingest_json(purchase_batch(order_id)), timeout=5)
        wait_for(lambda: any(r["status"] == 503 for r in sandbox.requests()), what="failed attempts")
    started = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 3  # nothing in flight worth waiting for: retries just wait on disk
    assert sandbox.orders() == []

    sandbox.clear_faults()
    with running_process(tmp_path / "second", sandbox, state_dir=state):
        assert sorted(orders_arrive(sandbox, ORDERS)) == sorted(ORDERS)
