"""One SQLite database used from asyncio: a single connection confined to a single thread.

Every statement runs on that thread, so the event loop never waits on disk (a durable commit is an fsync)
and statements never race each other; calls run in the order they were made.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class SqliteDatabase:
    """A SQLite file in WAL mode with `synchronous=FULL`: a commit returns only once it is on disk.

    WAL lets readers and the single writer proceed together; FULL (rather than NORMAL) makes every commit
    survive a power loss, not just a process crash, which is what "durable when Ingest returns" promises.
    Group commit keeps the cost of that fsync per batch of ingests, not per request.
    """

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self._schema = schema
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{path.stem}")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self.call(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: every transaction is an explicit BEGIN IMMEDIATE ... COMMIT in `transaction`.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(self._schema)
        self._conn = conn

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection; only for code already running on the database thread (inside `call`)."""
        if self._conn is None:
            raise RuntimeError(f"database {self.path} is not open")
        return self._conn

    def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one write transaction on the database thread: all of it commits durably, or none of it."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`transaction(fn)` from the event loop."""
        return await self.call(lambda: self.transaction(fn))

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only `fn` on the database thread."""
        return await self.call(lambda: fn(self.conn))

    async def close(self) -> None:
        if self._conn is not None:
            await self.call(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
