"""`SqliteDatabase` on a real file: commit modes, reads on the event loop, chunked deletes and checkpoints."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import pytest
from button_sidecar.pipeline.sqlite import DELETE_CHUNK_ROWS, Gathering, SqliteDatabase, StorageError


@asynccontextmanager
async def opened(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    """A database of one table `t (v INTEGER)`, open for the block."""
    db = SqliteDatabase(tmp_path / "x.sqlite3", "CREATE TABLE IF NOT EXISTS t (v INTEGER);")
    await db.open()
    try:
        yield db
    finally:
        await db.close()


def test_each_transaction_commits_in_the_mode_it_asks_for(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(tmp_path) as db:

            def mode(conn: sqlite3.Connection) -> int:
                conn.execute("INSERT INTO t VALUES (1)")
                return int(conn.execute("PRAGMA synchronous").fetchone()[0])

            async def commit(durable: bool) -> int:
                return await db.call(lambda: db.transaction(mode, durable=durable))

            full, normal = 2, 1
            modes = [await commit(durable) for durable in (False, False, True, False)]
            assert modes == [normal, normal, full, normal]
            assert await db.read(lambda conn: conn.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 4

    asyncio.run(scenario())


def test_a_savepoint_undoes_a_write_of_many_pages_from_a_journal_kept_in_memory(tmp_path: Path) -> None:
    """Every grouped write has a savepoint; its journal stays off the disk (`temp_store=MEMORY`) even when it
    holds more than SQLite's 64 KiB before spilling to a temporary file, and still undoes the write."""

    async def scenario() -> None:
        async with opened(tmp_path) as db:
            assert await db.read(lambda conn: conn.execute("PRAGMA temp_store").fetchone()[0]) == 2  # MEMORY
            await db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(20_000)])

            def rewrite_all_then_fail(conn: sqlite3.Connection) -> None:
                conn.execute("UPDATE t SET v = -v")  # every page of the table: 47 pages of 4 KiB, over 64 KiB
                raise ValueError("refused")

            kept, failed = await asyncio.gather(
                db.execute("INSERT INTO t VALUES (-1)"),
                db.write_grouped(rewrite_all_then_fail),
                return_exceptions=True,
            )
            assert kept is None and isinstance(failed, ValueError)
            negatives = await db.read(lambda conn: conn.execute("SELECT COUNT(*) FROM t WHERE v < 0").fetchone()[0])
            assert negatives == 1  # the row of the other write only

    asyncio.run(scenario())


def test_quick_reads_run_on_the_event_loop_and_see_every_committed_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(tmp_path) as db:
            loop_thread = threading.get_ident()
            seen: list[tuple[int, int]] = []

            def count(conn: sqlite3.Connection) -> int:
                total = int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])
                seen.append((threading.get_ident(), total))
                return total

            # Both commit modes are visible to the loop's connection as soon as the write returns.
            await db.execute("INSERT INTO t VALUES (1)", durable=False)
            assert await db.read_quick(count) == 1
            await db.execute("INSERT INTO t VALUES (2)", durable=True)
            assert await db.read_quick(count) == 2
            assert [thread for thread, _ in seen] == [loop_thread, loop_thread]
            # It only reads.
            with pytest.raises(StorageError, match="read-only"):
                await db.read_quick(lambda conn: conn.execute("INSERT INTO t VALUES (3)"))

    asyncio.run(scenario())


def test_a_quick_read_that_sqlite_would_make_wait_goes_to_the_database_thread(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(tmp_path) as db:
            await db.execute("INSERT INTO t VALUES (1)")
            loop_thread = threading.get_ident()
            threads: list[int] = []

            def busy_on_the_loop(conn: sqlite3.Connection) -> int:
                threads.append(threading.get_ident())
                if threading.get_ident() == loop_thread:
                    busy = sqlite3.OperationalError("database is locked")
                    busy.sqlite_errorcode = 5  # SQLITE_BUSY, as SQLite sets it
                    raise busy
                return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])

            assert await db.read_quick(busy_on_the_loop) == 1
            assert threads[0] == loop_thread and threads[1] != loop_thread

    asyncio.run(scenario())


def test_delete_all_deletes_a_chunk_per_transaction_and_lets_other_writes_in_between(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(tmp_path) as db:
            expired = 2 * DELETE_CHUNK_ROWS + 50
            await db.executemany("INSERT INTO t VALUES (?)", [(0,)] * expired + [(1,)] * 10)
            purge = asyncio.create_task(db.delete_all("t", "v = ?", (0,)))
            await asyncio.sleep(0)  # its first chunk is on the database thread's queue
            await db.execute("INSERT INTO t VALUES (2)")  # queued behind that chunk, ahead of the next one
            assert not purge.done()
            assert await purge == expired
            rows = await db.read(lambda conn: conn.execute("SELECT v, COUNT(*) FROM t GROUP BY v").fetchall())
            assert [tuple(row) for row in rows] == [(1, 10), (2, 1)]

    asyncio.run(scenario())


def _rows_in_database_file_alone(path: Path, copy: Path) -> int | None:
    """How many rows of `t` the database file holds without its write-ahead log (None: no table there yet)."""
    shutil.copyfile(path, copy)  # no -wal beside the copy: only what checkpoints copied counts
    try:
        with closing(sqlite3.connect(copy)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])
    except sqlite3.Error:
        return None


def test_the_log_is_copied_into_the_file_after_the_commit_has_answered_not_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("button_sidecar.pipeline.sqlite.CHECKPOINT_AFTER_CHANGES", 50)
    path, copy = tmp_path / "x.sqlite3", tmp_path / "copy.sqlite3"

    async def scenario() -> None:
        async with opened(tmp_path) as db:
            # SQLite's automatic checkpoint would run inside a COMMIT, its group's callers waiting for it.
            assert await db.read(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0
            for value in range(10):
                await db.execute("INSERT INTO t VALUES (?)", (value,))
            assert _rows_in_database_file_alone(path, copy) in (None, 0)  # below the threshold: all in the log
            await db.executemany("INSERT INTO t VALUES (?)", [(value,) for value in range(60)])
            # Answered: the checkpoint this commit made due has not run (it comes after the answer)...
            assert _rows_in_database_file_alone(path, copy) in (None, 0)
            # ... and then it does, on the database thread.
            for _ in range(200):
                if _rows_in_database_file_alone(path, copy) == 70:
                    break
                await asyncio.sleep(0.01)
            assert _rows_in_database_file_alone(path, copy) == 70

    asyncio.run(scenario())


def test_the_log_starts_over_instead_of_growing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("button_sidecar.pipeline.sqlite.CHECKPOINT_AFTER_CHANGES", 50)
    row = b"x" * 8192

    async def scenario() -> None:
        db = SqliteDatabase(tmp_path / "x.sqlite3", "CREATE TABLE IF NOT EXISTS t (v BLOB);")
        await db.open()
        try:
            for _ in range(300):
                await db.executemany("INSERT INTO t VALUES (?)", [(row,)] * 10)
            written = 300 * 10 * len(row)
            # Without checkpoints the log would hold every page written (over 24 MB here).
            assert (tmp_path / "x.sqlite3-wal").stat().st_size < 4 * 1024 * 1024 < written
            assert await db.read(lambda conn: conn.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 3000
        finally:
            await db.close()

    asyncio.run(scenario())


@asynccontextmanager
async def counting_groups(tmp_path: Path) -> AsyncIterator[tuple[SqliteDatabase, list[int]]]:
    """`opened`, with the number of grouped transactions begun so far."""
    groups = [0]

    def begun(conn: sqlite3.Connection) -> None:
        groups[0] += 1

    db = SqliteDatabase(tmp_path / "x.sqlite3", "CREATE TABLE IF NOT EXISTS t (v INTEGER);", on_group=begun)
    await db.open()
    try:
        yield db, groups
    finally:
        await db.close()


def _insert(db: SqliteDatabase, value: int, *, linger: bool) -> asyncio.Task[None]:
    return asyncio.ensure_future(db.execute("INSERT INTO t VALUES (?)", (value,), durable=False, linger=linger))


async def _count_rows(db: SqliteDatabase) -> int:
    return int(await db.read(lambda conn: conn.execute("SELECT COUNT(*) FROM t").fetchone()[0]))


def test_lingering_writes_made_one_after_another_share_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("button_sidecar.pipeline.sqlite.LINGER_SECS", 0.5)  # far longer than the writes take

    async def scenario() -> None:
        async with counting_groups(tmp_path) as (db, groups):
            for linger in (False, True):
                groups[0] = 0
                writes = []
                for value in range(5):
                    writes.append(_insert(db, value, linger=linger))
                    for _ in range(3):  # long enough for a write that does not linger to be under way
                        await asyncio.sleep(0)
                    await asyncio.sleep(0.0002)
                await asyncio.gather(*writes)
                if linger:
                    assert groups[0] == 1
                else:  # the first is written at once, the next ones join a later group
                    assert groups[0] > 1
            assert await _count_rows(db) == 10

    asyncio.run(scenario())


def test_a_write_that_does_not_linger_takes_the_lingering_ones_along_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("button_sidecar.pipeline.sqlite.LINGER_SECS", 3600.0)

    async def scenario() -> None:
        async with counting_groups(tmp_path) as (db, groups):
            lingering = [_insert(db, value, linger=True) for value in range(3)]
            await asyncio.sleep(0.05)
            assert not any(write.done() for write in lingering) and groups[0] == 0
            await asyncio.wait_for(db.execute("INSERT INTO t VALUES (3)"), 5.0)
            await asyncio.wait_for(asyncio.gather(*lingering), 5.0)
            assert groups[0] == 1 and await _count_rows(db) == 4

    asyncio.run(scenario())


def test_closing_writes_what_still_lingers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("button_sidecar.pipeline.sqlite.LINGER_SECS", 3600.0)

    async def scenario() -> None:
        db = SqliteDatabase(tmp_path / "x.sqlite3", "CREATE TABLE IF NOT EXISTS t (v INTEGER);")
        await db.open()
        lingering = [_insert(db, value, linger=True) for value in range(3)]
        await asyncio.sleep(0.01)
        await asyncio.wait_for(db.close(), 5.0)
        await asyncio.wait_for(asyncio.gather(*lingering), 5.0)
        with closing(sqlite3.connect(tmp_path / "x.sqlite3")) as conn:
            assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 3

    asyncio.run(scenario())


def test_gathered_items_go_in_one_write_call_and_a_caller_that_stops_waiting_cancels_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("button_sidecar.pipeline.sqlite.LINGER_SECS", 0.05)

    async def scenario() -> None:
        async with opened(tmp_path) as db:
            calls: list[list[int]] = []

            def write(conn: sqlite3.Connection, values: list[int]) -> int:
                calls.append(values)
                conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
                return len(values)

            gathering: Gathering[int, int] = Gathering(
                lambda fn: db.submit_grouped(fn, durable=False, linger=True), write
            )
            adds = [asyncio.ensure_future(gathering.add(value)) for value in range(5)]
            await asyncio.sleep(0.01)  # still lingering
            adds[1].cancel()
            assert await asyncio.gather(*adds[2:], adds[0]) == [5, 5, 5, 5]
            assert adds[1].cancelled() and calls == [[0, 1, 2, 3, 4]]
            assert await gathering.add(5) == 1  # the write was taken: a new one
            assert calls[1:] == [[5]] and await _count_rows(db) == 6

    asyncio.run(scenario())
