"""The durable outbox: a SQLite queue of outgoing requests, ordered per key, with dead letters.

It stores opaque requests (a kind label, method, path and body bytes) and knows nothing of Button.

Storage failures (`pipeline.sqlite`): a full, read-only or failing disk makes `enqueue` raise `StorageUnavailable`
(retryable: nothing of the refused call was stored) and a damaged file makes `open` raise `StorageCorrupt`.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from button_sidecar.pipeline.records import (
    DeadLetter,
    EnqueueResult,
    KeyStatus,
    OutboxItem,
    OutboxRow,
    OutboxStats,
    RowState,
)
from button_sidecar.pipeline.sqlite import (
    DELETE_CHUNK_ROWS,
    Gathering,
    SqliteDatabase,
    StorageCorrupt,
    StorageError,
    StorageUnavailable,
    chunks,
    delete_chunk,
    placeholders,
    value_rows,
)

__all__ = [
    "Outbox",
    "OutboxFull",
    "OutboxLocked",
    "StorageCorrupt",
    "StorageError",
    "StorageUnavailable",
    "WhenFull",
]

logger = logging.getLogger(__name__)

WhenFull = Literal["reject", "block"]
# Writes the outcome of one leased row; returns how the pending (rows, bytes) totals change once it commits.
_Settlement = Callable[[sqlite3.Connection], tuple[int, int]]
# One write of a group, on the database thread: changes the group's pending (rows, bytes) totals in place.
_Apply = Callable[[sqlite3.Connection, list[int]], Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    order_key TEXT,                 -- rows sharing a key go out one at a time, by seq; NULL: no ordering
    dedupe_key TEXT,                -- a new row is skipped while a pending row has the same key
    kind TEXT NOT NULL,
    method TEXT,
    path TEXT,
    body BLOB,
    created_at REAL NOT NULL,       -- unix seconds
    cycle_started_at REAL NOT NULL, -- start of the current retry cycle (created_at, or the last replay)
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    state TEXT NOT NULL,            -- queued | in_flight | dead (delivered rows are deleted)
    last_error TEXT,
    last_status INTEGER,
    last_response TEXT,             -- the receiver's error message only
    dead_reason TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_key ON outbox (order_key, seq);
CREATE INDEX IF NOT EXISTS outbox_dedupe ON outbox (dedupe_key) WHERE dedupe_key IS NOT NULL;
-- The age gauge reads MIN(created_at) of pending rows every second: without it, a scan of the whole table
-- (over a second at a million queued rows, on the one database thread).
CREATE INDEX IF NOT EXISTS outbox_pending_age ON outbox (created_at) WHERE state IN ('queued', 'in_flight');
CREATE TABLE IF NOT EXISTS seen_batches (batch_key TEXT PRIMARY KEY, seen_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS seen_batches_at ON seen_batches (seen_at);
-- The last finished outcome per order key, kept after its rows are gone (delivered rows are deleted), for
-- `status_retention_secs` after it was written.
CREATE TABLE IF NOT EXISTS order_status (
    order_key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    kind TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS order_status_at ON order_status (updated_at);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# A queued row may be leased only when it is the oldest undelivered, not-dead row of its key.
_IS_HEAD = (
    "(o.order_key IS NULL OR o.seq = "
    "(SELECT MIN(h.seq) FROM outbox AS h WHERE h.order_key = o.order_key AND h.state != 'dead'))"
)
_PENDING = "state IN ('queued', 'in_flight')"
# The `next_attempt_at` of a row queued behind the head of its key: out of the due range, so a lease never
# visits it (in an outage every head waits for its retry and each lease would read every row behind one).
# Only non-head rows carry it; the row that becomes its key's head gets a real time (`_promote_next`).
_BEHIND_HEAD = 1e18
# `PRAGMA user_version` of the file: 1 once every row behind its head carries `_BEHIND_HEAD`, 2 once dead
# letters are counted in `counters` (not by a scan of them on every read of the statistics).
_USER_VERSION = 2
# Named, because left to itself the planner picks `outbox_due` (state=?) and reads every pending row: 30 ms at
# 200,000 rows, every second (the delivery gauges, the health monitor), on the thread every enqueue waits for.
OLDEST_PENDING_SQL = f"SELECT MIN(created_at) FROM outbox INDEXED BY outbox_pending_age WHERE {_PENDING}"
_PRUNE_INTERVAL_SECS = 1.0


class OutboxFull(Exception):
    """The outbox holds as many pending requests (or bytes) as its limits allow.

    Retryable: nothing of the refused batch was written, and nothing accepted earlier was dropped; try again
    once deliveries have drained the queue. The gRPC server answers it with RESOURCE_EXHAUSTED.
    """


class OutboxLocked(Exception):
    """Another process already owns this outbox (its state directory)."""


def _body_size(body: bytes | None) -> int:
    return len(body) if body is not None else 0


class Outbox:
    """A bounded, durable, per-key FIFO queue in `<state_dir>/outbox.sqlite3`.

    Semantics:
    - `enqueue` returns only after its rows are committed with fsync. Every write (enqueues, leases and
      outcomes) made while a transaction commits goes into the next one, each in its own savepoint (group
      commit): one transaction, and at most one fsync, per group instead of per call. Acknowledgements made
      together share one savepoint and a few statements. A batch is written whole or not at all.
    - Bounded by pending rows and body bytes (dead letters are not counted: they are kept until purged).
      Past a limit `enqueue` raises `OutboxFull`, or with `when_full="block"` waits for room up to
      `block_timeout_secs`. Nothing accepted is ever dropped.
    - `lease` hands out only the head (lowest seq that is neither delivered nor dead) of each order key, so
      a key's requests go out strictly in order, one at a time, also while its head waits for a retry;
      different keys go out in parallel.
    - A row changes after a lease only when its attempt's outcome is known: `ack` (delivered: the row is
      deleted and the key's outcome kept in `order_status`), `reschedule` (transient failure) or
      `dead_letter` (permanent failure). Rows a crash left in flight are queued again on `open`:
      delivery is at-least-once.
    - Storage failures: `enqueue` raises `StorageUnavailable` when the disk refuses the write (nothing of
      that call is stored) and works again by itself once there is room. An outcome (`ack`, `reschedule`,
      `dead_letter`) the disk refuses raises too, but is kept and written by the next `lease` before it
      leases anything, so a row whose outcome could not be written is neither lost nor stuck in flight until
      a restart. The pending totals change only after a commit.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        max_rows: int,
        max_bytes: int,
        when_full: WhenFull = "reject",
        block_timeout_secs: float = 30.0,
        dedupe_window_secs: float = 24 * 3600.0,
        status_retention_secs: float = 180 * 24 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state_dir = state_dir
        self._db = SqliteDatabase(
            state_dir / "outbox.sqlite3", _SCHEMA, on_group=self._start_group, on_group_commit=self._publish_group
        )
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._when_full = when_full
        self._block_timeout_secs = block_timeout_secs
        self._dedupe_window_secs = dedupe_window_secs
        self._status_retention_secs = status_retention_secs
        self._clock = clock
        self._lock_fd: int | None = None
        # Owned by the database thread; read elsewhere only as a snapshot.
        self._pending_rows = 0
        self._pending_bytes = 0
        # The totals as the writes of the group being written leave them, and whether rows joined or left the
        # queue; published once it commits.
        self._group_counts = [0, 0]
        self._group_joined = self._group_left = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_prune = 0.0
        self._prune_more = False  # the last prune deleted a full chunk: the next group goes on
        # Replaced on every release of room, so a waiter never misses a wake-up that raced its check.
        self._room = asyncio.Event()
        self._work_listeners: list[Callable[[], None]] = []
        # Outcomes the storage refused, by seq; the next lease writes them first (see `_settle`).
        self._unsettled: dict[int, _Settlement] = {}
        # Not waited onto the disk: a lost acknowledgement only means the request is sent again (Button answers a
        # repeated create with 409; updates carry full state; a delete is idempotent). One fsync per delivered
        # request was most of the outbox thread's time at a thousand orders a second. Lingers for the
        # acknowledgements that follow (the delivery worker frees the row's slot before it).
        self._acks: Gathering[tuple[int, int | None], tuple[int, int]] = Gathering(
            lambda write: self._queue_write(
                lambda conn, counts: _count(counts, write(conn)), durable=False, linger=True
            ),
            lambda conn, acks: _delete_acknowledged(conn, acks, self._clock()),
        )

    @property
    def path(self) -> Path:
        return self._db.path

    def fill(self) -> float:
        """How full the outbox is: its pending requests or bytes, whichever is closer to its limit, as a share
        of that limit (as of the last commit)."""
        return max(self._pending_rows / self._max_rows, self._pending_bytes / self._max_bytes)

    def on_work(self, listener: Callable[[], None]) -> None:
        """Call `listener` (on the event loop) whenever rows were added or became leasable again."""
        self._work_listeners.append(listener)

    def _notify_work(self) -> None:
        for listener in self._work_listeners:
            listener()

    async def open(self) -> int:
        """Open (creating if needed) and queue again rows a crash left in flight; returns how many."""
        self._state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._state_dir / "outbox.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutboxLocked(f"the outbox in {self._state_dir} is in use by another process") from None
        self._lock_fd = fd
        self._loop = asyncio.get_running_loop()
        try:
            await self._db.open()
            requeued = await self._db.write(self._recover)
        except BaseException:
            # E.g. a damaged file (`StorageCorrupt`): release the directory, so a corrected start can take it.
            await self._db.close()
            self._release_lock()
            raise
        self._notify_work()
        return requeued

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _recover(self, conn: sqlite3.Connection) -> int:
        requeued = conn.execute("UPDATE outbox SET state = 'queued' WHERE state = 'in_flight'").rowcount
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < 1:
            # Queued by a version that left rows behind their head in the due range: set them aside, once.
            conn.execute(
                f"UPDATE outbox AS o SET next_attempt_at = ? WHERE o.state = 'queued' AND NOT {_IS_HEAD}",
                (_BEHIND_HEAD,),
            )
        if version < 2:
            conn.execute(
                "INSERT OR REPLACE INTO counters (name, value) SELECT 'dead', COUNT(*) FROM outbox WHERE state = 'dead'"
            )
        if version < _USER_VERSION:
            conn.execute(f"PRAGMA user_version = {_USER_VERSION}")
        row = conn.execute(f"SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM outbox WHERE {_PENDING}").fetchone()
        self._pending_rows, self._pending_bytes = int(row[0]), int(row[1])
        return requeued

    async def close(self) -> None:
        await self._db.close()
        self._release_lock()

    # -- enqueue -----------------------------------------------------------------------------------------

    async def enqueue(self, items: Sequence[OutboxItem], batch_key: str | None = None) -> EnqueueResult:
        """Store `items` durably in one transaction; returns once committed.

        `batch_key` (e.g. a source request id) makes the call idempotent within the dedupe window: a repeat
        writes nothing and reports `duplicate_batch`. Raises `OutboxFull` past the limits.
        """
        return (await self.enqueue_many([(items, batch_key)]))[0]

    async def enqueue_many(self, batches: Sequence[tuple[Sequence[OutboxItem], str | None]]) -> list[EnqueueResult]:
        """`enqueue` for several batches at once: all of them are stored, or (`OutboxFull`) none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._block_timeout_secs
        while True:
            room = self._room
            try:
                return await self._submit(batches)
            except OutboxFull:
                if self._when_full != "block" or not self._could_ever_fit(batches):
                    raise
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise
                try:
                    await asyncio.wait_for(room.wait(), remaining)
                except TimeoutError:
                    pass

    def _could_ever_fit(self, batches: Sequence[tuple[Sequence[OutboxItem], str | None]]) -> bool:
        items = [item for batch, _ in batches for item in batch]
        return len(items) <= self._max_rows and sum(_body_size(i.body) for i in items) <= self._max_bytes

    async def _submit(self, batches: Sequence[tuple[Sequence[OutboxItem], str | None]]) -> list[EnqueueResult]:
        now = self._clock()
        result: list[EnqueueResult] = await self._write(
            lambda conn, counts: self._write_submission(conn, batches, now, counts), durable=True
        )
        return result

    async def _write(self, apply: _Apply, *, durable: bool, linger: bool = False) -> Any:
        """`apply` as a grouped write (`SqliteDatabase.write_grouped`)."""
        return await self._queue_write(apply, durable=durable, linger=linger)

    def _queue_write(self, apply: _Apply, *, durable: bool, linger: bool = False) -> asyncio.Future[Any]:
        """`_write`, queued at once: its future."""

        def counted(conn: sqlite3.Connection) -> Any:
            counts = self._group_counts
            before = list(counts)
            try:
                result = apply(conn, counts)
            except BaseException:
                counts[:] = before  # its savepoint is rolled back
                raise
            self._group_joined |= counts[0] > before[0]
            self._group_left |= counts[0] < before[0]
            return result

        return self._db.submit_grouped(counted, durable=durable, linger=linger)

    def _start_group(self, conn: sqlite3.Connection) -> None:
        now = self._clock()
        self._group_counts = [self._pending_rows, self._pending_bytes]
        self._group_joined = self._group_left = False
        if self._prune_more or now - self._last_prune >= _PRUNE_INTERVAL_SECS:
            # A chunk per group while more are due: no group carries a whole interval's expired rows.
            seen = delete_chunk(conn, "seen_batches", "seen_at < ?", (now - self._dedupe_window_secs,))
            done = delete_chunk(conn, "order_status", "updated_at < ?", (now - self._status_retention_secs,))
            self._prune_more = DELETE_CHUNK_ROWS in (seen, done)
            self._last_prune = now

    def _publish_group(self) -> None:
        self._pending_rows, self._pending_bytes = self._group_counts
        # Also when the callers stopped waiting (e.g. a cancelled ingest): what they wrote is stored.
        assert self._loop is not None  # set by `open`, before any write
        self._loop.call_soon_threadsafe(self._after_group, self._group_joined, self._group_left)

    def _after_group(self, joined: bool, left: bool) -> None:
        """On the event loop: rows that left the queue make room for writers waiting for it; rows that joined
        it wake the delivery."""
        if left:
            self._release_room()
        if joined:
            self._notify_work()

    def _write_submission(
        self,
        conn: sqlite3.Connection,
        batches: Sequence[tuple[Sequence[OutboxItem], str | None]],
        now: float,
        counts: list[int],
    ) -> list[EnqueueResult]:
        before = list(counts)
        results = [self._write_batch(conn, items, batch_key, now, counts) for items, batch_key in batches]
        # Measured after writing, so repeats skipped by a dedupe key do not count against the limits.
        added = counts[0] > before[0]
        if added and (counts[0] > self._max_rows or counts[1] > self._max_bytes):
            raise OutboxFull(
                f"the outbox is full ({before[0]} requests, {before[1]} bytes pending; limits {self._max_rows} "
                f"requests, {self._max_bytes} bytes): retry once deliveries have drained it"
            )
        return results

    def _write_batch(
        self,
        conn: sqlite3.Connection,
        items: Sequence[OutboxItem],
        batch_key: str | None,
        now: float,
        counts: list[int],
    ) -> EnqueueResult:
        if batch_key is not None:
            # Writes the key unless it was seen within the window: nothing changed means a repeat.
            fresh = conn.execute(
                "INSERT INTO seen_batches (batch_key, seen_at) VALUES (?1, ?2) ON CONFLICT (batch_key)"
                " DO UPDATE SET seen_at = excluded.seen_at WHERE seen_batches.seen_at < ?3",
                (batch_key, now, now - self._dedupe_window_secs),
            ).rowcount
            if not fresh:
                return EnqueueResult(duplicate_batch=True, seqs=())
        seqs: list[int | None] = []
        for item in items:
            if (
                item.dedupe_key is not None
                and conn.execute(
                    f"SELECT 1 FROM outbox WHERE dedupe_key = ? AND {_PENDING} LIMIT 1", (item.dedupe_key,)
                ).fetchone()
            ):
                seqs.append(None)
                continue
            cursor = conn.execute(
                "INSERT INTO outbox (order_key, dedupe_key, kind, method, path, body, created_at, cycle_started_at,"
                " next_attempt_at, state, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, CASE WHEN EXISTS"
                " (SELECT 1 FROM outbox WHERE order_key = ?1 AND state != 'dead') THEN ?8 ELSE ?7 END, 'queued', ?7)",
                (item.order_key, item.dedupe_key, item.kind, item.method, item.path, item.body, now, _BEHIND_HEAD),
            )
            seqs.append(cursor.lastrowid)
            counts[0] += 1
            counts[1] += _body_size(item.body)
        return EnqueueResult(duplicate_batch=False, seqs=tuple(seqs))

    # -- delivery ----------------------------------------------------------------------------------------

    async def lease(self, limit: int) -> tuple[list[OutboxRow], float | None]:
        """Mark up to `limit` due head rows in flight and return them.

        Also returns when the next head falls due (unix seconds) if fewer than `limit` were due, else None.
        """
        now = self._clock()
        unsettled = dict(self._unsettled)

        def lease(conn: sqlite3.Connection, counts: list[int]) -> tuple[list[OutboxRow], float | None]:
            # First the outcomes the storage refused earlier: their rows are still in flight, so not leasable.
            for settle in unsettled.values():
                _count(counts, settle(conn))
            rows = conn.execute(
                "SELECT seq, order_key, kind, method, path, body, created_at, cycle_started_at, attempts "
                f"FROM outbox AS o WHERE o.state = 'queued' AND o.next_attempt_at <= ? AND {_IS_HEAD} "
                "ORDER BY o.next_attempt_at, o.seq LIMIT ?",
                (now, limit),
            ).fetchall()
            for chunk in chunks([r[0] for r in rows]):
                conn.execute(
                    f"UPDATE outbox SET state = 'in_flight', updated_at = ? WHERE seq IN {placeholders(len(chunk))}",
                    (now, *chunk),
                )
            next_due = None
            if len(rows) < limit:
                found = conn.execute(
                    "SELECT o.next_attempt_at FROM outbox AS o WHERE o.state = 'queued' AND o.next_attempt_at < ? "
                    f"AND {_IS_HEAD} ORDER BY o.next_attempt_at LIMIT 1",
                    (_BEHIND_HEAD,),
                ).fetchone()
                next_due = None if found is None else float(found[0])
            return [OutboxRow(*r) for r in rows], next_due

        # A lost lease costs nothing (rows in flight are queued again on start): durable only for the outcomes.
        # It lingers for the acknowledgements of the rows whose slots it fills (one transaction for all).
        leased, next_due = await self._write(lease, durable=bool(unsettled), linger=True)
        if unsettled:
            for seq in unsettled:
                self._unsettled.pop(seq, None)
            logger.info("Wrote the outcome of %d request(s) that the storage had refused before.", len(unsettled))
        return leased, next_due

    async def _settle(self, seq: int, settlement: _Settlement) -> None:
        """Write the outcome of leased row `seq`. When the storage refuses it (`StorageUnavailable`, raised), it is
        kept and written by the next `lease`: the row stays in flight (not sent again) until then, and a crash
        meanwhile queues it again on start (at-least-once)."""
        try:
            await self._commit(settlement)
        except StorageUnavailable:
            self._unsettled[seq] = settlement
            raise

    async def _commit(self, write: _Settlement) -> tuple[int, int]:
        """`write` durably in the next group; returns its change of the pending totals, published once committed."""
        change: tuple[int, int] = await self._write(lambda conn, counts: _count(counts, write(conn)), durable=True)
        return change

    async def ack(self, seq: int, status: int | None) -> None:
        """The attempt succeeded: delete the row and keep the outcome for its key.

        Acknowledgements made about the same time are written together (`Gathering`): a few statements for all
        of them, not seven each."""
        try:
            await self._acks.add((seq, status))
        except StorageUnavailable:
            # Kept for the next lease, as this row's own settlement (see `_settle`).
            self._unsettled[seq] = lambda conn: _delete_acknowledged(conn, [(seq, status)], self._clock())
            raise

    async def reschedule(
        self, seq: int, next_attempt_at: float, error: str, status: int | None, response: str | None
    ) -> None:
        """The attempt failed transiently: queue the row again for `next_attempt_at`."""
        now = self._clock()

        def reschedule(conn: sqlite3.Connection) -> tuple[int, int]:
            conn.execute(
                "UPDATE outbox SET state = 'queued', attempts = attempts + 1, next_attempt_at = ?, last_error = ?,"
                " last_status = ?, last_response = ?, updated_at = ? WHERE seq = ?",
                (next_attempt_at, error, status, response, now, seq),
            )
            return 0, 0

        await self._settle(seq, reschedule)

    async def dead_letter(self, seq: int, reason: str, error: str, status: int | None, response: str | None) -> None:
        """The attempt failed for good: keep the row as a dead letter, out of the delivery queue."""
        now = self._clock()

        def dead(conn: sqlite3.Connection) -> tuple[int, int]:
            row = conn.execute("SELECT order_key, kind, attempts, body FROM outbox WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                return 0, 0
            died = conn.execute(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1, dead_reason = ?, last_error = ?,"
                " last_status = ?, last_response = ?, updated_at = ? WHERE seq = ? AND state != 'dead'",
                (reason, error, status, response, now, seq),
            ).rowcount
            if not died:
                return 0, 0
            _add_to_counter(conn, "dead", 1)
            if row["order_key"] is not None:
                _promote_next(conn, row["order_key"], now)
                _record_outcome(conn, row["order_key"], "dead", row["kind"], row["attempts"] + 1, status, error, now)
            return -1, -_body_size(row["body"])

        await self._settle(seq, dead)

    async def rewrite(self, seq: int, kind: str, method: str | None, path: str | None, body: bytes | None) -> None:
        """Replace a leased row's request (e.g. an intent resolved into the concrete request to send).

        Persisting it before sending makes every retry send exactly the same request.
        """

        def rewrite(conn: sqlite3.Connection) -> tuple[int, int]:
            row = conn.execute("SELECT body FROM outbox WHERE seq = ?", (seq,)).fetchone()
            conn.execute(
                "UPDATE outbox SET kind = ?, method = ?, path = ?, body = ?, updated_at = ? WHERE seq = ?",
                (kind, method, path, body, self._clock(), seq),
            )
            return 0, (0 if row is None else _body_size(body) - _body_size(row["body"]))

        await self._commit(rewrite)

    async def release(self, seqs: Sequence[int]) -> None:
        """Put leased rows back unchanged (their attempt was abandoned, e.g. at shutdown)."""
        await self._db.executemany(
            "UPDATE outbox SET state = 'queued' WHERE seq = ? AND state = 'in_flight'", [(s,) for s in seqs]
        )
        self._notify_work()

    def _release_room(self) -> None:
        room, self._room = self._room, asyncio.Event()
        room.set()

    # -- inspection and dead letters ---------------------------------------------------------------------

    async def key_status(self, key: str) -> KeyStatus | None:
        """The delivery state of `key`, or None when the outbox never saw it."""

        def status(conn: sqlite3.Connection) -> KeyStatus | None:
            rows = conn.execute(
                "SELECT state, kind, attempts, last_status, last_error, updated_at FROM outbox"
                " WHERE order_key = ? ORDER BY seq",
                (key,),
            ).fetchall()
            pending = [r for r in rows if r["state"] != "dead"]
            dead = [r for r in rows if r["state"] == "dead"]
            if pending:
                head = pending[0]
                state: RowState = "in_flight" if head["state"] == "in_flight" else "queued"
            elif dead:
                head, state = dead[-1], "dead"
            else:
                head = conn.execute(
                    "SELECT state, kind, attempts, last_status, last_error, updated_at FROM order_status"
                    " WHERE order_key = ?",
                    (key,),
                ).fetchone()
                if head is None:
                    return None
                state = head["state"]
            return KeyStatus(
                order_key=key,
                state=state,
                kind=head["kind"],
                attempts=head["attempts"],
                last_status=head["last_status"],
                last_error=head["last_error"],
                pending=len(pending),
                dead=len(dead),
                updated_at=head["updated_at"],
            )

        return await self._db.read(status)

    async def stats(self) -> OutboxStats:
        now = self._clock()

        def stats(conn: sqlite3.Connection) -> OutboxStats:
            # Counting the queued rows or the dead letters would scan them all (millions after a long outage,
            # every second, for the gauges): the pending totals are kept in memory, delivered and dead in
            # `counters`; only the few in flight are counted.
            in_flight = int(conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'in_flight'").fetchone()[0])
            oldest = conn.execute(OLDEST_PENDING_SQL).fetchone()[0]
            counters = dict(conn.execute("SELECT name, value FROM counters WHERE name IN ('delivered', 'dead')"))
            return OutboxStats(
                queued=self._pending_rows - in_flight,
                in_flight=in_flight,
                dead=int(counters.get("dead", 0)),
                pending_bytes=self._pending_bytes,
                oldest_age_secs=0.0 if oldest is None else max(0.0, now - oldest),
                delivered=int(counters.get("delivered", 0)),
            )

        return await self._db.read(stats)

    async def dead_letters(self, limit: int = 1000, after_seq: int = 0) -> list[DeadLetter]:
        """Dead letters by seq, `limit` at a time after `after_seq` (for paging)."""
        rows = await self._db.read(
            lambda conn: conn.execute(
                "SELECT seq, order_key, kind, method, path, attempts, dead_reason, last_status, last_error,"
                " last_response, created_at, updated_at FROM outbox WHERE state = 'dead' AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        )
        return [DeadLetter(*r) for r in rows]

    async def replay(self, seqs: Sequence[int] | None = None) -> int:
        """Queue dead letters again (all when `seqs` is None) with attempts and age reset; returns how many.

        A replayed row keeps its seq, so it goes out before any later request of the same order key that is
        still pending, as it would have originally.
        """
        now = self._clock()

        def replay(conn: sqlite3.Connection) -> tuple[int, int]:
            where, args = self._dead_selection(seqs)
            size = conn.execute(f"SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM outbox WHERE {where}", args)
            count, nbytes = size.fetchone()
            conn.execute(
                "UPDATE outbox SET state = 'queued', attempts = 0, dead_reason = NULL, next_attempt_at = ?,"
                f" cycle_started_at = ?, updated_at = ? WHERE {where}",
                (now, now, now, *args),
            )
            _add_to_counter(conn, "dead", -int(count))
            return int(count), int(nbytes)

        replayed, _ = await self._commit(replay)
        return replayed

    async def purge(self, seqs: Sequence[int] | None = None) -> int:
        """Delete dead letters for good (all when `seqs` is None); returns how many."""

        def purge(conn: sqlite3.Connection) -> int:
            where, args = self._dead_selection(seqs)
            deleted = int(conn.execute(f"DELETE FROM outbox WHERE {where}", args).rowcount)
            _add_to_counter(conn, "dead", -deleted)
            return deleted

        return await self._db.write(purge)

    @staticmethod
    def _dead_selection(seqs: Sequence[int] | None) -> tuple[str, tuple[int, ...]]:
        if seqs is None:
            return "state = 'dead'", ()
        return f"state = 'dead' AND seq IN {placeholders(len(seqs))}", tuple(seqs)


def _delete_acknowledged(
    conn: sqlite3.Connection, acks: Sequence[tuple[int, int | None]], now: float
) -> tuple[int, int]:
    """Delete the delivered rows `acks` (seq, status), promote the next row of each of their keys and keep each
    key's outcome; a few statements per `MULTI_ROW_CHUNK` rows."""
    statuses = dict(acks)
    changed = [0, 0]
    for chunk in chunks(list(statuses)):
        rows = conn.execute(
            f"SELECT seq, order_key, kind, attempts, LENGTH(body) FROM outbox WHERE seq IN {placeholders(len(chunk))}",
            chunk,
        ).fetchall()
        if not rows:
            continue
        conn.execute(f"DELETE FROM outbox WHERE seq IN {placeholders(len(chunk))}", chunk)
        keyed = [row for row in rows if row[1] is not None]
        if keyed:
            keys = [row[1] for row in keyed]
            # One row per key is ever in flight (only heads are leased): each key's next row becomes its head.
            conn.execute(
                "UPDATE outbox SET next_attempt_at = ? WHERE next_attempt_at = ? AND seq IN (SELECT MIN(seq) FROM"
                f" outbox WHERE order_key IN {placeholders(len(keys))} AND state != 'dead' GROUP BY order_key)",
                (now, _BEHIND_HEAD, *keys),
            )
            delivered = value_rows(len(keyed), "(?, 'delivered', ?, ?, ?, NULL, ?)")
            conn.execute(
                "INSERT OR REPLACE INTO order_status (order_key, state, kind, attempts, last_status, last_error,"
                f" updated_at) VALUES {delivered}",
                [value for row in keyed for value in (row[1], row[2], row[3] + 1, statuses[row[0]], now)],
            )
        _add_to_counter(conn, "delivered", len(rows))
        changed[0] -= len(rows)
        changed[1] -= sum(row[4] or 0 for row in rows)
    return changed[0], changed[1]


def _count(counts: list[int], change: tuple[int, int]) -> tuple[int, int]:
    """Add `change` (rows, bytes) to a group's pending totals; returns it."""
    counts[0] += change[0]
    counts[1] += change[1]
    return change


def _add_to_counter(conn: sqlite3.Connection, name: str, change: int) -> None:
    conn.execute(
        "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = value + ?2",
        (name, change),
    )


def _promote_next(conn: sqlite3.Connection, key: str, now: float) -> None:
    """After `key`'s head left the queue (delivered or dead): its next row, if it waited behind it, is due now."""
    conn.execute(
        "UPDATE outbox SET next_attempt_at = ? WHERE next_attempt_at = ? AND seq ="
        " (SELECT MIN(seq) FROM outbox WHERE order_key = ? AND state != 'dead')",
        (now, _BEHIND_HEAD, key),
    )


def _record_outcome(
    conn: sqlite3.Connection,
    key: str,
    state: RowState,
    kind: str,
    attempts: int,
    status: int | None,
    error: str | None,
    now: float,
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO order_status"
        " (order_key, state, kind, attempts, last_status, last_error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (key, state, kind, attempts, status, error, now),
    )
