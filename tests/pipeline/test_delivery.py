"""The whole pipeline against the real Button sandbox over real sockets, with real SQLite files."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from button_sidecar import __version__, hash_email
from button_sidecar.pipeline import DeliveryEvent, OutboxFull, Pipeline, PipelineClosed
from button_sidecar.pipeline.offload import INLINE_MAX_BYTES
from prometheus_client import CollectorRegistry

from tests.conftest import Sandbox, SandboxFactory
from tests.golden import MPARTICLE_DIR
from tests.pipeline.helpers import (
    EMAIL,
    batch,
    drained,
    metric,
    orders_by_id,
    product,
    purchase,
    refund,
    request_log,
    running,
    settings,
    wait_until,
)


def creates(log: list[dict[str, object]], order_id: str) -> list[dict[str, object]]:
    return [r for r in log if r["method"] == "POST" and r["path"] == "/v1/order" and r["order_id"] == order_id]


def test_every_order_arrives_exactly_once_through_an_outage(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        sandbox.set_faults(outage_s=2.0)
        async with running(settings(tmp_path, sandbox)) as pipeline:
            for i in range(10):
                await pipeline.ingest(batch(purchase(f"outage-{i}")))
            await drained(pipeline)
            orders = await orders_by_id(sandbox)
            assert sorted(orders) == sorted(f"outage-{i}" for i in range(10))
            log = await request_log(sandbox)
            assert {r["status"] for r in log} == {503, 200}  # it did retry through the outage
            assert Counter(r["order_id"] for r in log if r["status"] == 200) == {f"outage-{i}": 1 for i in range(10)}
            assert await pipeline.dead_letters() == []
            stats = await pipeline.stats()
            assert (stats.dead, stats.delivered) == (0, 10)

    asyncio.run(scenario())


def test_retry_after_is_honoured(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        sandbox.set_faults(fail_next=[429], retry_after_s=2)
        async with running(settings(tmp_path, sandbox)) as pipeline:
            await pipeline.ingest(batch(purchase("limited-1")))
            await drained(pipeline)
        log = await request_log(sandbox)
        assert [r["status"] for r in log] == [429, 200]
        waited = float(str(log[1]["time_wall"])) - float(str(log[0]["time_wall"]))
        assert waited >= 2.0  # the 0.05 s backoff would have retried at once

    asyncio.run(scenario())


def test_a_permanent_error_is_a_dead_letter_with_buttons_message_and_replays(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        registry = CollectorRegistry()
        sandbox.set_faults(fail_next=[400], fail_next_order_id="bad-1", fail_next_message="total: must be an integer")
        async with running(settings(tmp_path, sandbox), registry) as pipeline:
            await pipeline.ingest(batch(purchase("bad-1"), purchase("good-1")))
            await drained(pipeline)
            (letter,) = await pipeline.dead_letters()
            assert (letter.order_key, letter.kind, letter.reason) == ("bad-1", "create_order", "button_rejected")
            assert (letter.last_status, letter.last_response, letter.attempts) == (400, "total: must be an integer", 1)
            status = await pipeline.order_status("bad-1")
            assert status is not None and status.state == "dead"
            assert metric(registry, "button_sidecar_dead_letters_total", reason="button_rejected") == 1
            assert sorted(await orders_by_id(sandbox)) == ["good-1"]  # the other order was not held up

            sandbox.clear_faults()  # the cause is fixed
            assert await pipeline.replay([letter.seq]) == 1
            await drained(pipeline)
            assert sorted(await orders_by_id(sandbox)) == ["bad-1", "good-1"]
            assert await pipeline.dead_letters() == []
            status = await pipeline.order_status("bad-1")
            assert status is not None and status.state == "delivered"

    asyncio.run(scenario())


def test_a_refund_waits_for_its_create_while_other_orders_go_ahead(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        sandbox.set_faults(fail_next=[500, 500, 500], fail_next_order_id="slow-1")
        slow = purchase("slow-1", [product("a", "10.00"), product("b", "5.00")])
        async with running(settings(tmp_path, sandbox)) as pipeline:
            await pipeline.ingest(batch(slow, refund("slow-1", [product("b", "5.00")]), purchase("fast-1")))
            await drained(pipeline)
            orders = await orders_by_id(sandbox)
        log = await request_log(sandbox)
        slow_log = [(r["method"], r["path"], r["status"]) for r in log if r["order_id"] == "slow-1"]
        assert slow_log == [
            ("POST", "/v1/order", 500),
            ("POST", "/v1/order", 500),
            ("POST", "/v1/order", 500),
            ("POST", "/v1/order", 200),
            ("POST", "/v1/order/slow-1", 200),  # the refund, resolved into an update, only after the create
        ]
        fast_seq = next(r["seq"] for r in log if r["order_id"] == "fast-1" and r["status"] == 200)
        slow_created_seq = next(r["seq"] for r in log if r["order_id"] == "slow-1" and r["status"] == 200)
        assert isinstance(fast_seq, int) and isinstance(slow_created_seq, int) and fast_seq < slow_created_seq
        assert orders["slow-1"]["total"] == 1000

    asyncio.run(scenario())


def test_partial_and_full_refunds_update_and_cancel_orders(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with running(settings(tmp_path, sandbox)) as pipeline:
            # The fixture: a purchase of 39.99 + 2 x 4.99, then both socks refunded (9.98).
            await pipeline.ingest((MPARTICLE_DIR / "purchase_and_partial_refund.json").read_bytes())
            await pipeline.ingest(batch(purchase("cancel-1"), refund("cancel-1")))
            shoes = product("shoe", "20.00", 3)
            await pipeline.ingest(batch(purchase("partial-1", [shoes, product("hat", "7.50")])))
            await pipeline.ingest(batch(refund("partial-1", [product("shoe", "20.00", 2)])))
            await pipeline.ingest(batch(refund("partial-1", [product("shoe", "20.00"), product("hat", "7.50")])))
            await drained(pipeline)
            orders = await orders_by_id(sandbox)
            assert (orders["order-2007"]["total"], orders["order-2007"]["status"]) == (3999, "open")
            assert [i["identifier"] for i in orders["order-2007"]["line_items"]] == ["sku-1"]
            assert orders["order-2007"]["btn_ref"] == "srctok-abc123"  # kept: updates leave it out
            assert orders["cancel-1"]["status"] == "deleted"
            assert orders["partial-1"]["status"] == "deleted"  # every unit refunded: nothing left
            log = await request_log(sandbox)
            partial = [(r["method"], r["body"]) for r in log if r["order_id"] == "partial-1"]
            assert partial[1] == (
                "POST",
                {
                    "order_id": "partial-1",
                    "total": 2750,
                    "currency": "USD",
                    "purchase_date": "2024-05-01T19:45:44.066Z",
                    "customer": {"id": "cust-1234"},
                    "line_items": [
                        {
                            "identifier": "shoe",
                            "sku": "shoe",
                            "description": "Product shoe",
                            "quantity": 1,
                            "total": 2000,
                            "amount": 2000,
                        },
                        {
                            "identifier": "hat",
                            "sku": "hat",
                            "description": "Product hat",
                            "quantity": 1,
                            "total": 750,
                            "amount": 750,
                        },
                    ],
                },
            )
            assert partial[2] == ("DELETE", None)
            status = await pipeline.order_status("partial-1")
            assert status is not None and (status.state, status.kind) == ("delivered", "cancel_order")

    asyncio.run(scenario())


def test_refund_of_an_order_only_button_knows_is_resolved_with_a_get(tmp_path: Path, sandbox: Sandbox) -> None:
    created = sandbox.request(
        "POST",
        "/v1/order",
        {
            "order_id": "elsewhere-1",
            "total": 3000,
            "currency": "USD",
            "purchase_date": "2024-05-01T19:45:44Z",
            "line_items": [{"identifier": "mug", "quantity": 2, "total": 3000}],
        },
    )
    assert created.status == 200

    async def scenario() -> None:
        async with running(settings(tmp_path, sandbox)) as pipeline:
            await pipeline.ingest(batch(refund("elsewhere-1", [product("mug", "15.00")])))
            await pipeline.ingest(batch(refund("nowhere-1", [product("mug", "15.00")])))
            await drained(pipeline)
            orders = await orders_by_id(sandbox)
            assert orders["elsewhere-1"]["total"] == 1500
            assert orders["elsewhere-1"]["line_items"] == [{"identifier": "mug", "quantity": 1, "total": 1500}]
            log = await request_log(sandbox)
            assert [(r["method"], r["status"]) for r in log if r["order_id"] == "elsewhere-1"][1:] == [
                ("GET", 200),
                ("POST", 200),
            ]
            (letter,) = await pipeline.dead_letters()
            assert (letter.order_key, letter.reason) == ("nowhere-1", "unknown_order")
            assert letter.last_response is not None and "unknown order" in letter.last_response

    asyncio.run(scenario())


def test_past_the_bound_ingest_raises_and_nothing_accepted_is_lost(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        sandbox.set_faults(outage_s=30.0)  # nothing drains while the outbox fills
        async with running(settings(tmp_path, sandbox, max_queue_rows=3)) as pipeline:
            for i in range(3):
                await pipeline.ingest(batch(purchase(f"full-{i}")))
            with pytest.raises(OutboxFull):
                await pipeline.ingest(batch(purchase("full-3")))
            sandbox.clear_faults()
            await drained(pipeline)
            assert sorted(await orders_by_id(sandbox)) == ["full-0", "full-1", "full-2"]
            await pipeline.ingest(batch(purchase("full-3")))  # room again: the caller's retry succeeds
            await drained(pipeline)
            assert len(await orders_by_id(sandbox)) == 4

    asyncio.run(scenario())


def test_repeated_batches_and_creates_are_skipped_and_counted(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        registry = CollectorRegistry()
        # Held undelivered until the repeats are in: a copy that finishes delivery between the ledger check
        # and the outbox write of a repeat is queued again (Button answers 409), which is not what this tests.
        sandbox.set_faults(outage_s=30.0)
        async with running(settings(tmp_path, sandbox), registry) as pipeline:
            first = await pipeline.ingest(batch(purchase("dup-1"), source_request_id="req-1"))
            again = await pipeline.ingest(batch(purchase("dup-1"), source_request_id="req-1"))
            assert (first.accepted, first.duplicate_batch) == (1, False)
            assert (again.accepted, again.duplicate, again.duplicate_batch) == (0, 1, True)
            # Same order, new request id: still queued, so the outbox skips it.
            queued_repeat = await pipeline.ingest(batch(purchase("dup-1"), source_request_id="req-2"))
            assert (queued_repeat.accepted, queued_repeat.duplicate) == (0, 1)
            sandbox.clear_faults()
            await drained(pipeline)
            # Delivered by now, so the ledger knows it.
            delivered_repeat = await pipeline.ingest(batch(purchase("dup-1"), purchase("dup-2")))
            assert (delivered_repeat.accepted, delivered_repeat.duplicate) == (1, 1)
            assert [q.order_id for q in delivered_repeat.queued] == ["dup-2"]
            await drained(pipeline)
        assert metric(registry, "button_sidecar_duplicates_total", kind="source_request_id") == 1
        assert metric(registry, "button_sidecar_duplicates_total", kind="order") == 2
        assert [r["status"] for r in creates(await request_log(sandbox), "dup-1") if r["status"] != 503] == [200]

    asyncio.run(scenario())


def test_a_plaintext_email_never_reaches_the_disk(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        sandbox.set_faults(outage_s=1.0)  # so some requests sit in the outbox and get retried
        async with running(settings(tmp_path, sandbox)) as pipeline:
            for i in range(5):
                await pipeline.ingest(batch(purchase(f"mail-{i}"), refund(f"mail-{i}", total="1.00"), email=EMAIL))
            await pipeline.ingest((MPARTICLE_DIR / "purchase_and_partial_refund.json").read_bytes())
            await drained(pipeline)
            assert len(await orders_by_id(sandbox)) == 6
            # While running, the WAL files hold the recent writes; SQLite removes them on close.
            names = {p.name for p in tmp_path.iterdir()}
            assert names >= {"outbox.sqlite3", "outbox.sqlite3-wal", "ledger.sqlite3", "ledger.sqlite3-wal"}
            assert_no_email(tmp_path)

    asyncio.run(scenario())
    assert_no_email(tmp_path)


def assert_no_email(state_dir: Path) -> None:
    email = EMAIL.lower()  # the fixture's address is the same one, lower-case
    for path in state_dir.iterdir():
        data = path.read_bytes().lower()
        assert email.encode() not in data, path
        assert email.encode("utf-16-le") not in data, path


def test_metrics_follow_the_deliveries(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        registry = CollectorRegistry()
        sandbox.set_faults(fail_next=[503, 503])
        async with running(settings(tmp_path, sandbox), registry) as pipeline:
            await pipeline.ingest(
                batch(purchase("m-1"), purchase("m-2"), refund("m-1"), {"event_type": "custom_event"})
            )
            await drained(pipeline)
            await _gauges_refreshed(pipeline)
        assert metric(registry, "button_sidecar_received_events_total") == 4
        assert metric(registry, "button_sidecar_outbox_enqueued_requests_total", kind="create_order") == 2
        assert metric(registry, "button_sidecar_outbox_enqueued_requests_total", kind="cancel_order") == 1
        assert metric(registry, "button_sidecar_delivered_requests_total", kind="create_order") == 2
        assert metric(registry, "button_sidecar_delivered_requests_total", kind="cancel_order") == 1
        assert metric(registry, "button_sidecar_button_requests_total", status="2xx") == 3
        assert metric(registry, "button_sidecar_button_requests_total", status="5xx") == 2
        assert metric(registry, "button_sidecar_delivery_retries_total") == 2
        assert metric(registry, "button_sidecar_button_request_duration_seconds_count") == 5
        assert metric(registry, "button_sidecar_outbox_depth") == 0
        assert metric(registry, "button_sidecar_outbox_oldest_age_seconds") == 0

    asyncio.run(scenario())


def test_each_ingest_call_times_its_mapping_lookups_and_outbox_write(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        registry = CollectorRegistry()
        async with running(settings(tmp_path, sandbox), registry) as pipeline:
            # Past INLINE_MAX_BYTES the mapping runs in a worker thread, and is timed all the same.
            large = [batch(purchase(f"t-{i}", [product(f"sku-{j}", "1.00") for j in range(20)])) for i in range(80)]
            assert sum(map(len, large)) > INLINE_MAX_BYTES
            await pipeline.ingest_many(large)
            await pipeline.ingest(b"{not json")

        def stage(suffix: str, name: str) -> float:
            return metric(registry, f"button_sidecar_ingest_stage_seconds_{suffix}", stage=name)

        assert stage("count", "mapping") == stage("count", "lookups") == 2
        # The unusable payload stores nothing, so it has no outbox write to wait for.
        assert stage("count", "outbox") == 1
        # A durable write waits for at least its fsync.
        assert stage("sum", "outbox") > 0
        assert stage("sum", "mapping") > 0

    asyncio.run(scenario())


async def _gauges_refreshed(pipeline: Pipeline) -> None:
    # The worker refreshes the gauges at most once a second.
    await asyncio.sleep(1.2)


def test_connection_errors_are_retried(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        registry = CollectorRegistry()
        sandbox.set_faults(drop_connection_rate=0.5)
        async with running(settings(tmp_path, sandbox), registry) as pipeline:
            for i in range(6):
                await pipeline.ingest(batch(purchase(f"drop-{i}")))
            await drained(pipeline)
        assert len(await orders_by_id(sandbox)) == 6
        assert metric(registry, "button_sidecar_button_requests_total", status="connection_error") >= 1

    asyncio.run(scenario())


def test_stop_leaves_unfinished_requests_queued_on_disk(tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    # A sandbox of its own: the request it holds back lands after the test, and must not land in another's.
    sandbox = sandbox_factory()

    async def scenario() -> None:
        sandbox.set_faults(latency_ms=3000)
        config = settings(tmp_path, sandbox)
        async with running(config, stop_deadline_secs=0.2) as pipeline:
            await pipeline.ingest(batch(purchase("slow-stop-1")))
            await wait_until(lambda: _in_flight(pipeline), what="the request to be in flight")
            started = time.monotonic()
        assert time.monotonic() - started < 2.0  # the deadline, not the 3 s latency
        sandbox.clear_faults()
        async with running(config) as pipeline:
            status = await pipeline.order_status("slow-stop-1")
            assert status is not None and status.state in ("queued", "in_flight", "delivered")
            await drained(pipeline)
        assert "slow-stop-1" in await orders_by_id(sandbox)

    asyncio.run(scenario())


async def _in_flight(pipeline: Pipeline) -> bool:
    return (await pipeline.stats()).in_flight == 1


def test_ingest_many_rejections_and_the_attribution_hook(tmp_path: Path, sandbox: Sandbox) -> None:
    looked_up: list[list[str]] = []

    async def lookup(user_keys: Sequence[str]) -> str | None:
        looked_up.append(list(user_keys))
        return "srctok-fromstore"

    async def scenario() -> None:
        async with running(settings(tmp_path, sandbox)) as pipeline:
            pipeline.attribution_lookup = lookup
            bad = purchase("bad-currency")
            bad["data"]["currency_code"] = "XXX1"
            results = await pipeline.ingest_many(
                [
                    batch(purchase("many-1"), bad),
                    (MPARTICLE_DIR / "purchase_and_partial_refund.json").read_bytes(),  # has its own btn_ref
                ]
            )
            assert [r.accepted for r in results] == [1, 2]
            assert [(r.event_index, r.code) for r in results[0].rejections] == [(1, "invalid_currency")]
            assert [(q.kind, q.order_id) for q in results[1].queued] == [
                ("create_order", "order-2007"),
                ("refund", "order-2007"),
            ]
            assert results[1].attributions[0].btn_ref == "srctok-abc123"
            await drained(pipeline)
        orders = await orders_by_id(sandbox)
        assert orders["many-1"]["btn_ref"] == "srctok-fromstore"
        assert orders["order-2007"]["btn_ref"] == "srctok-abc123"
        assert looked_up == [["mpid:7346244611012968789", "customer_id:cust-1234"]]
        with pytest.raises(PipelineClosed):
            await pipeline.ingest(batch(purchase("too-late")))
        headers = (await request_log(sandbox))[0]["headers"]
        assert isinstance(headers, dict)
        assert headers["Content-Type"] == "application/json"
        assert headers["User-Agent"] == f"button-sidecar/{__version__}"

    asyncio.run(scenario())


def test_delivery_events_report_each_attempt_and_outcome_without_bodies_or_secrets(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[DeliveryEvent] = []

    def broken(event: DeliveryEvent) -> None:
        raise RuntimeError("a watcher bug")

    async def scenario() -> None:
        message = f"rejected for {EMAIL}"  # Button's message must not reach a watcher
        sandbox.set_faults(fail_next=[503], fail_next_order_id="events-1", fail_next_message=message)
        async with running(settings(tmp_path, sandbox)) as pipeline:
            pipeline.add_delivery_listener(broken)  # logged and ignored: delivery and other listeners go on
            pipeline.add_delivery_listener(events.append)
            await pipeline.ingest(batch(purchase("events-1"), email=EMAIL))
            await pipeline.ingest(batch(refund("events-unknown")))  # a cancel of an order Button does not know
            await drained(pipeline)

    with caplog.at_level(logging.ERROR, logger="button_sidecar.pipeline.worker"):
        asyncio.run(scenario())
    assert [(e.type, e.kind, e.attempt, e.status) for e in events if e.order_id == "events-1"] == [
        ("sent", "create_order", 1, None),
        ("retry_scheduled", "create_order", 1, 503),
        ("sent", "create_order", 2, None),
        ("delivered", "create_order", 2, 200),
    ]
    retry = next(e for e in events if e.type == "retry_scheduled")
    assert retry.detail.startswith("HTTP 503; next attempt in ") and retry.detail.endswith(" s")
    assert [(e.type, e.kind, e.status, e.detail) for e in events if e.order_id == "events-unknown"] == [
        ("sent", "cancel_order", None, ""),
        ("dead_lettered", "cancel_order", 404, "unknown_order"),
    ]
    for event in events:
        text = repr(event)
        assert EMAIL not in text and hash_email(EMAIL) not in text and sandbox.api_key not in text
        assert "rejected for" not in text
    assert len([r for r in caplog.records if "A delivery listener failed" in r.getMessage()]) == len(events)


def test_delivery_yields_to_ingest_on_a_late_loop_and_still_delivers_everything(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    async def scenario() -> None:
        registry = CollectorRegistry()
        async with running(settings(tmp_path, sandbox, concurrency=16), registry) as pipeline:
            for i in range(40):
                await pipeline.ingest(batch(purchase(f"yield-{i}")))
                time.sleep(0.01)  # a callback holding the loop while ingest calls keep coming
                await asyncio.sleep(0.002)
            assert metric(registry, "button_sidecar_delivery_yields_total") >= 1
            await drained(pipeline)
        assert {f"yield-{i}" for i in range(40)} <= set(await orders_by_id(sandbox))

    asyncio.run(scenario())


def test_delivery_stops_yielding_once_the_outbox_is_half_full(tmp_path: Path, sandbox: Sandbox) -> None:
    """Yielding to ingest must never be why the outbox fills up and refuses ingest."""

    async def scenario() -> None:
        registry = CollectorRegistry()
        sandbox.set_faults(latency_ms=1500)  # every request stays in flight long enough to be counted
        screen_view = batch({"event_type": "screen_view", "data": {"screen_name": "home"}})

        async def ingest_on_a_late_loop(payload: bytes) -> None:
            await pipeline.ingest(payload)
            time.sleep(0.01)  # a callback holding the loop while ingest calls keep coming
            await asyncio.sleep(0.002)

        config = settings(tmp_path, sandbox, concurrency=16, max_queue_rows=20)
        async with running(config, registry) as pipeline:
            for _ in range(30):  # 16 -> 8 -> 4 -> 2 -> 1, one halving per cooldown
                await ingest_on_a_late_loop(screen_view)
            assert metric(registry, "button_sidecar_delivery_yields_total") >= 4
            for i in range(12):  # 12 of 20 rows: past half full while ingest still waits
                await ingest_on_a_late_loop(batch(purchase(f"half-full-{i}")))
            most = 0
            for _ in range(40):
                await ingest_on_a_late_loop(screen_view)
                most = max(most, len(await asyncio.to_thread(sandbox.in_flight)))
                if most >= 10:
                    break
            assert most >= 10, f"only {most} requests in flight at once"
            await drained(pipeline)

    asyncio.run(scenario())


def test_without_ingest_first_delivery_never_yields(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        registry = CollectorRegistry()
        async with running(settings(tmp_path, sandbox, ingest_first_max_wait_secs=0.0), registry) as pipeline:
            for i in range(10):
                await pipeline.ingest(batch(purchase(f"no-yield-{i}")))
                time.sleep(0.01)
                await asyncio.sleep(0.002)
            await drained(pipeline)
            assert metric(registry, "button_sidecar_delivery_yields_total") == 0

    asyncio.run(scenario())
