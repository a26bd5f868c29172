"""The attribution store: the newest `btn_ref` learned per user key, for purchases that carry none.

A deep link (an app open with `launch_referral`, or the batch's 1022 integration attribute) teaches a token
for the batch user's keys (`mpid:…`, `customer_id:…`, `idfa:…`/`gaid:…`, `mp_deviceid:…`). The purchase
often comes later, in another batch, and in a fleet on another host; if it has no token of its own it takes
the newest token of any of its keys that is still inside the attribution window. The embedded backend is
SQLite in the state directory; `RedisAttributionStore` (`pipeline.redis_store`) shares one across a fleet.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from button_sidecar.pipeline.sqlite import SqliteStore, placeholders


class LearnedToken(Protocol):
    """A token a deep link taught for a user's keys (the core's `Attribution` is one)."""

    @property
    def user_keys(self) -> Sequence[str]: ...

    @property
    def btn_ref(self) -> str: ...

    @property
    def timestamp_ms(self) -> int:
        """When the deep link happened (its event time), Unix milliseconds."""
        ...


@dataclass(frozen=True, slots=True, order=True)
class StoredAttribution:
    """A `btn_ref` and when it was seen. Ordered by recency: the greater one is the one that wins."""

    timestamp_ms: int
    """When the deep link happened (its event time), Unix milliseconds."""
    btn_ref: str


class AttributionStore(Protocol):
    """Tokens by user key, with these rules (every backend the same):

    - Newest wins: a key keeps the token with the greatest `timestamp_ms`, whatever order tokens arrive in
      (an old deep link replayed late does not replace a newer one). On equal timestamps the greater
      `btn_ref` wins: arbitrary, but the same on every host and in every arrival order, so hosts agree.
    - A token is usable until `timestamp_ms + window`, exclusive; `lookup` compares with the `now_ms` it is
      given, so callers decide what "now" is (the batch's receive time).
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def remember(self, tokens: Sequence[LearnedToken]) -> None:
        """Store each token for each of its keys unless the key holds a newer one; all of a call's tokens at
        once (one write, or one round trip)."""
        ...

    async def lookup(self, keys: Sequence[str], now_ms: int) -> StoredAttribution | None:
        """The newest token of any of `keys` still usable at `now_ms`, or None."""
        ...

    async def purge(self, now_ms: int) -> int:
        """Delete tokens no longer usable at `now_ms`; returns how many (backends that expire keys by
        themselves return 0)."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS attributions (
    user_key TEXT PRIMARY KEY,
    btn_ref TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attributions_at ON attributions (timestamp_ms);
"""


class SqliteAttributionStore(SqliteStore):
    """`AttributionStore` in `<state_dir>/attribution.sqlite3` (WAL, synchronous=FULL, like the outbox)."""

    def __init__(self, state_dir: Path, window_ms: int) -> None:
        super().__init__(state_dir / "attribution.sqlite3", _SCHEMA)
        self._window_ms = window_ms

    async def remember(self, tokens: Sequence[LearnedToken]) -> None:
        rows = [(key, token.btn_ref, token.timestamp_ms) for token in tokens for key in token.user_keys]
        if not rows:
            return
        await self._db.executemany(
            "INSERT INTO attributions (user_key, btn_ref, timestamp_ms) VALUES (?, ?, ?)"
            " ON CONFLICT (user_key) DO UPDATE SET btn_ref = excluded.btn_ref, timestamp_ms = excluded.timestamp_ms"
            " WHERE (excluded.timestamp_ms, excluded.btn_ref) > (timestamp_ms, btn_ref)",
            rows,
            # A second fsync per ingest otherwise; a power cut may forget the newest tokens (the SDKs send the
            # current token again with later batches), a process crash forgets nothing.
            durable=False,
        )

    async def lookup(self, keys: Sequence[str], now_ms: int) -> StoredAttribution | None:
        if not keys:
            return None
        args = [*keys, now_ms - self._window_ms]

        def newest(conn: sqlite3.Connection) -> StoredAttribution | None:
            row = conn.execute(
                "SELECT timestamp_ms, btn_ref FROM attributions"
                f" WHERE user_key IN {placeholders(len(keys))} AND timestamp_ms > ?"
                " ORDER BY timestamp_ms DESC, btn_ref DESC LIMIT 1",
                args,
            ).fetchone()
            return None if row is None else StoredAttribution(row["timestamp_ms"], row["btn_ref"])

        return await self._db.read_quick(newest)

    async def purge(self, now_ms: int) -> int:
        cutoff = now_ms - self._window_ms
        return await self._db.delete_all("attributions", "timestamp_ms <= ?", (cutoff,))
