"""What the sandbox tests share: a valid Button order body."""

from __future__ import annotations


def new_order(order_id: str = "order-1", **changes: object) -> dict[str, object]:
    order: dict[str, object] = {
        "order_id": order_id,
        "total": 4000,
        "currency": "USD",
        "purchase_date": "2017-07-25T08:23:52Z",
        "btn_ref": "srctok-0123456789abcdef",
        "customer": {"id": "cust-1", "email_sha256": "a" * 64, "device_id": "idfa-1", "is_new": True},
        "line_items": [
            {
                "identifier": "sku-1",
                "total": 4000,
                "quantity": 2,
                "amount": 2000,
                "description": "shoes",
                "sku": "sku-1",
                "upc": "400000000001",
                "category": ["apparel", "shoes"],
                "attributes": {"coupon_code": "SAVE10"},
            }
        ],
    }
    order.update(changes)
    return order
