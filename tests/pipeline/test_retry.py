"""RetryPolicy (backoff, jitter, Retry-After, give-up rule) and the classification of answers."""

from __future__ import annotations

import random
from email.utils import formatdate

import orjson
import pytest
from button_sidecar.pipeline.button import ButtonResponse, classify
from button_sidecar.pipeline.retry import Delivered, Reject, Retry, RetryPolicy, classify_status, parse_retry_after
from hypothesis import given
from hypothesis import strategies as st


def test_backoff_cap_doubles_from_the_initial_value_up_to_the_maximum() -> None:
    policy = RetryPolicy(initial_backoff_secs=0.5, max_backoff_secs=60.0)
    assert [policy.backoff_cap(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.backoff_cap(10_000) == 60.0  # no overflow after a very long outage


@given(failures=st.integers(min_value=1, max_value=200), seed=st.integers())
def test_backoff_is_full_jitter_within_zero_and_the_cap(failures: int, seed: int) -> None:
    policy = RetryPolicy(initial_backoff_secs=0.5, max_backoff_secs=60.0)
    delay = policy.backoff(failures, rng=random.Random(seed))
    assert 0.0 <= delay <= policy.backoff_cap(failures)


def test_jitter_spreads_over_the_whole_range() -> None:
    policy = RetryPolicy(initial_backoff_secs=1.0, max_backoff_secs=8.0)
    rng = random.Random(7)
    delays = [policy.backoff(4, rng=rng) for _ in range(2000)]
    assert min(delays) < 0.5 and max(delays) > 7.5  # full jitter: [0, 8], not [4, 8] or a fixed 8


@given(failures=st.integers(min_value=1, max_value=30), retry_after=st.floats(min_value=0, max_value=3600))
def test_retry_after_is_a_floor(failures: int, retry_after: float) -> None:
    policy = RetryPolicy(initial_backoff_secs=0.5, max_backoff_secs=60.0)
    delay = policy.backoff(failures, retry_after, rng=random.Random(1))
    assert delay >= retry_after
    assert delay <= max(retry_after, policy.backoff_cap(failures))


def test_giving_up_needs_both_the_attempt_count_and_the_age() -> None:
    policy = RetryPolicy(max_attempts=5, max_age_secs=3600.0)
    assert not policy.gives_up(attempts=100, age_secs=10.0)  # many attempts, but young
    assert not policy.gives_up(attempts=2, age_secs=86_400.0)  # old, but few attempts
    assert not policy.gives_up(attempts=4, age_secs=3600.0)
    assert policy.gives_up(attempts=5, age_secs=3600.0)


@pytest.mark.parametrize(
    "changes",
    [{"max_attempts": 0}, {"initial_backoff_secs": 0}, {"initial_backoff_secs": 2, "max_backoff_secs": 1}],
)
def test_invalid_policies_are_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**changes)  # type: ignore[arg-type]


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("2", now) == 2.0
    assert parse_retry_after(" 120 ", now) == 120.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0.0  # a date in the past: no wait
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None


@pytest.mark.parametrize(
    ("status", "meaning"),
    [
        (200, "delivered"),
        (201, "delivered"),
        (202, "delivered"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
        (504, "retry"),
        (301, "reject"),
        (400, "reject"),
        (401, "reject"),
        (403, "reject"),
        (404, "reject"),
        (409, "reject"),
        (422, "reject"),
    ],
)
def test_status_classification(status: int, meaning: str) -> None:
    assert classify_status(status) == meaning


def _answer(status: int, message: str | None = None, retry_after: str | None = None) -> ButtonResponse:
    body = b"" if message is None else orjson.dumps({"meta": {"status": "error"}, "error": {"message": message}})
    return ButtonResponse(status, body, retry_after)


def test_button_answers_become_outcomes() -> None:
    assert classify("create_order", _answer(200)) == Delivered(200)
    # Button already has the order (our earlier attempt whose answer was lost): delivered, as a duplicate.
    assert classify("create_order", _answer(409, "Order already exists")) == Delivered(409, duplicate=True)
    assert classify("update_order", _answer(409, "Order has been deleted")) == Reject(
        "button_rejected", "Order has been deleted", 409
    )
    assert classify("create_order", _answer(400, "total: must be an integer")) == Reject(
        "button_rejected", "total: must be an integer", 400
    )
    assert classify("cancel_order", _answer(404, "Order not found")) == Reject("unknown_order", "Order not found", 404)
    assert classify("create_order", _answer(429, "Too many requests", "2")) == Retry(
        "HTTP 429", 429, 2.0, "Too many requests"
    )
    assert classify("create_order", _answer(503)) == Retry("HTTP 503", 503, None, "HTTP 503")


def test_an_unreadable_error_body_falls_back_to_the_status() -> None:
    outcome = classify("create_order", ButtonResponse(400, b"<html>Bad Request</html>", None))
    assert outcome == Reject("button_rejected", "HTTP 400", 400)
