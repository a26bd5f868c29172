"""Strict validation of what the sandbox accepts on its Button API routes.

The sandbox is stricter than Button is known to be (button-api.md section 1.3): a sidecar that passes
it sends exactly the documented fields, with the documented types, and never a null. Every error names
the offending field with its JSON path, e.g. ``line_items[1].total: must be an integer``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Final

JsonObject = dict[str, object]

# ISO 4217 List One codes that are in use in 2025 and have a minor unit (funds included, precious
# metals, bond-market units, XDR, XSU, XUA, XTS and XXX left out: an order cannot be priced in them).
# Withdrawn codes (ANG, CUC, HRK, SLL, ZWL, ...) are rejected on purpose: they are the usual stale-table bug.
ACTIVE_CURRENCIES: Final = frozenset(
    """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN
    BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS
    KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
    MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
    SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH
    UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    """.split()
)

ACTIVITY_NAMES: Final = frozenset({"product-viewed", "add-to-cart", "cart-viewed"})

_MAX_ID_LENGTH: Final = 255
_INT64_MAX: Final = 2**63 - 1
_BTN_REF: Final = re.compile(r"[A-Za-z0-9._~-]{1,255}")
_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
_PRINTABLE_ASCII: Final = re.compile(r"[\x20-\x7e]*")


class ValidationError(ValueError):
    """A request body broke a rule; ``str(error)`` is the message the sandbox answers with."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def validate_order(body: object, *, path_order_id: str | None = None) -> JsonObject:
    """Check a create body (``path_order_id`` None) or an update body for that order; return it as a dict.

    An update may leave out ``order_id`` (when present it must equal the path id) and ``btn_ref``.
    """
    order = _root_object(body)
    _check_keys(order, "", _ORDER_KEYS)
    if path_order_id is None or "order_id" in order:
        order_id = _printable_id(_required(order, "order_id", ""), "order_id")
        if path_order_id is not None and order_id != path_order_id:
            raise ValidationError("order_id", "must match the order id in the path")
    _integer(_required(order, "total", ""), "total", minimum=0)
    _currency(_required(order, "currency", ""), "currency")
    _iso_datetime(_required(order, "purchase_date", ""), "purchase_date")
    for key, check in _OPTIONAL_ORDER_FIELDS.items():
        if key in order:
            check(order[key], key)
    return order


def validate_app_events(body: object) -> JsonObject:
    """Check a ``POST /v1/app/events`` body (button-api.md section 3.2)."""
    signal = _root_object(body)
    _check_keys(signal, "", _APP_EVENTS_KEYS)
    _app_common(signal)
    if "current_time" in signal:
        _iso_datetime(signal["current_time"], "current_time")
    events = _list(_required(signal, "events", ""), "events")
    if not events:
        raise ValidationError("events", "must not be empty")
    for index, value in enumerate(events):
        field = f"events[{index}]"
        event = _object(value, field)
        _check_keys(event, field, _EVENT_KEYS)
        _string(_required(event, "name", field), f"{field}.name", min_length=1)
        _iso_datetime(_required(event, "time", field), f"{field}.time")
        _string(_required(event, "uuid", field), f"{field}.uuid", min_length=1)
        for key in ("source", "source_token"):
            if key in event:
                _string(event[key], f"{field}.{key}", min_length=1)
        if "value" in event:
            _object(event["value"], f"{field}.value")
    return signal


def validate_activity(body: object) -> JsonObject:
    """Check a ``POST /v1/app/activity`` body (button-api.md section 3.2)."""
    signal = _root_object(body)
    _check_keys(signal, "", _ACTIVITY_KEYS)
    _app_common(signal)
    if "btn_ref" in signal:
        _btn_ref(signal["btn_ref"], "btn_ref")
    data = _object(_required(signal, "activity_data", ""), "activity_data")
    _check_keys(data, "activity_data", frozenset({"name", "products"}))
    name = _string(_required(data, "name", "activity_data"), "activity_data.name")
    if name not in ACTIVITY_NAMES:
        raise ValidationError("activity_data.name", f"must be one of {', '.join(sorted(ACTIVITY_NAMES))}")
    products = _list(_required(data, "products", "activity_data"), "activity_data.products")
    for index, value in enumerate(products):
        field = f"activity_data.products[{index}]"
        product = _object(value, field)
        _check_keys(product, field, frozenset(_PRODUCT_FIELDS))
        for key, check in _PRODUCT_FIELDS.items():
            if key in product:
                check(product[key], f"{field}.{key}")
    return signal


# -- field checks -------------------------------------------------------------------------------------


def _root_object(body: object) -> JsonObject:
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    # Nulls are checked first and everywhere, so the message names the key rather than a type mismatch.
    _reject_nulls(body, "")
    return body


def _reject_nulls(value: object, field: str) -> None:
    if value is None:
        raise ValidationError(field, "must not be null")
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_nulls(item, _join(field, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_nulls(item, f"{field}[{index}]")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _check_keys(obj: JsonObject, field: str, allowed: frozenset[str]) -> None:
    for key in obj:
        if key not in allowed:
            raise ValidationError(_join(field, key), "unknown field")


def _required(obj: JsonObject, key: str, field: str) -> object:
    if key not in obj:
        raise ValidationError(_join(field, key), "is required")
    return obj[key]


def _object(value: object, field: str) -> JsonObject:
    if not isinstance(value, dict):
        raise ValidationError(field, "must be an object")
    return value


def _list(value: object, field: str) -> list[object]:
    if not isinstance(value, list):
        raise ValidationError(field, "must be a list")
    return value


def _string(value: object, field: str, *, min_length: int = 0, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    if len(value) < min_length:
        raise ValidationError(field, "must not be empty")
    if max_length is not None and len(value) > max_length:
        raise ValidationError(field, f"must be at most {max_length} characters")
    return value


def _any_string(value: object, field: str) -> None:
    _string(value, field)


def _integer(value: object, field: str, *, minimum: int) -> int:
    # bool is an int subclass in Python, but JSON true is not a number.
    if type(value) is not int:
        raise ValidationError(field, "must be an integer")
    if value < minimum:
        raise ValidationError(field, f"must be >= {minimum}")
    if value > _INT64_MAX:
        raise ValidationError(field, "must fit in a signed 64-bit integer")
    return value


def _non_negative(value: object, field: str) -> None:
    _integer(value, field, minimum=0)


def _positive(value: object, field: str) -> None:
    _integer(value, field, minimum=1)


def _boolean(value: object, field: str) -> None:
    if not isinstance(value, bool):
        raise ValidationError(field, "must be a boolean")


def _printable_id(value: object, field: str) -> str:
    text = _string(value, field, min_length=1, max_length=_MAX_ID_LENGTH)
    if not _PRINTABLE_ASCII.fullmatch(text):
        raise ValidationError(field, "must contain only printable ASCII characters")
    return text


def _bounded_string(value: object, field: str) -> None:
    _string(value, field, min_length=1, max_length=_MAX_ID_LENGTH)


def _currency(value: object, field: str) -> None:
    if _string(value, field) not in ACTIVE_CURRENCIES:
        raise ValidationError(field, "must be an active ISO 4217 currency code (3 upper-case letters)")


def _iso_datetime(value: object, field: str) -> None:
    text = _string(value, field, min_length=1)
    try:
        datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise ValidationError(field, "must be an ISO-8601 date-time") from None


def _btn_ref(value: object, field: str) -> None:
    if not _BTN_REF.fullmatch(_string(value, field, min_length=1)):
        raise ValidationError(field, "must be 1..255 characters of [A-Za-z0-9._~-]")


def _string_list(value: object, field: str) -> None:
    for index, item in enumerate(_list(value, field)):
        _string(item, f"{field}[{index}]")


def _string_map(value: object, field: str) -> None:
    for key, item in _object(value, field).items():
        _string(item, f"{field}.{key}")


def _customer(value: object, field: str) -> None:
    customer = _object(value, field)
    _check_keys(customer, field, frozenset({"id", "email_sha256", "device_id", "is_new"}))
    for key in ("id", "device_id"):
        if key in customer:
            _string(customer[key], f"{field}.{key}", min_length=1)
    if "email_sha256" in customer:
        digest = _string(customer["email_sha256"], f"{field}.email_sha256")
        if not _SHA256_HEX.fullmatch(digest):
            raise ValidationError(f"{field}.email_sha256", "must be 64 hexadecimal characters (a SHA-256 digest)")
    if "is_new" in customer:
        _boolean(customer["is_new"], f"{field}.is_new")


def _line_items(value: object, field: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(_list(value, field)):
        item_field = f"{field}[{index}]"
        line = _object(item, item_field)
        _check_keys(line, item_field, _LINE_ITEM_KEYS)
        identifier = _string(_required(line, "identifier", item_field), f"{item_field}.identifier", min_length=1)
        if identifier in seen:
            raise ValidationError(f"{item_field}.identifier", f"duplicate identifier {identifier!r}")
        seen.add(identifier)
        _integer(_required(line, "total", item_field), f"{item_field}.total", minimum=0)
        for key, check in _OPTIONAL_LINE_ITEM_FIELDS.items():
            if key in line:
                check(line[key], f"{item_field}.{key}")


def _app_common(signal: JsonObject) -> None:
    for key in ("application_id", "session_id", "ifa"):
        if key in signal:
            _string(signal[key], key, min_length=1)


_Check = Callable[[object, str], None]

_OPTIONAL_ORDER_FIELDS: Final[dict[str, _Check]] = {
    "btn_ref": _btn_ref,
    "customer": _customer,
    "line_items": _line_items,
    "customer_order_id": _bounded_string,
    "finalization_date": _iso_datetime,
}
_ORDER_KEYS: Final = frozenset({"order_id", "total", "currency", "purchase_date", *_OPTIONAL_ORDER_FIELDS})

_OPTIONAL_LINE_ITEM_FIELDS: Final[dict[str, _Check]] = {
    "quantity": _positive,
    "amount": _non_negative,
    "description": _any_string,
    "sku": _any_string,
    "upc": _any_string,
    "category": _string_list,
    "attributes": _string_map,
}
_LINE_ITEM_KEYS: Final = frozenset({"identifier", "total", *_OPTIONAL_LINE_ITEM_FIELDS})

_APP_COMMON_KEYS: Final = frozenset({"application_id", "session_id", "ifa"})
_APP_EVENTS_KEYS: Final = _APP_COMMON_KEYS | {"current_time", "events"}
_EVENT_KEYS: Final = frozenset({"name", "time", "uuid", "source", "source_token", "value"})
_ACTIVITY_KEYS: Final = _APP_COMMON_KEYS | {"btn_ref", "activity_data"}

_PRODUCT_FIELDS: Final[dict[str, _Check]] = {
    "id": _any_string,
    "upc": _any_string,
    "name": _any_string,
    "url": _any_string,
    "currency": _currency,
    "value": _non_negative,
    "quantity": _positive,
    "categories": _string_list,
    "attributes": _string_map,
}
