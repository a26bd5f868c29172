"""Settings of the delivery pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from button_sidecar.pipeline.outbox import WhenFull
from button_sidecar.pipeline.retry import RetryPolicy

StoreBackend = Literal["sqlite", "redis"]
ForwardEnvironments = Literal["production", "development", "both"]


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """How the pipeline stores and delivers. A wrong value raises ValueError naming the setting."""

    state_dir: Path
    """Directory of the outbox (`outbox.sqlite3`), and with the `sqlite` store backend of the order ledger
    (`ledger.sqlite3`) and attribution store (`attribution.sqlite3`); created if missing. One process at a time
    may use it. Example: `./var/button-sidecar`."""
    api_key: str = field(repr=False)
    """Button API key (`sk-...`), sent as the Basic-auth user with an empty password. Never logged."""
    button_base_url: str = "https://api.usebutton.com"
    """Base URL of the Button API (scheme and host, no path). Default `https://api.usebutton.com`."""
    app_base_url: str = "https://mobileapi.usebutton.com"
    """Base URL of Button's Merchant Library API, where app events (`POST /v1/app/events`) and user activity
    (`POST /v1/app/activity`) go, authenticated with the body's `application_id` instead of the API key
    (scheme and host, no path). Default `https://mobileapi.usebutton.com`."""
    max_queue_rows: int = 100_000
    """Most requests waiting for delivery (queued or in flight; dead letters not counted). Default 100000."""
    max_queue_bytes: int = 256 * 1024 * 1024
    """Most body bytes waiting for delivery. Default 268435456 (256 MiB)."""
    when_full: WhenFull = "reject"
    """At a limit: `reject` (ingest raises `OutboxFull`, gRPC RESOURCE_EXHAUSTED) or `block` (ingest waits
    up to `block_timeout_secs` for room, then raises). Default `reject`."""
    block_timeout_secs: float = 30.0
    """With `when_full="block"`, seconds an ingest waits for room before it raises `OutboxFull`. Default 30."""
    concurrency: int = 64
    """Most requests in flight to Button at once (also the connection pool size); the worker goes below it
    while Button answers 429 or 503, and back up as requests succeed. At 20 ms per request, 16 delivered
    about 600 orders/s, 64 about 1,700 and 128 about 2,500 (benches/bench_delivery.py). Default 64."""
    ingest_first_max_wait_secs: float = 10.0
    """Delivery yields the event loop to ingest (`IngestFirst`): while ingest calls arrive and the loop runs
    late, fewer requests go to Button at once, so that callers of ingest are answered first and the outbox
    holds what waits; but only while no request has waited longer than this many seconds and the outbox is
    less than half full, so a sustained load is still delivered as fast as it can be. 0: never yield.
    Default 10."""
    request_timeout_secs: float = 10.0
    """Seconds one Button request may take end to end before it counts as failed and is retried. Default 10."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Backoff and give-up rule for transient failures (see `RetryPolicy`)."""
    dedupe_window_secs: float = 24 * 3600.0
    """Seconds a batch `source_request_id` is remembered; a repeat within it is skipped. Default 86400."""
    require_btn_ref: bool = False
    """Skip (and count) a purchase that has no `btn_ref` after the attribution store was asked. Use this rather
    than the core's `TransformConfig.require_btn_ref`, which cannot see the store. Default False."""
    forward_environments: ForwardEnvironments = "both"
    """Which batches to forward, by their `environment`: `production`, `development` or `both` (like an
    mParticle connection). A batch without an environment counts as production. The others are filtered:
    nothing queued, no token learned, counted with reason `environment`. Default `both`."""
    attribution_window_secs: float = 7 * 24 * 3600.0
    """Seconds a `btn_ref` learned from a deep link credits later purchases of the same user that carry no
    token of their own (measured from the deep link's event time to the purchase batch's receive time).
    Default 604800 (7 days)."""
    ledger_retention_secs: float = 180 * 24 * 3600.0
    """Seconds the order ledger keeps an order after its last change. A refund of an order forgotten since
    fetches it from Button instead; a repeated create is sent and answered 409. Default 15552000 (180 days)."""
    store_backend: StoreBackend = "sqlite"
    """Where the order ledger and the attribution store live: `sqlite` (files in `state_dir`, one host) or
    `redis` (`redis_url`, shared by a fleet, so a deep link, purchase and refund may reach different hosts).
    Default `sqlite`."""
    redis_url: str | None = field(default=None, repr=False)
    """Redis to use with `store_backend="redis"` (required then): `redis://[:password@]host:port/db`,
    `rediss://...` (TLS) or `unix:///path.sock`. May hold a password: never logged. Default unset.
    Example: `redis://redis.internal:6379/0`."""
    redis_key_prefix: str = "button-sidecar:"
    """Prefix of every Redis key the sidecar writes; sidecars that must share state use the same one.
    Default `button-sidecar:`."""

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("api_key: must not be empty")
        if not self.button_base_url.startswith(("http://", "https://")):
            raise ValueError("button_base_url: must start with http:// or https://, e.g. https://api.usebutton.com")
        if not self.app_base_url.startswith(("http://", "https://")):
            raise ValueError("app_base_url: must start with http:// or https://, e.g. https://mobileapi.usebutton.com")
        if self.forward_environments not in ("production", "development", "both"):
            raise ValueError("forward_environments: must be 'production', 'development' or 'both'")
        if self.store_backend not in ("sqlite", "redis"):
            raise ValueError("store_backend: must be 'sqlite' or 'redis'")
        if self.store_backend == "redis" and not (self.redis_url or "").startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError(
                "redis_url: with store_backend 'redis', must start with redis://, rediss:// or unix://,"
                " e.g. redis://localhost:6379/0"
            )
        for name in ("max_queue_rows", "max_queue_bytes", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if self.when_full not in ("reject", "block"):
            raise ValueError("when_full: must be 'reject' or 'block'")
        for name in (
            "block_timeout_secs",
            "request_timeout_secs",
            "dedupe_window_secs",
            "attribution_window_secs",
            "ledger_retention_secs",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be greater than 0")
