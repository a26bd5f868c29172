"""A deterministic corpus of realistic mParticle batches, generated once and reused from var/bench/.

Batches hold 1 to 100 events, the way the mParticle SDKs upload them: purchases with 1-20 products,
refunds, deep-link opens, screen views, custom events, adds to cart; identities and device info as
the iOS, Android and web SDKs send them.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parents[1] / "var" / "bench"
CURRENCIES = ["USD", "USD", "USD", "EUR", "GBP", "JPY", "CAD", "KWD"]
CATEGORIES = ["Shoes", "Apparel", "Home", "Garden", "Toys", "Books", "Beauty", "Electronics"]
BASE_TIME_MS = 1_732_700_000_000


def _money(rng: random.Random, low: float, high: float) -> str | float:
    value = f"{rng.uniform(low, high):.2f}"
    # The SDKs send numbers; server integrations often send strings. Both, as in real traffic.
    return value if rng.random() < 0.5 else float(value)


def _product(rng: random.Random, i: int) -> dict[str, Any]:
    product: dict[str, Any] = {
        "id": f"sku-{rng.randrange(100_000)}",
        "name": f"Product {i} {rng.choice(['Trail', 'Classic', 'Pro', 'Mini'])}",
        "category": rng.choice(CATEGORIES),
        "price": _money(rng, 1, 300),
        "quantity": rng.choice([1, 1, 1, 2, 3, "2"]),
    }
    if rng.random() < 0.4:
        product["brand"] = rng.choice(["Acme", "Globex", "Initech"])
    if rng.random() < 0.3:
        product["variant"] = rng.choice(["S", "M", "L", "10.5", "blue"])
    if rng.random() < 0.3:
        product["custom_attributes"] = {"color": rng.choice(["red", "blue"]), "size": str(rng.randrange(4, 14))}
    return product


def _common(rng: random.Random, t: int) -> dict[str, Any]:
    return {
        "timestamp_unixtime_ms": t,
        "source_message_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "session_uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    }


def _purchase(rng: random.Random, data: dict[str, Any], order_seq: list[int], currency: str) -> dict[str, Any]:
    order_seq[0] += 1
    products = [_product(rng, i) for i in range(rng.randint(1, 20))]
    action: dict[str, Any] = {"action": "purchase", "transaction_id": f"order-{order_seq[0]}", "products": products}
    if rng.random() < 0.7:
        action["total_amount"] = _money(rng, 10, 2000)
        action["tax_amount"] = _money(rng, 0, 5)
        action["shipping_amount"] = _money(rng, 0, 5)
    data.update(currency_code=currency, product_action=action)
    return {"event_type": "commerce_event", "data": data}


def _event(rng: random.Random, t: int, order_seq: list[int], currency: str) -> dict[str, Any]:
    roll = rng.random()
    data = _common(rng, t)
    if roll < 0.25:
        return _purchase(rng, data, order_seq, currency)
    if roll < 0.32:
        action: dict[str, Any] = {"action": "refund", "transaction_id": f"order-{max(1, order_seq[0])}"}
        if rng.random() < 0.5:
            action["products"] = [_product(rng, 0)]
        data.update(currency_code=currency, product_action=action)
        return {"event_type": "commerce_event", "data": data}
    if roll < 0.42:
        token = f"srctok-{rng.getrandbits(64):016x}"
        data.update(
            application_transition_type=rng.choice(["application_initialized", "application_foreground"]),
            launch_referral=f"shopapp://deals/{rng.randrange(999)}?btn_ref={token}&utm_source=button",
        )
        return {"event_type": "application_state_transition", "data": data}
    if roll < 0.55:
        data.update(currency_code=currency, product_action={"action": "add_to_cart", "products": [_product(rng, 0)]})
        return {"event_type": "commerce_event", "data": data}
    if roll < 0.8:
        data.update(screen_name=rng.choice(["home", "search", "product", "cart", "checkout"]))
        return {"event_type": "screen_view", "data": data}
    data.update(event_name=rng.choice(["search", "share", "favorite"]), custom_event_type="other")
    data["custom_attributes"] = {"query": "shoes", "results": str(rng.randrange(100))}
    return {"event_type": "custom_event", "data": data}


def batch(rng: random.Random, events: int, order_seq: list[int], *, purchases_only: bool = False) -> dict[str, Any]:
    platform = rng.choice(["iOS", "Android", "web"])
    currency = rng.choice(CURRENCIES)
    device: dict[str, Any] = {"platform": platform, "os_version": "17.4", "device_model": "x", "locale_country": "US"}
    if platform == "iOS":
        device["ios_advertising_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    elif platform == "Android":
        device["android_advertising_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    identities: dict[str, Any] = {"email": f"User.{rng.randrange(10**6)}@Example.com"}
    identities["customer_id" if platform != "Android" else "customerid"] = f"c-{rng.randrange(10**7)}"
    start = BASE_TIME_MS + rng.randrange(10**9)
    out: dict[str, Any] = {
        "source_request_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "environment": "production",
        "mpid": rng.randrange(-(2**63), 2**63),
        "mp_deviceid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "user_identities": identities,
        "device_info": device,
        "application_info": {"application_name": "Shop", "application_version": "5.2.1", "package": "com.shop"},
        "user_attributes": {"$country": "US", "tier": rng.choice(["gold", "silver"])},
        "events": [
            _purchase(rng, _common(rng, start + i * 1000), order_seq, currency)
            if purchases_only
            else _event(rng, start + i * 1000, order_seq, currency)
            for i in range(events)
        ],
    }
    if rng.random() < 0.5:
        out["integration_attributes"] = {"1022": {"com.usebutton.source_token": f"srctok-{rng.getrandbits(64):016x}"}}
    return out


def generate(count: int, seed: int = 7) -> list[bytes]:
    """`count` batches; sizes spread from 1 to 100 events, most of them small, as SDK uploads are."""
    rng = random.Random(seed)
    order_seq = [0]
    sizes = [min(100, max(1, int(rng.expovariate(1 / 12)))) for _ in range(count)]
    return [json.dumps(batch(rng, n, order_seq), separators=(",", ":")).encode() for n in sizes]


def load(count: int, seed: int = 7) -> list[bytes]:
    """The corpus from var/bench/, written on first use."""
    path = BENCH_DIR / f"corpus-{seed}-{count}.jsonl"
    if not path.exists():
        _write(path, generate(count, seed))
    return path.read_bytes().splitlines()


def purchases(count: int, seed: int = 11) -> list[bytes]:
    """`count` batches of one purchase each (orders `order-1` .. `order-COUNT`), cached like `load`."""
    path = BENCH_DIR / f"purchases-{seed}-{count}.jsonl"
    if not path.exists():
        rng = random.Random(seed)
        order_seq = [0]
        raws = [batch(rng, 1, order_seq, purchases_only=True) for _ in range(count)]
        _write(path, [json.dumps(raw, separators=(",", ":")).encode() for raw in raws])
    return path.read_bytes().splitlines()


def unique(raw: bytes, round_: int) -> bytes:
    """`raw` with its `source_request_id` and order ids made unique to `round_` (0 leaves it as it is).

    Replaying a corpus as it is would be deduplicated by the sidecar (a repeated `source_request_id` is
    skipped, and so is the create of an order already queued): each round of a long run is new input.
    """
    if round_ == 0:
        return raw
    prefix = b"r%d-" % round_
    return raw.replace(b'"source_request_id":"', b'"source_request_id":"' + prefix).replace(
        b'"transaction_id":"order-', b'"transaction_id":"' + prefix + b"order-"
    )


def _write(path: Path, raws: list[bytes]) -> None:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"\n".join(raws) + b"\n")
    tmp.replace(path)
