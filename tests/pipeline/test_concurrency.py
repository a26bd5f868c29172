"""AdaptiveConcurrency: additive increase on success, multiplicative decrease on 429/503."""

from __future__ import annotations

from button_sidecar.pipeline.concurrency import AdaptiveConcurrency


def test_starts_at_the_maximum_halves_on_overload_and_climbs_back() -> None:
    now = [0.0]
    limit = AdaptiveConcurrency(16, cooldown_secs=1.0, clock=lambda: now[0])
    assert limit.limit == 16
    limit.on_overload()
    assert limit.limit == 8
    limit.on_overload()  # same burst (within the cooldown): counted once
    assert limit.limit == 8
    now[0] += 1.0
    limit.on_overload()
    assert limit.limit == 4
    for _ in range(5):  # about one round of successes adds one
        limit.on_success()
    assert limit.limit == 5
    for _ in range(1000):
        limit.on_success()
    assert limit.limit == 16  # never above the maximum


def test_never_below_one() -> None:
    now = [0.0]
    limit = AdaptiveConcurrency(2, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 5.0
        limit.on_overload()
    assert limit.limit == 1
