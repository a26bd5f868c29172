"""A pure-Python reference of the mParticle -> Button mapping (SPEC.md sections 2, 3 and 6).

Written the way a Python team would write it without the Rust core: standard library only, plain
and readable. It is the correctness oracle of ``tests/native/test_reference.py`` and the baseline the
benchmarks compare the Rust core against, so it gives the same results as ``button_sidecar.Transformer``
(requests, rejection codes and fields, attributions, skips, user keys); only rejection messages differ.

Known limits of the agreement, both far from real traffic: emails are lower-cased by Python's Unicode
tables (14.0 in Python 3.11) and the core by its Rust toolchain's (newer), so an email holding one of
the few characters whose case changed since (e.g. U+A7CB, U+1C89) hashes differently; and a batch
nested deeper than Python's recursion limit (about 1000 levels) is `invalid_json` here even where the
core only checks that part for syntax.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, ROUND_HALF_EVEN, Context, Decimal
from typing import TypeAlias
from urllib.parse import quote, unquote_to_bytes

__all__ = [
    "BATCH_FIELDS",
    "MAX_JSON_DEPTH",
    "InvalidJson",
    "JsonNumber",
    "JsonValue",
    "RefAttribution",
    "RefConfig",
    "RefRejection",
    "RefRequest",
    "RefResult",
    "RefSkip",
    "ReferenceTransformer",
    "check_decoded",
    "decode_batch",
    "hash_email",
    "to_minor_units",
]

# --- Results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefRequest:
    kind: str
    method: str | None
    path: str | None
    body: bytes | None
    order_id: str
    event_index: int


@dataclass(frozen=True)
class RefRejection:
    event_index: int
    code: str
    field: str
    message: str


@dataclass(frozen=True)
class RefAttribution:
    user_keys: list[str]
    btn_ref: str
    timestamp_ms: int


@dataclass(frozen=True)
class RefSkip:
    event_index: int
    reason: str


@dataclass
class RefResult:
    requests: list[RefRequest] = field(default_factory=list)
    rejections: list[RefRejection] = field(default_factory=list)
    attributions: list[RefAttribution] = field(default_factory=list)
    skipped: list[RefSkip] = field(default_factory=list)
    user_keys: list[str] = field(default_factory=list)
    source_request_id: str | None = None
    environment: str | None = None
    filtered: str | None = None


@dataclass(frozen=True)
class RefConfig:
    default_currency: str = "USD"
    include_tax_and_shipping: bool = False
    send_email: bool = True
    require_btn_ref: bool = False
    forward_activity: bool = False
    forward_app_events: bool = False
    application_ids: dict[str, str] | None = None
    gdpr_purpose: str | None = None


class FieldError(Exception):
    """Why an event (or the batch) cannot be mapped; `field` is the JSON path of the culprit."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.code = code
        self.field = field
        self.message = message

    def at_event(self, event_index: int) -> RefRejection:
        return RefRejection(event_index, self.code, self.field, f"{self.field}: {self.message}")


# --- JSON --------------------------------------------------------------------------------------
#
# The Rust core decodes only the parts of a batch that the mapping reads (see `BATCH_FIELDS`); the
# rest is only checked for JSON syntax. That decides what makes a batch `invalid_json` beyond syntax:
# a string with a lone surrogate escape (`"\ud800"`, which has no UTF-8 form) and nesting of 128
# arrays and objects (serde_json's limit) count only where the core decodes. A field read as a
# scalar is decoded from its own text, so an array or object there is counted from 1 again.


@dataclass(frozen=True)
class JsonNumber:
    """A JSON number kept as its text, so money never becomes a float and ids keep their spelling."""

    text: str


JsonValue: TypeAlias = bool | str | JsonNumber | list["JsonValue"] | dict[str, "JsonValue"] | None
JsonObject: TypeAlias = dict[str, JsonValue]

# serde_json (used by the Rust core) refuses nesting at this depth of arrays and objects.
MAX_JSON_DEPTH = 128
_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidJson(ValueError):
    pass


class _Pairs(dict[str, JsonValue]):
    """An object that also keeps what a dict forgets: every pair, also of repeated keys, in order."""

    def __init__(self, pairs: list[tuple[str, JsonValue]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs


def _object(pairs: list[tuple[str, JsonValue]]) -> JsonObject:
    obj = dict(pairs)  # a repeated key: the last one wins, as in the Rust core
    if len(obj) < len(pairs):
        return _Pairs(pairs)
    return obj


def _reject_constant(name: str) -> JsonValue:
    raise InvalidJson(f"{name} is not JSON")


def parse_json(text: str) -> JsonValue:
    """Strict JSON (RFC 8259) with every number kept as its text; raises InvalidJson."""
    try:
        value: JsonValue = json.loads(
            text,
            parse_int=JsonNumber,
            parse_float=JsonNumber,
            parse_constant=_reject_constant,
            object_pairs_hook=_object,
        )
    except RecursionError as err:  # nesting deeper than Python's recursion limit
        raise InvalidJson("nested too deeply") from err
    except ValueError as err:
        raise InvalidJson(str(err)) from err
    return value


# What the core decodes of a batch: for an object, the shape of each field it reads (other fields are
# only checked for syntax); for an array, the shape of its items. ANY decodes everything below, SCALAR
# a value read as text, SCALARS an object of those. A value of another type than its shape expects
# (an array for `data`, an object for `events`) is decoded whole.
ANY, SCALAR, SCALARS = "any", "scalar", "scalars"
Shape: TypeAlias = str | dict[str, "Shape"] | list["Shape"]
_PRODUCT: Shape = {
    **dict.fromkeys(
        ["id", "name", "brand", "category", "variant", "price", "quantity", "total_product_amount", "coupon_code"],
        SCALAR,
    ),
    "custom_attributes": SCALARS,
}
_DATA: Shape = {
    **dict.fromkeys(
        ["timestamp_unixtime_ms", "currency_code", "launch_referral", "launch_referrer", "source_message_id"], SCALAR
    ),
    "custom_attributes": SCALARS,
    "product_action": {
        **dict.fromkeys(["action", "transaction_id", "total_amount", "tax_amount", "shipping_amount"], SCALAR),
        "products": [_PRODUCT],
    },
}
BATCH_FIELDS: Shape = {
    "events": [{"event_type": SCALAR, "data": _DATA}],
    "user_identities": dict.fromkeys(["customer_id", "customerid", "email"], SCALAR),
    "device_info": dict.fromkeys(["platform", "ios_advertising_id", "android_advertising_id"], SCALAR),
    "integration_attributes": {"1022": SCALARS},
    "consent_state": ANY,
    **dict.fromkeys(["mpid", "mp_deviceid", "source_request_id", "environment", "timestamp_unixtime_ms"], SCALAR),
}


def check_decoded(value: JsonValue, shape: Shape, depth: int = 1) -> None:
    """Raises InvalidJson where the core fails to decode `value` at a place of this shape."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise InvalidJson("a lone surrogate in a string escape")
        return
    if not isinstance(value, list | dict):
        return
    if shape == SCALAR:  # decoded from its own text
        shape, depth = ANY, 1
    if depth >= MAX_JSON_DEPTH:
        raise InvalidJson("nested too deeply")
    if isinstance(value, list):
        item = shape[0] if isinstance(shape, list) else ANY
        for element in value:
            check_decoded(element, item, depth + 1)
        return
    pairs = value.pairs if isinstance(value, _Pairs) else list(value.items())
    for key, child in pairs:
        if _SURROGATE.search(key):
            raise InvalidJson("a lone surrogate in a key")
        if isinstance(shape, dict):
            child_shape: Shape | None = shape.get(key)
        else:
            child_shape = SCALAR if shape == SCALARS else ANY
        if child_shape is not None:
            check_decoded(child, child_shape, depth + 1)


def decode_batch(raw: bytes | bytearray | str) -> JsonValue:
    """The JSON value of a raw batch as the core decodes it; raises InvalidJson where the core fails."""
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError as err:
            raise InvalidJson("the text is not valid Unicode") from err
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidJson("not UTF-8") from err
    value = parse_json(text)
    if _may_fail_decoding(text):
        check_decoded(value, BATCH_FIELDS)
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _may_fail_decoding(text: str) -> bool:
    """Whether `check_decoded` can find anything: most batches have no surrogate escape, nor enough
    brackets to nest 128 deep (brackets in strings count too: this only errs on the safe side)."""
    return _SURROGATE_ESCAPE.search(text) is not None or text.count("[") + text.count("{") >= MAX_JSON_DEPTH


def as_object(value: JsonValue) -> JsonObject | None:
    return value if isinstance(value, dict) else None


def as_str(value: JsonValue) -> str | None:
    return value if isinstance(value, str) else None


def scalar_text(value: JsonValue) -> str | None:
    """A non-empty string, or a number as written; anything else is absent."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, JsonNumber):
        return value.text
    return None


def attribute_text(value: JsonValue) -> str | None:
    """An attribute value as Button wants it: strings, numbers as written, booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, JsonNumber):
        return value.text
    return None


def text_field(obj: JsonObject, key: str) -> str | None:
    return scalar_text(obj.get(key))


def object_field(obj: JsonObject, key: str, at: str) -> JsonObject:
    """The object under `key`: absent or null is empty, anything else but an object is an error."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FieldError("invalid_event", f"{at}.{key}", "must be an object")
    return value


# --- Money -------------------------------------------------------------------------------------

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
# Exact decimal arithmetic: nothing is ever rounded except where we ask for it.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, rounding=ROUND_HALF_EVEN)
_DECIMAL = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?)([0-9]+))?")
# Exponents beyond this already overflow (or round to zero) any 64-bit amount.
_EXPONENT_CLAMP = 1_000_000


class AmountError(ValueError):
    pass


class AmountSyntaxError(AmountError):
    def __init__(self) -> None:
        super().__init__("must be a decimal number")


class AmountOverflowError(AmountError):
    def __init__(self) -> None:
        super().__init__("does not fit in 64-bit minor units")


def parse_decimal(text: str) -> Decimal:
    """`[+-]? (digits [. digits*] | . digits) ([eE] [+-]? digits)?` with white space around, exactly."""
    match = _DECIMAL.fullmatch(text.strip())
    if match is None:
        raise AmountSyntaxError()
    sign, whole, fraction, exponent_sign, exponent_digits = match.groups(default="")
    if not whole and not fraction:
        raise AmountSyntaxError()
    exponent = 0
    if exponent_digits:
        significant = exponent_digits.lstrip("0")
        exponent = _EXPONENT_CLAMP if len(significant) > 7 else min(int(significant or "0"), _EXPONENT_CLAMP)
        if exponent_sign == "-":
            exponent = -exponent
    digits = tuple(int(d) for d in whole + fraction)
    return Decimal((1 if sign == "-" else 0, digits, exponent - len(fraction)))


def json_decimal(value: JsonValue) -> Decimal:
    """A decimal from a JSON number (its text) or a numeric string."""
    if isinstance(value, str):
        return parse_decimal(value)
    if isinstance(value, JsonNumber):
        return parse_decimal(value.text)
    raise AmountSyntaxError()


def scaled_int(amount: Decimal, exponent: int) -> int:
    """`amount * 10**exponent` rounded half-to-even; AmountOverflowError outside the signed 64-bit range."""
    if amount.is_zero():
        return 0
    if amount.adjusted() + exponent >= 19:  # at least 10**19, far beyond 2**63
        raise AmountOverflowError()
    minor = int(amount.scaleb(exponent, _EXACT).to_integral_value(ROUND_HALF_EVEN, _EXACT))
    if not I64_MIN <= minor <= I64_MAX:
        raise AmountOverflowError()
    return minor


def whole_number(amount: Decimal) -> int | None:
    """The amount as a 64-bit integer when it is a whole number (`2`, `2.0`, `20e-1`)."""
    if amount != amount.to_integral_value(context=_EXACT):
        return None
    try:
        return scaled_int(amount, 0)
    except AmountOverflowError:
        return None


def json_integer(value: JsonValue) -> int | None:
    try:
        return whole_number(json_decimal(value))
    except AmountError:
        return None


def to_minor_units(amount: str, currency: str) -> int:
    """Decimal text in the minor units of an ISO 4217 currency (like `button_sidecar.to_minor_units`)."""
    exponent = currency_exponent(ascii_upper(currency.strip()))
    if exponent is None:
        raise ValueError("currency: must be an active ISO 4217 currency code")
    return scaled_int(parse_decimal(amount), exponent)


# Active ISO 4217 currencies by minor-unit exponent (funds, metals and withdrawn codes left out).
_CURRENCIES: dict[int, frozenset[str]] = {
    0: frozenset(
        "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(),
    ),
    2: frozenset(
        """
        AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF
        CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ
        GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD
        MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON
        RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS
        UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG
        """.split()
    ),
    3: frozenset("BHD IQD JOD KWD LYD OMR TND".split()),
    4: frozenset("CLF UYW".split()),
}


def currency_exponent(code: str) -> int | None:
    for exponent, codes in _CURRENCIES.items():
        if code in codes:
            return exponent
    return None


def ascii_upper(text: str) -> str:
    """Upper-cases ASCII letters only (`str.upper` would also turn the long s, U+017F, into `S`)."""
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in text)


def ascii_lower(text: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


# --- Identifiers -------------------------------------------------------------------------------

_BTN_REF = re.compile(r"[A-Za-z0-9._~-]{1,255}")
_ORDER_ID = re.compile(r"[\x20-\x7e]{1,255}")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_APPLICATION_ID = re.compile(r"app-[A-Za-z0-9]+")


def is_valid_btn_ref(token: str) -> bool:
    return _BTN_REF.fullmatch(token) is not None


def order_path(order_id: str) -> str:
    return "/v1/order/" + quote(order_id, safe="")


def btn_ref_from_url(url: str) -> str | None:
    """The first valid `btn_ref` query parameter of a deep link, percent-decoded."""
    if "?" not in url:
        return None
    query = url.split("?", 1)[1].split("#", 1)[0]
    for pair in query.split("&"):
        key, has_value, value = pair.partition("=")
        if key != "btn_ref" or not has_value:
            continue
        try:
            token = unquote_to_bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            continue
        if is_valid_btn_ref(token):
            return token
    return None


def strip_deeplink_url(url: str) -> str:
    """Keeps only the query parameters Button's SDKs keep: `btn_*`, `from_landing`, `from_tracking`."""
    url = url.split("#", 1)[0]
    base, has_query, query = url.partition("?")
    if not has_query:
        return url
    kept = []
    for pair in query.split("&"):
        key = pair.split("=", 1)[0]
        if key.startswith("btn_") or key in ("from_landing", "from_tracking"):
            kept.append(pair)
    return f"{base}?{'&'.join(kept)}" if kept else base


class LineItemIds:
    """Unique line-item identifiers within an order: repeats get `-2`, `-3`, ... (skipping taken ones)."""

    def __init__(self) -> None:
        self.used: set[str] = set()
        self.repeats: dict[str, int] = {}

    def assign(self, base: str) -> str:
        n = self.repeats.get(base, 0)
        while True:
            n += 1
            candidate = base if n == 1 else f"{base}-{n}"
            if candidate not in self.used:
                break
        self.repeats[base] = n
        self.used.add(candidate)
        return candidate


def hash_email(email: str) -> str | None:
    """SHA-256 hex of the trimmed, lower-cased email; a 64-hex value is already a hash."""
    email = email.strip()
    if not email:
        return None
    if _SHA256_HEX.fullmatch(email):
        return email.lower()
    return hashlib.sha256(email.lower().encode("utf-8")).hexdigest()


# --- Time --------------------------------------------------------------------------------------

MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso8601_ms(timestamp_ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=min(max(timestamp_ms, 0), MAX_TIMESTAMP_MS))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def event_time(data: JsonObject, at: str, fallback_ms: int) -> int:
    """The event's `timestamp_unixtime_ms`, else `fallback_ms` (the batch's, else the receive time)."""
    value = data.get("timestamp_unixtime_ms")
    if value is None:
        return fallback_ms
    timestamp = json_integer(value)
    if timestamp is None or not 0 <= timestamp <= MAX_TIMESTAMP_MS:
        raise FieldError(
            "invalid_timestamp", f"{at}.timestamp_unixtime_ms", "must be Unix milliseconds between 1970 and 9999"
        )
    return timestamp


def to_json(body: Mapping[str, object]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- The batch ---------------------------------------------------------------------------------


@dataclass
class Batch:
    """What every event of a batch shares (mParticle: one user per batch)."""

    customer: dict[str, str]
    device_id: str | None
    platform: str | None
    user_keys: list[str]
    integration_token: str | None
    batch_time_ms: int | None
    received_at_ms: int
    source_request_id: str | None

    @property
    def fallback_time_ms(self) -> int:
        return self.received_at_ms if self.batch_time_ms is None else self.batch_time_ms


def advertising_id(device: JsonObject, key: str) -> str | None:
    """An advertising id of zeros (and dashes) means "limit ad tracking": not an id."""
    value = text_field(device, key)
    if value is None or set(value) <= {"0", "-"}:
        return None
    return value


def integration_token(batch: JsonObject) -> str | None:
    """`integration_attributes["1022"]`: `com.usebutton.source_token`, then `btn_ref`, or a bare string."""
    attributes = as_object(batch.get("integration_attributes"))
    button = None if attributes is None else attributes.get("1022")
    if isinstance(button, dict):
        candidates = [button.get("com.usebutton.source_token"), button.get("btn_ref")]
    else:
        candidates = [button]
    for candidate in candidates:
        if isinstance(candidate, str) and is_valid_btn_ref(candidate):
            return candidate
    return None


def read_batch(batch: JsonObject, config: RefConfig, received_at_ms: int) -> Batch:
    identities = as_object(batch.get("user_identities")) or {}
    device = as_object(batch.get("device_info")) or {}
    platform = as_str(device.get("platform"))
    idfa = advertising_id(device, "ios_advertising_id")
    gaid = advertising_id(device, "android_advertising_id")
    if platform is not None and ascii_lower(platform) == "android":
        device_id = gaid or idfa
    else:
        device_id = idfa or gaid
    customer_id = text_field(identities, "customer_id") or text_field(identities, "customerid")
    email = as_str(identities.get("email"))
    email_sha256 = hash_email(email) if config.send_email and email is not None else None

    customer = {"id": customer_id, "email_sha256": email_sha256, "device_id": device_id}
    keys = {
        "mpid": text_field(batch, "mpid"),
        "customer_id": customer_id,
        "idfa": idfa,
        "gaid": gaid,
        "mp_deviceid": text_field(batch, "mp_deviceid"),
    }
    batch_time = batch.get("timestamp_unixtime_ms")
    batch_time_ms = None if batch_time is None else json_integer(batch_time)
    if batch_time_ms is not None and not 0 <= batch_time_ms <= MAX_TIMESTAMP_MS:
        batch_time_ms = None  # set by mParticle on receipt: a bad value is ignored, not rejected
    return Batch(
        customer={k: v for k, v in customer.items() if v is not None},
        device_id=device_id,
        platform=platform,
        user_keys=[f"{name}:{value}" for name, value in keys.items() if value is not None],
        integration_token=integration_token(batch),
        batch_time_ms=batch_time_ms,
        received_at_ms=received_at_ms,
        source_request_id=text_field(batch, "source_request_id"),
    )


def consent_filter(batch: JsonObject, gdpr_purpose: str | None) -> str | None:
    """Why consent filters the batch: the GDPR purpose not consented to, or a CCPA data-sale opt-out."""
    consent = as_object(batch.get("consent_state")) or {}

    def consented(regime: str, purpose: str) -> bool | None:
        section = as_object(consent.get(regime)) or {}
        choice = as_object(section.get(purpose)) or {}
        decision = choice.get("consented")
        return decision if isinstance(decision, bool) else None

    if gdpr_purpose is not None and consented("gdpr", gdpr_purpose) is not True:
        return "gdpr_consent"
    if consented("ccpa", "data_sale_opt_out") is True:
        return "ccpa_opt_out"
    return None


# --- The transformer ---------------------------------------------------------------------------

ACTIVITY_NAMES = {"view_detail": "product-viewed", "add_to_cart": "add-to-cart", "checkout": "cart-viewed"}


@dataclass
class Currency:
    code: str
    exponent: int


@dataclass
class LineItem:
    identifier: str
    sku: str | None
    description: str | None
    quantity: int
    total: int
    amount: int | None
    category: str | None
    attributes: dict[str, str]

    def to_body(self) -> dict[str, object]:
        body: dict[str, object] = {"identifier": self.identifier}
        if self.sku is not None:
            body["sku"] = self.sku
        if self.description is not None:
            body["description"] = self.description
        body["quantity"] = self.quantity
        body["total"] = self.total
        if self.amount is not None:
            body["amount"] = self.amount
        if self.category is not None:
            body["category"] = [self.category]
        if self.attributes:
            body["attributes"] = self.attributes
        return body


class ReferenceTransformer:
    """Maps mParticle batches (JSON) to Button requests, like `button_sidecar.Transformer`."""

    def __init__(
        self,
        config: RefConfig | None = None,
        *,
        json_loader: Callable[[bytes | bytearray | str], JsonValue] | None = None,
    ) -> None:
        """`json_loader` replaces the stdlib JSON reading (`decode_batch`), e.g. with orjson in the benchmarks;
        it must return numbers as `JsonNumber` and raise `InvalidJson`."""
        self.config = config or RefConfig()
        self.json_loader = json_loader
        self.default_currency = ascii_upper(self.config.default_currency.strip())
        if currency_exponent(self.default_currency) is None:
            raise ValueError('default_currency: must be an active ISO 4217 currency code, e.g. "USD"')
        self.application_ids: dict[str, str] = {}
        for platform, app_id in sorted((self.config.application_ids or {}).items()):
            name = ascii_lower(platform.strip())
            if not name:
                raise ValueError("application_ids: platform names must not be empty")
            if not _APPLICATION_ID.fullmatch(app_id):
                raise ValueError(f'application_ids[{name!r}]: must be a Button application id like "app-1a2b3c"')
            self.application_ids.setdefault(name, app_id)
        purpose = self.config.gdpr_purpose
        if purpose is not None and not purpose.strip():
            raise ValueError("gdpr_purpose: must be a non-empty purpose name or None")

    def application_id(self, platform: str | None) -> str | None:
        return None if platform is None else self.application_ids.get(ascii_lower(platform))

    # The entry points.

    def transform_many(
        self, raws: Sequence[bytes | bytearray | str], received_at_ms: int | None = None
    ) -> list[RefResult]:
        if received_at_ms is None:
            received_at_ms = time.time_ns() // 1_000_000
        return [self.transform_json(raw, received_at_ms) for raw in raws]

    def transform_json(self, raw: bytes | bytearray | str, received_at_ms: int | None = None) -> RefResult:
        if not isinstance(raw, bytes | bytearray | str):
            raise TypeError(f"expected bytes or str holding one mParticle batch, got {type(raw).__name__}")
        if received_at_ms is None:
            received_at_ms = time.time_ns() // 1_000_000
        try:
            batch = decode_batch(raw) if self.json_loader is None else self.json_loader(raw)
        except InvalidJson as err:
            return self._batch_rejection("invalid_json", "$", f"not valid JSON ({err})")
        if not isinstance(batch, dict):
            return self._batch_rejection("invalid_batch", "$", "a batch must be a JSON object")
        events = batch.get("events")
        if events is None:
            events = []
        elif not isinstance(events, list):
            return self._batch_rejection("invalid_batch", "events", "must be an array")

        context = read_batch(batch, self.config, received_at_ms)
        environment = batch.get("environment")
        result = RefResult(
            user_keys=list(context.user_keys),
            source_request_id=context.source_request_id,
            environment=environment if isinstance(environment, str) else None,
        )
        result.filtered = consent_filter(batch, self.config.gdpr_purpose)
        if result.filtered is not None:
            return result

        link = _Link()
        for index, event in enumerate(events):
            try:
                outcome = self._map_event(context, event, index, link, result)
            except FieldError as err:
                result.rejections.append(err.at_event(index))
                continue
            if isinstance(outcome, RefRequest):
                result.requests.append(outcome)
            elif isinstance(outcome, RefSkip):
                result.skipped.append(outcome)
        return result

    @staticmethod
    def _batch_rejection(code: str, field: str, message: str) -> RefResult:
        return RefResult(rejections=[FieldError(code, field, message).at_event(-1)])

    def _map_event(
        self, batch: Batch, event: JsonValue, index: int, link: _Link, result: RefResult
    ) -> RefRequest | RefSkip | None:
        at = f"events[{index}]"
        if not isinstance(event, dict):
            raise FieldError("invalid_event", at, "must be an object")
        event_type = event.get("event_type")
        if event_type == "commerce_event":
            data = object_field(event, "data", at)
            if data.get("product_action") is None:
                return RefSkip(index, "no_product_action")
            action = object_field(data, "product_action", f"{at}.data")
            return self._commerce_event(batch, data, action, f"{at}.data", index, link.token)
        if event_type == "application_state_transition":
            data = object_field(event, "data", at)
            url = launch_url(data)
            own_token = None if url is None else btn_ref_from_url(url)
            if url is not None:
                link.token = own_token  # the latest link counts, even one without a token
            return self._state_transition(batch, data, url, own_token, f"{at}.data", index, result)
        return RefSkip(index, "unsupported_event")

    # application_state_transition

    def _state_transition(
        self,
        batch: Batch,
        data: JsonObject,
        url: str | None,
        own_token: str | None,
        at: str,
        index: int,
        result: RefResult,
    ) -> RefRequest | RefSkip | None:
        """Learns the deep link's token (else the batch's) for the user; with `forward_app_events`, reports the open."""
        token = own_token or batch.integration_token
        if token is None:
            return RefSkip(index, "no_btn_ref")
        when = event_time(data, at, batch.fallback_time_ms)
        result.attributions.append(RefAttribution(list(batch.user_keys), token, when))
        if url is None or not self.config.forward_app_events:
            return None
        body: dict[str, object] = {}
        application_id = self.application_id(batch.platform)
        if application_id is not None:
            body["application_id"] = application_id
        if batch.device_id is not None:
            body["ifa"] = batch.device_id
        body["current_time"] = iso8601_ms(batch.received_at_ms)
        body["events"] = [
            {
                "name": "btn:deeplink-opened",
                "source": "button",
                "source_token": token,
                "time": iso8601_ms(when),
                "uuid": app_event_uuid(data, batch, index, url, when),
                "value": {"url": strip_deeplink_url(url)},
            }
        ]
        return RefRequest("app_event", "POST", "/v1/app/events", to_json(body), "", index)

    # commerce_event

    def _commerce_event(
        self, batch: Batch, data: JsonObject, action: JsonObject, at: str, index: int, link_token: str | None
    ) -> RefRequest | RefSkip:
        name = ascii_lower(as_str(action.get("action")) or "")
        if name == "purchase":
            return self._purchase(batch, data, action, at, index, link_token)
        if name == "refund":
            return self._refund(data, action, at, index)
        if name in ACTIVITY_NAMES:
            return self._activity(batch, data, action, at, index, link_token, ACTIVITY_NAMES[name])
        return RefSkip(index, "unsupported_action")

    def _purchase(
        self, batch: Batch, data: JsonObject, action: JsonObject, at: str, index: int, link_token: str | None
    ) -> RefRequest | RefSkip:
        action_at = f"{at}.product_action"
        order_id = read_order_id(action, action_at)
        currency = self._currency(data, at)
        when = event_time(data, at, batch.fallback_time_ms)
        items = line_items(action, action_at, currency)
        total = self._order_total(action, action_at, currency, items)
        btn_ref = event_btn_ref(batch, data, link_token)
        if btn_ref is None and self.config.require_btn_ref:
            return RefSkip(index, "missing_btn_ref")
        body: dict[str, object] = {
            "order_id": order_id,
            "currency": currency.code,
            "total": total,
            "purchase_date": iso8601_ms(when),
        }
        if btn_ref is not None:
            body["btn_ref"] = btn_ref
        if batch.customer:
            body["customer"] = batch.customer
        if items:
            body["line_items"] = [item.to_body() for item in items]
        return RefRequest("create_order", "POST", "/v1/order", to_json(body), order_id, index)

    def _refund(self, data: JsonObject, action: JsonObject, at: str, index: int) -> RefRequest:
        """No products and no amount cancel the order; otherwise a refund for the delivery layer."""
        action_at = f"{at}.product_action"
        order_id = read_order_id(action, action_at)
        products = action.get("products")
        has_products = products is not None and products != []  # malformed products are rejected below
        if not has_products and action.get("total_amount") is None:
            return RefRequest("cancel_order", "DELETE", order_path(order_id), None, order_id, index)
        currency = self._currency(data, at)
        items = line_items(action, action_at, currency)
        total = self._order_total(action, action_at, currency, items)
        body: dict[str, object] = {"order_id": order_id, "currency": currency.code, "total": total}
        if items:
            body["line_items"] = [item.to_body() for item in items]
        return RefRequest("refund", None, None, to_json(body), order_id, index)

    def _activity(
        self,
        batch: Batch,
        data: JsonObject,
        action: JsonObject,
        at: str,
        index: int,
        link_token: str | None,
        name: str,
    ) -> RefRequest | RefSkip:
        """Product views, adds to cart and checkouts as Button user activity (opt-in)."""
        if not self.config.forward_activity:
            return RefSkip(index, "activity_not_forwarded")
        application_id = self.application_id(batch.platform)
        if application_id is None:
            return RefSkip(index, "no_application_id")
        currency = self._currency(data, at)
        products = []
        for item in line_items(action, f"{at}.product_action", currency):
            product: dict[str, object] = {"id": item.sku if item.sku is not None else item.identifier}
            if item.description is not None:
                product["name"] = item.description
            product["currency"] = currency.code
            product["value"] = item.amount if item.amount is not None else item.total
            product["quantity"] = item.quantity
            if item.category is not None:
                product["categories"] = [item.category]
            if item.attributes:
                product["attributes"] = item.attributes
            products.append(product)
        body: dict[str, object] = {"application_id": application_id}
        if batch.device_id is not None:
            body["ifa"] = batch.device_id
        btn_ref = event_btn_ref(batch, data, link_token)
        if btn_ref is not None:
            body["btn_ref"] = btn_ref
        body["activity_data"] = {"name": name, "products": products}
        return RefRequest("activity", "POST", "/v1/app/activity", to_json(body), "", index)

    def _currency(self, data: JsonObject, at: str) -> Currency:
        """`data.currency_code` upper-cased (blank means the default); an active ISO 4217 code."""
        invalid = FieldError("invalid_currency", f"{at}.currency_code", "must be an active ISO 4217 currency code")
        value = data.get("currency_code")
        if value is None:
            code = self.default_currency
        elif isinstance(value, str):
            code = ascii_upper(value.strip()) or self.default_currency
        else:
            raise invalid
        exponent = currency_exponent(code)
        if exponent is None:
            raise invalid
        return Currency(code, exponent)

    def _order_total(self, action: JsonObject, at: str, currency: Currency, items: list[LineItem]) -> int:
        """`total_amount` less tax and shipping (unless configured to keep them), else the line totals."""
        total = minor_amount(action, "total_amount", at, currency)
        if total is None:
            if not items:
                raise FieldError("invalid_amount", f"{at}.total_amount", "is required when there are no products")
            total = sum(item.total for item in items)
            if total > I64_MAX:
                raise FieldError("invalid_amount", f"{at}.products", "does not fit in 64-bit minor units")
            return total
        if self.config.include_tax_and_shipping:
            return total
        tax = minor_amount(action, "tax_amount", at, currency) or 0
        shipping = minor_amount(action, "shipping_amount", at, currency) or 0
        net = total - tax - shipping
        if net < 0:
            raise FieldError("invalid_amount", f"{at}.total_amount", "is less than tax_amount plus shipping_amount")
        return net


@dataclass
class _Link:
    """The token of the latest deep link seen so far in a batch."""

    token: str | None = None


def launch_url(data: JsonObject) -> str | None:
    """`launch_referral`, or its alias `launch_referrer` (the first that is a string; empty is none)."""
    for key in ("launch_referral", "launch_referrer"):
        url = data.get(key)
        if isinstance(url, str):
            return url or None
    return None


def app_event_uuid(data: JsonObject, batch: Batch, index: int, url: str, time_ms: int) -> str:
    """The event's `source_message_id`, else a stable id derived from what identifies the open."""
    message_id = data.get("source_message_id")
    if isinstance(message_id, str):
        return message_id
    digest = hashlib.sha256()
    digest.update((batch.source_request_id or "").encode() + b"\0" + url.encode() + b"\0")
    digest.update(index.to_bytes(8, "big", signed=True) + time_ms.to_bytes(8, "big", signed=True))
    return str(uuid.UUID(bytes=digest.digest()[:16]))


def event_btn_ref(batch: Batch, data: JsonObject, link_token: str | None) -> str | None:
    """The integration attribute, else the event's `custom_attributes.btn_ref`, else the latest deep link."""
    if batch.integration_token is not None:
        return batch.integration_token
    custom = as_object(data.get("custom_attributes")) or {}
    token = custom.get("btn_ref")
    if isinstance(token, str) and is_valid_btn_ref(token):
        return token
    return link_token


def read_order_id(action: JsonObject, at: str) -> str:
    at = f"{at}.transaction_id"
    value = action.get("transaction_id")
    if value is None or value == "":
        raise FieldError("missing_order_id", at, "is required")
    order_id = scalar_text(value)
    if order_id is None:
        raise FieldError("invalid_order_id", at, "must be a string or a number")
    if not _ORDER_ID.fullmatch(order_id):
        raise FieldError("invalid_order_id", at, "must be 1 to 255 printable ASCII characters")
    return order_id


def decimal_amount(obj: JsonObject, key: str, at: str) -> Decimal | None:
    """A non-negative decimal, or None when absent."""
    value = obj.get(key)
    if value is None:
        return None
    try:
        amount = json_decimal(value)
    except AmountError as err:
        raise FieldError("invalid_amount", f"{at}.{key}", str(err)) from err
    if amount < 0:
        raise FieldError("invalid_amount", f"{at}.{key}", "must not be negative")
    return amount


def minor_amount(obj: JsonObject, key: str, at: str, currency: Currency) -> int | None:
    amount = decimal_amount(obj, key, at)
    if amount is None:
        return None
    try:
        return scaled_int(amount, currency.exponent)
    except AmountError as err:
        raise FieldError("invalid_amount", f"{at}.{key}", str(err)) from err


def read_quantity(product: JsonObject, at: str) -> int:
    """A positive whole number (`2`, `2.0`, `"2"`); 1 when absent."""
    value = product.get("quantity")
    if value is None:
        return 1
    quantity = json_integer(value)
    if quantity is None or quantity <= 0:
        raise FieldError("invalid_quantity", f"{at}.quantity", "must be a positive whole number")
    return quantity


def line_items(action: JsonObject, at: str, currency: Currency) -> list[LineItem]:
    products = action.get("products")
    if products is None:
        return []
    if not isinstance(products, list):
        raise FieldError("invalid_event", f"{at}.products", "must be an array")
    ids = LineItemIds()
    items = []
    for position, product in enumerate(products):
        product_at = f"{at}.products[{position}]"
        if not isinstance(product, dict):
            raise FieldError("invalid_event", product_at, "must be an object")
        items.append(line_item(product, product_at, currency, position, ids))
    return items


def line_item(product: JsonObject, at: str, currency: Currency, position: int, ids: LineItemIds) -> LineItem:
    sku = text_field(product, "id")
    description = text_field(product, "name")
    quantity = read_quantity(product, at)
    price = decimal_amount(product, "price", at)
    try:
        amount = None if price is None else scaled_int(price, currency.exponent)
    except AmountError as err:
        raise FieldError("invalid_amount", f"{at}.price", str(err)) from err
    total = minor_amount(product, "total_product_amount", at, currency)
    if total is None:
        if price is None:
            raise FieldError("invalid_amount", f"{at}.price", "a product needs price or total_product_amount")
        try:
            total = scaled_int(_EXACT.multiply(price, Decimal(quantity)), currency.exponent)  # exact, rounded once
        except AmountError as err:
            raise FieldError("invalid_amount", f"{at}.price", str(err)) from err

    attributes: dict[str, str] = {}
    custom = product.get("custom_attributes")
    if isinstance(custom, dict):
        for key, value in custom.items():
            text = attribute_text(value)
            if text is not None:
                attributes[key] = text
    for key in ("brand", "variant", "coupon_code"):
        text = text_field(product, key)
        if key not in attributes and text is not None:
            attributes[key] = text

    base = sku or description or f"item-{position + 1}"
    return LineItem(
        identifier=ids.assign(base),
        sku=sku,
        description=description,
        quantity=quantity,
        total=total,
        amount=amount,
        category=text_field(product, "category"),
        attributes=attributes,
    )
