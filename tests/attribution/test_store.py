"""The attribution store and order ledger contracts, the same for the SQLite and the Redis backend.

Times are near the wall clock because Redis expires tokens by its own clock; "later" is simulated by the
`now_ms` given to `lookup`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from button_sidecar.pipeline import AttributionStore, LedgerOrder, OrderLedger, StoredAttribution
from button_sidecar.pipeline.attribution import SqliteAttributionStore
from button_sidecar.pipeline.ledger import SqliteOrderLedger
from button_sidecar.pipeline.redis_store import RedisAttributionStore, RedisOrderLedger, StoreUnavailable

from tests.attribution.helpers import DAY_MS, HOUR_MS, MINUTE_MS, Token, now_ms
from tests.conftest import Sandbox
from tests.pipeline.helpers import running, settings, wait_until


def attribution_store(tmp_path: Path, stores: dict[str, Any], window_ms: int = 7 * DAY_MS) -> AttributionStore:
    if stores["store_backend"] == "redis":
        return RedisAttributionStore(stores["redis_url"], stores["redis_key_prefix"], window_ms)
    return SqliteAttributionStore(tmp_path, window_ms)


def order_ledger(
    tmp_path: Path, stores: dict[str, Any], retention_secs: float = 3600.0, clock: Callable[[], float] = time.time
) -> OrderLedger:
    if stores["store_backend"] == "redis":
        return RedisOrderLedger(stores["redis_url"], stores["redis_key_prefix"], retention_secs)
    return SqliteOrderLedger(tmp_path, retention_secs, clock)


def test_the_newest_token_of_any_key_wins_whatever_the_arrival_order(
    tmp_path: Path, store_settings: dict[str, Any]
) -> None:
    async def scenario() -> None:
        now = now_ms()
        store = attribution_store(tmp_path, store_settings)
        await store.open()
        try:
            await store.remember([Token(["mpid:1", f"idfa:{'A' * 8}"], "srctok-new", now - MINUTE_MS)])
            await store.remember([Token(["mpid:1"], "srctok-replayed-old", now - HOUR_MS)])  # arrives later, is older
            assert await store.lookup(["mpid:1"], now) == StoredAttribution(now - MINUTE_MS, "srctok-new")
            # Any of the keys finds it; the newest of several keys wins.
            assert await store.lookup(["customer_id:c-1", f"idfa:{'A' * 8}"], now) == StoredAttribution(
                now - MINUTE_MS, "srctok-new"
            )
            await store.remember([Token(["customer_id:c-1"], "srctok-newest", now - 1000)])
            found = await store.lookup(["mpid:1", "customer_id:c-1"], now)
            assert found is not None and found.btn_ref == "srctok-newest"
            assert await store.lookup(["mpid:2"], now) is None
            assert await store.lookup([], now) is None
        finally:
            await store.close()

    asyncio.run(scenario())


def test_equal_timestamps_keep_the_greater_token_in_any_order(tmp_path: Path, store_settings: dict[str, Any]) -> None:
    async def scenario() -> None:
        at = now_ms() - MINUTE_MS
        store = attribution_store(tmp_path, store_settings)
        await store.open()
        try:
            await store.remember([Token(["mpid:1"], "srctok-b", at)])
            await store.remember([Token(["mpid:1"], "srctok-a", at)])
            await store.remember([Token(["mpid:2"], "srctok-a", at)])
            await store.remember([Token(["mpid:2"], "srctok-b", at)])
            assert await store.lookup(["mpid:1"], at) == StoredAttribution(at, "srctok-b")
            assert await store.lookup(["mpid:2"], at) == StoredAttribution(at, "srctok-b")
        finally:
            await store.close()

    asyncio.run(scenario())


def test_tokens_remembered_together_follow_the_same_rules(tmp_path: Path, store_settings: dict[str, Any]) -> None:
    """A call's tokens go to the store in one write (or round trip): the newest still wins per key, whatever
    their order in the call, and a token without keys is left out."""

    async def scenario() -> None:
        now = now_ms()
        store = attribution_store(tmp_path, store_settings)
        await store.open()
        try:
            await store.remember(
                [
                    Token(["mpid:1", "customer_id:c-1"], "srctok-newer", now - MINUTE_MS),
                    Token(["mpid:1"], "srctok-older", now - HOUR_MS),  # after the newer one in the call
                    Token(["mpid:2"], "srctok-b", now - HOUR_MS),
                    Token(["mpid:2"], "srctok-a", now - HOUR_MS),
                    Token([], "srctok-nobody", now),
                ]
            )
            assert await store.lookup(["mpid:1"], now) == StoredAttribution(now - MINUTE_MS, "srctok-newer")
            assert await store.lookup(["customer_id:c-1"], now) == StoredAttribution(now - MINUTE_MS, "srctok-newer")
            assert await store.lookup(["mpid:2"], now) == StoredAttribution(now - HOUR_MS, "srctok-b")
            await store.remember([])  # nothing to write
            assert await store.lookup(["mpid:3"], now) is None
        finally:
            await store.close()

    asyncio.run(scenario())


def test_tokens_are_usable_for_the_window_then_purged(tmp_path: Path, store_settings: dict[str, Any]) -> None:
    async def scenario() -> None:
        now = now_ms()
        store = attribution_store(tmp_path, store_settings, window_ms=HOUR_MS)
        await store.open()
        try:
            await store.remember([Token(["mpid:fresh"], "srctok-fresh", now - HOUR_MS + MINUTE_MS)])
            await store.remember([Token(["mpid:stale"], "srctok-stale", now - HOUR_MS - 1)])
            found = await store.lookup(["mpid:fresh", "mpid:stale"], now)
            assert found is not None and found.btn_ref == "srctok-fresh"
            assert await store.lookup(["mpid:stale"], now) is None
            # Usable until timestamp + window, exclusive.
            assert await store.lookup(["mpid:fresh"], now + MINUTE_MS - 1) is not None
            assert await store.lookup(["mpid:fresh"], now + MINUTE_MS) is None
            # SQLite deletes on purge; Redis has already dropped the key (it expired on its own).
            purged = await store.purge(now)
            assert purged == (1 if store_settings["store_backend"] == "sqlite" else 0)
            assert await store.lookup(["mpid:stale"], now - 2 * MINUTE_MS) is None
            assert await store.lookup(["mpid:fresh"], now) is not None
        finally:
            await store.close()

    asyncio.run(scenario())


def test_tokens_outlive_the_store_instance(tmp_path: Path, store_settings: dict[str, Any]) -> None:
    """A restart (SQLite) or another host (Redis) sees what was remembered."""

    async def scenario() -> None:
        at = now_ms() - MINUTE_MS
        first = attribution_store(tmp_path, store_settings)
        await first.open()
        await first.remember([Token(["mpid:1"], "srctok-kept", at)])
        await first.close()
        second = attribution_store(tmp_path, store_settings)
        await second.open()
        try:
            assert await second.lookup(["mpid:1"], at + MINUTE_MS) == StoredAttribution(at, "srctok-kept")
        finally:
            await second.close()

    asyncio.run(scenario())


def test_the_ledger_contract(tmp_path: Path, store_settings: dict[str, Any]) -> None:
    async def scenario() -> None:
        ledger = order_ledger(tmp_path, store_settings)
        await ledger.open()
        try:
            # Stored as sent, btn_ref included (a refund takes the updatable fields from it).
            order = LedgerOrder("A/B 100%", {"order_id": "A/B 100%", "total": 2500, "currency": "USD", "btn_ref": "x"})
            assert await ledger.get(order.order_id) is None
            await ledger.record(order.order_id, orjson.dumps(order.fields))
            assert await ledger.get(order.order_id) == order
            await ledger.record(order.order_id, b'{"total": 1}', replace=False)
            assert await ledger.get(order.order_id) == order
            reduced = LedgerOrder(order.order_id, {**order.fields, "total": 1500})
            await ledger.record(reduced.order_id, orjson.dumps(reduced.fields))
            assert await ledger.get(order.order_id) == reduced
            await ledger.mark_deleted(order.order_id)
            await ledger.mark_deleted("never-created")
            assert await ledger.get(order.order_id) == LedgerOrder(order.order_id, reduced.fields, deleted=True)
            assert await ledger.get("never-created") is None
            assert await ledger.known({order.order_id, "never-created", "other"}) == {order.order_id}
            assert await ledger.known(set()) == set()
        finally:
            await ledger.close()

    asyncio.run(scenario())


def test_orders_recorded_together_share_one_statement_and_keep_their_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = SqliteOrderLedger(tmp_path)
        await ledger.open()
        try:
            statements: list[str] = []
            await ledger._db.call(lambda: ledger._db.conn.set_trace_callback(statements.append))
            await asyncio.gather(
                *(ledger.record(f"order-{i}", orjson.dumps({"total": i})) for i in range(200)),
                ledger.record("order-7", b'{"total": -1}', replace=False),  # already recorded: left as it is
                ledger.record("order-8", b'{"total": -2}'),  # made later: replaces
            )
            await ledger._db.call(lambda: ledger._db.conn.set_trace_callback(None))
            inserts = [statement for statement in statements if statement.startswith("INSERT")]
            # 150 rows a statement, then a run of each kind: not one statement per order.
            assert [insert.split(" INTO")[0] for insert in inserts] == [
                "INSERT OR REPLACE",
                "INSERT OR REPLACE",
                "INSERT OR IGNORE",
                "INSERT OR REPLACE",
            ]
            assert await ledger.get("order-7") == LedgerOrder("order-7", {"total": 7})
            assert await ledger.get("order-8") == LedgerOrder("order-8", {"total": -2})
            assert len(await ledger.known({f"order-{i}" for i in range(200)})) == 200
        finally:
            await ledger.close()

    asyncio.run(scenario())


def test_ledger_orders_are_forgotten_a_retention_period_after_their_last_change(
    tmp_path: Path, store_settings: dict[str, Any]
) -> None:
    """SQLite deletes them on purge (its clock is moved here); Redis expires the keys by itself (real time, so
    the retention is short)."""
    redis = store_settings["store_backend"] == "redis"
    retention = 2.0 if redis else 100.0
    clock = [1_000_000.0]

    async def later(secs: float) -> None:
        if redis:
            await asyncio.sleep(secs)
        clock[0] += secs

    async def scenario() -> None:
        ledger = order_ledger(tmp_path, store_settings, retention, lambda: clock[0])
        await ledger.open()
        try:
            await ledger.record("old", b'{"total": 1}')
            await ledger.record("cancelled", b'{"total": 2}')
            await later(retention * 0.75)
            await ledger.mark_deleted("cancelled")  # a change: its period starts again
            await ledger.record("new", b'{"total": 3}', replace=False)
            await later(retention * 0.5)
            assert await ledger.purge() == (0 if redis else 1)
            assert await ledger.known({"old", "cancelled", "new"}) == {"cancelled", "new"}
            assert await ledger.get("cancelled") == LedgerOrder("cancelled", {"total": 2}, deleted=True)
            await later(retention)
            await ledger.purge()
            assert await ledger.known({"old", "cancelled", "new"}) == set()
        finally:
            await ledger.close()

    asyncio.run(scenario())


def test_the_pipeline_purges_expired_ledger_orders_in_the_background(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        earlier = SqliteOrderLedger(tmp_path, clock=lambda: time.time() - 2 * 3600)
        await earlier.open()
        await earlier.record("two-hours-ago", b'{"total": 1}')
        await earlier.close()
        async with running(settings(tmp_path, sandbox, ledger_retention_secs=3600)):
            ledger = SqliteOrderLedger(tmp_path)
            await ledger.open()
            try:

                async def forgotten() -> bool:
                    return await ledger.known({"two-hours-ago"}) == set()

                await wait_until(forgotten, what="the expired order to be purged")
            finally:
                await ledger.close()

    asyncio.run(scenario())


def test_an_unreachable_redis_stops_startup_without_showing_the_password(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        # Port 1 on loopback: nothing listens there, so the connection is refused at once.
        config = settings(tmp_path, sandbox, store_backend="redis", redis_url="redis://:hunter2@127.0.0.1:1/0")
        assert "hunter2" not in repr(config)
        with pytest.raises(StoreUnavailable) as raised:
            async with running(config):
                pass
        message = str(raised.value)
        assert "redis_url" in message and "redis://127.0.0.1:1/0" in message and "hunter2" not in message
        # The state directory was released: a corrected configuration starts.
        async with running(settings(tmp_path, sandbox)) as pipeline:
            assert await pipeline.current_attribution("mpid:1") is None

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"store_backend": "redis"}, "redis_url"),
        ({"store_backend": "redis", "redis_url": "http://localhost:6379"}, "redis_url"),
        ({"store_backend": "memcached"}, "store_backend"),
        ({"forward_environments": "staging"}, "forward_environments"),
        ({"attribution_window_secs": 0}, "attribution_window_secs"),
        ({"app_base_url": "mobileapi.usebutton.com"}, "app_base_url"),
    ],
)
def test_a_wrong_setting_is_named(tmp_path: Path, sandbox: Sandbox, changes: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=f"^{named}: "):
        settings(tmp_path, sandbox, **changes)
