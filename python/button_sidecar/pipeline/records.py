"""What goes into the outbox and what comes out of it: plain records, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RowState = Literal["queued", "in_flight", "delivered", "dead"]


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One request to store: `kind` is a label, `method`/`path`/`body` are passed through untouched."""

    kind: str
    method: str | None
    path: str | None
    body: bytes | None
    order_key: str | None
    """Items with the same key are delivered one at a time in enqueue order; None: no ordering."""
    dedupe_key: str | None = None
    """Skip this item while a queued or in-flight row has the same key."""


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What `enqueue` stored of one batch."""

    duplicate_batch: bool
    """The batch key was seen within the dedupe window: nothing was written."""
    seqs: tuple[int | None, ...]
    """Per item, its row id, or None when it was skipped because of its `dedupe_key`."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A leased row, as the worker sees it."""

    seq: int
    order_key: str | None
    kind: str
    method: str | None
    path: str | None
    body: bytes | None
    created_at: float
    cycle_started_at: float
    attempts: int
    """Attempts finished before this one."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A request given up on; kept, with why, until replayed or purged."""

    seq: int
    order_key: str | None
    kind: str
    method: str | None
    path: str | None
    attempts: int
    reason: str
    """One of a small fixed set, e.g. `button_rejected`, `unknown_order`, `retries_exhausted`."""
    last_status: int | None
    last_error: str | None
    last_response: str | None
    """The receiver's own error message (Button's `error.message`)."""
    created_at: float
    dead_at: float


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """The delivery state of one order key."""

    order_key: str
    state: RowState
    """in_flight or queued while any request of the key is pending; else dead if one is; else delivered."""
    kind: str
    """Kind of the request the other fields describe: the pending head, else the last dead or finished one."""
    attempts: int
    last_status: int | None
    last_error: str | None
    pending: int
    """Requests of this key not yet delivered or dead."""
    dead: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Counts of the outbox's rows by state, and how far behind delivery is."""

    queued: int
    in_flight: int
    dead: int
    pending_bytes: int
    oldest_age_secs: float
    """Age of the oldest pending request; 0 when nothing is pending."""
    delivered: int
    """Requests acknowledged since the outbox was created (survives restarts)."""
