"""Partial refunds: the order Button holds, minus what was refunded.

Button has no partial-refund call: a partial return is a full-state update of the order with the reduced
total and line items, and an order with nothing left is cancelled (button-api.md section 1.2).
"""

from __future__ import annotations

from collections.abc import Mapping

from button_sidecar.pipeline.ledger import JsonObject

# The fields a full-state update carries; Button's read-only fields (status, button_order_id,
# finalization_date...) are left out, and so is btn_ref, which Button keeps when an update omits it.
ORDER_FIELDS = ("order_id", "total", "currency", "purchase_date", "customer", "customer_order_id", "line_items")


class RefundError(ValueError):
    """The refund cannot be applied to the order (its message says why)."""


def order_fields(order: Mapping[str, object]) -> JsonObject:
    """The updatable fields of an order body or of Button's order object; absent and null values dropped."""
    return {key: order[key] for key in ORDER_FIELDS if order.get(key) is not None}


def apply_refund(order: Mapping[str, object], refund: Mapping[str, object]) -> JsonObject | None:
    """The order after `refund`, or None when nothing is left (then the order is cancelled).

    Rules:
    - Refunded line items are matched by `identifier`; `quantity` units (default 1, at most what is left)
      come off the line. The line total shrinks in proportion, in integers: `total * remaining // quantity`,
      so refunding every unit removes exactly the line's total and no rounding error accumulates. A line
      with no unit left is removed. A refunded identifier the order does not have changes no line.
    - The order total drops by the refund's `total` when given, else by what came off the lines; never
      below 0.
    - Nothing is left when the total reaches 0, or when the order had line items and none remain.
    """
    fields = order_fields(order)
    currency = refund.get("currency")
    if currency is not None and currency != fields.get("currency"):
        raise RefundError(f"refund currency {currency} differs from the order currency {fields.get('currency')}")
    total = _integer(fields.get("total"), "order total")
    had_lines = "line_items" in fields
    lines = [dict(_mapping(line, "order line item")) for line in _sequence(fields.get("line_items", []), "line_items")]
    removed = 0
    for refunded in _sequence(refund.get("line_items", []), "refund line_items"):
        refunded = _mapping(refunded, "refund line item")
        position = next(
            (i for i, line in enumerate(lines) if line.get("identifier") == refunded.get("identifier")), None
        )
        if position is None:
            continue
        line = lines[position]
        quantity = _integer(line.get("quantity", 1), "line item quantity", minimum=1)
        line_total = _integer(line.get("total"), "line item total")
        remaining = quantity - min(_integer(refunded.get("quantity", 1), "refunded quantity", minimum=1), quantity)
        remaining_total = line_total * remaining // quantity
        removed += line_total - remaining_total
        if remaining == 0:
            del lines[position]
        else:
            line["quantity"], line["total"] = remaining, remaining_total
    reduction = _integer(refund["total"], "refund total") if "total" in refund else removed
    new_total = max(0, total - reduction)
    if new_total == 0 or (had_lines and not lines):
        return None
    fields["total"] = new_total
    if had_lines:
        fields["line_items"] = lines
    return fields


def _integer(value: object, what: str, minimum: int = 0) -> int:
    # bool is an int in Python, but not an amount.
    if type(value) is not int or value < minimum:
        raise RefundError(f"{what} must be an integer of at least {minimum}")
    return value


def _mapping(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise RefundError(f"{what} must be an object")
    return value


def _sequence(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise RefundError(f"{what} must be a list")
    return value
