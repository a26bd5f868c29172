"""Hostile input through the real gRPC and HTTP endpoints of a sidecar process.

Every payload gets a clear refusal (gRPC INVALID_ARGUMENT / HTTP 400 with the reason, RESOURCE_EXHAUSTED / 413 for
size) or a rejection naming the field (gRPC: in the response; HTTP: counted by code and logged with the field,
never the value); meanwhile a well-formed caller keeps getting its orders through on both endpoints, and at the
end the server is healthy, delivered every good order and its memory stayed bounded.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc  # type: ignore[import-untyped]
import orjson
import pytest
from button_sidecar.v1 import sidecar_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Sandbox, wait_for
from tests.hardening.support import (
    SERVING,
    RssWatch,
    post_events,
    rpc_error,
    running_server,
)
from tests.http_client import HttpAnswer, http_call
from tests.pipeline.helpers import PURCHASE_MS
from tests.server.helpers import SidecarProcess, batch, health_status, ingest_json, purchase, stub_for
from tests.typed_batch import batch_from_json

DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
BIG_MAX_MESSAGE = 16 * 1024 * 1024
TEN_MB = 10 * 1024 * 1024
DEEP = 10_000
# Generous: a 100,000-event batch and its response pass through this process; what matters is that it levels off.
RSS_GROWTH_LIMIT_MIB = 256.0
RSS_REPEAT_GROWTH_LIMIT_MIB = 32.0


# -- a well-formed caller running all along -----------------------------------------------------------------


@dataclass
class SteadyCaller:
    """Sends a well-formed purchase every few milliseconds, alternating gRPC and HTTP, from its own thread."""

    server: SidecarProcess
    accepted: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="steady-caller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        with stub_for(self.server.address) as stub:
            n = 0
            while not self._stop.wait(0.02):
                n += 1
                order_id = f"steady-{n}"
                raw = batch(purchase(order_id), source_request_id=f"steady-src-{n}")
                try:
                    if n % 2:
                        response = stub.Ingest(ingest_json(raw), timeout=30)
                        ok = response.counts.accepted == 1
                    else:
                        ok = post_events(self.server.http_url, raw).status == 202
                except Exception as error:  # any failure of a good call is what this test looks for
                    self.failures.append(f"{order_id}: {type(error).__name__}: {error}")
                    continue
                (self.accepted if ok else self.failures).append(order_id)


@pytest.fixture(scope="module")
def server(module_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    """A sidecar with the default limits (4 MiB gRPC messages, 128 KiB HTTP batches)."""
    with running_server(tmp_path_factory.mktemp("hostile"), module_sandbox) as process:
        yield process


@pytest.fixture(scope="module")
def big_server(module_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    """A sidecar taking gRPC messages of up to 16 MiB, for 10 MB strings."""
    extra = f"[grpc]\nmax_message_bytes = {BIG_MAX_MESSAGE}\n"
    with running_server(tmp_path_factory.mktemp("hostile-big"), module_sandbox, extra_toml=extra) as process:
        yield process


@pytest.fixture(scope="module")
def rss(server: SidecarProcess) -> RssWatch:
    with stub_for(server.address) as stub:  # warmed up: the first calls load code and fill caches
        stub.Ingest(ingest_json(batch(purchase("warm-up"))), timeout=10)
    post_events(server.http_url, batch(purchase("warm-up-http")))
    return RssWatch(server.process.pid)


@pytest.fixture(scope="module")
def steady(server: SidecarProcess, rss: RssWatch) -> Iterator[SteadyCaller]:
    caller = SteadyCaller(server)
    caller.start()
    yield caller
    caller.stop()


@pytest.fixture(autouse=True)
def _healthy_after(request: pytest.FixtureRequest, steady: SteadyCaller) -> Iterator[None]:
    """Every test runs with the steady caller going, and leaves the servers it used SERVING."""
    yield
    for name in ("server", "big_server"):
        if name in request.fixturenames:
            target: SidecarProcess = request.getfixturevalue(name)
            assert target.process.poll() is None, f"the sidecar died:\n{target.output()}"
            assert health_status(target.address) == SERVING


# -- helpers --------------------------------------------------------------------------------------------------


def grpc_ingest(server: SidecarProcess, raw: bytes) -> pb.IngestResponse:
    with stub_for(server.address) as stub:
        response: pb.IngestResponse = stub.Ingest(ingest_json(raw), timeout=60)
        return response


def grpc_refusal(server: SidecarProcess, raw: bytes) -> grpc.RpcError:
    with stub_for(server.address) as stub:
        return rpc_error(lambda: stub.Ingest(ingest_json(raw), timeout=60))


def metric(server: SidecarProcess, name: str, **labels: str) -> float:
    answer = http_call(server.http_url, "GET", "/metrics")
    assert answer.status == 200
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def order_at_sandbox(sandbox: Sandbox, order_id: str, timeout: float = 20.0) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def arrived() -> bool:
        found.update({str(o["order_id"]): o for o in sandbox.orders()})
        return order_id in found

    wait_for(arrived, timeout, f"order {order_id} at the sandbox")
    order: dict[str, Any] = found[order_id]
    return order


def log_mentions(server: SidecarProcess, text: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while text not in server.output():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- unusable payloads -----------------------------------------------------------------------------------------


def _good(order_id: str) -> bytes:
    return batch(purchase(order_id))


UNUSABLE: list[tuple[str, bytes, str, str]] = [
    ("truncated", _good("u-trunc")[:-9], "invalid_json", "EOF while parsing"),
    ("truncated_in_a_string", _good("u-trunc2")[:40], "invalid_json", "EOF while parsing"),
    ("empty", b"", "invalid_json", "EOF while parsing"),
    ("invalid_utf8_in_a_read_field", _good("u-utf8").replace(b"u-utf8", b"u-\xff\xfe"), "invalid_json", "UTF-8"),
    (
        "invalid_utf8_in_an_ignored_field",
        batch(purchase("u-utf8b"), note="@@").replace(b"@@", b"\xc3\x28"),
        "invalid_json",
        "UTF-8",
    ),
    ("overlong_utf8", _good("u-overlong").replace(b"u-overlong", b"u-\xc0\xaf"), "invalid_json", "UTF-8"),
    ("nested_10000_deep_in_events", b'{"events":' + b"[" * DEEP + b"]" * DEEP + b"}", "invalid_json", "recursion"),
    (
        "nested_10000_deep_objects_in_a_read_field",
        _good("u-deep").replace(
            b'"data":{', b'"data":{"custom_attributes":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b",", 1
        ),
        "invalid_json",
        "recursion",
    ),
    ("nested_10000_deep_at_the_top", b"[" * DEEP + b"]" * DEEP, "invalid_json", "recursion"),
    ("nan", _good("u-nan").replace(b'"10.00"', b"NaN"), "invalid_json", "expected value"),
    ("infinity", _good("u-inf").replace(b'"10.00"', b"Infinity"), "invalid_json", "expected value"),
    ("minus_infinity", _good("u-minf").replace(b'"10.00"', b"-Infinity"), "invalid_json", "not valid JSON"),
    ("hex_number", _good("u-hex").replace(b'"10.00"', b"0x10"), "invalid_json", "not valid JSON"),
    ("lone_surrogate_in_a_read_field", _good("u-surr").replace(b"u-surr", b"\\ud800"), "invalid_json", "escape"),
    ("trailing_garbage", _good("u-trail") + b" {}", "invalid_json", "trailing characters"),
    ("single_quotes", b"{'events': []}", "invalid_json", "key must be a string"),
    ("not_an_object", b"[1, 2]", "invalid_batch", "must be a JSON object"),
    ("a_string", b'"events"', "invalid_batch", "must be a JSON object"),
    ("events_an_object", b'{"events": {"0": {}}}', "invalid_batch", "events: must be an array"),
    ("events_a_number", b'{"events": 12}', "invalid_batch", "events: must be an array"),
    ("duplicate_events_last_not_an_array", _good("u-dup")[:-1] + b',"events": 5}', "invalid_batch", "events"),
]


@pytest.mark.parametrize(("name", "raw", "code", "reason"), UNUSABLE, ids=[case[0] for case in UNUSABLE])
def test_an_unusable_payload_is_refused_with_the_reason_on_both_endpoints(
    server: SidecarProcess, name: str, raw: bytes, code: str, reason: str
) -> None:
    error = grpc_refusal(server, raw)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, error.details())
    assert code in error.details() and reason in error.details(), error.details()

    answer = post_events(server.http_url, raw)
    assert answer.status == 400, (name, answer.body[:200])
    assert answer.error["code"] == "BAD_REQUEST"
    assert code in answer.error["message"] and reason in answer.error["message"], answer.error


def test_deep_nesting_in_fields_the_mapping_skips_costs_no_recursion(
    server: SidecarProcess, module_sandbox: Sandbox
) -> None:
    """Unknown fields, and unknown keys inside read objects, are scanned without being built (the README's
    "scanned and dropped"): 100,000 levels there neither overflow a stack nor sink the batch."""
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    raw = batch(purchase("deep-ignored"), note="@@").replace(b'"@@"', deep)
    raw = raw.replace(b'"user_identities":{', b'"user_identities":{"nested":' + deep + b",", 1)
    response = grpc_ingest(server, raw)
    assert (response.counts.accepted, response.counts.rejected) == (1, 0), response
    assert post_events(server.http_url, raw.replace(b"deep-ignored", b"deep-ignored-http")).status in (202, 413)
    order_at_sandbox(module_sandbox, "deep-ignored")


def test_garbage_protobuf_is_invalid_argument(server: SidecarProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        ingest = channel.unary_unary("/button_sidecar.v1.Sidecar/Ingest")  # raw bytes in, raw bytes out
        for raw in (
            b"\xff" * 64,
            b"\x12\xff\xff\xff\xff\x0f",
            pb.IngestRequest(batch=batch_from_json(_good("pb"))).SerializeToString()[:-3],
        ):
            error = rpc_error(lambda raw=raw: ingest(raw, timeout=10))  # type: ignore[misc]
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert "invalid_protobuf" in error.details() or "payload" in error.details(), error.details()


# -- a wrong type in every field the mapping reads ---------------------------------------------------------------

PA = ("events", 0, "data", "product_action")
PRODUCT = (*PA, "products", 0)
DATA = ("events", 0, "data")
# Values of a wrong JSON type for the field (an object where an object belongs still gets hostile keys).
HOSTILE_VALUES: list[tuple[str, object]] = [("object", {"$gt": ""}), ("array", ["x", 1]), ("boolean", True)]
NOT_AN_OBJECT: list[tuple[str, object]] = [("array", [{"$gt": ""}]), ("boolean", True), ("string", "$gt")]
NOT_AN_ARRAY: list[tuple[str, object]] = [("object", {"$gt": ""}), ("boolean", True), ("string", "$gt")]
OBJECT_FIELDS = frozenset({"event", "data", "product_action", "product"})


def base_batch(order_id: str) -> dict[str, Any]:
    """A batch using every field the mapping reads: a purchase with tax, shipping and one product, identities, a
    device, a 1022 token, and a later deep link."""
    product = {
        "id": "sku-1",
        "name": "Shoes",
        "brand": "acme",
        "category": "shoes",
        "price": "10.00",
        "quantity": 2,
        "total_product_amount": "20.00",
        "custom_attributes": {"color": "red"},
    }
    action = {
        "action": "purchase",
        "transaction_id": order_id,
        "total_amount": "23.00",
        "tax_amount": "1.00",
        "shipping_amount": "2.00",
        "products": [product],
    }
    return {
        "environment": "production",
        "mpid": 7346244611012968789,
        "source_request_id": f"src-{order_id}",
        "timestamp_unixtime_ms": PURCHASE_MS,
        "user_identities": {"customer_id": "cust-7", "email": "buyer@example.com"},
        "device_info": {"platform": "ios", "ios_advertising_id": "6D92078A-8246-4BA4-AE5B-76104861E7DC"},
        "integration_attributes": {"1022": {"com.usebutton.source_token": "srctok-hostile1"}},
        "events": [
            {
                "event_type": "commerce_event",
                "data": {
                    "currency_code": "USD",
                    "timestamp_unixtime_ms": PURCHASE_MS,
                    "custom_attributes": {"btn_ref": "srctok-hostile2"},
                    "product_action": action,
                },
            },
            {
                "event_type": "application_state_transition",
                "data": {
                    "application_transition_type": "application_initialized",
                    "launch_referral": "https://shop.example/?btn_ref=srctok-hostile3",
                    "timestamp_unixtime_ms": PURCHASE_MS + 1,
                },
            },
        ],
    }


@dataclass(frozen=True)
class Rejected:
    """The event is rejected with `code` at the field's JSON path."""

    code: str
    path: str


@dataclass(frozen=True)
class Skipped:
    """Understood and deliberately not sent (counted as skipped)."""


@dataclass(frozen=True)
class Ignored:
    """Lenient, as the README says of real traffic: the value is treated as absent and the order goes out without
    what it would have given; `lacks(order)` is true of the order at the sandbox."""

    lacks: Callable[[dict[str, Any]], bool]


def _customer(order: dict[str, Any]) -> dict[str, Any]:
    customer: dict[str, Any] = order.get("customer") or {}
    return customer


def _item(order: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = order["line_items"][0]
    return item


Expectation = Rejected | Skipped | Ignored
FIELDS: list[tuple[str, tuple[str | int, ...], Expectation]] = [
    ("event", ("events", 0), Rejected("invalid_event", "events[0]")),
    ("event_type", ("events", 0, "event_type"), Skipped()),
    ("data", DATA, Rejected("invalid_event", "events[0].data")),
    ("product_action", PA, Rejected("invalid_event", "events[0].data.product_action")),
    ("action", (*PA, "action"), Skipped()),
    (
        "transaction_id",
        (*PA, "transaction_id"),
        Rejected("invalid_order_id", "events[0].data.product_action.transaction_id"),
    ),
    ("currency_code", (*DATA, "currency_code"), Rejected("invalid_currency", "events[0].data.currency_code")),
    ("total_amount", (*PA, "total_amount"), Rejected("invalid_amount", "events[0].data.product_action.total_amount")),
    ("tax_amount", (*PA, "tax_amount"), Rejected("invalid_amount", "events[0].data.product_action.tax_amount")),
    (
        "shipping_amount",
        (*PA, "shipping_amount"),
        Rejected("invalid_amount", "events[0].data.product_action.shipping_amount"),
    ),
    ("products", (*PA, "products"), Rejected("invalid_event", "events[0].data.product_action.products")),
    ("product", PRODUCT, Rejected("invalid_event", "events[0].data.product_action.products[0]")),
    (
        "product.price",
        (*PRODUCT, "price"),
        Rejected("invalid_amount", "events[0].data.product_action.products[0].price"),
    ),
    (
        "product.quantity",
        (*PRODUCT, "quantity"),
        Rejected("invalid_quantity", "events[0].data.product_action.products[0].quantity"),
    ),
    (
        "product.total_product_amount",
        (*PRODUCT, "total_product_amount"),
        Rejected("invalid_amount", "events[0].data.product_action.products[0].total_product_amount"),
    ),
    (
        "timestamp_unixtime_ms",
        (*DATA, "timestamp_unixtime_ms"),
        Rejected("invalid_timestamp", "events[0].data.timestamp_unixtime_ms"),
    ),
    ("product.id", (*PRODUCT, "id"), Ignored(lambda o: "sku" not in _item(o) and _item(o)["identifier"] == "Shoes")),
    ("product.name", (*PRODUCT, "name"), Ignored(lambda o: "description" not in _item(o))),
    ("product.category", (*PRODUCT, "category"), Ignored(lambda o: "category" not in _item(o))),
    ("product.brand", (*PRODUCT, "brand"), Ignored(lambda o: "brand" not in _item(o).get("attributes", {}))),
    (
        "product.custom_attributes",
        (*PRODUCT, "custom_attributes"),
        Ignored(lambda o: "color" not in _item(o).get("attributes", {})),
    ),
    ("event.custom_attributes", (*DATA, "custom_attributes"), Ignored(lambda o: o["btn_ref"] == "srctok-hostile1")),
    ("user_identities", ("user_identities",), Ignored(lambda o: set(_customer(o)) == {"device_id"})),
    ("customer_id", ("user_identities", "customer_id"), Ignored(lambda o: "id" not in _customer(o))),
    ("email", ("user_identities", "email"), Ignored(lambda o: "email_sha256" not in _customer(o))),
    ("device_info", ("device_info",), Ignored(lambda o: "device_id" not in _customer(o))),
    ("ios_advertising_id", ("device_info", "ios_advertising_id"), Ignored(lambda o: "device_id" not in _customer(o))),
    ("platform", ("device_info", "platform"), Ignored(lambda o: "device_id" in _customer(o))),
    ("integration_attributes", ("integration_attributes",), Ignored(lambda o: o["btn_ref"] == "srctok-hostile2")),
    (
        "integration_attributes.1022",
        ("integration_attributes", "1022"),
        Ignored(lambda o: o["btn_ref"] == "srctok-hostile2"),
    ),
    ("launch_referral", ("events", 1, "data", "launch_referral"), Ignored(lambda o: o["btn_ref"] == "srctok-hostile1")),
    ("batch.timestamp_unixtime_ms", ("timestamp_unixtime_ms",), Ignored(lambda o: "purchase_date" in o)),
    ("source_request_id", ("source_request_id",), Ignored(lambda o: True)),
    ("environment", ("environment",), Ignored(lambda o: True)),
    ("mpid", ("mpid",), Ignored(lambda o: True)),
]
FIELD_CASES = [
    pytest.param(name, path, expect, value, transport, id=f"{name}-{kind}-{transport}")
    for name, path, expect in FIELDS
    for kind, value in (
        NOT_AN_OBJECT if name in OBJECT_FIELDS else NOT_AN_ARRAY if name == "products" else HOSTILE_VALUES
    )
    for transport in ("grpc", "http")
]


def _set(document: Any, path: tuple[str | int, ...], value: object) -> None:
    for key in path[:-1]:
        document = document[key]
    document[path[-1]] = value


@pytest.mark.parametrize(("name", "path", "expect", "value", "transport"), FIELD_CASES)
def test_a_wrong_type_in_a_mapped_field_is_a_rejection_naming_it_or_treated_as_absent(
    server: SidecarProcess,
    module_sandbox: Sandbox,
    name: str,
    path: tuple[str | int, ...],
    expect: Expectation,
    value: object,
    transport: str,
) -> None:
    order_id = f"f-{name}-{type(value).__name__}-{transport}"
    document = base_batch(order_id)
    _set(document, path, copy.deepcopy(value))
    raw = orjson.dumps(document)
    if transport == "grpc":
        response = grpc_ingest(server, raw)
        if isinstance(expect, Rejected):
            [rejection] = response.rejections
            assert (rejection.event_index, rejection.code, rejection.field) == (0, expect.code, expect.path)
            assert rejection.message.startswith(expect.path + ": ")
            assert "$gt" not in rejection.message and "True" not in rejection.message  # never the value
            assert response.counts.accepted == 0 and not response.queued
        elif isinstance(expect, Skipped):
            assert (response.counts.accepted, response.counts.skipped, response.counts.rejected) == (0, 1, 0)
        else:
            assert (response.counts.accepted, response.counts.rejected) == (1, 0), response
    else:
        code = expect.code if isinstance(expect, Rejected) else None
        before = metric(server, "button_sidecar_rejected_events_total", code=code) if code else 0.0
        assert post_events(server.http_url, raw).status == 202
        if isinstance(expect, Rejected):
            assert metric(server, "button_sidecar_rejected_events_total", code=expect.code) == before + 1
            assert log_mentions(server, f"{expect.code} at {expect.path}"), "the rejection is logged with its field"
    if isinstance(expect, Ignored):
        assert expect.lacks(order_at_sandbox(module_sandbox, order_id)), name
    else:
        assert order_id not in {o["order_id"] for o in module_sandbox.orders()}


# -- numbers: NaN, infinities, exponents, huge digit strings --------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """The order goes out with these Button fields."""

    fields: dict[str, object]


NUMBERS: list[tuple[str, tuple[str | int, ...], bytes, Rejected | Accepted]] = [
    (
        "total_1e999999",
        (*PA, "total_amount"),
        b"1e999999",
        Rejected("invalid_amount", "events[0].data.product_action.total_amount"),
    ),
    (
        "total_huge_digits",
        (*PA, "total_amount"),
        b"9" * 5000,
        Rejected("invalid_amount", "events[0].data.product_action.total_amount"),
    ),
    (
        "total_nan_text",
        (*PA, "total_amount"),
        b'"NaN"',
        Rejected("invalid_amount", "events[0].data.product_action.total_amount"),
    ),
    (
        "total_infinity_text",
        (*PA, "total_amount"),
        b'"Infinity"',
        Rejected("invalid_amount", "events[0].data.product_action.total_amount"),
    ),
    (
        "total_hex_text",
        (*PA, "total_amount"),
        b'"0x10"',
        Rejected("invalid_amount", "events[0].data.product_action.total_amount"),
    ),
    (
        "total_fullwidth_digits",
        (*PA, "total_amount"),
        '"\uff11\uff12"'.encode(),
        Rejected("invalid_amount", "events[0].data.product_action.total_amount"),
    ),
    (
        "total_minus_tiny",
        (*PA, "total_amount"),
        b"-1E-400",
        Rejected("invalid_amount", "events[0].data.product_action.total_amount"),
    ),
    ("total_minus_zero", (*PA, "total_amount"), b"-0", Accepted({"total": 0})),
    ("total_1E-400", (*PA, "total_amount"), b"1E-400", Accepted({"total": 0})),
    ("total_1e-999999", (*PA, "total_amount"), b"1e-999999", Accepted({"total": 0})),
    ("total_exponent_text", (*PA, "total_amount"), b'"1e2"', Accepted({"total": 10000})),
    (
        "quantity_1e999999",
        (*PRODUCT, "quantity"),
        b"1e999999",
        Rejected("invalid_quantity", "events[0].data.product_action.products[0].quantity"),
    ),
    (
        "quantity_1E-400",
        (*PRODUCT, "quantity"),
        b"1E-400",
        Rejected("invalid_quantity", "events[0].data.product_action.products[0].quantity"),
    ),
    (
        "quantity_fraction",
        (*PRODUCT, "quantity"),
        b"2.5",
        Rejected("invalid_quantity", "events[0].data.product_action.products[0].quantity"),
    ),
    (
        "quantity_huge_digits",
        (*PRODUCT, "quantity"),
        b"9" * 5000,
        Rejected("invalid_quantity", "events[0].data.product_action.products[0].quantity"),
    ),
    ("quantity_exponent", (*PRODUCT, "quantity"), b"2e0", Accepted({"line_items": [2]})),
    (
        "timestamp_1e999999",
        (*DATA, "timestamp_unixtime_ms"),
        b"1e999999",
        Rejected("invalid_timestamp", "events[0].data.timestamp_unixtime_ms"),
    ),
    (
        "timestamp_negative",
        (*DATA, "timestamp_unixtime_ms"),
        b"-1",
        Rejected("invalid_timestamp", "events[0].data.timestamp_unixtime_ms"),
    ),
    (
        "timestamp_year_10000",
        (*DATA, "timestamp_unixtime_ms"),
        b"253402300800000",
        Rejected("invalid_timestamp", "events[0].data.timestamp_unixtime_ms"),
    ),
    (
        "timestamp_exponent",
        (*DATA, "timestamp_unixtime_ms"),
        b"1.714592744066e12",
        Accepted({"purchase_date": "2024-05-01T19:45:44.066Z"}),
    ),
    ("order_id_a_huge_number", (*PA, "transaction_id"), b"1" * 255, Accepted({"order_id": "1" * 255})),
    (
        "order_id_256_digits",
        (*PA, "transaction_id"),
        b"1" * 256,
        Rejected("invalid_order_id", "events[0].data.product_action.transaction_id"),
    ),
    (
        "order_id_nul",
        (*PA, "transaction_id"),
        b'"a\\u0000b"',
        Rejected("invalid_order_id", "events[0].data.product_action.transaction_id"),
    ),
]


@pytest.mark.parametrize(("name", "path", "text", "expect"), NUMBERS, ids=[case[0] for case in NUMBERS])
def test_number_tricks_are_exact_or_rejected_naming_the_field(
    server: SidecarProcess,
    module_sandbox: Sandbox,
    name: str,
    path: tuple[str | int, ...],
    text: bytes,
    expect: Rejected | Accepted,
) -> None:
    order_id = f"n-{name}"
    document = base_batch(order_id)
    del document["events"][0]["data"]["product_action"]["tax_amount"]
    del document["events"][0]["data"]["product_action"]["shipping_amount"]
    _set(document, path, "@@number@@")
    raw = orjson.dumps(document).replace(b'"@@number@@"', text)
    response = grpc_ingest(server, raw)
    if isinstance(expect, Rejected):
        [rejection] = response.rejections
        assert (rejection.code, rejection.field) == (expect.code, expect.path), rejection
        assert len(rejection.message) < 200  # the 5,000 digits are not repeated
        return
    assert response.counts.accepted == 1, response
    created = expect.fields.get("order_id", order_id)
    order = order_at_sandbox(module_sandbox, str(created))
    for key, wanted in expect.fields.items():
        if key == "line_items":
            assert [item["quantity"] for item in order["line_items"]] == wanted
        else:
            assert order[key] == wanted, (key, order)


def test_duplicate_keys_take_the_last_value_on_both_endpoints(server: SidecarProcess, module_sandbox: Sandbox) -> None:
    for transport in ("grpc", "http"):
        first, last = f"dup-first-{transport}", f"dup-last-{transport}"
        raw = batch(purchase(first)).replace(
            f'"transaction_id":"{first}"'.encode(), f'"transaction_id":"{first}","transaction_id":"{last}"'.encode()
        )
        assert raw.count(b"transaction_id") == 2
        if transport == "grpc":
            assert [q.order_id for q in grpc_ingest(server, raw).queued] == [last]
        else:
            assert post_events(server.http_url, raw).status == 202
        order_at_sandbox(module_sandbox, last)
        assert first not in {o["order_id"] for o in module_sandbox.orders()}


# -- size ----------------------------------------------------------------------------------------------------------


def test_oversize_messages_are_refused_and_nothing_is_held(server: SidecarProcess) -> None:
    over = batch(purchase("too-big"), padding="x" * DEFAULT_MAX_MESSAGE)
    error = grpc_refusal(server, over)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert "larger than max" in error.details()

    for path, size in (("/v2/events", 128 * 1024 + 1), ("/v2/events", TEN_MB), ("/v2/bulkevents", 256 * 1024 + 1)):
        body = batch(purchase("too-big-http"), padding="x" * size)
        if path.endswith("bulkevents"):
            body = b"[" + body + b"]"
        answer: HttpAnswer | None = None
        # aiohttp may close the connection once it answered, before the client finished sending 10 MB.
        with contextlib.suppress(OSError):
            answer = http_call(server.http_url, "POST", path, body)
        assert answer is None or (answer.status == 413 and answer.error["code"] == "REQUEST_TOO_LARGE"), answer


def test_ten_megabyte_strings_over_grpc(big_server: SidecarProcess, module_sandbox: Sandbox) -> None:
    ten_mb = "9" * TEN_MB
    # In the order id: a rejection naming the field, without the value.
    raw = batch(purchase("x")).replace(b'"transaction_id":"x"', f'"transaction_id":"{ten_mb}"'.encode())
    response = grpc_ingest(big_server, raw)
    [rejection] = response.rejections
    assert (rejection.code, rejection.field) == ("invalid_order_id", "events[0].data.product_action.transaction_id")
    assert len(rejection.message) < 200 and response.ByteSize() < 1000
    # In a field the mapping does not read: ignored; the order goes out.
    response = grpc_ingest(big_server, batch(purchase("ten-mb-ignored"), padding=ten_mb))
    assert response.counts.accepted == 1
    # As the email: hashed like any other (trimmed, lower-cased), never stored or sent in clear.
    email = "  " + "A" * TEN_MB + "@Example.COM "
    response = grpc_ingest(big_server, batch(purchase("ten-mb-email"), email=email))
    assert response.counts.accepted == 1
    order = order_at_sandbox(module_sandbox, "ten-mb-email")
    assert order["customer"]["email_sha256"] == hashlib.sha256(email.strip().lower().encode()).hexdigest()
    order_at_sandbox(module_sandbox, "ten-mb-ignored")
    # Past the raised limit: RESOURCE_EXHAUSTED.
    error = grpc_refusal(big_server, batch(purchase("over-16"), padding="x" * BIG_MAX_MESSAGE))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_100000_events_in_one_batch(server: SidecarProcess, module_sandbox: Sandbox) -> None:
    # JSON, 100,000 events the mapping skips and one purchase: one order, 100,000 skips.
    events = [{"event_type": "custom_event", "data": {}}] * 100_000 + [purchase("hundred-k")]
    raw = orjson.dumps({"events": events})
    assert len(raw) < DEFAULT_MAX_MESSAGE
    response = grpc_ingest(server, raw)
    assert (response.counts.accepted, response.counts.skipped) == (1, 100_000)
    order_at_sandbox(module_sandbox, "hundred-k")


def test_100000_rejected_events_answer_ok_within_the_message_limit(
    server: SidecarProcess, module_sandbox: Sandbox
) -> None:
    """A legal request (2.4 MB, typed) whose 100,000 events are all rejected, plus one good purchase. Listing every
    rejection would make a ~13 MB response, over the 4 MiB limit: the order is queued, so the call must still
    answer OK (the rejections listed only up to what fits), not fail after the fact."""
    bad = {
        "event_type": "commerce_event",
        "data": {"product_action": {"action": "purchase", "products": [{"id": "a", "price": "1"}]}},
    }
    typed = batch_from_json(
        orjson.dumps({"source_request_id": "hundred-k-bad", "events": [purchase("hundred-k-ok")] + [bad] * 100_000})
    )
    request = pb.IngestRequest(batch=typed)
    assert request.ByteSize() < DEFAULT_MAX_MESSAGE
    with stub_for(server.address) as stub:
        response = stub.Ingest(request, timeout=60)
    assert response.counts.accepted == 1 and response.counts.rejected == 100_000
    assert response.ByteSize() <= DEFAULT_MAX_MESSAGE
    assert response.rejections and response.rejections[0].code == "missing_order_id"
    order_at_sandbox(module_sandbox, "hundred-k-ok")


def test_a_batch_of_bad_events_does_not_flood_the_log(server: SidecarProcess) -> None:
    """1,600 rejected events fit in one 128 KiB HTTP batch. Logging one line per rejected event turns each such
    request into 1,600 log lines (about 290 KB, and some 20 ms of the event loop): a cheap way to flood the logs
    and stall the server. The rejections are counted by code in /metrics; the log needs a summary per batch."""
    bad = {"event_type": "commerce_event", "data": {"product_action": {"action": "purchase"}}}
    raw = orjson.dumps({"events": [bad] * 1600})
    assert len(raw) < 128 * 1024
    before = len(server.output().splitlines())
    assert post_events(server.http_url, raw).status == 202
    time.sleep(0.3)
    written = len(server.output().splitlines()) - before
    assert written <= 10, f"one request wrote {written} log lines"


# -- last: the good caller got through, the server is healthy, memory is bounded -----------------------------


def test_zz_good_callers_got_through_and_memory_stayed_bounded(
    server: SidecarProcess, module_sandbox: Sandbox, steady: SteadyCaller, rss: RssWatch
) -> None:
    # Three more rounds of hostile payloads: memory levels off (no leak per bad request).
    def hostile_round() -> None:
        for _, raw, _, _ in UNUSABLE:
            grpc_refusal(server, raw)
            post_events(server.http_url, raw)
        for name, path, _ in FIELDS[:16]:
            document = base_batch(f"rss-{name}")
            _set(document, path, {"$gt": ""})
            grpc_ingest(server, orjson.dumps(document))

    hostile_round()
    after_first = rss.now()
    hostile_round()
    hostile_round()
    repeat_growth = (rss.now() - after_first) / 2**20
    assert repeat_growth < RSS_REPEAT_GROWTH_LIMIT_MIB, f"RSS grew {repeat_growth:.1f} MiB over two more rounds"
    assert rss.growth_mib() < RSS_GROWTH_LIMIT_MIB, f"RSS grew {rss.growth_mib():.1f} MiB in this module"

    steady.stop()
    assert steady.failures == [], steady.failures[:5]
    assert len(steady.accepted) >= 50, "the steady caller should have made many calls meanwhile"
    with stub_for(server.address) as stub:

        def all_delivered() -> bool:
            states = [stub.GetOrder(pb.GetOrderRequest(order_id=o), timeout=5).state for o in steady.accepted[-20:]]
            return all(state == pb.OrderStatus.DELIVERED for state in states)

        wait_for(all_delivered, 30, "the steady caller's orders to be delivered")
    delivered = {str(o["order_id"]) for o in module_sandbox.orders()}
    missing = [order_id for order_id in steady.accepted if order_id not in delivered]
    assert missing == [], missing[:5]
    assert health_status(server.address) == SERVING
    healthz = http_call(server.http_url, "GET", "/healthz")
    assert healthz.status == 200
