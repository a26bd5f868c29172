"""Fault injection for the sandbox: which /v1 request fails, and how."""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Final


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """A fault profile. The defaults inject nothing.

    Checked in this order for every /v1 request, the first match answers it: outage window, ``fail_next``,
    rate limit, dropped connection, random error. ``latency_ms`` delays every /v1 answer, faulted or not.
    """

    error_rate: float = 0.0
    error_status: int = 503
    latency_ms: float = 0.0
    rate_limit_every: int = 0  # every Nth /v1 request gets 429; 0 = off
    rate_limit_rate: float = 0.0  # probability of a 429
    retry_after_s: int = 1  # the Retry-After header of every injected 429, whichever rule injects it
    outage_s: float = 0.0  # the window starts when the profile is applied
    outage_status: int = 503
    drop_connection_rate: float = 0.0
    fail_next: tuple[int, ...] = ()
    fail_next_message: str = "Injected failure"
    fail_next_order_id: str | None = None  # None: any request consumes fail_next

    def __post_init__(self) -> None:
        for name in ("error_rate", "rate_limit_rate", "drop_connection_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be between 0 and 1")
        for name in ("latency_ms", "outage_s", "rate_limit_every", "retry_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")
        for name, status in (("error_status", self.error_status), ("outage_status", self.outage_status)):
            _check_status(name, status)
        for index, status in enumerate(self.fail_next):
            _check_status(f"fail_next[{index}]", status)

    @classmethod
    def from_json(cls, data: object) -> FaultConfig:
        """Build a profile from a JSON object (the admin endpoint's body); absent keys take their defaults.

        Raises ValueError naming the key on an unknown key or a value of the wrong type.
        """
        if not isinstance(data, dict):
            raise ValueError("body: must be a JSON object")
        unknown = sorted(set(data) - {field.name for field in fields(cls)})
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown fault setting")
        defaults = cls()
        return cls(
            error_rate=_number(data, "error_rate", defaults.error_rate),
            error_status=_integer(data, "error_status", defaults.error_status),
            latency_ms=_number(data, "latency_ms", defaults.latency_ms),
            rate_limit_every=_integer(data, "rate_limit_every", defaults.rate_limit_every),
            rate_limit_rate=_number(data, "rate_limit_rate", defaults.rate_limit_rate),
            retry_after_s=_integer(data, "retry_after_s", defaults.retry_after_s),
            outage_s=_number(data, "outage_s", defaults.outage_s),
            outage_status=_integer(data, "outage_status", defaults.outage_status),
            drop_connection_rate=_number(data, "drop_connection_rate", defaults.drop_connection_rate),
            fail_next=_statuses(data, "fail_next"),
            fail_next_message=_text(data, "fail_next_message") or defaults.fail_next_message,
            fail_next_order_id=_text(data, "fail_next_order_id"),
        )

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """What to answer instead of handling the request. ``status`` None means: drop the connection."""

    kind: str  # outage | fail_next | rate_limit | drop_connection | error_rate
    status: int | None
    message: str
    error_type: str
    retry_after_s: int | None = None


class FaultState:
    """The active profile plus what it has consumed (outage deadline, fail_next queue, request count)."""

    def __init__(self, rng: random.Random, clock: Callable[[], float] = time.monotonic) -> None:
        self._rng = rng
        self._clock = clock
        self._config = FaultConfig()
        self._seen = 0
        self._outage_until = 0.0
        self._fail_next: deque[int] = deque()

    @property
    def config(self) -> FaultConfig:
        return self._config

    def apply(self, config: FaultConfig) -> None:
        """Replace the profile; the outage window, the fail_next queue and the 429 count start afresh."""
        self._config = config
        self._seen = 0
        self._outage_until = self._clock() + config.outage_s if config.outage_s else 0.0
        self._fail_next = deque(config.fail_next)

    def snapshot(self) -> dict[str, object]:
        return {
            **self._config.to_json(),
            "fail_next_remaining": list(self._fail_next),
            "outage_remaining_s": max(0.0, self._outage_until - self._clock()),
        }

    def decide(self, order_id: str | None) -> InjectedFault | None:
        """Pick the fault for one /v1 request about ``order_id`` (None when it names no order), if any."""
        config = self._config
        self._seen += 1
        if self._clock() < self._outage_until:
            return self._injected("outage", config.outage_status, "Service unavailable (sandbox outage)", "outage")
        if self._fail_next and config.fail_next_order_id in (None, order_id):
            status = self._fail_next.popleft()
            return self._injected("fail_next", status, config.fail_next_message, "injected_failure")
        if (config.rate_limit_every and self._seen % config.rate_limit_every == 0) or self._chance(
            config.rate_limit_rate
        ):
            return self._injected("rate_limit", 429, "Too many requests", "rate_limited")
        if self._chance(config.drop_connection_rate):
            return InjectedFault("drop_connection", None, "", "")
        if self._chance(config.error_rate):
            return self._injected("error_rate", config.error_status, "Injected error", "injected_error")
        return None

    def _injected(self, kind: str, status: int, message: str, error_type: str) -> InjectedFault:
        retry_after = self._config.retry_after_s if status == 429 else None
        return InjectedFault(kind, status, message, error_type, retry_after)

    def _chance(self, rate: float) -> bool:
        # Draw only for an active setting: a seeded sequence then depends only on the settings in use.
        return rate > 0.0 and self._rng.random() < rate


_STATUS_RANGE: Final = range(400, 600)


def _check_status(name: str, status: int) -> None:
    if status not in _STATUS_RANGE:
        raise ValueError(f"{name}: must be an HTTP error status (400..599)")


def _number(data: Mapping[str, object], key: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: must be a number")
    return float(value)


def _integer(data: Mapping[str, object], key: str, default: int) -> int:
    value = data.get(key, default)
    if type(value) is not int:
        raise ValueError(f"{key}: must be an integer")
    return value


def _statuses(data: Mapping[str, object], key: str) -> tuple[int, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or any(type(item) is not int for item in value):
        raise ValueError(f"{key}: must be a list of HTTP status integers")
    return tuple(value)


def _text(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key}: must be a string")
    return value
