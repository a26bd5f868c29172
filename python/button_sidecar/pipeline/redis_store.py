"""Redis backends of the attribution store and the order ledger, for a fleet of sidecars sharing one Redis.

A deep link ingested on one host then credits a purchase ingested on another, and a refund resolves against
the order whichever host created it. Every key starts with the configured prefix: `<prefix>attribution:<user
key>` holds `<timestamp_ms>:<btn_ref>` and expires with the attribution window (`PXAT`), `<prefix>order:<order
id>` is a hash of the order's `fields` (JSON) and `deleted` ("0"/"1") and expires the ledger's retention
period after its last change (`PEXPIRE`).

Compare-and-set runs as Lua scripts rather than WATCH/MULTI: a script is atomic on the server in one round
trip, whereas with WATCH two hosts writing the same key abort each other's transaction and need a retry loop
and several round trips. The client speaks to one Redis (a primary); Redis Cluster is not supported.
Durability is what the Redis server is configured for (AOF/RDB), not the outbox's fsync per commit.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from button_sidecar.pipeline.attribution import LearnedToken, StoredAttribution
from button_sidecar.pipeline.ledger import DEFAULT_RETENTION_SECS, LedgerOrder


class StoreUnavailable(Exception):
    """The shared store (Redis) did not answer. Retryable: an ingest that raises it queued nothing."""


# KEYS: the user's keys. ARGV: timestamp_ms, btn_ref, expiry (Unix ms, for PXAT).
# Each key keeps its token when that is newer, or equally new with a greater btn_ref (AttributionStore rules).
_REMEMBER = """
local ts = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  local keep = false
  if current then
    local sep = string.find(current, ':', 1, true)
    local current_ts = tonumber(string.sub(current, 1, sep - 1))
    keep = current_ts > ts or (current_ts == ts and string.sub(current, sep + 1) >= ARGV[2])
  end
  if not keep then
    redis.call('SET', key, ARGV[1] .. ':' .. ARGV[2], 'PXAT', ARGV[3])
  end
end
return 0
"""

# KEYS: one order. ARGV: fields (JSON), deleted ("0"/"1"), retention (ms). Writes only when the order is not
# there yet.
_RECORD_IF_ABSENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'fields', ARGV[1], 'deleted', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 0
"""

# KEYS: one order. ARGV: retention (ms). Marks it deleted only when it is there (an unknown order is ignored,
# not created).
_MARK_DELETED = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'deleted', '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 0
"""


def _where(url: str) -> str:
    """The Redis location for messages: scheme, host, port and path, without credentials."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


class _RedisBackend:
    """One client (connection pool) per backend; every Redis error becomes `StoreUnavailable`."""

    def __init__(self, url: str, prefix: str) -> None:
        self._where = _where(url)
        self._prefix = prefix
        self._client = aioredis.Redis.from_url(url)

    def __repr__(self) -> str:  # the URL may hold a password
        return f"{type(self).__name__}({self._where!r})"

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        try:
            yield
        except RedisError as error:
            raise StoreUnavailable(f"Redis at {self._where} (redis_url): {type(error).__name__}: {error}") from error

    async def open(self) -> None:
        """Check that Redis answers, so a wrong `redis_url` stops startup rather than the first ingest."""
        with self._unavailable():
            await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()


class RedisAttributionStore(_RedisBackend):
    """`AttributionStore` in Redis; entries expire on their own at `timestamp_ms + window` (Redis' clock)."""

    def __init__(self, url: str, prefix: str, window_ms: int) -> None:
        super().__init__(url, prefix + "attribution:")
        self._window_ms = window_ms
        self._remember = self._client.register_script(_REMEMBER)

    async def remember(self, tokens: Sequence[LearnedToken]) -> None:
        tokens = [token for token in tokens if token.user_keys]
        if not tokens:
            return
        with self._unavailable():
            # One round trip for all of them; not a transaction (each script is atomic on its own, and storing
            # a token twice does no harm).
            async with self._client.pipeline(transaction=False) as pipe:
                for token in tokens:
                    await self._remember(
                        keys=[self._prefix + key for key in token.user_keys],
                        args=[token.timestamp_ms, token.btn_ref, token.timestamp_ms + self._window_ms],
                        client=pipe,
                    )
                await pipe.execute()

    async def lookup(self, keys: Sequence[str], now_ms: int) -> StoredAttribution | None:
        if not keys:
            return None
        with self._unavailable():
            values = await self._client.mget([self._prefix + key for key in keys])
        # None: no token, or Redis expired it; a token still in Redis may be too old for `now_ms` all the same.
        stored = [value.decode().partition(":") for value in values if isinstance(value, bytes)]
        usable = [
            StoredAttribution(int(at), btn_ref) for at, _, btn_ref in stored if int(at) > now_ms - self._window_ms
        ]
        return max(usable, default=None)

    async def purge(self, now_ms: int) -> int:
        return 0


class RedisOrderLedger(_RedisBackend):
    """`OrderLedger` in Redis, shared by every sidecar using the same Redis and prefix."""

    def __init__(self, url: str, prefix: str, retention_secs: float = DEFAULT_RETENTION_SECS) -> None:
        super().__init__(url, prefix + "order:")
        self._retention_ms = max(1, int(retention_secs * 1000))
        self._record_if_absent = self._client.register_script(_RECORD_IF_ABSENT)
        self._mark_deleted = self._client.register_script(_MARK_DELETED)

    async def get(self, order_id: str) -> LedgerOrder | None:
        with self._unavailable():
            fields, deleted = await self._client.hmget(self._prefix + order_id, ["fields", "deleted"])
        if fields is None:
            return None
        return LedgerOrder(order_id, orjson.loads(fields), deleted == b"1")

    async def known(self, order_ids: Collection[str]) -> set[str]:
        ids = list(order_ids)
        if not ids:
            return set()
        with self._unavailable():
            async with self._client.pipeline(transaction=False) as pipe:
                for order_id in ids:
                    pipe.exists(self._prefix + order_id)
                exists: list[int] = await pipe.execute()
        return {order_id for order_id, found in zip(ids, exists, strict=True) if found}

    async def record(self, order_id: str, order_json: bytes, *, replace: bool = True) -> None:
        key = self._prefix + order_id
        with self._unavailable():
            if replace:
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.hset(key, mapping={"fields": order_json, "deleted": "0"})
                    pipe.pexpire(key, self._retention_ms)
                    await pipe.execute()
            else:
                await self._record_if_absent(keys=[key], args=[order_json, "0", self._retention_ms])

    async def mark_deleted(self, order_id: str) -> None:
        with self._unavailable():
            await self._mark_deleted(keys=[self._prefix + order_id], args=[self._retention_ms])

    async def purge(self) -> int:
        return 0  # Redis expires the keys by itself
