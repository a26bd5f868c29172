"""Partial refund arithmetic (pure): what is left of an order after a refund."""

from __future__ import annotations

from typing import Any

import pytest
from button_sidecar.pipeline.button import RefundError, apply_refund


def order(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "order_id": "order-1",
        "total": 4997,
        "currency": "USD",
        "purchase_date": "2024-05-01T19:45:44.066Z",
        "btn_ref": "srctok-abc123",
        "customer": {"id": "cust-1"},
        "line_items": [
            {"identifier": "sku-1", "quantity": 1, "total": 3999, "amount": 3999},
            {"identifier": "sku-2", "quantity": 2, "total": 998, "amount": 499},
        ],
    }
    return {**base, **changes}


def test_refunded_lines_come_off_and_the_refund_total_is_subtracted() -> None:
    reduced = apply_refund(
        order(), {"currency": "USD", "total": 998, "line_items": [{"identifier": "sku-2", "quantity": 2}]}
    )
    assert reduced == {
        "order_id": "order-1",
        "total": 3999,
        "currency": "USD",
        "purchase_date": "2024-05-01T19:45:44.066Z",
        "customer": {"id": "cust-1"},
        "line_items": [{"identifier": "sku-1", "quantity": 1, "total": 3999, "amount": 3999}],
    }  # no btn_ref: Button keeps it when an update leaves it out


def test_part_of_a_line_shrinks_it_in_proportion() -> None:
    reduced: dict[str, Any] | None = apply_refund(order(), {"line_items": [{"identifier": "sku-2", "quantity": 1}]})
    assert reduced is not None
    assert reduced["line_items"][1] == {"identifier": "sku-2", "quantity": 1, "total": 499, "amount": 499}
    assert reduced["total"] == 4997 - 499  # no refund total given: what came off the lines


def test_uneven_unit_prices_never_lose_a_cent_over_successive_refunds() -> None:
    current: dict[str, Any] | None = order(total=1000, line_items=[{"identifier": "x", "quantity": 3, "total": 1000}])
    removed = []
    for _ in range(3):
        assert current is not None
        before = current["total"]
        current = apply_refund(current, {"line_items": [{"identifier": "x", "quantity": 1}]})
        removed.append(before - (current["total"] if current else 0))
    assert current is None  # every unit refunded: nothing left
    assert removed == [334, 333, 333] and sum(removed) == 1000


def test_an_amount_only_refund_keeps_the_lines() -> None:
    reduced: dict[str, Any] | None = apply_refund(order(), {"total": 1000})
    assert reduced is not None and reduced["total"] == 3997 and len(reduced["line_items"]) == 2


@pytest.mark.parametrize(
    "refund",
    [
        {"total": 4997},
        {"total": 99999},  # more than the order: floored at 0, which leaves nothing
        {"line_items": [{"identifier": "sku-1", "quantity": 1}, {"identifier": "sku-2", "quantity": 5}]},
    ],
)
def test_nothing_left_means_cancel(refund: dict[str, Any]) -> None:
    assert apply_refund(order(), refund) is None


def test_an_identifier_the_order_lacks_changes_no_line() -> None:
    reduced = apply_refund(order(), {"total": 100, "line_items": [{"identifier": "nope", "quantity": 1}]})
    assert reduced is not None and reduced["line_items"] == order()["line_items"] and reduced["total"] == 4897


def test_an_order_without_lines_is_reduced_by_the_total() -> None:
    reduced = apply_refund(order(line_items=None, customer=None), {"total": 997})
    assert reduced == {
        "order_id": "order-1",
        "total": 4000,
        "currency": "USD",
        "purchase_date": "2024-05-01T19:45:44.066Z",
    }


@pytest.mark.parametrize(
    ("refund", "message"),
    [
        ({"currency": "EUR", "total": 1}, "currency"),
        ({"total": "12"}, "refund total"),
        ({"line_items": {"identifier": "sku-1"}}, "line_items"),
        ({"line_items": [{"identifier": "sku-1", "quantity": 0}]}, "refunded quantity"),
    ],
)
def test_a_refund_that_cannot_apply_is_an_error(refund: dict[str, Any], message: str) -> None:
    with pytest.raises(RefundError, match=message):
        apply_refund(order(), refund)
