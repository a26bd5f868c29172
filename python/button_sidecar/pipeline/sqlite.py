"""One SQLite database used from asyncio: a single connection confined to a single thread.

Every statement runs on that thread, so the event loop never waits on disk (a durable commit is an fsync)
and statements never race each other; calls run in the order they were made. Small writes made concurrently
share a transaction (`write_grouped`): one commit, and at most one fsync, per group instead of per write.

Storage failures come out as two exceptions that name the file, instead of `sqlite3` errors:
`StorageUnavailable` (the disk is full, read-only or failing: retryable, the failed transaction stored nothing)
and `StorageCorrupt` (the file is not a SQLite database or is damaged: not retryable; the file is left alone,
never recreated).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

T = TypeVar("T")
Item = TypeVar("Item")

logger = logging.getLogger(__name__)

# Primary result codes (https://sqlite.org/rescode.html); an extended code keeps its primary in the low byte.
_SQLITE_PERM: Final = 3
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_SQLITE_NOMEM: Final = 7
_SQLITE_READONLY: Final = 8
_SQLITE_IOERR: Final = 10
_SQLITE_CORRUPT: Final = 11
_SQLITE_FULL: Final = 13
_SQLITE_CANTOPEN: Final = 14
_SQLITE_NOTADB: Final = 26
_PASSING: Final = frozenset(
    {_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_NOMEM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL}
)
_DAMAGED: Final = frozenset({_SQLITE_CORRUPT, _SQLITE_NOTADB})
# Expired rows are deleted this many per statement: a write queued behind a purge on the database thread (an
# ingest's durable write among them) waits for one chunk, not for a day's worth of expired rows.
DELETE_CHUNK_ROWS: Final = 200
# The write-ahead log is copied into the database file after about this many changed rows (a row is about a
# page of log here): SQLite's own default is every 1,000 pages, but inside the COMMIT that crosses it.
CHECKPOINT_AFTER_CHANGES: Final = 1000
# How long a grouped write that nobody's answer waits for (`linger=True`: delivery's leases and outcomes) may
# wait for others to join its group. A transaction costs ~50 µs of the database thread besides its rows, and
# a delivery settling one row at a time paid it for every row.
LINGER_SECS: Final = 0.002


# Rows per multi-row statement: under SQLite's oldest limit of 999 bound values at up to 6 values per row.
MULTI_ROW_CHUNK: Final = 150


def chunks(items: Sequence[T], size: int = MULTI_ROW_CHUNK) -> list[Sequence[T]]:
    """`items` cut into runs of at most `size`."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def placeholders(count: int) -> str:
    """`(?,?,...)`: an `IN` list of `count` values."""
    return f"({','.join('?' * count)})"


def value_rows(count: int, row: str) -> str:
    """The rows of a multi-row `VALUES`: `row` (e.g. `(?, ?, 0, ?)`) `count` times."""
    return ",".join([row] * count)


def delete_chunk(conn: sqlite3.Connection, table: str, condition: str, params: Sequence[object]) -> int:
    """Delete up to `DELETE_CHUNK_ROWS` rows of `table` matching `condition` (a rowid table); returns how many."""
    return int(
        conn.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {condition} LIMIT ?)",
            (*params, DELETE_CHUNK_ROWS),
        ).rowcount
    )


class StorageError(Exception):
    """A SQLite file of the state directory cannot be used; the message names the file and the cause."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class StorageUnavailable(StorageError):
    """The database cannot be written (or read) right now: the disk is full, the file system is read-only,
    the file cannot be opened, or an I/O error. Retryable: the transaction that failed stored nothing and
    nothing stored before was lost; the next call succeeds once the cause is gone, without a restart.
    Servers answer it as "try again later" (gRPC UNAVAILABLE, HTTP 503)."""


class StorageCorrupt(StorageError):
    """The file is not a SQLite database, or it is damaged. Not retryable: the file is left exactly as it is
    (never recreated, which would lose what it holds) for an operator to restore or move aside."""


def _primary_code(error: BaseException | None) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def storage_error(path: Path, error: sqlite3.Error) -> StorageError | None:
    """The `StorageError` a `sqlite3` error stands for, or None when it is not a storage failure (a bug)."""
    primary = _primary_code(error)
    cause = str(error)
    if primary in _DAMAGED or (isinstance(error, sqlite3.DatabaseError) and cause == "file is not a database"):
        return StorageCorrupt(
            f"{path} is not a SQLite database or is damaged ({cause}); it was left as it is: restore it from a "
            "backup, or move it aside to start with an empty one",
            path,
        )
    if primary in _PASSING or primary == _SQLITE_CANTOPEN:
        what = {
            _SQLITE_FULL: "the disk is full",
            _SQLITE_READONLY: "the file or its file system is read-only",
            _SQLITE_CANTOPEN: "the file cannot be opened",
            _SQLITE_IOERR: "an I/O error",
            _SQLITE_PERM: "permission denied",
            _SQLITE_NOMEM: "out of memory",
        }.get(primary or 0, "the database is locked")
        return StorageUnavailable(
            f"the storage is unavailable: {what} at {path} ({cause}); the operation stored nothing, retry later",
            path,
        )
    return None


@dataclass(slots=True)
class _GroupedWrite:
    fn: Callable[[sqlite3.Connection], Any]
    durable: bool
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Raised:
    error: Exception


class _Gathered(Generic[Item, T]):
    """Items for one write, added on the event loop until the database thread takes them (under `lock`: the
    two threads race); an item added after that goes to the next write."""

    __slots__ = ("items", "lock", "taken", "written")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[Item] = []
        self.taken = False
        self.written: asyncio.Future[T] | None = None

    def add(self, item: Item) -> bool:
        with self.lock:
            if not self.taken:
                self.items.append(item)
            return not self.taken

    def take(self) -> list[Item]:
        with self.lock:
            self.taken = True
            return self.items


class Gathering(Generic[Item, T]):
    """Many small writes of one kind made about the same time (e.g. delivery's outcomes), written by one
    function call for all of them: a few multi-row statements instead of a grouped write, with its savepoint,
    statements and event-loop wake-up, per item.

    `submit` queues a write on the database (e.g. `SqliteDatabase.submit_grouped`, lingering); `write` runs on
    the database thread with every item gathered until then.
    """

    def __init__(
        self,
        submit: Callable[[Callable[[sqlite3.Connection], T]], asyncio.Future[T]],
        write: Callable[[sqlite3.Connection, list[Item]], T],
    ) -> None:
        self._submit = submit
        self._write = write
        self._next: _Gathered[Item, T] | None = None

    async def add(self, item: Item) -> T:
        """Queue `item`; returns what the write that carried it returned (shared by all its items), or raises
        what it raised. A caller that stops waiting does not cancel the write."""
        gathered = self._next
        if gathered is None or not gathered.add(item):
            gathered = self._next = _Gathered()
            gathered.add(item)
            written = self._submit(lambda conn: self._write(conn, gathered.take()))
            # Also closed when the write failed before it took them (e.g. BEGIN refused): later ones go to the next.
            written.add_done_callback(lambda _: gathered.take())
            gathered.written = written
        assert gathered.written is not None
        return await asyncio.shield(gathered.written)


class SqliteStore:
    """Base of a store kept in one SQLite file of the state directory (the ledger, the attribution store)."""

    def __init__(self, path: Path, schema: str) -> None:
        self._db = SqliteDatabase(path, schema)

    @property
    def path(self) -> Path:
        return self._db.path

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()


class SqliteDatabase:
    """A SQLite file in WAL mode with `synchronous=FULL`: a commit returns only once it is on disk.

    WAL lets readers and the single writer proceed together; FULL (rather than NORMAL) makes every commit
    survive a power loss, not just a process crash, which is what "durable when Ingest returns" promises.
    Group commit keeps the cost of that fsync per batch of ingests, not per request. The log is copied into
    the database file (a checkpoint) between transactions, after their callers have their answers, never
    inside a COMMIT.

    `open` checks the file (`PRAGMA quick_check`) and raises `StorageCorrupt` naming it when it is not a
    database or is damaged. Every call raises `StorageUnavailable` or `StorageCorrupt` for storage failures;
    a failed write transaction is always rolled back, so the connection stays usable for the next one.
    """

    def __init__(
        self,
        path: Path,
        schema: str,
        *,
        on_group: Callable[[sqlite3.Connection], None] | None = None,
        on_group_commit: Callable[[], None] | None = None,
    ) -> None:
        """`on_group` runs on the database thread at the start of each `write_grouped` transaction, before its
        writes; `on_group_commit` once that transaction committed (e.g. to publish state the writes built)."""
        self.path = path
        self._schema = schema
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{path.stem}")
        self._conn: sqlite3.Connection | None = None
        self._synchronous_full = True  # the connection's mode, set FULL on open
        self._on_group = on_group
        self._on_group_commit = on_group_commit
        self._grouped: list[_GroupedWrite] = []
        self._flusher: asyncio.Task[None] | None = None
        self._lingering: asyncio.TimerHandle | None = None
        # The event loop's own read-only connection, for `read_quick`.
        self._loop_conn: sqlite3.Connection | None = None
        # Rows changed by the connection's commits so far (`total_changes`), and up to the last checkpoint.
        self._changes = self._changes_at_checkpoint = 0
        self._checkpointing: asyncio.Future[None] | None = None

    async def open(self) -> None:
        await self.call(self._open)
        try:
            # No busy wait: the event loop must not stall; a busy database is read on the database thread.
            self._loop_conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=0)
            self._loop_conn.row_factory = sqlite3.Row
        except sqlite3.Error:
            self._loop_conn = None  # `read_quick` then reads on the database thread

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageUnavailable(f"cannot create {self.path.parent}: {error.strerror}", self.path) from error
        # Autocommit mode: every transaction is an explicit BEGIN IMMEDIATE ... COMMIT in `transaction`.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._synchronous_full = True
            conn.execute("PRAGMA busy_timeout=5000")
            # Not inside a COMMIT, where the callers of its group would wait for the copy and an fsync of the
            # database file (a commit's p99 6 ms against 0.5 at p50): `_checkpoint_when_due` does it after.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            # Each grouped write runs in a savepoint, whose journal (a copy of every page it changes) SQLite
            # otherwise spills to a temporary file past 64 KiB: an acknowledgement cost 33 µs of the database
            # thread against 21 with it in memory. A journal is freed when its savepoint is released.
            conn.execute("PRAGMA temp_store=MEMORY")
            # O(size of the file), no index cross-checks: a few seconds for gigabytes, once per start.
            problems = [" ".join(str(row[0]).split()) for row in conn.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise StorageCorrupt(
                    f"{self.path} is damaged (quick_check: {'; '.join(problems)}); it was left as it is: restore it "
                    "from a backup, or move it aside to start with an empty one",
                    self.path,
                )
            conn.executescript(self._schema)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the database thread; storage failures come out as `StorageError`s."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._guarded, fn)

    def _guarded(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except sqlite3.Error as error:
            mapped = storage_error(self.path, error)
            if mapped is None:
                raise
            raise mapped from error

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection; only for code already running on the database thread (inside `call`)."""
        if self._conn is None:
            raise RuntimeError(f"database {self.path} is not open")
        return self._conn

    def transaction(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run `fn` in one write transaction on the database thread: all of it commits durably, or none of it.

        `durable=False` commits without waiting for the disk (WAL with `synchronous=NORMAL`): a process crash
        loses nothing, a power loss may undo the latest such commits. Only for writes whose loss means a
        request is sent again (an acknowledgement), which at-least-once delivery already allows.

        When `fn` or the COMMIT fails (e.g. the disk is full), the transaction is rolled back before the error
        is raised, so the connection is never left inside a transaction that would refuse every later BEGIN.
        """
        conn = self.conn
        # Switched only when it changes: a database whose writes are all of one kind never switches.
        if durable != self._synchronous_full:
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._synchronous_full = durable
        result = self._transaction(conn, fn)
        self._changes = conn.total_changes
        return result

    def _checkpoint_when_due(self) -> None:
        """On the event loop, once a transaction's callers have their answers: when enough was written since
        the last checkpoint, queue one on the database thread (the writes queued meanwhile run first, those
        queued later after it; with nothing else writing, the log then starts over at its beginning)."""
        due = self._changes - self._changes_at_checkpoint >= CHECKPOINT_AFTER_CHANGES
        if due and (self._checkpointing is None or self._checkpointing.done()):
            self._changes_at_checkpoint = self._changes
            self._checkpointing = asyncio.ensure_future(self.call(self._checkpoint))
            self._checkpointing.add_done_callback(self._checkpointed)

    def _checkpoint(self) -> None:
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _checkpointed(self, done: asyncio.Future[None]) -> None:
        error = None if done.cancelled() else done.exception()
        if error is not None:  # nothing is lost: the log keeps every commit, and the next one tries again
            logger.warning("Checkpointing %s failed: %s", self.path, error)

    @staticmethod
    def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back by itself already (it does on some I/O errors during COMMIT).
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error is the one worth raising
            raise
        return result

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`transaction(fn)` from the event loop."""
        result = await self.call(lambda: self.transaction(fn))
        self._checkpoint_when_due()
        return result

    async def write_grouped(
        self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True, linger: bool = False
    ) -> T:
        """`fn` in a write transaction shared with the other grouped writes made meanwhile: while one group
        commits, new writes gather and go into the next. Each runs in its own savepoint: when `fn` raises, its
        changes are undone and its caller gets the exception, the rest of the group is unharmed; a storage
        failure (an `sqlite3.Error`, or the COMMIT) fails the whole group. The group commits durably when any
        of its writes asks for it (see `transaction`).

        `linger`: with no group being written, wait up to `LINGER_SECS` for more writes to join, unless one
        that does not linger comes first (then all go at once). Only for writes no caller's answer waits on."""
        result: T = await self.submit_grouped(fn, durable=durable, linger=linger)
        return result

    def submit_grouped(
        self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True, linger: bool = False
    ) -> asyncio.Future[T]:
        """`write_grouped`, queued at once (in call order with the other writes): its future. Cancelling the
        future only stops waiting for it; the write goes ahead."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._grouped.append(_GroupedWrite(fn, durable, future))
        if self._flusher is None or self._flusher.done():
            if not linger:
                self._start_flush()
            elif self._lingering is None:
                self._lingering = asyncio.get_running_loop().call_later(LINGER_SECS, self._start_flush)
        return future

    def _start_flush(self) -> None:
        if self._lingering is not None:
            self._lingering.cancel()
            self._lingering = None
        if self._grouped and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._grouped:
            group, self._grouped = self._grouped, []
            try:
                outcomes = await self.call(functools.partial(self._write_group, group))
            except Exception as error:  # e.g. disk full: every write of the group gets the error
                outcomes = [_Raised(error)] * len(group)
            for write, outcome in zip(group, outcomes, strict=True):
                if write.future.done():  # the caller stopped waiting; what it wrote is stored regardless
                    continue
                if isinstance(outcome, _Raised):
                    write.future.set_exception(outcome.error)
                else:
                    write.future.set_result(outcome)
            self._checkpoint_when_due()

    def _write_group(self, group: Sequence[_GroupedWrite]) -> list[Any]:
        def write(conn: sqlite3.Connection) -> list[Any]:
            if self._on_group is not None:
                self._on_group(conn)
            outcomes: list[Any] = []
            for item in group:
                conn.execute("SAVEPOINT grouped")
                try:
                    outcomes.append(item.fn(conn))
                except sqlite3.Error:
                    raise  # the storage failed: the whole transaction is rolled back
                except Exception as error:  # refused by the caller's own rules (or a bug): only this write undone
                    conn.execute("ROLLBACK TO grouped")
                    outcomes.append(_Raised(error))
                conn.execute("RELEASE grouped")
            return outcomes

        outcomes = self.transaction(write, durable=any(item.durable for item in group))
        if self._on_group_commit is not None:
            self._on_group_commit()
        return outcomes

    async def execute(
        self, sql: str, params: Sequence[object] = (), *, durable: bool = True, linger: bool = False
    ) -> None:
        """One statement as a grouped write (see `write_grouped`, and `transaction` for `durable`).

        The cursor is closed on the database thread: a cursor handed back to the event loop would be finalised
        there, racing with the connection's use on its own thread (sqlite3.InterfaceError, "API misuse")."""
        await self.write_grouped(lambda conn: conn.execute(sql, params).close(), durable=durable, linger=linger)

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]], *, durable: bool = True) -> None:
        """`execute` once per row, all in one grouped write."""
        await self.write_grouped(lambda conn: conn.executemany(sql, rows).close(), durable=durable)

    async def delete_all(self, table: str, condition: str, params: Sequence[object]) -> int:
        """Delete every row of `table` matching `condition`, one chunk (`delete_chunk`) per transaction, so that
        other writes run in between; returns how many."""
        total = 0
        while True:
            deleted = await self.write(lambda conn: delete_chunk(conn, table, condition, params))
            total += deleted
            if deleted < DELETE_CHUNK_ROWS:
                return total

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only `fn` on the database thread."""
        return await self.call(lambda: fn(self.conn))

    async def read_quick(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read-only `fn` that takes microseconds (an indexed lookup of a few rows), run on the event loop.

        Handing a lookup to the database thread and back costs two thread switches, more than the lookup
        itself; in WAL mode a reader never waits for the writer, so the loop does not either. It sees what
        is committed, as `read` does. Whenever SQLite would make it wait (a checkpoint resetting the log, a
        recovery), the read goes to the database thread instead.
        """
        conn = self._loop_conn
        if conn is not None:
            try:
                return self._guarded(lambda: fn(conn))
            except StorageUnavailable as error:
                if _primary_code(error.__cause__) not in (_SQLITE_BUSY, _SQLITE_LOCKED):
                    raise
        return await self.read(fn)

    async def close(self) -> None:
        if self._loop_conn is not None:
            self._loop_conn.close()
            self._loop_conn = None
        self._start_flush()  # writes still lingering go now
        if self._flusher is not None:
            await self._flusher
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        if self._conn is not None:
            await self.call(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
