"""Adaptive request concurrency: back off when the receiver says it is overloaded (AIMD)."""

from __future__ import annotations

import time
from collections.abc import Callable

# Statuses by which a receiver says "too much", as opposed to failing for another reason.
OVERLOAD_STATUSES = frozenset({429, 503})


class AdaptiveConcurrency:
    """A limit on requests in flight between 1 and `maximum`, additive increase and multiplicative decrease.

    It starts at `maximum`, so a restart does not crawl back up (a known complaint about Vector's ARC,
    which starts at 1). Each success adds `1/limit` (about +1 per round of requests); an overload answer
    (429 or 503) multiplies it by `decrease_ratio`, at most once per `cooldown_secs`, so a burst of such
    answers to requests that were already in flight counts once.
    """

    def __init__(
        self,
        maximum: int,
        *,
        decrease_ratio: float = 0.5,
        cooldown_secs: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._maximum = float(maximum)
        self._limit = float(maximum)
        self._decrease_ratio = decrease_ratio
        self._cooldown_secs = cooldown_secs
        self._clock = clock
        self._last_decrease = float("-inf")

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    def on_success(self) -> None:
        self._limit = min(self._maximum, self._limit + 1.0 / self._limit)

    def on_overload(self) -> None:
        now = self._clock()
        if now - self._last_decrease >= self._cooldown_secs:
            self._last_decrease = now
            self._limit = max(1.0, self._limit * self._decrease_ratio)
