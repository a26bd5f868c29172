"""Retry decisions: what an attempt's outcome means, how long to wait, and when to give up.

Nothing here knows Button; `pipeline.button` turns Button's answers into these outcomes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Literal


@dataclass(frozen=True, slots=True)
class Delivered:
    """The receiver has the request; `duplicate` when it already had it (still a success)."""

    status: int | None = None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    """A transient failure: try again later, no earlier than `retry_after_secs` when the receiver said so."""

    error: str
    status: int | None = None
    retry_after_secs: float | None = None
    response: str | None = None
    """The receiver's own error message, if it answered."""


@dataclass(frozen=True, slots=True)
class Reject:
    """A permanent failure: retrying cannot help, so the request becomes a dead letter.

    `reason` is one of a small fixed set (a metric label); `message` is the receiver's own explanation.
    """

    reason: str
    message: str
    status: int | None = None


Outcome = Delivered | Retry | Reject

StatusClass = Literal["delivered", "retry", "reject"]


def classify_status(status: int) -> StatusClass:
    """The meaning of an HTTP status: 2xx delivered; 408, 429 and 5xx retried; every other code rejected.

    The same rule as Vector, Fluent Bit, RudderStack and Segment: only answers that may change with time
    are retried. 3xx counts as rejected because an API that redirects is misconfigured, not busy.
    """
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "reject"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta seconds or an HTTP date); None when absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed delivery is tried again, and when it is given up.

    The wait before the n-th retry is random in `[0, min(max_backoff_secs, initial_backoff_secs * 2**(n-1))]`
    (capped exponential backoff with full jitter, so a fleet of sidecars does not retry in lockstep after an
    outage); a `Retry-After` from the receiver is a floor on it. A request is given up (dead-lettered) only
    once BOTH `max_attempts` attempts were made AND `max_age_secs` passed since it was queued: a short outage
    never costs data, and a long one is bounded in time rather than in attempts alone.
    """

    max_attempts: int = 12
    """Attempts (first try included) before a request may be given up; also needs `max_age_secs`. Default 12."""
    initial_backoff_secs: float = 0.5
    """Upper bound of the first retry's random wait, in seconds; doubles per retry. Default 0.5."""
    max_backoff_secs: float = 60.0
    """Cap of the random wait between attempts, in seconds (`Retry-After` may exceed it). Default 60."""
    max_age_secs: float = 24 * 3600.0
    """Seconds since a request was queued before it may be given up; also needs `max_attempts`. Default 86400."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("retry max_attempts must be at least 1")
        if not (0 < self.initial_backoff_secs <= self.max_backoff_secs):
            raise ValueError("retry backoff needs 0 < initial_backoff_secs <= max_backoff_secs")
        if self.max_age_secs < 0:
            raise ValueError("retry max_age_secs must not be negative")

    def backoff_cap(self, failures: int) -> float:
        """The upper bound of the wait after `failures` failed attempts (1 for the first retry)."""
        # The exponent is clamped so a long outage cannot overflow the float.
        exponent = min(max(failures, 1) - 1, 64)
        return min(self.max_backoff_secs, self.initial_backoff_secs * math.pow(2.0, exponent))

    def backoff(self, failures: int, retry_after_secs: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after `failures` failed attempts: full jitter below the cap, `Retry-After` as a floor."""
        jittered = (rng or random).uniform(0.0, self.backoff_cap(failures))
        return max(jittered, retry_after_secs or 0.0)

    def gives_up(self, attempts: int, age_secs: float) -> bool:
        """True when a request that failed `attempts` times and was queued `age_secs` ago is given up."""
        return attempts >= self.max_attempts and age_secs >= self.max_age_secs
