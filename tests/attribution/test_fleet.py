"""Attribution across batches and hosts, end to end: mParticle batches in, orders at the sandbox.

Each test runs on SQLite (one host) and on a two-host fleet sharing a real Redis (`hosts`). Time is simulated
with `received_at_ms` and event timestamps near the wall clock (Redis expires tokens by its own clock).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from button_sidecar.pipeline import StoredAttribution

from tests.attribution.helpers import (
    DAY_MS,
    HOUR_MS,
    IDFA,
    MINUTE_MS,
    deep_link,
    hosts,
    now_ms,
    requests_for,
    user_batch,
)
from tests.conftest import Sandbox
from tests.pipeline.helpers import (
    drained,
    metric,
    orders_by_id,
    product,
    purchase,
    refund,
    request_log,
    running,
    settings,
)

LOOKUPS = "button_sidecar_attribution_lookups_total"


def test_a_deep_link_on_one_host_credits_a_purchase_on_another(
    tmp_path: Path, sandbox: Sandbox, store_settings: dict[str, Any]
) -> None:
    async def scenario() -> None:
        now = now_ms()
        opened = now - HOUR_MS
        async with hosts(tmp_path, sandbox, store_settings) as (a, b):
            # The app opens through a Button link before login: the batch knows the device, not the customer.
            learned = await a.ingest(user_batch(deep_link("srctok-fleet1", opened), idfa=IDFA), received_at_ms=opened)
            assert [(t.btn_ref, t.timestamp_ms) for t in learned.attributions] == [("srctok-fleet1", opened)]
            assert learned.accepted == 0
            assert await b.current_attribution(f"idfa:{IDFA}") == StoredAttribution(opened, "srctok-fleet1")
            # The purchase comes from the app server: another mpid, but the same device among its keys.
            bought = await b.ingest(
                user_batch(purchase("fleet-1"), mpid=1, customer_id="c-1", idfa=IDFA), received_at_ms=now
            )
            assert bought.accepted == 1
            await drained(b)
            assert metric(b.registry, LOOKUPS, result="found") == 1
        orders = await orders_by_id(sandbox)
        assert orders["fleet-1"]["btn_ref"] == "srctok-fleet1"

    asyncio.run(scenario())


def test_only_tokens_inside_the_attribution_window_credit_a_purchase(
    tmp_path: Path, sandbox: Sandbox, store_settings: dict[str, Any]
) -> None:
    async def scenario() -> None:
        now = now_ms()
        week = 7 * DAY_MS  # the default window
        async with hosts(tmp_path, sandbox, store_settings) as (a, b):
            await a.ingest(user_batch(deep_link("srctok-8days", now - 8 * DAY_MS), mpid=81), received_at_ms=now)
            await a.ingest(user_batch(deep_link("srctok-6days", now - 6 * DAY_MS), mpid=61), received_at_ms=now)
            assert await b.current_attribution("mpid:81") is None
            await b.ingest(user_batch(purchase("window-expired"), mpid=81), received_at_ms=now)
            await b.ingest(user_batch(purchase("window-inside"), mpid=61), received_at_ms=now)
            # The same token, for a purchase received when its window has just closed.
            closes = now - 6 * DAY_MS + week
            await b.ingest(user_batch(purchase("window-closed"), mpid=61), received_at_ms=closes)
            await drained(b)
            assert metric(b.registry, LOOKUPS, result="not_found") == 2
        orders = await orders_by_id(sandbox)
        assert orders["window-expired"]["btn_ref"] is None
        assert orders["window-inside"]["btn_ref"] == "srctok-6days"
        assert orders["window-closed"]["btn_ref"] is None

    asyncio.run(scenario())


def test_the_newest_deep_link_wins_over_a_late_replay_of_an_older_one(
    tmp_path: Path, sandbox: Sandbox, store_settings: dict[str, Any]
) -> None:
    async def scenario() -> None:
        now = now_ms()
        async with hosts(tmp_path, sandbox, store_settings) as (a, b):
            await a.ingest(user_batch(deep_link("srctok-newer", now - MINUTE_MS)), received_at_ms=now - MINUTE_MS)
            # An app server replays an older batch later, to the other host.
            await b.ingest(user_batch(deep_link("srctok-older", now - HOUR_MS)), received_at_ms=now)
            for host in (a, b):
                assert await host.current_attribution("mpid:8675309") == StoredAttribution(
                    now - MINUTE_MS, "srctok-newer"
                )
            await b.ingest(user_batch(purchase("newest-wins")), received_at_ms=now)
            await drained(b)
        assert (await orders_by_id(sandbox))["newest-wins"]["btn_ref"] == "srctok-newer"

    asyncio.run(scenario())


def test_a_deep_link_credits_later_batches_of_the_same_call_but_not_earlier_events(
    tmp_path: Path, sandbox: Sandbox, store_settings: dict[str, Any]
) -> None:
    async def scenario() -> None:
        now = now_ms()
        async with hosts(tmp_path, sandbox, store_settings) as (a, _):
            results = await a.ingest_many(
                [
                    # The purchase precedes the link in its batch: the core's rule leaves it without a token.
                    user_batch(purchase("before-link"), deep_link("srctok-same-call", now - 1000), mpid=1),
                    user_batch(purchase("next-batch"), mpid=1),
                ],
                received_at_ms=now,
            )
            assert [r.accepted for r in results] == [1, 1]
            await drained(a)
        orders = await orders_by_id(sandbox)
        assert orders["before-link"]["btn_ref"] is None
        assert orders["next-batch"]["btn_ref"] == "srctok-same-call"

    asyncio.run(scenario())


def test_a_call_of_many_users_looks_up_and_remembers_each_as_if_in_turn(
    tmp_path: Path, sandbox: Sandbox, store_settings: dict[str, Any]
) -> None:
    # No batch of the call looks up a key that an earlier one teaches: the lookups and the tokens go at once.
    async def scenario() -> None:
        now = now_ms()
        async with hosts(tmp_path, sandbox, store_settings) as (a, b):
            await a.ingest(user_batch(deep_link("srctok-before-call", now - HOUR_MS), mpid=2), received_at_ms=now)
            results = await b.ingest_many(
                [
                    user_batch(deep_link("srctok-user-1", now - 1000), mpid=1),
                    user_batch(purchase("user-2-order"), mpid=2),
                    user_batch(purchase("user-3-order"), mpid=3),
                    user_batch(purchase("user-4-order"), deep_link("srctok-user-4", now - 1000), mpid=4),
                ],
                received_at_ms=now,
            )
            assert [r.accepted for r in results] == [0, 1, 1, 1]
            await drained(b)
            for host in (a, b):
                assert await host.current_attribution("mpid:1") == StoredAttribution(now - 1000, "srctok-user-1")
                assert await host.current_attribution("mpid:4") == StoredAttribution(now - 1000, "srctok-user-4")
        orders = await orders_by_id(sandbox)
        assert orders["user-2-order"]["btn_ref"] == "srctok-before-call"
        assert orders["user-3-order"]["btn_ref"] is None
        assert orders["user-4-order"]["btn_ref"] is None  # the purchase precedes the link in its batch

    asyncio.run(scenario())


def test_a_partial_refund_on_one_host_resolves_an_order_created_on_another(
    tmp_path: Path, sandbox: Sandbox, store_settings: dict[str, Any]
) -> None:
    async def scenario() -> None:
        now = now_ms()
        lines = [product("sku-1", "10.00", quantity=2), product("sku-2", "5.00")]
        async with hosts(tmp_path, sandbox, store_settings) as (a, b):
            await a.ingest(user_batch(deep_link("srctok-refund", now - MINUTE_MS)), received_at_ms=now - MINUTE_MS)
            await a.ingest(user_batch(purchase("refund-fleet-1", lines)), received_at_ms=now)
            await drained(a)  # host A's delivery records the order in the ledger
            queued = await b.ingest(user_batch(refund("refund-fleet-1", [product("sku-1", "10.00")])))
            assert [q.kind for q in queued.queued] == ["refund"]
            await drained(b)
            status = await b.order_status("refund-fleet-1")
            assert status is not None and (status.state, status.kind) == ("delivered", "update_order")
        # Resolved from the shared ledger: Button was never asked for the order.
        assert await requests_for(sandbox, "refund-fleet-1") == [
            ("POST", "/v1/order"),
            ("POST", "/v1/order/refund-fleet-1"),
        ]
        update = next(r for r in await request_log(sandbox) if r["path"] == "/v1/order/refund-fleet-1")["body"]
        assert isinstance(update, dict)
        assert update["total"] == 1500
        assert _lines(update["line_items"]) == [("sku-1", 1, 1000), ("sku-2", 1, 500)]
        order = (await orders_by_id(sandbox))["refund-fleet-1"]
        assert (order["total"], order["btn_ref"]) == (1500, "srctok-refund")

    asyncio.run(scenario())


def _lines(items: object) -> list[tuple[object, object, object]]:
    assert isinstance(items, list)
    return [(item["identifier"], item["quantity"], item["total"]) for item in items]


def test_an_explicit_lookup_hook_replaces_the_store(
    tmp_path: Path, sandbox: Sandbox, store_settings: dict[str, Any]
) -> None:
    asked: list[list[str]] = []

    async def hook(user_keys: Sequence[str]) -> str | None:
        asked.append(list(user_keys))
        return "srctok-from-hook"

    async def scenario() -> None:
        now = now_ms()
        async with hosts(tmp_path, sandbox, store_settings) as (a, b):
            b.attribution_lookup = hook
            await a.ingest(user_batch(deep_link("srctok-stored", now - MINUTE_MS)), received_at_ms=now)
            await b.ingest(user_batch(purchase("hooked")), received_at_ms=now)
            # The store still learns (GetAttribution reads it), whatever the hook answers.
            found = await b.current_attribution("mpid:8675309")
            assert found is not None and found.btn_ref == "srctok-stored"
            await drained(b)
        assert asked == [["mpid:8675309"]]
        assert (await orders_by_id(sandbox))["hooked"]["btn_ref"] == "srctok-from-hook"

    asyncio.run(scenario())


def test_require_btn_ref_counts_the_attribution_store_not_only_the_batch(tmp_path: Path, sandbox: Sandbox) -> None:
    """With `require_btn_ref`, a purchase whose token comes from the store is reported; one without any is
    skipped and counted (the core alone would skip both: it cannot see the store)."""

    async def scenario() -> None:
        now = now_ms()
        async with running(settings(tmp_path, sandbox, require_btn_ref=True)) as pipeline:
            await pipeline.ingest(user_batch(deep_link("srctok-required", now - HOUR_MS)), received_at_ms=now)
            credited = await pipeline.ingest(user_batch(purchase("req-1")), received_at_ms=now)
            stranger = await pipeline.ingest(user_batch(purchase("req-2"), mpid=42), received_at_ms=now)
            assert (credited.accepted, credited.skipped) == (1, 0)
            assert (stranger.accepted, stranger.skipped) == (0, 1)
            await drained(pipeline)
        orders = await orders_by_id(sandbox)
        assert orders["req-1"]["btn_ref"] == "srctok-required"
        assert "req-2" not in orders

    asyncio.run(scenario())
