"""`SqliteDatabase` on a real file: each transaction commits in the mode it asks for."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from button_sidecar.pipeline.sqlite import SqliteDatabase


def test_each_transaction_commits_in_the_mode_it_asks_for(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = SqliteDatabase(tmp_path / "x.sqlite3", "CREATE TABLE IF NOT EXISTS t (v INTEGER);")
        await db.open()
        try:

            def mode(conn: sqlite3.Connection) -> int:
                conn.execute("INSERT INTO t VALUES (1)")
                return int(conn.execute("PRAGMA synchronous").fetchone()[0])

            async def commit(durable: bool) -> int:
                return await db.call(lambda: db.transaction(mode, durable=durable))

            full, normal = 2, 1
            modes = [await commit(durable) for durable in (False, False, True, False)]
            assert modes == [normal, normal, full, normal]
            assert await db.read(lambda conn: conn.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 4
        finally:
            await db.close()

    asyncio.run(scenario())
