"""Settings of the delivery pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from button_sidecar.pipeline.outbox import WhenFull
from button_sidecar.pipeline.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """How the pipeline stores and delivers. A wrong value raises ValueError naming the setting."""

    state_dir: Path
    """Directory of the outbox (`outbox.sqlite3`) and order ledger (`ledger.sqlite3`); created if missing.
    One process at a time may use it. Example: `./var/button-sidecar`."""
    api_key: str = field(repr=False)
    """Button API key (`sk-...`), sent as the Basic-auth user with an empty password. Never logged."""
    button_base_url: str = "https://api.usebutton.com"
    """Base URL of the Button API (scheme and host, no path). Default `https://api.usebutton.com`."""
    max_queue_rows: int = 100_000
    """Most requests waiting for delivery (queued or in flight; dead letters not counted). Default 100000."""
    max_queue_bytes: int = 256 * 1024 * 1024
    """Most body bytes waiting for delivery. Default 268435456 (256 MiB)."""
    when_full: WhenFull = "reject"
    """At a limit: `reject` (ingest raises `OutboxFull`, gRPC RESOURCE_EXHAUSTED) or `block` (ingest waits
    up to `block_timeout_secs` for room, then raises). Default `reject`."""
    block_timeout_secs: float = 30.0
    """With `when_full="block"`, seconds an ingest waits for room before it raises `OutboxFull`. Default 30."""
    concurrency: int = 16
    """Most requests in flight to Button at once (also the connection pool size); the worker goes below it
    while Button answers 429 or 503, and back up as requests succeed. Default 16."""
    request_timeout_secs: float = 10.0
    """Seconds one Button request may take end to end before it counts as failed and is retried. Default 10."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Backoff and give-up rule for transient failures (see `RetryPolicy`)."""
    dedupe_window_secs: float = 24 * 3600.0
    """Seconds a batch `source_request_id` is remembered; a repeat within it is skipped. Default 86400."""

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("api_key: must not be empty")
        if not self.button_base_url.startswith(("http://", "https://")):
            raise ValueError("button_base_url: must start with http:// or https://, e.g. https://api.usebutton.com")
        for name in ("max_queue_rows", "max_queue_bytes", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if self.when_full not in ("reject", "block"):
            raise ValueError("when_full: must be 'reject' or 'block'")
        for name in ("block_timeout_secs", "request_timeout_secs", "dedupe_window_secs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be greater than 0")
