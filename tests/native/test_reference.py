"""The pure-Python reference (`benches/reference.py`) against the golden contract and the Rust core.

The differential property tests require both to give exactly the same results (rejection messages
aside) on generated batches, malformed ones included.
"""

from __future__ import annotations

import json
import re
from typing import Any

import button_sidecar
import pytest
from button_sidecar import TransformConfig, Transformer, TransformResult
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benches import reference as ref
from benches.reference import (
    InvalidJson,
    RefConfig,
    ReferenceTransformer,
    RefResult,
    decode_batch,
    iso8601_ms,
    parse_decimal,
    scaled_int,
)
from tests.golden import RECEIVED_AT_MS, check_case, golden_cases

CONFIGS: list[dict[str, Any]] = [
    {},
    {"include_tax_and_shipping": True},
    {"send_email": False},
    {"require_btn_ref": True},
    {"forward_activity": True, "application_ids": {"ios": "app-abc123"}},
    {"forward_app_events": True},
    {"forward_app_events": True, "forward_activity": True, "application_ids": {"iOS": "app-abc123", "web": "app-w3b"}},
    {"gdpr_purpose": "marketing"},
    {"default_currency": " jpy "},
]

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def rust(config: dict[str, Any]) -> Transformer:
    return Transformer(TransformConfig(**config))


def reference(config: dict[str, Any]) -> ReferenceTransformer:
    return ReferenceTransformer(RefConfig(**config))


def normalise(result: TransformResult | RefResult) -> dict[str, Any]:
    """Everything both implementations must agree on (rejection messages may differ)."""
    return {
        "requests": [
            (
                r.kind,
                r.method,
                r.path,
                None if r.body is None else json.loads(r.body),
                r.order_id,
                r.event_index,
            )
            for r in result.requests
        ],
        "rejections": [(r.event_index, r.code, r.field) for r in result.rejections],
        "attributions": [(a.user_keys, a.btn_ref, a.timestamp_ms) for a in result.attributions],
        "skipped": [(s.event_index, s.reason) for s in result.skipped],
        "user_keys": result.user_keys,
        "source_request_id": result.source_request_id,
        "environment": result.environment,
        "filtered": result.filtered,
    }


def body_token(body: bytes | None) -> object:
    """The `btn_ref` at the top of a request body, as the pipeline would read it."""
    parsed = None if body is None else json.loads(body)
    return parsed.get("btn_ref") if isinstance(parsed, dict) else None


def both(config: dict[str, Any], raw: bytes | str) -> tuple[dict[str, Any], dict[str, Any]]:
    result = rust(config).transform_json(raw, received_at_ms=RECEIVED_AT_MS)
    # The flag the pipeline reads instead of parsing each body.
    assert [r.btn_ref for r in result.requests] == [body_token(r.body) for r in result.requests]
    got = normalise(result)
    want = normalise(reference(config).transform_json(raw, received_at_ms=RECEIVED_AT_MS))
    return got, want


def assert_same(config: dict[str, Any], raw: bytes | str) -> None:
    got, want = both(config, raw)
    assert got == want, raw


# --- golden cases ---------------------------------------------------------------------------------


def reference_transform(config: dict[str, Any], raw: bytes) -> RefResult:
    return ReferenceTransformer(RefConfig(**config)).transform_json(raw, received_at_ms=RECEIVED_AT_MS)


@pytest.mark.parametrize("case", golden_cases(), ids=lambda c: str(c["name"]))
def test_golden_case_through_reference(case: dict[str, Any]) -> None:
    check_case(case, reference_transform)


@pytest.mark.parametrize("case", golden_cases(), ids=lambda c: str(c["name"]))
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(c) or "default")
def test_golden_inputs_agree_under_every_config(case: dict[str, Any], config: dict[str, Any]) -> None:
    raw = case["input_text"] if "input_text" in case else json.dumps(case["input"])
    assert_same(config, raw)


# --- strategies: mParticle-like batches, including malformed ones ---------------------------------

# Raw JSON texts (numbers as written, escapes json.dumps would not write) are carried through
# json.dumps as marked strings and spliced in afterwards; LONE_KEY becomes the key "\ud800".
_RAW_OPEN, _RAW_CLOSE, LONE_KEY = "\ue000", "\ue001", "\ue002"


def raw_json(text: str) -> str:
    return f"{_RAW_OPEN}{text}{_RAW_CLOSE}"


def dumps(value: Any, *, ensure_ascii: bool = False) -> str:
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    open_, close = (json.dumps(mark, ensure_ascii=ensure_ascii)[1:-1] for mark in (_RAW_OPEN, _RAW_CLOSE))
    text = re.sub(f'"{re.escape(open_)}(.*?){re.escape(close)}"', lambda m: json.loads(f'"{m.group(1)}"'), text)
    return text.replace(json.dumps(LONE_KEY, ensure_ascii=ensure_ascii), '"\\ud800"')


NUMBER_TEXTS = [
    "0",
    "-0",
    "1",
    "2",
    "2.0",
    "20e-1",
    "2.675",
    "1.015",
    "19.99",
    "0.125",
    "0.135",
    "1.50",
    "98765",
    "1e2",
    "1E2",
    "1E+2",
    "1.5E-1",
    "-1",
    "-0.001",
    "0.0005",
    "92233720368547758.07",
    "92233720368547758.08",
    "-92233720368547758.08",
    "9223372036854775807",
    "9223372036854775808",
    "1e17",
    "1e18",
    "1e19",
    "1e999999",
    "1e-999999",
    "1e99999999999",
    "123456789012345678901234567890",
    "0.00000000000000000000000000000000000001",
    "1714592744066",
    "1714592744066.0",
    "1.714592744066e12",
    "253402300799999",
    "253402300800000",
]
NUMERIC_STRINGS = [
    " 12 ",
    "\t3.5\n",
    "+3.",
    ".5",
    "54.96",
    "\u00a07\u2003",
    "\x1f7",
    "1_000",
    "abc",
    "",
    " ",
    "NaN",
    "inf",
    "Infinity",
    "\u0661",
    "1 2",
    "0x10",
    "1.2.3",
    "e5",
    ".",
    "--1",
    "1e",
]

small_text = st.text(st.characters(max_codepoint=0x3000, codec="utf-8"), max_size=10)
ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=12)
scalar_json = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), small_text, st.floats(allow_nan=False)
)
any_json: st.SearchStrategy[Any] = st.recursive(
    scalar_json,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(small_text, inner, max_size=3),
    max_leaves=6,
)


def nested(depth: int, inner: str = "1") -> str:
    return '{"a":' * depth + inner + "}" * depth


# Values that are fine where the core only checks syntax, and invalid JSON where it decodes.
JUNK_TEXTS = [
    '"\\ud800"',
    '"a\\udc00b"',
    '"\\ud83d\\u0041"',
    '"\\ud83d\\ude00"',
    "[" * 127 + "]" * 127,
    "[" * 128 + "]" * 128,
    nested(60),
    nested(126, "[]"),
    '{"$serde_json::private::Number": "1.5"}',
    '{"$serde_json::private::Number": "x"}',
    '{"$serde_json::private::Number": 5}',
    '{"$serde_json::private::Number": "1", "y": 1}',
]
junk = st.one_of(st.sampled_from(JUNK_TEXTS).map(raw_json), st.just({LONE_KEY: 1}), st.just([{LONE_KEY: 1}]))


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each drawn with its weight (``st.one_of`` would merge repeated ones)."""
    strategies = [strategy for _, strategy in choices]
    # Sample indices, not strategies: the repr of nested pools of strategies grows exponentially.
    indices = [index for index, (weight, _) in enumerate(choices) for _ in range(weight)]
    return st.sampled_from(indices).flatmap(lambda index: strategies[index])


def mostly(good: st.SearchStrategy[Any], *bad: st.SearchStrategy[Any], weight: int = 12) -> st.SearchStrategy[Any]:
    """`good` most of the time (`weight` to one), else one of `bad`."""
    return weighted((weight, good), *((1, b) for b in bad))


extra = weighted((8, st.none()), (2, scalar_json), (1, any_json), (1, junk))

good_amount = st.one_of(
    st.sampled_from(["0", "1", "2.675", "1.015", "19.99", "0.125", "1.50", "1e2", "54.96", "4.0", "0.99"]).map(
        raw_json
    ),
    st.decimals(min_value=0, max_value=10**5, places=3, allow_nan=False, allow_infinity=False).map(str),
    st.integers(0, 10**6),
    st.floats(min_value=0, max_value=10**6, allow_nan=False),
    st.sampled_from([" 12 ", "\t3.5\n", "+3.", ".5", "54.96", "\u00a07\u2003", "\x1f7", "1E2", "2.675"]),
)
amount = mostly(
    good_amount,
    st.sampled_from(NUMBER_TEXTS).map(raw_json),
    st.sampled_from(NUMBER_TEXTS + NUMERIC_STRINGS),
    st.integers(-(10**6), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([None, True, False, [], {}, {"v": 1}]),
    junk,
    weight=40,
)
quantity = mostly(
    st.one_of(st.integers(1, 5), st.sampled_from(["2", "2.0", "20e-1", " 3 ", 2.0]), st.just(raw_json("1.0"))),
    st.sampled_from(["1.5", "0", "-1", "1e18", "1e19", "x", "", 1.5, 10**19, None, True, {}]),
    st.sampled_from(NUMBER_TEXTS).map(raw_json),
    st.integers(-3, 0),
    weight=30,
)
good_id = st.one_of(
    ascii_text,
    st.sampled_from(["sku-1", "sku-1", "sku-1-2", "sku-2", "Gift Card", "item-1", "item-2", "A/B 100%", "o-1"]),
    st.integers(0, 10**20),
    st.sampled_from(["98765", "1.50", "-0"]).map(raw_json),
)
text_id = mostly(
    good_id,
    small_text,
    st.sampled_from(["", "x" * 255, "x" * 256, "o-\u00e9t\u00e9", "tab\there"]),
    st.sampled_from(["1E5", "2.5e-3", "1e+5"]).map(raw_json),
    st.sampled_from([None, True, [], {}]),
    junk,
)
token = mostly(
    st.sampled_from(["srctok-abc123", "srctok-fromlink", "fakesrctok-0123456789abcdef", "a" * 255, "srctok.x~y_z"]),
    st.sampled_from(["not a token!", "", "a" * 256, "srctok-\u00e9"]),
    st.text(st.sampled_from("abcXYZ019._~-!%\u00e9 "), max_size=8),
    weight=6,
)
btn_ref_value = mostly(token, st.sampled_from([None, 5, True, {"x": 1}]), weight=8)

url_value = mostly(token, st.sampled_from(["srctok%2D3", "%ff", "%", "bad!", "srctok-a%20b", "%E2%82%AC"]), weight=4)
url_pair = mostly(
    st.tuples(
        st.sampled_from(
            ["btn_ref", "btn_ref", "utm_source", "from_landing", "from_tracking", "btn_x", "x", "xbtn_ref"]
        ),
        url_value,
    ).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(["btn_ref", "", "a=b=c", "btn_ref=srctok-1=2"]),
)
url = mostly(
    st.builds(
        lambda base, pairs, fragment: base + ("?" + "&".join(pairs) if pairs is not None else "") + fragment,
        st.sampled_from(["myapp://open", "https://shop.example.com/p/sku-1", "app://p/1", "", "x#y"]),
        mostly(st.lists(url_pair, min_size=1, max_size=4), st.none(), st.just([])),
        st.sampled_from(["", "", "#frag", "#btn_ref=srctok-4", "#a?btn_ref=srctok-5"]),
    ),
    st.sampled_from(["", "no query", "?btn_ref=srctok-q", None, 7]),
)

timestamp = mostly(
    st.one_of(st.integers(0, 2_000_000_000_000), st.just("1714592744066"), st.just(raw_json("1.7e12"))),
    st.integers(-5, 253_402_300_800_005),
    st.sampled_from(NUMBER_TEXTS).map(raw_json),
    st.sampled_from([" 1714592744066 ", "1714592744066.5", "soon", "", None, True, 1.7e12]),
)
currency_code = mostly(
    st.sampled_from(["USD", "usd", " eur ", "JPY", "jpy", "KWD", "BHD", "CLF", "", "  "]),
    st.sampled_from(["ABC", "XAU", "HRK", "u\u017fd", None, 5, True, ["USD"]]),
)

custom_attributes = mostly(
    st.dictionaries(
        st.sampled_from(["color", "size", "brand", "variant", "coupon_code", "btn_ref", "x"]) | small_text,
        st.one_of(scalar_json, st.sampled_from(NUMBER_TEXTS).map(raw_json), any_json),
        max_size=4,
    ),
    st.sampled_from([None, "color=blue", ["a"]]),
)

# Identifiers that collide: repeated ids get -2, -3, ... skipping any already taken.
line_item_id = weighted(
    (2, st.sampled_from(["x", "x-2", "x-2-2", "x-3"])),
    (2, st.sampled_from(["sku-1", "sku-1-2", "sku-2", "Gift Card", "item-1", "item-2", "item-3"])),
    (1, text_id),
)
product = weighted(
    (
        18,
        st.fixed_dictionaries(
            {"price": amount},
            optional={
                "extra": extra,
                "id": line_item_id,
                "name": line_item_id,
                "quantity": quantity,
                "total_product_amount": amount,
                "brand": text_id,
                "variant": text_id,
                "coupon_code": text_id,
                "category": text_id,
                "custom_attributes": custom_attributes,
            },
        ),
    ),
    (6, st.fixed_dictionaries({"price": st.just("1.00")}, optional={"id": line_item_id, "name": line_item_id})),
    (1, st.fixed_dictionaries({}, optional={"name": text_id, "total_product_amount": amount, "quantity": quantity})),
    (1, st.sampled_from([None, 1, "product", []])),
)
products = mostly(st.lists(product, max_size=4), st.sampled_from([None, "oops", {}, 3, []]))
ACTIONS = ["purchase", "purchase", "purchase", "PURCHASE", "refund", "refund", "view_detail", "add_to_cart", "checkout"]
small_amount = mostly(
    st.one_of(st.sampled_from(["0", "0.99", "4.0", "1.005"]).map(raw_json), st.sampled_from([0, 1, " 0.5 "])),
    amount,
    weight=4,
)
transaction_id = weighted(
    (12, good_id),
    (1, small_text),
    (1, st.sampled_from(["", " ", "x" * 255, "x" * 256, "o-\u00e9t\u00e9", "tab\there", "\x7f"])),
    (1, text_id),
)
action_name = mostly(
    st.sampled_from(ACTIONS), st.sampled_from(["remove_from_wishlist", "unknown", "", None, 3, ["x"]]), weight=20
)
optional_amounts = {"tax_amount": small_amount, "shipping_amount": small_amount}
product_action = weighted(
    (
        12,
        st.fixed_dictionaries(
            {"action": action_name, "transaction_id": transaction_id, "total_amount": amount},
            optional={"extra": extra, **optional_amounts, "products": products},
        ),
    ),
    (
        12,
        st.fixed_dictionaries(
            {
                "action": action_name,
                "transaction_id": transaction_id,
                "products": st.lists(product, min_size=1, max_size=4),
            },
            optional={"extra": extra, **optional_amounts, "total_amount": amount},
        ),
    ),
    (
        2,
        st.fixed_dictionaries(
            {"action": action_name},
            optional={"transaction_id": text_id, **optional_amounts, "total_amount": amount, "products": products},
        ),
    ),
    (
        3,
        st.fixed_dictionaries(
            {"action": st.just("refund"), "transaction_id": transaction_id},
            optional={"products": st.sampled_from([None, [], "oops", {}]), "total_amount": st.none()},
        ),
    ),
    (1, st.sampled_from([None, "purchase", [], 1])),
)

commerce_data = st.fixed_dictionaries(
    {"product_action": product_action},
    optional={
        "extra": extra,
        "currency_code": currency_code,
        "timestamp_unixtime_ms": timestamp,
        "custom_attributes": mostly(
            st.fixed_dictionaries({}, optional={"btn_ref": btn_ref_value, "other": scalar_json}),
            st.sampled_from([None, "btn_ref", []]),
        ),
    },
)
transition_data = st.fixed_dictionaries(
    {},
    optional={
        "extra": extra,
        "application_transition_type": st.sampled_from(["application_initialized", "application_foreground"]),
        "launch_referral": url,
        "launch_referrer": url,
        "timestamp_unixtime_ms": timestamp,
        "source_message_id": st.one_of(st.sampled_from(["msg-1", ""]), st.integers(0, 3)),
    },
)


def event_of(event_type: str, data: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return mostly(
        st.fixed_dictionaries({"event_type": st.just(event_type), "data": data}, optional={"extra": extra}),
        st.fixed_dictionaries(
            {"event_type": st.just(event_type)}, optional={"data": st.sampled_from([None, "d", [1]])}
        ),
        weight=20,
    )


event = weighted(
    (24, event_of("commerce_event", commerce_data)),
    (8, event_of("application_state_transition", transition_data)),
    (2, event_of("screen_view", st.fixed_dictionaries({"screen_name": st.just("home")}))),
    (1, event_of("custom_event", any_json)),
    (1, st.fixed_dictionaries({}, optional={"event_type": st.one_of(st.none(), st.integers(), small_text)})),
    (1, scalar_json),
    (1, st.lists(scalar_json, max_size=2)),
)

# Python 3.11 lower-cases by Unicode 14; the Rust core by its toolchain's (newer) tables. They differ only on
# characters whose case data changed since (e.g. U+A7CB, U+1C89, or U+0295 after a sigma), so emails are
# drawn from scripts where both agree.
email_text = st.text(
    st.one_of(
        st.characters(max_codepoint=0x24F, codec="utf-8"),
        st.characters(min_codepoint=0x370, max_codepoint=0x4FF),
        st.sampled_from("\u03a3\u03c3\u0130\u1e9e\u3000\u2003\x1f\x85 @."),
    ),
    max_size=12,
)
email = mostly(
    st.sampled_from(
        [
            "jane.doe@example.com",
            "  Jane.Doe@Example.COM \n",
            "72497F475E4F76D0B28F57C73A084ECE576D170874EBA3EE2609D9AFE4B71AAB",
            " 72497f475e4f76d0b28f57c73a084ece576d170874eba3ee2609d9afe4b71aab\u3000",
            "72497F475E4F76D0B28F57C73A084ECE576D170874EBA3EE2609D9AFE4B71AA",
            "\u03a3\u0391\u03a3@\u00c9X.COM",
            "\x1fa@b.c\u2003",
            "",
            " ",
        ]
    ),
    email_text,
    st.sampled_from([None, 42, True, ["a@b.c"]]),
    weight=2,
)
user_identities = mostly(
    st.fixed_dictionaries({}, optional={"extra": extra, "customer_id": text_id, "customerid": text_id, "email": email}),
    st.sampled_from([None, "cust", []]),
)
advertising_id = mostly(
    st.sampled_from(
        [
            "613ff528-afd1-4c1b-9628-e6ed25ece9c0",
            "38400000-8cf0-11bd-b23e-10b96e40000d",
            "00000000-0000-0000-0000-000000000000",
            "0",
            "-",
            "0-0",
            "",
        ]
    ),
    text_id,
    weight=2,
)
device_info = mostly(
    st.fixed_dictionaries(
        {},
        optional={
            "extra": extra,
            "platform": mostly(
                st.sampled_from(["iOS", "iOS", "ios", "Android", "ANDROID", "web", "", "k"]), st.sampled_from([None, 5])
            ),
            "ios_advertising_id": advertising_id,
            "android_advertising_id": advertising_id,
        },
    ),
    st.sampled_from([None, "ios"]),
)
integration_attributes = mostly(
    st.fixed_dictionaries(
        {},
        optional={
            "extra": extra,
            "1022": st.one_of(
                st.fixed_dictionaries(
                    {}, optional={"com.usebutton.source_token": btn_ref_value, "btn_ref": btn_ref_value}
                ),
                btn_ref_value,
                st.sampled_from([[], ["srctok-abc123"]]),
            ),
            "1023": any_json,
        },
    ),
    st.sampled_from([None, "1022", []]),
)
consented = mostly(st.booleans(), st.sampled_from([None, "true", 1]))
consent_state = mostly(
    st.fixed_dictionaries(
        {},
        optional={
            "extra": extra,
            "gdpr": mostly(
                st.dictionaries(
                    st.sampled_from(["marketing", "marketing", "Marketing", "analytics"]),
                    mostly(st.fixed_dictionaries({"consented": consented}), st.fixed_dictionaries({}), st.none()),
                    max_size=2,
                ),
                st.none(),
            ),
            "ccpa": mostly(
                st.fixed_dictionaries(
                    {}, optional={"data_sale_opt_out": st.fixed_dictionaries({}, optional={"consented": consented})}
                ),
                st.sampled_from([None, []]),
            ),
        },
    ),
    st.sampled_from([None, "yes"]),
)

batch = st.fixed_dictionaries(
    {
        "events": mostly(
            st.lists(event, min_size=1, max_size=6), st.sampled_from([None, {}, "events", 3, []]), weight=10
        )
    },
    optional={
        "extra": extra,
        "user_identities": user_identities,
        "device_info": device_info,
        "integration_attributes": integration_attributes,
        "mpid": mostly(st.integers(-(2**63), 2**64), st.sampled_from(["7346244611012968789", "", "-1"]), st.just(None)),
        "mp_deviceid": st.one_of(small_text, st.just(None)),
        "source_request_id": mostly(
            st.sampled_from(["0b6f6c1e-6f2b-4f6e-9a39-4a3d3c1f9e21", "req-2"]), st.sampled_from(["", 7, None])
        ),
        "environment": mostly(st.sampled_from(["production", "development"]), st.sampled_from(["", 5, None])),
        "timestamp_unixtime_ms": timestamp,
        "consent_state": consent_state,
        "schema_version": st.just(2),
    },
)
# Batches about btn_ref precedence: integration attribute, then the event's own token, then the latest
# deep link before the event (one without a token resets it).
LINKS = [
    "app://o?btn_ref=srctok-1",
    "app://o?x=1&btn_ref=srctok-2",
    "app://o?utm=1",
    "app://o?btn_ref=bad!",
    "",
    "app://o",
]
simple_commerce = st.fixed_dictionaries(
    {
        "event_type": st.just("commerce_event"),
        "data": st.fixed_dictionaries(
            {
                "product_action": st.fixed_dictionaries(
                    {
                        "action": st.sampled_from(["purchase", "purchase", "view_detail", "checkout"]),
                        "transaction_id": st.sampled_from(["o-1", "o-2"]),
                        "total_amount": st.just(1),
                    }
                )
            },
            optional={"custom_attributes": st.fixed_dictionaries({"btn_ref": btn_ref_value})},
        ),
    }
)
simple_transition = st.fixed_dictionaries(
    {
        "event_type": st.just("application_state_transition"),
        "data": st.fixed_dictionaries(
            {}, optional={"launch_referral": st.sampled_from(LINKS), "launch_referrer": st.sampled_from(LINKS)}
        ),
    }
)
attribution_batch = st.fixed_dictionaries(
    {"events": st.lists(st.one_of(simple_commerce, simple_transition), min_size=1, max_size=6)},
    optional={
        "integration_attributes": integration_attributes,
        "device_info": device_info,
        "user_identities": user_identities,
        "source_request_id": st.just("req-1"),
    },
)
top_level = weighted((12, batch), (2, attribution_batch), (1, any_json))
config = st.sampled_from(CONFIGS)


@st.composite
def batch_json(draw: st.DrawFn) -> str:
    return dumps(draw(top_level), ensure_ascii=draw(st.booleans()))


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A valid batch and a byte-level mutation of it (truncated, a byte replaced, inserted or dropped)."""
    raw = draw(batch_json()).encode()
    position = draw(st.integers(0, max(len(raw) - 1, 0)))
    byte = bytes([draw(st.integers(0, 255))])
    kind = draw(st.sampled_from(["truncate", "replace", "insert", "delete"]))
    if kind == "truncate":
        bad = raw[:position]
    elif kind == "replace":
        bad = raw[:position] + byte + raw[position + 1 :]
    elif kind == "insert":
        bad = raw[:position] + byte + raw[position:]
    else:
        bad = raw[:position] + raw[position + 1 :]
    return raw, bad


# --- differential property tests -----------------------------------------------------------------


@PROPERTY
@given(config=config, raw=batch_json())
def test_rust_and_reference_agree(config: dict[str, Any], raw: str) -> None:
    assert_same(config, raw)


@PROPERTY
@given(config=config, raw=st.builds(dumps, attribution_batch))
def test_rust_and_reference_agree_on_attribution(config: dict[str, Any], raw: str) -> None:
    assert_same(config, raw)


@PROPERTY
@given(config=config, pair=mutated())
def test_rust_and_reference_agree_on_mutated_bytes(config: dict[str, Any], pair: tuple[bytes, bytes]) -> None:
    raws = list(pair)
    got = [normalise(r) for r in rust(config).transform_many(raws, received_at_ms=RECEIVED_AT_MS)]
    want = [normalise(r) for r in reference(config).transform_many(raws, received_at_ms=RECEIVED_AT_MS)]
    assert got == want, pair[1]


def is_json_batch(raw: bytes | str) -> bool:
    try:
        decode_batch(raw)
    except InvalidJson:
        return False
    return True


def check_total(raw: bytes | str, result: TransformResult) -> None:
    assert isinstance(result, TransformResult)
    if not result.requests and not is_json_batch(raw):
        assert [(r.event_index, r.code, r.field) for r in result.rejections] == [(-1, "invalid_json", "$")]


@PROPERTY
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200), st.text(st.characters(), max_size=50)))
def test_arbitrary_input_never_raises(raw: bytes | str) -> None:
    transformer = rust({})
    check_total(raw, transformer.transform_json(raw, received_at_ms=RECEIVED_AT_MS))
    (many,) = transformer.transform_many([raw], received_at_ms=RECEIVED_AT_MS)
    check_total(raw, many)
    assert normalise(many) == normalise(reference({}).transform_json(raw, received_at_ms=RECEIVED_AT_MS))


@pytest.mark.parametrize(
    "raw",
    [
        "\ud800",
        '{"a": "\ud800"}',
        # Lone surrogate escapes where the core decodes (elsewhere they are only syntax).
        '{"environment": "\\ud800"}',
        '{"mpid": "\\udc00"}',
        '{"user_identities": {"email": "\\ud83d\\u0041"}}',
        '{"user_identities": {"\\ud800": 1}}',
        '{"consent_state": {"x": ["\\ud800"]}}',
        '{"events": [{"data": {"product_action": {"products": [{"custom_attributes": {"a": "\\udfff"}}]}}}]}',
        '{"events": [{"x": 1, "\\ud800": 2}]}',
        '{"environment": "\\ud800", "environment": "x"}',
        b"\xef\xbb\xbf{}",
        b'{"a": "\xff"}',
        b"\xff\xfe{\x00}\x00",
        '{"a": NaN}',
        '{"a": -Infinity}',
        "[" * 128 + "]" * 128,
        "",
        " ",
        "{} x",
    ],
)
def test_not_json_is_one_batch_rejection(raw: bytes | str) -> None:
    result = rust({}).transform_json(raw, received_at_ms=RECEIVED_AT_MS)
    check_total(raw, result)
    assert not is_json_batch(raw)
    assert_same({}, raw)


# --- targeted cases -------------------------------------------------------------------------------


def purchase(action: dict[str, Any], **data: Any) -> str:
    return json.dumps({"events": [{"event_type": "commerce_event", "data": {"product_action": action, **data}}]})


@pytest.mark.parametrize(
    "raw",
    [
        # serde_json's nesting limit: 127 levels are fine, 128 are not.
        '{"a":' + "[" * 126 + "]" * 126 + "}",
        '{"a":' + "[" * 127 + "]" * 127 + "}",
        '{"events": [], "events": 5}',
        '{"events": 5, "events": []}',
        # Repeated keys: the last value counts, but the core decodes every one.
        '{"mpid": {"$serde_json::private::Number": "1"}, "mpid": "x"}',
        '{"mpid": "x", "mpid": {"$serde_json::private::Number": "1"}}',
        '{"mpid": {"$serde_json::private::Number": 5}, "mpid": "x"}',
        '{"mpid": ' + "[" * 128 + "]" * 128 + ', "mpid": "x"}',
        '{"x": "\\ud800", "x": 1, "events": []}',
        '{"events": [{"event_type": "commerce_event", "data": {"product_action": {"action": "purchase", '
        '"transaction_id": "d", "products": [{"price": 1, '
        '"custom_attributes": {"a": 1, "a": null, "b": 2, "b": "x"}}]}}}]}',
        '{"a": "\\ud83d\\ude00", "environment": "\\u00e9t\\u00e9"}',
        # Numbers used as text keep their spelling.
        purchase({"action": "purchase", "transaction_id": 98765, "total_amount": 1}),
        dumps(
            {
                "events": [
                    {
                        "event_type": "commerce_event",
                        "data": {
                            "product_action": {
                                "action": "purchase",
                                "transaction_id": raw_json("1.50"),
                                "total_amount": raw_json("1.015"),
                            }
                        },
                    }
                ]
            }
        ),
        # Ties round half to even, exactly.
        purchase({"action": "purchase", "transaction_id": "t", "products": [{"price": 2.675, "quantity": 3}]}),
        purchase({"action": "purchase", "transaction_id": "t", "total_amount": "1e999999999999"}),
        purchase({"action": "purchase", "transaction_id": "t", "total_amount": "0." + "0" * 5000 + "1"}),
        purchase({"action": "purchase", "transaction_id": "t", "total_amount": "9" * 5000}),
        purchase({"action": "purchase", "transaction_id": "t", "total_amount": "u\u017fd"}, currency_code="u\u017fd"),
        purchase({"action": "purchase", "transaction_id": "t", "products": [{"price": "92233720368547758.07"}] * 2}),
    ],
)
def test_edge_cases_agree(raw: str) -> None:
    for config in CONFIGS:
        assert_same(config, raw)


def transition(url: str) -> dict[str, Any]:
    return {"event_type": "application_state_transition", "data": {"launch_referral": url}}


def order(products: list[Any] | None = None, **action: Any) -> dict[str, Any]:
    product_action = {"action": "purchase", "transaction_id": "o", **action}
    if products is not None:
        product_action["products"] = products
    else:
        product_action.setdefault("total_amount", 1)
    return {"event_type": "commerce_event", "data": {"product_action": product_action}}


def mapped(batch: dict[str, Any], config: dict[str, Any] | None = None) -> RefResult:
    """The reference's result, after checking that the Rust core gives the same."""
    raw = json.dumps(batch)
    assert_same(config or {}, raw)
    return ReferenceTransformer(RefConfig(**(config or {}))).transform_json(raw, received_at_ms=RECEIVED_AT_MS)


def body(result: RefResult, index: int = 0) -> Any:
    return json.loads(result.requests[index].body or b"null")


def test_a_link_without_token_resets_the_link_token() -> None:
    events = [transition("app://o?btn_ref=srctok-1"), transition("app://o?utm=1"), order()]
    assert "btn_ref" not in body(mapped({"events": events}))
    events = [transition("app://o?btn_ref=srctok-1"), transition(""), order()]  # an empty URL is no link
    assert body(mapped({"events": events}))["btn_ref"] == "srctok-1"


@pytest.mark.parametrize(
    ("ids", "identifiers"),
    [
        (["x", "x-2", "x"], ["x", "x-2", "x-3"]),
        (["x", "x", "x-2"], ["x", "x-2", "x-2-2"]),
        (["x", "x", "x", "x-3"], ["x", "x-2", "x-3", "x-3-2"]),
        ([None, "item-1", None], ["item-1", "item-1-2", "item-3"]),
    ],
)
def test_line_item_identifiers_skip_taken_ones(ids: list[str | None], identifiers: list[str]) -> None:
    products = [{"price": 1} if i is None else {"id": i, "price": 1} for i in ids]
    items = body(mapped({"events": [order(products)]}))["line_items"]
    assert [item["identifier"] for item in items] == identifiers


@pytest.mark.parametrize(
    ("consent", "config", "filtered"),
    [
        ({"ccpa": {"data_sale_opt_out": {"consented": True}}}, {}, "ccpa_opt_out"),
        ({"ccpa": {"data_sale_opt_out": {"consented": "true"}}}, {}, None),
        ({"gdpr": {"marketing": {"consented": True}}}, {"gdpr_purpose": "marketing"}, None),
        ({"gdpr": {"Marketing": {"consented": True}}}, {"gdpr_purpose": "marketing"}, "gdpr_consent"),
        ({}, {"gdpr_purpose": "marketing"}, "gdpr_consent"),
    ],
)
def test_consent_filters_the_batch(consent: dict[str, Any], config: dict[str, Any], filtered: str | None) -> None:
    result = mapped({"consent_state": consent, "events": [order()]}, config)
    assert result.filtered == filtered
    assert len(result.requests) == (filtered is None)


@pytest.mark.parametrize(
    ("quantity", "code"),
    [
        ("9223372036854775807", "invalid_amount"),  # fits, but price * quantity does not
        ("9223372036854775808", "invalid_quantity"),
        ("1e19", "invalid_quantity"),
        ("2.5", "invalid_quantity"),
        ("0", "invalid_quantity"),
        ("20e-1", None),
    ],
)
def test_quantity_is_a_positive_64_bit_whole_number(quantity: str, code: str | None) -> None:
    result = mapped({"events": [order([{"id": "x", "price": "0.02", "quantity": quantity}])]})
    assert [r.code for r in result.rejections] == ([] if code is None else [code])


@PROPERTY
@given(
    email=st.one_of(email_text, st.sampled_from(["\u03a3\u0391\u03a3@\u00c9X.COM", "A" * 64, " " + "aB" * 32 + "\n"]))
)
def test_email_hash_agrees(email: str) -> None:
    try:
        want: str | None = button_sidecar.hash_email(email)
    except ValueError:
        want = None
    assert ref.hash_email(email) == want


@PROPERTY
@given(text=st.text(st.sampled_from("0123456789012345678901234567890123456789.+-eE _\u00a0\u0661x"), max_size=30))
def test_money_parsing_agrees(text: str) -> None:
    for currency, exponent in (("USD", 2), ("JPY", 0), ("KWD", 3), ("CLF", 4)):
        try:
            want: int | None = button_sidecar.to_minor_units(text, currency)
        except ValueError:
            want = None
        try:
            got: int | None = scaled_int(parse_decimal(text), exponent)
        except ValueError:
            got = None
        assert got == want, (text, currency)


def test_money_helpers_match_the_rust_ones() -> None:
    for text in NUMBER_TEXTS + NUMERIC_STRINGS:
        for currency, exponent in (("USD", 2), ("JPY", 0), ("KWD", 3), ("CLF", 4)):
            try:
                want: int | str = button_sidecar.to_minor_units(text, currency)
            except ValueError:
                want = "error"
            try:
                got: int | str = scaled_int(parse_decimal(text), exponent)
            except ValueError:
                got = "error"
            assert got == want, (text, currency)


def test_purchase_date_format() -> None:
    assert iso8601_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso8601_ms(1_714_592_744_066) == "2024-05-01T19:45:44.066Z"
    assert iso8601_ms(951_782_400_000) == "2000-02-29T00:00:00.000Z"
    assert iso8601_ms(253_402_300_799_999) == "9999-12-31T23:59:59.999Z"
    assert iso8601_ms(-1) == "1970-01-01T00:00:00.000Z"


def test_reference_config_is_validated_like_rust() -> None:
    for bad in ({"default_currency": "ABC"}, {"application_ids": {"ios": "nope"}}, {"gdpr_purpose": " "}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TransformConfig(**bad)
        with pytest.raises(ValueError, match=next(iter(bad))):
            ReferenceTransformer(RefConfig(**bad))


def test_reference_rejects_what_is_not_a_batch_input() -> None:
    with pytest.raises(TypeError):
        ReferenceTransformer().transform_json(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rust({}).transform_json(5)  # type: ignore[arg-type]


# --- the JSON the core decodes -------------------------------------------------------------------
# The core decodes only the fields it reads (benches/reference.py `BATCH_FIELDS`); elsewhere a lone
# surrogate escape or deep nesting is not an error. A field read as a scalar is decoded on its own.


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        ('{"x": "\\ud800", "events": []}', True),
        ('{"user_identities": {"x": "\\ud800"}}', True),
        ('{"x": {"\\ud800": 1}}', True),
        ('{"events": [{"event_type": "screen_view", "x": "\\ud800", "data": {"y": "\\udc00"}}]}', True),
        ('{"x": ' + "[" * 300 + "]" * 300 + "}", True),
        ('{"x": {"$serde_json::private::Number": 5, "y": 2}}', True),
        ('{"consent_state": ' + nested(126) + "}", True),  # 127 levels with the batch
        ('{"consent_state": ' + nested(127) + "}", False),
        ('{"events": ' + nested(127) + "}", False),
        ('{"mpid": ' + "[" * 127 + "]" * 127 + "}", True),  # counted from the scalar
        ('{"mpid": ' + "[" * 128 + "]" * 128 + "}", False),
        ('{"events": [{"data": {"custom_attributes": {"btn_ref": ' + nested(127) + "}}}]}", True),
        ('{"events": [{"data": {"custom_attributes": {"btn_ref": ' + nested(128) + "}}}]}", False),
        ('{"events": [{"data": {"unread": ' + nested(500) + "}}]}", True),
    ],
)
def test_json_is_checked_where_the_core_decodes(raw: str, valid: bool) -> None:
    assert is_json_batch(raw) == valid
    result = rust({}).transform_json(raw, received_at_ms=RECEIVED_AT_MS)
    assert ("invalid_json" not in [r.code for r in result.rejections]) == valid
    for config in CONFIGS:
        assert_same(config, raw)


# --- regressions: Rust departures from SPEC.md found by this suite, since fixed in the core ------

MAX_USD = "92233720368547758.07"  # i64::MAX cents


@pytest.mark.parametrize(
    ("raw", "rejections"),
    [
        # SPEC 3: total_amount - tax - shipping below zero is a rejection (the core used to wrap around
        # in 64 bits and send a total of 2 cents).
        (
            purchase(
                {
                    "action": "purchase",
                    "transaction_id": "o",
                    "total_amount": 0,
                    "tax_amount": MAX_USD,
                    "shipping_amount": MAX_USD,
                }
            ),
            [(0, "invalid_amount", "events[0].data.product_action.total_amount")],
        ),
        # SPEC 3: only a refund with no products and no total_amount cancels the order (malformed
        # products used to cancel the whole order).
        (
            purchase({"action": "refund", "transaction_id": "o", "products": "oops"}),
            [(0, "invalid_event", "events[0].data.product_action.products")],
        ),
        (
            purchase({"action": "refund", "transaction_id": "o", "products": {}}),
            [(0, "invalid_event", "events[0].data.product_action.products")],
        ),
        # SPEC 2: unknown fields are ignored (this one used to fail the whole batch as invalid_json).
        ('{"events": [], "extra": {"$serde_json::private::Number": "abc"}}', []),
    ],
)
def test_spec_regressions(raw: str, rejections: list[tuple[int, str, str]]) -> None:
    result = ReferenceTransformer().transform_json(raw, received_at_ms=RECEIVED_AT_MS)
    assert [(r.event_index, r.code, r.field) for r in result.rejections] == rejections
    assert not result.requests
    assert_same({}, raw)


def test_numbers_used_as_text_keep_their_spelling() -> None:
    """SPEC 3 `order_id` etc.: the number as written (the core used to give `1e+5` for `1E5`)."""
    raw = (
        '{"mpid": 1E5, "user_identities": {"customer_id": 2.50E-3}, "events": [{"event_type": "commerce_event", '
        '"data": {"product_action": {"action": "purchase", "transaction_id": 1.50e+2, "total_amount": 1, '
        '"products": [{"price": 1, "custom_attributes": {"a": 1E2, "b": -0}}]}}}]}'
    )
    result = ReferenceTransformer().transform_json(raw, received_at_ms=RECEIVED_AT_MS)
    assert result.user_keys == ["mpid:1E5", "customer_id:2.50E-3"]
    assert [r.order_id for r in result.requests] == ["1.50e+2"]
    body = json.loads(result.requests[0].body or b"")
    assert body["line_items"][0]["attributes"] == {"a": "1E2", "b": "-0"}
    assert_same({}, raw)


TOKEN = "$serde_json::private::Number"  # serde_json's internal number marker: a plain key to us


@pytest.mark.parametrize(
    ("raw", "rejections"),
    [
        # SPEC 3: order_id is transaction_id "as a string": an object is not an order id.
        (
            purchase({"action": "purchase", "transaction_id": {TOKEN: "abc"}, "total_amount": 1}),
            [(0, "invalid_order_id", "events[0].data.product_action.transaction_id")],
        ),
        (
            purchase({"action": "purchase", "transaction_id": "o", "total_amount": {TOKEN: "1", "x": 1}}),
            [(0, "invalid_amount", "events[0].data.product_action.total_amount")],
        ),
        # SPEC 2: unknown content is ignored, never an error.
        ('{"consent_state": {"gdpr": {"' + TOKEN + '": 5}}}', []),
    ],
)
def test_serde_number_marker_is_an_ordinary_key(raw: str, rejections: list[tuple[int, str, str]]) -> None:
    """The core used to read numbers through serde_json's marker object, so these were mis-read."""
    result = rust({}).transform_json(raw, received_at_ms=RECEIVED_AT_MS)
    assert [(r.event_index, r.code, r.field) for r in result.rejections] == rejections
    assert not result.requests
    assert_same({}, raw)


@pytest.mark.parametrize(
    ("action", "data", "field"),
    [
        ({"transaction_id": None, "total_amount": "x"}, {"currency_code": "ABC"}, "product_action.transaction_id"),
        ({"total_amount": "x"}, {"currency_code": "ABC", "timestamp_unixtime_ms": -1}, "currency_code"),
        ({"total_amount": "x", "products": 1}, {"timestamp_unixtime_ms": -1}, "timestamp_unixtime_ms"),
        ({"total_amount": "x", "products": [{"price": -1, "quantity": 0}]}, {}, "product_action.products[0].quantity"),
        ({"products": [{"price": -1, "total_product_amount": "x"}]}, {}, "product_action.products[0].price"),
        (
            {"products": [{"price": 1, "total_product_amount": "x"}, 5]},
            {},
            "product_action.products[0].total_product_amount",
        ),
        ({"total_amount": "x", "products": [{"price": 1}, 5]}, {}, "product_action.products[1]"),
        ({"total_amount": "x", "tax_amount": "x"}, {}, "product_action.total_amount"),
        ({"total_amount": 1, "tax_amount": "x", "shipping_amount": "x"}, {}, "product_action.tax_amount"),
        ({"total_amount": 1, "tax_amount": 1, "shipping_amount": "x"}, {}, "product_action.shipping_amount"),
        ({"total_amount": 1, "tax_amount": 1, "shipping_amount": 1}, {}, "product_action.total_amount"),
    ],
)
def test_the_first_bad_field_of_a_purchase_is_rejected(
    action: dict[str, Any], data: dict[str, Any], field: str
) -> None:
    event = {
        "event_type": "commerce_event",
        "data": {"product_action": {"action": "purchase", "transaction_id": "o", **action}, **data},
    }
    result = mapped({"events": [event]})
    assert [r.field for r in result.rejections] == [f"events[0].data.{field}"]
