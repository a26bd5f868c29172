"""Chaos: a sidecar process killed with SIGKILL at random moments under load, 20 times in a row, while Button (the
sandbox) fails at random too. Afterwards (restart, faults cleared, drain): every order whose Ingest returned OK was
created at Button exactly once, every refund and cancel went out after its create, partial refunds were applied
exactly once, and nothing was dead-lettered.

The seed is printed; `CHAOS_SEED=N` replays a run's choices (the kill moments still depend on timing).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from button_sidecar.v1 import sidecar_pb2 as pb

from tests.conftest import SandboxFactory
from tests.hardening.support import (
    drained,
    full_refund,
    partial_refund,
    start_server,
    successful_creates,
)
from tests.server.helpers import batch, ingest_json, purchase, stub_for

KILLS = 20
UNITS = 3  # each order: 3 units of 10.00; at most 2 are refunded one by one, so the order stays
UNIT_MINOR = 1000
DELIVERY_TOML = "concurrency = 8\nrequest_timeout_secs = 2.0\n"


@dataclass
class Ledger:
    """What the load generator was told: accepted (Ingest answered OK) or unknown (the call failed: the kill may
    have come before or after the commit)."""

    created: list[str] = field(default_factory=list)
    cancelled: set[str] = field(default_factory=set)
    partial_refunds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unknown: set[str] = field(default_factory=set)
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Load:
    """One thread sending small batches to one sidecar until stopped: new purchases, full and partial refunds
    of orders it was told were accepted."""

    def __init__(self, address: str, ledger: Ledger, rng: random.Random, prefix: str) -> None:
        self._address = address
        self._ledger = ledger
        self._rng = rng
        self._prefix = prefix
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"load-{prefix}", daemon=True)
        self._next = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _plan(self) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """The events of the next batch and what each means: ("create" | "cancel" | "partial", order id)."""
        ledger, rng = self._ledger, self._rng
        # Only its own orders: two threads refunding one order at once could send a refund after a
        # cancel, which is rightly dead-lettered and would make the bookkeeping here ambiguous.
        with ledger.lock:
            refundable = [
                o
                for o in ledger.created
                if o.startswith(f"{self._prefix}-")
                and o not in ledger.cancelled
                and o not in ledger.unknown
                and ledger.partial_refunds[o] < UNITS - 1
            ]
        roll = rng.random()
        if refundable and roll < 0.15:
            order_id = rng.choice(refundable)
            return [full_refund(order_id)], [("cancel", order_id)]
        if refundable and roll < 0.4:
            order_id = rng.choice(refundable)
            return [partial_refund(order_id)], [("partial", order_id)]
        events, meaning = [], []
        for _ in range(rng.randint(1, 3)):
            self._next += 1
            order_id = f"{self._prefix}-{self._next}"
            events.append(purchase(order_id, quantity=UNITS))
            meaning.append(("create", order_id))
        return events, meaning

    def _run(self) -> None:
        with stub_for(self._address) as stub:
            while not self._stop.is_set():
                events, meaning = self._plan()
                try:
                    response = stub.Ingest(ingest_json(batch(*events)), timeout=5)
                except grpc.RpcError:
                    with self._ledger.lock:
                        self._ledger.unknown.update(order_id for _, order_id in meaning)
                    if self._stop.wait(0.05):
                        return
                    continue
                assert response.counts.accepted == len(events), response
                with self._ledger.lock:
                    self._ledger.calls += 1
                    for what, order_id in meaning:
                        if what == "create":
                            self._ledger.created.append(order_id)
                        elif what == "cancel":
                            self._ledger.cancelled.add(order_id)
                        else:
                            self._ledger.partial_refunds[order_id] += 1


def test_sigkill_at_random_moments_under_load_and_faults_loses_nothing(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or time.time_ns() % 1_000_000)
    print(f"chaos seed {seed}")
    rng = random.Random(seed)
    sandbox = sandbox_factory("--seed", str(seed))
    sandbox.set_faults(error_rate=0.2, drop_connection_rate=0.05, latency_ms=15)
    state = tmp_path / "state"
    ledger = Ledger()
    started = time.monotonic()
    for cycle in range(KILLS):
        server = start_server(tmp_path / f"run-{cycle}", sandbox, state_dir=state, delivery_toml=DELIVERY_TOML)
        loads = [Load(server.address, ledger, random.Random(rng.random()), f"c{cycle}t{t}") for t in range(2)]
        for load in loads:
            load.start()
        time.sleep(rng.uniform(0.2, 1.0))
        server.kill()
        for load in loads:
            load.stop()
        assert server.process.returncode == -9
    chaos_secs = time.monotonic() - started

    sandbox.clear_faults()
    final = start_server(tmp_path / "final", sandbox, state_dir=state, delivery_toml=DELIVERY_TOML)
    try:
        drained(final.address, timeout=60)
        with stub_for(final.address) as stub:
            dead = stub.ListDeadLetters(pb.ListDeadLettersRequest(limit=1000), timeout=10).dead_letters
            assert [(d.order_id, d.kind, d.reason, d.last_response) for d in dead] == []
            stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    finally:
        assert final.stop() == 0

    assert len(ledger.created) >= 5 * KILLS, f"too little load got through: {len(ledger.created)} orders"
    requests = sandbox.requests()
    creates = successful_creates(requests)
    # Every accepted order was created exactly once; nothing (accepted or not) was created twice.
    assert {o: creates.get(o, 0) for o in ledger.created} == dict.fromkeys(ledger.created, 1)
    assert max(creates.values()) == 1
    assert set(creates) <= set(ledger.created) | ledger.unknown
    # Per order, nothing went out before its create succeeded (the sandbox numbers requests on arrival).
    first_create: dict[str, int] = {}
    for request in sorted(requests, key=lambda r: int(str(r["seq"]))):
        order_id = str(request["order_id"])
        if request["path"] == "/v1/order" and request["status"] == 200:
            first_create.setdefault(order_id, int(str(request["seq"])))
        elif str(request["path"]).startswith("/v1/order/") and request["method"] in ("POST", "DELETE"):
            assert order_id in first_create, f"{request['method']} of {order_id} before its create"
    # Cancels and partial refunds took effect exactly once (orders with an unknown call are ambiguous).
    orders = {str(o["order_id"]): o for o in sandbox.orders()}
    for order_id in ledger.created:
        if order_id in ledger.unknown:
            continue
        order = orders[order_id]
        if order_id in ledger.cancelled:
            assert order["status"] == "deleted", order
        else:
            assert order["status"] != "deleted", order
            assert order["total"] == (UNITS - ledger.partial_refunds[order_id]) * UNIT_MINOR, (order_id, order)
    repeats = sum(1 for r in requests if r["path"] == "/v1/order" and r["status"] == 409)
    # Creates in flight at a kill came again and were absorbed as 409: the kills did land mid-delivery.
    assert repeats >= 1
    print(
        f"{KILLS} kills in {chaos_secs:.0f} s: {repeats} creates repeated after a kill (409),"
        f" {ledger.calls} calls accepted, {len(ledger.created)} orders,"
        f" {len(ledger.cancelled)} cancels, {sum(ledger.partial_refunds.values())} partial refunds,"
        f" {len(ledger.unknown)} orders with an unknown outcome; {len(requests)} requests to Button,"
        f" delivered {stats.delivered}"
    )
