"""The order ledger: what Button holds for each order this sidecar reported.

Partial refunds are resolved against it (the reduced order is sent as a full-state update), and order
creates already in it are skipped as duplicates. The embedded backend is SQLite in the state directory;
`OrderLedger` is the interface a shared backend (Redis) implements.

An order is kept for a retention period after its last change, so the ledger does not grow without bound.
Forgetting one is safe: a refund of an order the ledger no longer holds fetches it from Button, and a
repeated create is sent and answered 409 (counted as delivered).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Protocol

import orjson

from button_sidecar.pipeline.sqlite import Gathering, SqliteStore, chunks, placeholders, value_rows

JsonObject = dict[str, object]


@dataclass(frozen=True, slots=True)
class LedgerOrder:
    """An order as Button last acknowledged it."""

    order_id: str
    fields: JsonObject
    """The order as last sent (the create or full-state update body: order_id, total, currency,
    purchase_date, line_items, customer...) or as Button returned it; a refund takes the updatable fields
    from it (`button.refund.order_fields`)."""
    deleted: bool = False


class OrderLedger(Protocol):
    """Storage of `LedgerOrder`s by order id. Written only after Button acknowledged the change."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, order_id: str) -> LedgerOrder | None: ...

    async def known(self, order_ids: Collection[str]) -> set[str]:
        """Which of `order_ids` are in the ledger (deleted ones included)."""
        ...

    async def record(self, order_id: str, order_json: bytes, *, replace: bool = True) -> None:
        """Store an order as Button acknowledged it: `order_json` is the JSON object sent (stored as it is, not
        parsed: this runs once per delivered order). With `replace` False an order already present is left
        as it is."""
        ...

    async def mark_deleted(self, order_id: str) -> None:
        """Mark an order deleted (cancelled at Button); an order not in the ledger is ignored."""
        ...

    async def purge(self) -> int:
        """Delete orders unchanged for longer than the retention period; returns how many (backends that
        expire keys by themselves return 0)."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    fields BLOB NOT NULL,   -- JSON
    deleted INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL DEFAULT 0  -- unix seconds of the last change, for the retention period
);
CREATE INDEX IF NOT EXISTS orders_updated_at ON orders (updated_at);
"""

DEFAULT_RETENTION_SECS = 180 * 24 * 3600.0

# SQLite's default limit on host parameters is 32766; stay well below it.
_KNOWN_CHUNK = 500


class SqliteOrderLedger(SqliteStore):
    """`OrderLedger` in `<state_dir>/ledger.sqlite3` (WAL, synchronous=FULL)."""

    def __init__(
        self, state_dir: Path, retention_secs: float = DEFAULT_RETENTION_SECS, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(state_dir / "ledger.sqlite3", _SCHEMA)
        self._retention_secs = retention_secs
        self._clock = clock
        # Not waited onto the disk: a ledger row lost to a power cut is fetched from Button when a refund needs it.
        # Lingers, and the orders delivered about the same time are written together (no ingest answer waits).
        self._records: Gathering[_Record, None] = Gathering(
            lambda write: self._db.submit_grouped(write, durable=False, linger=True), _write_records
        )

    async def get(self, order_id: str) -> LedgerOrder | None:
        row = await self._db.read(
            lambda conn: conn.execute("SELECT fields, deleted FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        )
        if row is None:
            return None
        return LedgerOrder(order_id, orjson.loads(row["fields"]), bool(row["deleted"]))

    async def known(self, order_ids: Collection[str]) -> set[str]:
        ids = list(order_ids)

        def known(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for chunk in chunks(ids, _KNOWN_CHUNK):
                rows = conn.execute(f"SELECT order_id FROM orders WHERE order_id IN {placeholders(len(chunk))}", chunk)
                found.update(r[0] for r in rows)
            return found

        return await self._db.read_quick(known) if ids else set()

    async def record(self, order_id: str, order_json: bytes, *, replace: bool = True) -> None:
        await self._records.add((order_id, order_json, replace, self._clock()))

    async def mark_deleted(self, order_id: str) -> None:
        await self._db.execute(
            "UPDATE orders SET deleted = 1, updated_at = ? WHERE order_id = ?", (self._clock(), order_id)
        )

    async def purge(self) -> int:
        cutoff = self._clock() - self._retention_secs
        return await self._db.delete_all("orders", "updated_at < ?", (cutoff,))


# An order to record: id, fields (JSON), whether it replaces one already recorded, and when.
_Record = tuple[str, bytes, bool, float]


def _write_records(conn: sqlite3.Connection, records: Sequence[_Record]) -> None:
    """One multi-row statement per run of records with the same `replace`, in the order they were made."""
    for replace, run in groupby(records, key=lambda record: record[2]):
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        for chunk in chunks(list(run)):
            rows = value_rows(len(chunk), "(?, ?, 0, ?)")
            conn.execute(
                f"{verb} INTO orders (order_id, fields, deleted, updated_at) VALUES {rows}",
                [value for order_id, fields, _, at in chunk for value in (order_id, fields, at)],
            )
