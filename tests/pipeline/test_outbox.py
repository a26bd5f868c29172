"""The outbox on a real SQLite file: per-key FIFO leasing, crash recovery, bounds, dedupe, dead letters."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from button_sidecar.pipeline.outbox import OLDEST_PENDING_SQL, Outbox, OutboxFull, OutboxLocked
from button_sidecar.pipeline.records import OutboxItem
from button_sidecar.pipeline.sqlite import DELETE_CHUNK_ROWS


def item(key: str | None, body: bytes = b"{}", kind: str = "create_order", dedupe: str | None = None) -> OutboxItem:
    return OutboxItem(kind=kind, method="POST", path="/v1/order", body=body, order_key=key, dedupe_key=dedupe)


def run(state_dir: Path, scenario: Callable[[Outbox], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        outbox = Outbox(state_dir, **{"max_rows": 1000, "max_bytes": 1 << 20, **options})
        await outbox.open()
        try:
            await scenario(outbox)
        finally:
            await outbox.close()

    asyncio.run(main())


async def leased_keys(outbox: Outbox, limit: int = 100) -> list[tuple[int, str | None]]:
    rows, _ = await outbox.lease(limit)
    return [(row.seq, row.order_key) for row in rows]


def test_only_the_head_of_each_order_key_is_leased(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        result = await outbox.enqueue([item("A"), item("A"), item("B"), item(None), item(None)])
        a1, a2, b1, n1, n2 = result.seqs
        assert await leased_keys(outbox) == [(a1, "A"), (b1, "B"), (n1, None), (n2, None)]
        assert await leased_keys(outbox) == []  # A2 waits while A1 is in flight
        # A1 fails and is due again at once: still A1 first, never A2 ahead of it.
        assert a1 is not None and a2 is not None
        await outbox.reschedule(a1, time.time(), "HTTP 500", 500, "boom")
        assert await leased_keys(outbox) == [(a1, "A")]
        await outbox.ack(a1, 200)
        assert await leased_keys(outbox) == [(a2, "A")]

    run(tmp_path, scenario)


def test_a_head_waiting_for_its_retry_holds_back_its_key_only(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        a1, _, b1 = (await outbox.enqueue([item("A"), item("A"), item("B")])).seqs
        assert a1 is not None and b1 is not None
        await outbox.lease(1)  # A1
        later = time.time() + 30
        await outbox.reschedule(a1, later, "HTTP 503", 503, None)
        rows, next_due = await outbox.lease(10)
        assert [r.seq for r in rows] == [b1]
        assert next_due == pytest.approx(later)  # the worker sleeps until A1 is due, not A2

    run(tmp_path, scenario)


def test_rows_left_in_flight_by_a_crash_are_queued_again(tmp_path: Path) -> None:
    async def crash(outbox: Outbox) -> None:
        await outbox.enqueue([item("A"), item("B")])
        assert len(await leased_keys(outbox)) == 2  # in flight, never acknowledged

    run(tmp_path, crash)

    async def restart() -> None:
        outbox = Outbox(tmp_path, max_rows=10, max_bytes=1 << 20)
        assert await outbox.open() == 2
        assert [key for _, key in await leased_keys(outbox)] == ["A", "B"]
        await outbox.close()

    asyncio.run(restart())


def test_past_the_row_limit_enqueue_raises_and_keeps_what_it_had(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        await outbox.enqueue([item("A"), item("B")])
        with pytest.raises(OutboxFull, match="full"):
            await outbox.enqueue([item("C"), item("D")])  # refused whole, not half-written
        assert (await outbox.stats()).queued == 2
        await outbox.enqueue([item("C")])
        assert [key for _, key in await leased_keys(outbox)] == ["A", "B", "C"]

    run(tmp_path, scenario, max_rows=3)


def test_past_the_byte_limit_enqueue_raises(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        await outbox.enqueue([item("A", b"x" * 60)])
        with pytest.raises(OutboxFull):
            await outbox.enqueue([item("B", b"x" * 60)])

    run(tmp_path, scenario, max_bytes=100)


def test_fill_is_the_pending_rows_or_bytes_closest_to_their_limit(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        assert outbox.fill() == 0.0
        await outbox.enqueue([item("A"), item("B", b"x" * 48)])
        assert outbox.fill() == 0.5  # 50 of 100 bytes; 2 of 10 rows
        await outbox.enqueue([item(f"R{i}") for i in range(4)])
        assert outbox.fill() == 0.6  # 6 of 10 rows; 58 bytes
        rows, _ = await outbox.lease(10)
        by_key = {row.order_key: row.seq for row in rows}
        await outbox.ack(by_key["B"], 200)
        await outbox.dead_letter(by_key["R0"], "rejected", "400", 400, None)  # dead letters are not counted
        assert outbox.fill() == 0.4

    run(tmp_path, scenario, max_rows=10, max_bytes=100)


def test_when_full_block_waits_for_room(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        (first,) = (await outbox.enqueue([item("A")])).seqs
        assert first is not None
        waiting = asyncio.create_task(outbox.enqueue([item("B")]))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await outbox.lease(1)
        await outbox.ack(first, 200)
        assert (await asyncio.wait_for(waiting, 5)).seqs[0] is not None

    run(tmp_path, scenario, max_rows=1, when_full="block", block_timeout_secs=10)


def test_when_full_block_gives_up_after_its_timeout(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        await outbox.enqueue([item("A")])
        started = time.monotonic()
        with pytest.raises(OutboxFull):
            await outbox.enqueue([item("B")])
        assert time.monotonic() - started >= 0.3

    run(tmp_path, scenario, max_rows=1, when_full="block", block_timeout_secs=0.3)


def test_a_batch_key_seen_within_the_window_is_a_duplicate(tmp_path: Path) -> None:
    now = [1_700_000_000.0]

    async def scenario(outbox: Outbox) -> None:
        assert not (await outbox.enqueue([item("A")], batch_key="req-1")).duplicate_batch
        repeat = await outbox.enqueue([item("A")], batch_key="req-1")
        assert repeat.duplicate_batch and repeat.seqs == ()
        now[0] += 3601  # past the window: a new batch again
        assert not (await outbox.enqueue([item("B")], batch_key="req-1")).duplicate_batch
        assert (await outbox.stats()).queued == 2

    run(tmp_path, scenario, dedupe_window_secs=3600, clock=lambda: now[0])


def test_a_dedupe_key_is_skipped_only_while_pending(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        first, repeat = (await outbox.enqueue([item("A", dedupe="A"), item("A", dedupe="A")])).seqs
        assert first is not None and repeat is None
        assert (await outbox.enqueue([item("A", dedupe="A")])).seqs == (None,)
        await outbox.lease(1)
        await outbox.ack(first, 200)
        assert (await outbox.enqueue([item("A", dedupe="A")])).seqs[0] is not None

    run(tmp_path, scenario)


def test_dead_letters_are_listed_replayed_in_their_place_and_purged(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        a1, a2, b1 = (await outbox.enqueue([item("A"), item("A"), item("B")])).seqs
        assert a1 is not None and b1 is not None
        await outbox.lease(10)
        await outbox.dead_letter(a1, "button_rejected", "rejected: button_rejected", 400, "total: must be an integer")
        await outbox.dead_letter(b1, "unknown_order", "rejected: unknown_order", 404, "Order not found")
        assert (await outbox.stats()).dead == 2
        letters = await outbox.dead_letters()
        assert [(d.seq, d.reason, d.last_status, d.last_response, d.attempts) for d in letters] == [
            (a1, "button_rejected", 400, "total: must be an integer", 1),
            (b1, "unknown_order", 404, "Order not found", 1),
        ]
        status = await outbox.key_status("A")
        assert status is not None and (status.state, status.pending, status.dead) == ("queued", 1, 1)
        # Replayed before A2 went out, A1 keeps its place at the head of A.
        assert await outbox.replay([a1]) == 1
        assert (await outbox.stats()).dead == 1
        assert [seq for seq, _ in await leased_keys(outbox)] == [a1]
        replayed = await outbox.key_status("A")
        assert replayed is not None and replayed.attempts == 0
        await outbox.ack(a1, 200)
        assert [seq for seq, _ in await leased_keys(outbox)] == [a2]
        assert await outbox.purge() == 1
        assert await outbox.dead_letters() == []
        stats = await outbox.stats()
        assert (stats.queued, stats.in_flight, stats.dead, stats.delivered) == (0, 1, 0, 1)

    run(tmp_path, scenario)


def test_the_oldest_pending_age_skips_dead_letters_and_reads_one_index_entry(tmp_path: Path) -> None:
    now = [100.0]

    async def scenario(outbox: Outbox) -> None:
        seqs = []
        for key in ("A", "B", "C"):
            seqs.append((await outbox.enqueue([item(key)])).seqs[0])
            now[0] += 100.0
        await outbox.lease(1)  # A
        assert seqs[0] is not None
        await outbox.dead_letter(seqs[0], "button_rejected", "rejected", 400, None)
        assert (await outbox.stats()).oldest_age_secs == 200.0  # B's, queued at 200; it is 400 now
        # Read every second (delivery gauges, health monitor) on the thread enqueues wait for: it must not visit
        # the pending rows: the planner would (via `outbox_due`) if the query did not name its index.
        with sqlite3.connect(outbox.path) as conn:
            plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + OLDEST_PENDING_SQL))
        assert "outbox_pending_age" in plan and "outbox_due" not in plan

    run(tmp_path, scenario, clock=lambda: now[0])


async def statement_steps(outbox: Outbox, operation: Callable[[], Awaitable[object]]) -> int:
    """How much SQLite work `operation` did, in tens of virtual-machine steps: deterministic, unlike time."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0  # go on

    conn = outbox._db.conn  # the outbox's one connection, used on its database thread
    conn.set_progress_handler(tick, 10)
    try:
        await operation()
    finally:
        conn.set_progress_handler(None, 10)
    return steps[0]


def test_no_operation_of_a_running_outbox_costs_more_with_a_deeper_queue(tmp_path: Path) -> None:
    # Each of these runs per call or per request, or every second: work that grows with the backlog stalls
    # every ingest queued behind it on the database thread (the age gauge once read every pending row).
    def costs(state_dir: Path, depth: int) -> dict[str, int]:
        found: dict[str, int] = {}

        async def scenario(outbox: Outbox) -> None:
            await outbox.enqueue([item(f"backlog-{i}", dedupe=f"backlog-{i}") for i in range(depth)])
            now = time.time()

            async def lease_one() -> None:
                rows, _ = await outbox.lease(1)
                assert len(rows) == 1
                leased.append(rows[0].seq)

            leased: list[int] = []
            operations: dict[str, Callable[[], Awaitable[object]]] = {
                "enqueue": lambda: outbox.enqueue([item("new", dedupe="new"), item("new")], "request-1"),
                "lease": lease_one,
                "ack": lambda: outbox.ack(leased[0], 200),
                "lease again": lease_one,
                "reschedule": lambda: outbox.reschedule(leased[1], now + 60, "HTTP 503", 503, None),
                "lease a third": lease_one,
                "dead letter": lambda: outbox.dead_letter(leased[2], "button_rejected", "rejected", 400, None),
                "stats": outbox.stats,
                "key status": lambda: outbox.key_status("backlog-7"),
            }
            for name, operation in operations.items():
                found[name] = await statement_steps(outbox, operation)

        run(state_dir, scenario, max_rows=100_000, max_bytes=1 << 30)
        return found

    shallow, deep = costs(tmp_path / "shallow", 100), costs(tmp_path / "deep", 20_000)
    grown = {name: (shallow[name], deep[name]) for name in shallow if deep[name] > 2 * shallow[name] + 5}
    assert grown == {}, f"steps (x10) with 100 queued vs 20,000 queued: {grown}"


def test_the_statistics_cost_the_same_with_many_dead_letters(tmp_path: Path) -> None:
    # E.g. a wrong API key for a day: every request dead-lettered at once, until someone replays them.
    def stats_steps(state_dir: Path, dead: int) -> int:
        steps = [0]

        async def scenario(outbox: Outbox) -> None:
            await outbox.enqueue([item(f"order-{i}") for i in range(dead)])
            rows, _ = await outbox.lease(dead)
            await asyncio.gather(
                *(outbox.dead_letter(row.seq, "button_rejected", "HTTP 401", 401, None) for row in rows)
            )
            stats: list[int] = []

            async def read() -> None:
                stats.append((await outbox.stats()).dead)

            steps[0] = await statement_steps(outbox, read)
            assert stats == [dead]

        run(state_dir, scenario, max_rows=100_000, max_bytes=1 << 30)
        return steps[0]

    shallow, deep = stats_steps(tmp_path / "shallow", 50), stats_steps(tmp_path / "deep", 5_000)
    assert deep <= 2 * shallow + 5, (shallow, deep)


def test_a_lease_during_an_outage_reads_none_of_the_rows_waiting_behind_their_heads(tmp_path: Path) -> None:
    # Button down: every order's first request failed and waits for its retry, the rest of each order waits
    # behind it. Each ingest wakes the delivery, and each of its leases once read every one of those rows.
    def lease_steps(state_dir: Path, orders: int) -> int:
        steps = [0]

        async def scenario(outbox: Outbox) -> None:
            await outbox.enqueue(
                [item(f"order-{i}", kind=kind) for i in range(orders) for kind in ("create_order", "update_order")]
            )
            heads, _ = await outbox.lease(orders)
            assert len(heads) == orders
            retry_at = time.time() + 60
            await asyncio.gather(*(outbox.reschedule(row.seq, retry_at, "HTTP 503", 503, None) for row in heads))
            leased: list[object] = []

            async def lease() -> None:
                rows, next_due = await outbox.lease(64)
                leased.extend(rows)
                assert next_due == retry_at  # found without reading the waiting rows either

            steps[0] = await statement_steps(outbox, lease)
            assert leased == []

        run(state_dir, scenario, max_rows=100_000, max_bytes=1 << 30)
        return steps[0]

    shallow, deep = lease_steps(tmp_path / "shallow", 50), lease_steps(tmp_path / "deep", 5_000)
    assert deep <= 2 * shallow + 5, (shallow, deep)


def test_the_request_behind_a_head_that_left_the_queue_is_due_at_once(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        a1, a2, a3 = (await outbox.enqueue([item("A"), item("A", kind="update_order"), item("A")])).seqs
        assert a1 is not None and a2 is not None
        assert await leased_keys(outbox) == [(a1, "A")]
        await outbox.dead_letter(a1, "button_rejected", "rejected", 400, None)
        assert await leased_keys(outbox) == [(a2, "A")]  # dead: no longer the head
        await outbox.ack(a2, 200)
        assert await leased_keys(outbox) == [(a3, "A")]
        # A key whose only rows are dead letters: a new request is its head at once.
        (b1,) = (await outbox.enqueue([item("B")])).seqs
        assert b1 is not None and await leased_keys(outbox) == [(b1, "B")]
        await outbox.dead_letter(b1, "button_rejected", "rejected", 400, None)
        (b2,) = (await outbox.enqueue([item("B", kind="update_order")])).seqs
        assert await leased_keys(outbox) == [(b2, "B")]

    run(tmp_path, scenario)


def test_a_file_of_an_earlier_version_is_brought_up_to_date_once_on_open(tmp_path: Path) -> None:
    async def queue(outbox: Outbox) -> None:
        await outbox.enqueue([item("A"), item("A", kind="update_order"), item("B"), item("C")])

    run(tmp_path, queue)
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as conn:
        # As the earlier version left them: rows behind their head due now, dead letters not counted.
        conn.execute("UPDATE outbox SET next_attempt_at = created_at")
        conn.execute("UPDATE outbox SET state = 'dead' WHERE order_key = 'C'")
        conn.execute("DELETE FROM counters")
        conn.execute("PRAGMA user_version = 0")
    conn.close()

    async def reopened(outbox: Outbox) -> None:
        with sqlite3.connect(outbox.path) as conn:
            set_aside = conn.execute("SELECT order_key, kind FROM outbox WHERE next_attempt_at > created_at + 1e9")
            assert set_aside.fetchall() == [("A", "update_order")]  # out of the due range, the heads are not
        conn.close()
        assert (await outbox.stats()).dead == 1  # C, counted once on open
        rows, _ = await outbox.lease(10)
        assert [(row.order_key, row.kind) for row in rows] == [("A", "create_order"), ("B", "create_order")]
        await outbox.ack(rows[0].seq, 200)
        again, _ = await outbox.lease(10)
        assert [(row.order_key, row.kind) for row in again] == [("A", "update_order")]

    run(tmp_path, reopened)
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


def test_expired_dedupe_keys_are_deleted_a_chunk_per_write(tmp_path: Path) -> None:
    clock = [1000.0]
    old = DELETE_CHUNK_ROWS * 2 + 50

    def seen_keys(outbox: Outbox) -> int:
        with sqlite3.connect(outbox.path) as conn:
            count = int(conn.execute("SELECT COUNT(*) FROM seen_batches").fetchone()[0])
        conn.close()
        return count

    async def scenario(outbox: Outbox) -> None:
        await outbox.enqueue_many([([], f"request-{i}") for i in range(old)])
        clock[0] += 120.0  # past the dedupe window: all expired
        # The newest of them is not reached by the first chunk: sent again, it is a new batch all the same.
        assert not (await outbox.enqueue([], f"request-{old - 1}")).duplicate_batch
        assert seen_keys(outbox) == old - DELETE_CHUNK_ROWS
        remaining = []
        for i in range(4):
            await outbox.enqueue([], f"later-{i}")
            remaining.append(seen_keys(outbox) - (i + 1))
        # A chunk at a time (each write carries at most one), on until none is left; `request-{old - 1}`, seen
        # again just now, stays.
        assert remaining == [old - 2 * DELETE_CHUNK_ROWS, 1, 1, 1]

    run(tmp_path, scenario, dedupe_window_secs=60.0, clock=lambda: clock[0])


def test_order_status_follows_the_rows(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        assert await outbox.key_status("A") is None
        (seq,) = (await outbox.enqueue([item("A")])).seqs
        assert seq is not None
        assert (s := await outbox.key_status("A")) is not None and s.state == "queued"
        await outbox.lease(1)
        assert (s := await outbox.key_status("A")) is not None and s.state == "in_flight"
        await outbox.reschedule(seq, time.time(), "HTTP 503", 503, None)
        await outbox.lease(1)
        await outbox.ack(seq, 201)
        s = await outbox.key_status("A")
        assert s is not None and (s.state, s.attempts, s.last_status, s.pending) == ("delivered", 2, 201, 0)

    run(tmp_path, scenario)


def test_acknowledgements_made_together_share_their_statements(tmp_path: Path) -> None:
    # Three hundred: more than one chunk of a multi-row statement.
    keys = [f"order-{i}" for i in range(300)]

    async def scenario(outbox: Outbox) -> None:
        await outbox.enqueue(
            [item(None)] + [item(key) for key in keys] + [item(key, kind="update_order") for key in keys]
        )
        heads, _ = await outbox.lease(1000)
        assert len(heads) == 301
        statements: list[str] = []
        await outbox._db.call(lambda: outbox._db.conn.set_trace_callback(statements.append))
        await asyncio.gather(*(outbox.ack(row.seq, 200 + row.seq % 2) for row in heads))
        await outbox._db.call(lambda: outbox._db.conn.set_trace_callback(None))
        deletes = [s for s in statements if s.startswith("DELETE FROM outbox")]
        assert len(deletes) == 3, deletes  # one per chunk of 150, not one per request
        stats = await outbox.stats()
        assert (stats.queued, stats.in_flight, stats.delivered) == (300, 0, 301)
        # Each key's next request is its head now, due at once.
        updates, _ = await outbox.lease(1000)
        assert sorted(row.order_key or "" for row in updates) == sorted(keys)
        assert {row.kind for row in updates} == {"update_order"}
        expected.update({row.order_key: 200 + row.seq % 2 for row in heads if row.order_key is not None})

    expected: dict[str | None, int] = {}
    run(tmp_path, scenario)
    # Each key's outcome is kept with its own status.
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as conn:
        kept = dict(conn.execute("SELECT order_key, last_status FROM order_status WHERE state = 'delivered'"))
    assert len(kept) == 300 and kept == expected


def test_a_finished_order_status_is_kept_for_the_retention_period(tmp_path: Path) -> None:
    clock = [1_000_000.0]

    async def scenario(outbox: Outbox) -> None:
        await outbox.enqueue([item("A")])
        ((row,), _) = await outbox.lease(1)
        await outbox.ack(row.seq, 200)
        clock[0] += 3599.0
        await outbox.enqueue([item("B")])  # pruning goes with a write, at most once a minute
        assert (s := await outbox.key_status("A")) is not None and s.state == "delivered"
        clock[0] += 61.0
        await outbox.enqueue([item("C")])
        assert await outbox.key_status("A") is None
        assert (s := await outbox.key_status("B")) is not None and s.state == "queued"  # pending rows stay

    run(tmp_path, scenario, status_retention_secs=3600.0, clock=lambda: clock[0])


def test_rows_stored_for_a_caller_that_stopped_waiting_still_wake_the_delivery(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        woken = asyncio.Event()
        outbox.on_work(woken.set)
        caller = asyncio.create_task(outbox.enqueue([item("A")]))
        await asyncio.sleep(0)  # submitted; then the caller gives up (e.g. its gRPC deadline passed)
        caller.cancel()
        await asyncio.wait_for(woken.wait(), 10)
        assert (await outbox.stats()).queued == 1

    run(tmp_path, scenario)


def test_concurrent_enqueues_all_commit(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        results = await asyncio.gather(*(outbox.enqueue([item(f"order-{i}")], f"req-{i}") for i in range(200)))
        assert all(r.seqs[0] is not None for r in results)
        assert (await outbox.stats()).queued == 200

    run(tmp_path, scenario)
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 200


def test_a_write_refused_inside_a_group_leaves_the_others_of_the_group_committed(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        await outbox.enqueue([item("A"), item("B")])
        (a, b), _ = await outbox.lease(10)
        # Made together, so they share one transaction: the acks make room for the first enqueue only.
        outcomes = await asyncio.gather(
            outbox.ack(a.seq, 200),
            outbox.enqueue([item("C"), item("D")]),
            outbox.enqueue([item("E"), item("F")]),
            outbox.ack(b.seq, 200),
            return_exceptions=True,
        )
        assert [type(o).__name__ for o in outcomes] == ["NoneType", "EnqueueResult", "OutboxFull", "NoneType"]
        stats = await outbox.stats()
        assert (stats.queued, stats.in_flight, stats.delivered) == (2, 0, 2)
        assert [key for _, key in await leased_keys(outbox)] == ["C", "D"]
        await outbox.enqueue([item("E")])  # the totals kept count through the refused write: room for one more

    run(tmp_path, scenario, max_rows=3)


def test_one_process_per_state_dir(tmp_path: Path) -> None:
    async def scenario(outbox: Outbox) -> None:
        with pytest.raises(OutboxLocked):
            await Outbox(tmp_path, max_rows=1, max_bytes=1).open()

    run(tmp_path, scenario)
