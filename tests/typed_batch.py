"""mParticle JSON batches expressed as the typed ``button_sidecar.v1.Batch``, for tests of the typed form."""

from __future__ import annotations

import json
from typing import Any

from button_sidecar.v1 import batch_pb2


def _text(value: Any) -> str:
    """Scalars as the text they were written with (numbers arrive as text from `loads_keeping_numbers`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def loads_keeping_numbers(raw: bytes | str) -> Any:
    """JSON with every number kept as its source text, so money never passes through a float."""
    return json.loads(raw, parse_float=str, parse_int=str)


def _strings(target: Any, source: Any) -> None:
    if isinstance(source, dict):
        for key, value in source.items():
            if isinstance(value, str | bool):
                target[key] = _text(value)


def _product(product: dict[str, Any]) -> batch_pb2.Product:
    out = batch_pb2.Product()
    for key in ("id", "name", "brand", "category", "variant", "price", "quantity", "total_product_amount"):
        setattr(out, key, _text(product.get(key)))
    out.coupon_code = _text(product.get("coupon_code"))
    _strings(out.custom_attributes, product.get("custom_attributes"))
    return out


def _event(event: dict[str, Any]) -> batch_pb2.Event:
    data = event.get("data") or {}
    out = batch_pb2.Event()
    event_type = event.get("event_type", "")
    if event_type == "commerce_event":
        commerce = out.commerce_event
        if "timestamp_unixtime_ms" in data:
            commerce.timestamp_unixtime_ms = int(data["timestamp_unixtime_ms"])
        commerce.currency_code = _text(data.get("currency_code"))
        _strings(commerce.custom_attributes, data.get("custom_attributes"))
        action = data.get("product_action")
        if isinstance(action, dict):
            pa = commerce.product_action
            for key in ("action", "transaction_id", "total_amount", "tax_amount", "shipping_amount", "coupon_code"):
                setattr(pa, key, _text(action.get(key)))
            pa.products.extend(_product(p) for p in action.get("products") or [])
    elif event_type == "application_state_transition":
        ast = out.application_state_transition
        if "timestamp_unixtime_ms" in data:
            ast.timestamp_unixtime_ms = int(data["timestamp_unixtime_ms"])
        ast.application_transition_type = _text(data.get("application_transition_type"))
        ast.launch_referral = _text(data.get("launch_referral") or data.get("launch_referrer"))
        ast.is_first_run = data.get("is_first_run") == "true" or data.get("is_first_run") is True
    else:
        out.other.event_type = _text(event_type)
    return out


def batch_from_json(raw: bytes | str) -> batch_pb2.Batch:
    """The typed form of a JSON batch (the subset the mapping reads)."""
    source = loads_keeping_numbers(raw)
    batch = batch_pb2.Batch()
    batch.events.extend(_event(e) for e in source.get("events") or [])
    for key in ("source_request_id", "environment", "mpid", "mp_deviceid"):
        setattr(batch, key, _text(source.get(key)))
    identities = source.get("user_identities") or {}
    batch.user_identities.customer_id = _text(identities.get("customer_id") or identities.get("customerid"))
    batch.user_identities.email = _text(identities.get("email"))
    device = source.get("device_info") or {}
    for key in ("platform", "ios_advertising_id", "android_advertising_id"):
        setattr(batch.device_info, key, _text(device.get(key)))
    for module, attrs in (source.get("integration_attributes") or {}).items():
        if isinstance(attrs, dict):
            _strings(batch.integration_attributes[module].attributes, attrs)
        else:
            batch.integration_attributes[module].value = _text(attrs)
    consent = source.get("consent_state") or {}
    for purpose, state in (consent.get("gdpr") or {}).items():
        batch.consent_state.gdpr[purpose].consented = state.get("consented") is True
    opt_out = (consent.get("ccpa") or {}).get("data_sale_opt_out")
    if opt_out is not None:
        batch.consent_state.ccpa.data_sale_opt_out.consented = opt_out.get("consented") is True
    return batch
