"""The sandbox over real sockets: Button routes, strict validation, fault injection, admin endpoints, CLI."""

from __future__ import annotations

import asyncio
import base64
import copy
import gc
import re
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from button_sidecar.sandbox import FaultConfig, SandboxConfig, SandboxServer

from tests.conftest import SANDBOX_API_KEY, Sandbox, SandboxFactory
from tests.http_client import HttpAnswer
from tests.sandbox.helpers import new_order

BUTTON_ORDER_ID = re.compile(r"btnorder-[0-9a-f]{16}")


def order_path(order_id: str) -> str:
    return "/v1/order/" + quote(order_id, safe="")


def create(sandbox: Sandbox, order: dict[str, object]) -> HttpAnswer:
    return sandbox.request("POST", "/v1/order", order)


def auth_header(api_key: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(api_key, "")}


def as_object(value: object) -> dict[str, object]:
    assert isinstance(value, dict), value
    return value


# -- auth ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_key", "authorization"),
    [
        pytest.param(None, "", id="missing"),
        pytest.param("sk-wrong", None, id="wrong-key"),
        pytest.param(None, "Basic " + base64.b64encode(b"sk-test-sandbox-key:pw").decode(), id="non-empty-password"),
        pytest.param(None, "Bearer sk-test-sandbox-key", id="not-basic"),
        pytest.param(None, "Basic %%%", id="malformed"),
    ],
)
def test_bad_credentials_get_401(sandbox: Sandbox, api_key: str | None, authorization: str | None) -> None:
    reply = sandbox.request("POST", "/v1/order", new_order(), api_key=api_key, authorization=authorization)
    assert reply.status == 401
    assert reply.json == {"meta": {"status": "error"}, "error": {"message": "Invalid api_key", "type": "unauthorized"}}
    assert sandbox.orders() == []


def test_api_key_is_never_printed_or_logged(sandbox_factory: SandboxFactory) -> None:
    secret = "sk-do-not-print-me-4711"
    server = sandbox_factory("--log-level", "debug", api_key=secret)
    assert create(server, new_order()).status == 200
    assert server.request("GET", order_path("order-1"), api_key="sk-wrong").status == 401
    log = server.requests()
    assert log and all("Authorization" not in as_object(entry["headers"]) for entry in log)
    assert secret not in orjson.dumps(log).decode()
    server.process.terminate()
    assert server.process.wait(timeout=5) == 0  # SIGTERM is a clean shutdown
    assert secret not in server.stderr()


# -- orders ----------------------------------------------------------------------------------------------


def test_create_get_update_delete_round_trip(sandbox: Sandbox) -> None:
    order = new_order()
    created = as_object(create(sandbox, order).data)
    assert BUTTON_ORDER_ID.fullmatch(str(created["button_order_id"]))
    assert created["status"] == "open"
    assert isinstance(created["finalization_date"], str)
    for key, value in order.items():
        assert created[key] == value

    got = sandbox.request("GET", order_path("order-1"))
    assert got.status == 200 and got.data == created

    # Full-state update without btn_ref: everything is replaced, the token is kept.
    update = {"total": 1500, "currency": "USD", "purchase_date": "2017-07-25T08:23:52Z", "line_items": []}
    updated = as_object(sandbox.request("POST", order_path("order-1"), update).data)
    assert updated["total"] == 1500
    assert updated["line_items"] == []
    assert updated["customer"] is None
    assert updated["btn_ref"] == order["btn_ref"]
    assert updated["button_order_id"] == created["button_order_id"]
    assert updated["finalization_date"] == created["finalization_date"]

    deleted = sandbox.request("DELETE", order_path("order-1"))
    assert deleted.status == 200
    assert deleted.json == {"meta": {"status": "ok"}, "object": None}
    assert as_object(sandbox.request("GET", order_path("order-1")).data)["status"] == "deleted"
    # A retried cancel is not an error.
    assert sandbox.request("DELETE", order_path("order-1")).status == 200
    assert [o["status"] for o in sandbox.orders()] == ["deleted"]


def test_update_may_repeat_the_order_id_and_replace_btn_ref(sandbox: Sandbox) -> None:
    create(sandbox, new_order())
    update = new_order(btn_ref="srctok-new", total=10)
    updated = as_object(sandbox.request("POST", order_path("order-1"), update).data)
    assert updated["btn_ref"] == "srctok-new"
    assert updated["total"] == 10


def test_duplicate_create_is_409_and_changes_nothing(sandbox: Sandbox) -> None:
    create(sandbox, new_order(total=100))
    reply = create(sandbox, new_order(total=999))
    assert reply.status == 409
    assert as_object(reply.json)["error"] == {"message": "Order already exists", "type": "order_exists"}
    assert [o["total"] for o in sandbox.orders()] == [100]


def test_a_deleted_order_can_be_created_again_but_not_updated(sandbox: Sandbox) -> None:
    first = as_object(create(sandbox, new_order()).data)
    sandbox.request("DELETE", order_path("order-1"))
    update = sandbox.request("POST", order_path("order-1"), new_order())
    assert update.status == 409
    assert update.error_message == "Order has been deleted"
    second = as_object(create(sandbox, new_order()).data)
    assert second["status"] == "open"
    assert second["button_order_id"] != first["button_order_id"]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_order_is_404(sandbox: Sandbox, method: str) -> None:
    reply = sandbox.request(method, order_path("nope"), new_order("nope") if method == "POST" else None)
    assert reply.status == 404
    assert reply.error_message == "Order not found"
    assert sandbox.orders() == []


def test_unknown_route_and_method(sandbox: Sandbox) -> None:
    assert sandbox.request("GET", "/v1/nothing").status == 404
    assert sandbox.request("GET", "/v1/order/a/b").status == 404  # an unencoded "/" is two segments
    reply = sandbox.request("PUT", order_path("x"), new_order("x"))
    assert reply.status == 405
    assert reply.headers["Allow"] == "GET, POST, DELETE"


@pytest.mark.parametrize("order_id", ["A/B 100%", "with space", "50%off", "a+b", "%2F", "~weird._-id", "x" * 255])
def test_percent_encoded_order_ids(sandbox: Sandbox, order_id: str) -> None:
    create(sandbox, new_order(order_id))
    got = sandbox.request("GET", order_path(order_id))
    assert got.status == 200
    assert as_object(got.data)["order_id"] == order_id
    updated = sandbox.request("POST", order_path(order_id), new_order(order_id, total=1))
    assert as_object(updated.data)["total"] == 1
    assert sandbox.request("DELETE", order_path(order_id)).status == 200
    assert [entry["order_id"] for entry in sandbox.requests()] == [order_id] * 4


def test_the_path_example_from_the_brief(sandbox: Sandbox) -> None:
    create(sandbox, new_order("A/B 100%"))
    assert as_object(sandbox.request("GET", "/v1/order/A%2FB%20100%25").data)["order_id"] == "A/B 100%"


def test_minimal_order_and_edge_values_are_accepted(sandbox: Sandbox) -> None:
    minimal = {"order_id": "m", "total": 0, "currency": "JPY", "purchase_date": "2017-07-25T08:23:52+09:00"}
    created = as_object(create(sandbox, minimal).data)
    assert created["btn_ref"] is None and created["customer"] is None and created["line_items"] == []
    full = new_order(
        "~ !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}",
        currency="KWD",
        total=2**63 - 1,
        customer={"email_sha256": "ABCDEF0123456789" * 4},
        customer_order_id="#1001 ünïcode",
        finalization_date="2017-08-25T08:23:52.123Z",
        btn_ref="x" * 255,
    )
    assert create(sandbox, full).status == 200


# -- validation ------------------------------------------------------------------------------------------

Mutation = Callable[[dict[str, object]], None]
REMOVE = object()


def set_path(path: str, value: object) -> Mutation:
    """Set (or, with value REMOVE, remove) ``a.b[0].c`` in an order."""

    def mutate(order: dict[str, object]) -> None:
        keys: list[str | int] = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
        target: object = order
        for key in keys[:-1]:
            target = target[key]  # type: ignore[index]
        if value is REMOVE:
            del target[keys[-1]]  # type: ignore[attr-defined]
        else:
            target[keys[-1]] = value  # type: ignore[index]

    return mutate


SECOND_LINE = {"identifier": "sku-2", "total": 100}


def with_second_line(**changes: object) -> Mutation:
    def mutate(order: dict[str, object]) -> None:
        order["line_items"] = [*order["line_items"], {**SECOND_LINE, **changes}]  # type: ignore[misc]

    return mutate


VALIDATION_CASES: list[tuple[str, Mutation, str]] = [
    ("order_id", set_path("order_id", REMOVE), "order_id: is required"),
    ("order_id", set_path("order_id", 17), "order_id: must be a string"),
    ("order_id", set_path("order_id", ""), "order_id: must not be empty"),
    ("order_id", set_path("order_id", "x" * 256), "order_id: must be at most 255 characters"),
    ("order_id", set_path("order_id", "caf\u00e9"), "order_id: must contain only printable ASCII characters"),
    ("order_id", set_path("order_id", "tab\there"), "order_id: must contain only printable ASCII characters"),
    ("currency", set_path("currency", REMOVE), "currency: is required"),
    ("currency", set_path("currency", "usd"), "currency: must be an active ISO 4217"),
    ("currency", set_path("currency", "US"), "currency: must be an active ISO 4217"),
    ("currency", set_path("currency", "ANG"), "currency: must be an active ISO 4217"),
    ("currency", set_path("currency", "XAU"), "currency: must be an active ISO 4217"),
    ("currency", set_path("currency", 840), "currency: must be a string"),
    ("total", set_path("total", REMOVE), "total: is required"),
    ("total", set_path("total", 12.5), "total: must be an integer"),
    ("total", set_path("total", 12.0), "total: must be an integer"),
    ("total", set_path("total", True), "total: must be an integer"),
    ("total", set_path("total", "100"), "total: must be an integer"),
    ("total", set_path("total", -1), "total: must be >= 0"),
    ("total", set_path("total", 2**63), "total: must fit in a signed 64-bit integer"),
    ("purchase_date", set_path("purchase_date", REMOVE), "purchase_date: is required"),
    ("purchase_date", set_path("purchase_date", "yesterday"), "purchase_date: must be an ISO-8601 date-time"),
    ("purchase_date", set_path("purchase_date", 1500000000), "purchase_date: must be a string"),
    ("btn_ref", set_path("btn_ref", ""), "btn_ref: must not be empty"),
    ("btn_ref", set_path("btn_ref", "srctok 1"), "btn_ref: must be 1..255 characters of [A-Za-z0-9._~-]"),
    ("btn_ref", set_path("btn_ref", "x" * 256), "btn_ref: must be 1..255 characters"),
    ("btn_ref", set_path("btn_ref", 5), "btn_ref: must be a string"),
    ("customer", set_path("customer", "cust-1"), "customer: must be an object"),
    ("customer", set_path("customer.id", 42), "customer.id: must be a string"),
    ("customer", set_path("customer.email_sha256", "a" * 63), "customer.email_sha256: must be 64 hexadecimal"),
    ("customer", set_path("customer.email_sha256", "g" * 64), "customer.email_sha256: must be 64 hexadecimal"),
    ("customer", set_path("customer.email_sha256", "x@example.com"), "customer.email_sha256: must be 64"),
    ("customer", set_path("customer.device_id", 1), "customer.device_id: must be a string"),
    ("customer", set_path("customer.is_new", "yes"), "customer.is_new: must be a boolean"),
    ("customer", set_path("customer.email", "x@example.com"), "customer.email: unknown field"),
    ("line_items", set_path("line_items", {}), "line_items: must be a list"),
    ("line_items", set_path("line_items", ["sku"]), "line_items[0]: must be an object"),
    ("line_items", with_second_line(total=1.5), "line_items[1].total: must be an integer"),
    ("line_items", with_second_line(total=-5), "line_items[1].total: must be >= 0"),
    ("line_items", set_path("line_items[0].total", REMOVE), "line_items[0].total: is required"),
    ("line_items", set_path("line_items[0].identifier", REMOVE), "line_items[0].identifier: is required"),
    ("line_items", set_path("line_items[0].identifier", ""), "line_items[0].identifier: must not be empty"),
    ("line_items", set_path("line_items[0].identifier", 7), "line_items[0].identifier: must be a string"),
    ("line_items", with_second_line(identifier="sku-1"), "line_items[1].identifier: duplicate identifier 'sku-1'"),
    ("line_items", set_path("line_items[0].quantity", 0), "line_items[0].quantity: must be >= 1"),
    ("line_items", set_path("line_items[0].quantity", 2.0), "line_items[0].quantity: must be an integer"),
    ("line_items", set_path("line_items[0].amount", -1), "line_items[0].amount: must be >= 0"),
    ("line_items", set_path("line_items[0].description", 5), "line_items[0].description: must be a string"),
    ("line_items", set_path("line_items[0].sku", 5), "line_items[0].sku: must be a string"),
    ("line_items", set_path("line_items[0].upc", 5), "line_items[0].upc: must be a string"),
    ("line_items", set_path("line_items[0].category", "shoes"), "line_items[0].category: must be a list"),
    ("line_items", set_path("line_items[0].category", ["a", 1]), "line_items[0].category[1]: must be a string"),
    ("line_items", set_path("line_items[0].attributes", ["a"]), "line_items[0].attributes: must be an object"),
    ("line_items", set_path("line_items[0].attributes.size", 9), "line_items[0].attributes.size: must be a string"),
    ("line_items", set_path("line_items[0].price", 5), "line_items[0].price: unknown field"),
    ("customer_order_id", set_path("customer_order_id", ""), "customer_order_id: must not be empty"),
    ("finalization_date", set_path("finalization_date", "soon"), "finalization_date: must be an ISO-8601 date-time"),
    ("unknown", set_path("source", "mparticle"), "source: unknown field"),
    ("unknown", set_path("total_as_decimal", True), "total_as_decimal: unknown field"),
]

NULL_CASES = [
    "order_id",
    "total",
    "currency",
    "purchase_date",
    "btn_ref",
    "customer",
    "customer.id",
    "customer.email_sha256",
    "customer.is_new",
    "line_items",
    "line_items[0]",
    "line_items[0].sku",
    "line_items[0].quantity",
    "line_items[0].category[1]",
    "line_items[0].attributes.coupon_code",
]


@pytest.mark.parametrize(
    ("mutation", "message"),
    [pytest.param(m, msg, id=f"{field}-{i}") for i, (field, m, msg) in enumerate(VALIDATION_CASES)],
)
def test_create_validation(sandbox: Sandbox, mutation: Mutation, message: str) -> None:
    order = new_order()
    mutation(order)
    reply = create(sandbox, order)
    assert reply.status == 400, reply
    assert str(reply.error_message).startswith(message)
    assert as_object(reply.json)["error"] == {"message": reply.error_message, "type": "validation_error"}
    assert sandbox.orders() == []


@pytest.mark.parametrize("path", NULL_CASES)
def test_null_is_rejected_naming_the_key(sandbox: Sandbox, path: str) -> None:
    order = new_order()
    set_path(path, None)(order)
    reply = create(sandbox, order)
    assert reply.status == 400
    assert reply.error_message == f"{path}: must not be null"


@pytest.mark.parametrize(
    ("raw_body", "message"),
    [
        (b"", "body: must be a JSON object"),
        (b"null", "body: must be a JSON object"),
        (b"[1]", "body: must be a JSON object"),
        (b'"order"', "body: must be a JSON object"),
        (b"{not json", "body: must be valid JSON"),
        (b'{"total": NaN}', "body: must be valid JSON"),
    ],
)
def test_body_must_be_a_json_object(sandbox: Sandbox, raw_body: bytes, message: str) -> None:
    reply = sandbox.request("POST", "/v1/order", raw_body=raw_body)
    assert reply.status == 400
    assert reply.error_message == message


def test_oversized_body_is_413_and_logged(sandbox: Sandbox) -> None:
    reply = sandbox.request("POST", "/v1/order", raw_body=b" " * (2 * 1024 * 1024))
    assert reply.status == 413
    assert "exceeded" in str(reply.error_message)
    assert [(e["status"], e["body"]) for e in sandbox.requests()] == [(413, None)]


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (set_path("order_id", "other"), "order_id: must match the order id in the path"),
        (set_path("total", REMOVE), "total: is required"),
        (set_path("currency", "EURO"), "currency: must be an active ISO 4217"),
        (set_path("btn_ref", None), "btn_ref: must not be null"),
        (set_path("line_items[0].total", 1.5), "line_items[0].total: must be an integer"),
        (set_path("extra", 1), "extra: unknown field"),
    ],
)
def test_update_validation(sandbox: Sandbox, mutation: Mutation, message: str) -> None:
    original = as_object(create(sandbox, new_order()).data)
    update = new_order()
    del update["order_id"], update["btn_ref"]
    mutation(update)
    reply = sandbox.request("POST", order_path("order-1"), update)
    assert reply.status == 400
    assert str(reply.error_message).startswith(message)
    assert sandbox.orders() == [original]


# -- app events and activity -----------------------------------------------------------------------------

APP_EVENTS: dict[str, object] = {
    "application_id": "app-abc123",
    "ifa": "idfa-1",
    "current_time": "2024-05-01T10:00:00Z",
    "events": [
        {
            "name": "btn:deeplink-opened",
            "source": "button",
            "source_token": "srctok-1",
            "time": "2024-05-01T09:59:59.123Z",
            "uuid": "6f1c0a4e-6bd8-4f38-9c2b-0c5d1b4b8d11",
            "value": {"url": "brand-app://?btn_ref=srctok-1"},
        }
    ],
}
ACTIVITY: dict[str, object] = {
    "application_id": "app-abc123",
    "ifa": "idfa-1",
    "btn_ref": "srctok-1",
    "activity_data": {
        "name": "add-to-cart",
        "products": [
            {
                "id": "sku-1",
                "upc": "400000000001",
                "name": "shoes",
                "currency": "USD",
                "value": 2000,
                "quantity": 1,
                "url": "https://shop.example/sku-1",
                "categories": ["shoes"],
                "attributes": {"btn_product_count": "1"},
            }
        ],
    },
}


def test_app_events_and_activity_are_stored(sandbox: Sandbox) -> None:
    assert sandbox.request("POST", "/v1/app/events", APP_EVENTS).json == {"meta": {"status": "ok"}, "object": None}
    assert sandbox.request("POST", "/v1/app/activity", ACTIVITY).status == 200
    assert sandbox.app_events() == [APP_EVENTS]
    assert sandbox.activity() == [ACTIVITY]


def test_app_routes_also_take_the_bodys_application_id_as_the_basic_user(sandbox: Sandbox) -> None:
    """As Button's Merchant Library API: the application id authenticates app signals, and only them."""
    app_id = str(APP_EVENTS["application_id"])
    assert sandbox.request("POST", "/v1/app/events", APP_EVENTS, api_key=app_id).status == 200
    assert sandbox.request("POST", "/v1/app/activity", ACTIVITY, api_key=app_id).status == 200
    with_password = "Basic " + base64.b64encode(f"{app_id}:pw".encode()).decode()
    for path, body, api_key, authorization in (
        ("/v1/app/events", APP_EVENTS, "app-another-app", None),  # not the body's application
        ("/v1/app/events", APP_EVENTS, None, with_password),
        ("/v1/app/events", {**APP_EVENTS, "application_id": ""}, "", None),
        ("/v1/order", {**new_order(), "application_id": app_id}, app_id, None),  # not on the Order API
    ):
        reply = sandbox.request("POST", path, body, api_key=api_key, authorization=authorization)
        assert (reply.status, reply.error_message) == (401, "Invalid api_key"), (path, api_key)
    assert create(sandbox, new_order()).status == 200
    assert [(r["path"], r["auth"]) for r in sandbox.requests()] == [
        ("/v1/app/events", "application_id"),
        ("/v1/app/activity", "application_id"),
        ("/v1/app/events", None),
        ("/v1/app/events", None),
        ("/v1/app/events", None),
        ("/v1/order", None),
        ("/v1/order", "api_key"),
    ]
    assert sandbox.app_events() == [APP_EVENTS] and sandbox.activity() == [ACTIVITY]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("events", [], "events: must not be empty"),
        ("events", REMOVE, "events: is required"),
        ("events", {"name": "x"}, "events: must be a list"),
        ("events[0]", "btn:deeplink-opened", "events[0]: must be an object"),
        ("events[0].name", REMOVE, "events[0].name: is required"),
        ("events[0].name", 1, "events[0].name: must be a string"),
        ("events[0].time", "noon", "events[0].time: must be an ISO-8601 date-time"),
        ("events[0].time", REMOVE, "events[0].time: is required"),
        ("events[0].uuid", REMOVE, "events[0].uuid: is required"),
        ("events[0].source", 3, "events[0].source: must be a string"),
        ("events[0].value", "brand-app://", "events[0].value: must be an object"),
        ("events[0].value.url", None, "events[0].value.url: must not be null"),
        ("events[0].extra", 1, "events[0].extra: unknown field"),
        ("current_time", "now", "current_time: must be an ISO-8601 date-time"),
        ("ifa", None, "ifa: must not be null"),
        ("user", "u", "user: unknown field"),
    ],
)
def test_app_events_validation(sandbox: Sandbox, path: str, value: object, message: str) -> None:
    body = copy.deepcopy(APP_EVENTS)
    set_path(path, value)(body)
    reply = sandbox.request("POST", "/v1/app/events", body)
    assert reply.status == 400
    assert reply.error_message == message
    assert sandbox.app_events() == []


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("activity_data", REMOVE, "activity_data: is required"),
        ("activity_data.name", "purchase", "activity_data.name: must be one of add-to-cart, cart-viewed, product"),
        ("activity_data.products", REMOVE, "activity_data.products: is required"),
        ("activity_data.products[0].currency", "usd", "activity_data.products[0].currency: must be an active"),
        ("activity_data.products[0].value", 20.5, "activity_data.products[0].value: must be an integer"),
        ("activity_data.products[0].quantity", 0, "activity_data.products[0].quantity: must be >= 1"),
        ("activity_data.products[0].categories", "shoes", "activity_data.products[0].categories: must be a list"),
        ("activity_data.products[0].attributes.n", 1, "activity_data.products[0].attributes.n: must be a string"),
        ("activity_data.products[0].sku", "s", "activity_data.products[0].sku: unknown field"),
        ("btn_ref", "bad ref", "btn_ref: must be 1..255 characters"),
        ("btn_ref", None, "btn_ref: must not be null"),
    ],
)
def test_activity_validation(sandbox: Sandbox, path: str, value: object, message: str) -> None:
    body = copy.deepcopy(ACTIVITY)
    set_path(path, value)(body)
    reply = sandbox.request("POST", "/v1/app/activity", body)
    assert reply.status == 400
    assert str(reply.error_message).startswith(message)
    assert sandbox.activity() == []


# -- fault injection -------------------------------------------------------------------------------------


def test_error_rate_one_fails_everything_and_changes_nothing(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory("--error-rate", "1")
    for method, path, body in [
        ("POST", "/v1/order", new_order()),
        ("GET", order_path("order-1"), None),
        ("POST", order_path("order-1"), new_order()),
        ("DELETE", order_path("order-1"), None),
        ("POST", "/v1/app/events", APP_EVENTS),
        ("POST", "/v1/app/activity", ACTIVITY),
    ]:
        reply = server.request(method, path, body)
        assert reply.status == 503
        assert as_object(reply.json)["meta"] == {"status": "error"}
    assert server.orders() == [] and server.app_events() == [] and server.activity() == []
    log = server.requests()
    assert [(e["status"], e["fault"]) for e in log] == [(503, "error_rate")] * 6


def test_injected_errors_do_not_touch_existing_orders(sandbox: Sandbox) -> None:
    original = as_object(create(sandbox, new_order()).data)
    sandbox.set_faults(error_rate=1.0, error_status=500)
    assert sandbox.request("POST", order_path("order-1"), new_order(total=1)).status == 500
    assert sandbox.request("DELETE", order_path("order-1")).status == 500
    assert create(sandbox, new_order("order-2")).status == 500
    assert sandbox.orders() == [original]


def test_faults_come_before_auth(sandbox: Sandbox) -> None:
    sandbox.set_faults(error_rate=1.0)
    assert sandbox.request("GET", order_path("x"), authorization="").status == 503


def test_rate_limit_every_nth_request_with_retry_after(sandbox: Sandbox) -> None:
    sandbox.set_faults(rate_limit_every=3, retry_after_s=7)
    replies = [create(sandbox, new_order(f"o{i}")) for i in range(6)]
    assert [r.status for r in replies] == [200, 200, 429, 200, 200, 429]
    assert replies[2].headers["Retry-After"] == "7"
    assert as_object(replies[2].json)["error"] == {"message": "Too many requests", "type": "rate_limited"}
    assert "Retry-After" not in replies[0].headers
    assert [o["order_id"] for o in sandbox.orders()] == ["o0", "o1", "o3", "o4"]


def test_rate_limit_rate_from_the_command_line(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory("--rate-limit-rate", "1", "--retry-after-s", "2")
    reply = create(server, new_order())
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "2"
    assert server.orders() == []


@pytest.mark.parametrize(
    "faults",
    [{"error_rate": 1.0, "error_status": 429}, {"outage_s": 30, "outage_status": 429}, {"fail_next": [429]}],
)
def test_every_injected_429_carries_retry_after(sandbox: Sandbox, faults: dict[str, object]) -> None:
    sandbox.set_faults(**faults, retry_after_s=4)
    reply = create(sandbox, new_order())
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "4"


def test_outage_window_then_recovery(sandbox: Sandbox) -> None:
    started = time.monotonic()
    sandbox.set_faults(outage_s=0.4, outage_status=502)
    assert create(sandbox, new_order()).status == 502
    assert sandbox.orders() == []
    while (reply := create(sandbox, new_order())).status == 502:
        assert time.monotonic() - started < 5, "the outage did not end"
        time.sleep(0.05)
    assert reply.status == 200
    assert time.monotonic() - started >= 0.4
    assert len(sandbox.orders()) == 1


def test_outage_from_the_command_line(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory("--outage-s", "30")
    reply = create(server, new_order())
    assert reply.status == 503
    assert reply.error_message == "Service unavailable (sandbox outage)"
    faults = server.admin("GET", "faults")
    assert 0 < as_object(faults)["outage_remaining_s"] <= 30  # type: ignore[operator]
    server.clear_faults()
    assert create(server, new_order()).status == 200


def test_latency(sandbox: Sandbox) -> None:
    sandbox.set_faults(latency_ms=300)
    started = time.monotonic()
    assert create(sandbox, new_order()).status == 200
    assert time.monotonic() - started >= 0.3
    sandbox.clear_faults()
    started = time.monotonic()
    assert sandbox.request("GET", order_path("order-1")).status == 200
    assert time.monotonic() - started < 0.3


def test_in_flight_lists_the_requests_latency_holds(sandbox: Sandbox) -> None:
    sandbox.set_faults(latency_ms=1500)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(create, sandbox, new_order("held-1"))
        deadline = time.monotonic() + 1.2
        while not (held := sandbox.in_flight()):
            assert time.monotonic() < deadline, "the held request never showed up in flight"
            time.sleep(0.01)
        assert not answer.done()
        [entry] = held
        assert (entry["method"], entry["path"], entry["order_id"], entry["latency_ms"]) == (
            "POST",
            "/v1/order",
            "held-1",
            1500.0,
        )
        assert sandbox.requests() == [], "the request log lists a request once it is answered"
        assert answer.result().status == 200
    assert sandbox.in_flight() == []
    [logged] = sandbox.requests()
    assert logged["seq"] == entry["seq"] and logged["status"] == 200


def test_dropped_connection_is_a_client_connection_error(sandbox: Sandbox) -> None:
    sandbox.set_faults(drop_connection_rate=1.0)
    with pytest.raises(ConnectionError):
        create(sandbox, new_order())
    assert sandbox.orders() == []
    [entry] = sandbox.requests()
    assert entry["status"] is None and entry["fault"] == "drop_connection"


def test_dropped_connection_with_aiohttp_client(sandbox: Sandbox) -> None:
    sandbox.set_faults(drop_connection_rate=1.0)

    async def call() -> None:
        async with aiohttp.ClientSession(headers=auth_header(sandbox.api_key)) as session:
            async with session.post(f"{sandbox.url}/v1/order", json=new_order()) as response:
                await response.read()

    with pytest.raises(aiohttp.ClientConnectionError):
        asyncio.run(call())
    assert sandbox.orders() == []


def test_fail_next_then_success(sandbox: Sandbox) -> None:
    snapshot = sandbox.set_faults(fail_next=[500, 500, 500])
    assert snapshot["fail_next_remaining"] == [500, 500, 500]
    statuses = [create(sandbox, new_order()).status for _ in range(4)]
    assert statuses == [500, 500, 500, 200]
    assert as_object(sandbox.admin("GET", "faults"))["fail_next_remaining"] == []


def test_fail_next_with_a_message_for_one_order(sandbox: Sandbox) -> None:
    sandbox.set_faults(fail_next=[400], fail_next_message="total: rejected upstream", fail_next_order_id="B/2")
    assert create(sandbox, new_order("A")).status == 200
    reply = create(sandbox, new_order("B/2"))
    assert reply.status == 400
    assert reply.error_message == "total: rejected upstream"
    assert create(sandbox, new_order("B/2")).status == 200
    assert [o["order_id"] for o in sandbox.orders()] == ["A", "B/2"]


def test_fail_next_by_path_order_id(sandbox: Sandbox) -> None:
    create(sandbox, new_order("A/1"))
    sandbox.set_faults(fail_next=[429], fail_next_order_id="A/1", retry_after_s=3)
    reply = sandbox.request("DELETE", order_path("A/1"))
    assert reply.status == 429 and reply.headers["Retry-After"] == "3"
    assert [o["status"] for o in sandbox.orders()] == ["open"]


def test_fail_next_from_the_command_line(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory("--fail-next", "503,500")
    assert [create(server, new_order()).status for _ in range(3)] == [503, 500, 200]


def test_seed_makes_faults_and_ids_repeat(sandbox_factory: SandboxFactory) -> None:
    runs = []
    for _ in range(2):
        server = sandbox_factory("--seed", "42", "--error-rate", "0.5")
        replies = [create(server, new_order(f"o{i}")) for i in range(20)]
        runs.append(([r.status for r in replies], [o["button_order_id"] for o in server.orders()]))
    assert runs[0] == runs[1]
    assert {200, 503} == set(runs[0][0])


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ({"error_rate": 1.5}, "error_rate: must be between 0 and 1"),
        ({"error_rate": "0.5"}, "error_rate: must be a number"),
        ({"error_status": 200}, "error_status: must be an HTTP error status (400..599)"),
        ({"fail_next": [500, "x"]}, "fail_next: must be a list of HTTP status integers"),
        ({"fail_next": [302]}, "fail_next[0]: must be an HTTP error status (400..599)"),
        ({"latency_ms": -1}, "latency_ms: must be >= 0"),
        ({"retry_after_s": 1.5}, "retry_after_s: must be an integer"),
        ({"chaos": True}, "chaos: unknown fault setting"),
    ],
)
def test_bad_fault_settings_are_refused(sandbox: Sandbox, faults: dict[str, object], message: str) -> None:
    reply = sandbox.request("POST", "/__admin/faults", faults, authorization="")
    assert reply.status == 400
    assert reply.error_message == message


def test_posting_faults_replaces_the_whole_profile(sandbox: Sandbox) -> None:
    sandbox.set_faults(error_rate=1.0)
    snapshot = sandbox.set_faults(latency_ms=5)
    assert snapshot["error_rate"] == 0.0 and snapshot["latency_ms"] == 5.0
    assert create(sandbox, new_order()).status == 200


# -- admin -----------------------------------------------------------------------------------------------


def test_request_log(sandbox: Sandbox) -> None:
    before = time.time()
    create(sandbox, new_order("A/B"))
    sandbox.request("GET", order_path("A/B"), api_key="sk-wrong")
    first, second = sandbox.requests()
    assert first["seq"] == 1 and second["seq"] == 2
    assert first["method"] == "POST" and first["path"] == "/v1/order" and first["order_id"] == "A/B"
    assert first["status"] == 200 and first["fault"] is None
    assert first["body"] == new_order("A/B")
    assert before <= first["time_wall"] <= time.time()  # type: ignore[operator]
    assert first["time_monotonic"] <= second["time_monotonic"]  # type: ignore[operator]
    assert second["path"] == "/v1/order/A%2FB" and second["order_id"] == "A/B" and second["status"] == 401
    headers = as_object(first["headers"])
    assert headers["Content-Type"] == "application/json"
    assert not {key.lower() for key in headers} & {"authorization"}


def test_admin_orders_include_deleted_ones(sandbox: Sandbox) -> None:
    create(sandbox, new_order("a"))
    create(sandbox, new_order("b"))
    sandbox.request("DELETE", order_path("a"))
    assert [(o["order_id"], o["status"]) for o in sandbox.orders()] == [("a", "deleted"), ("b", "open")]


def test_reset_clears_everything(sandbox: Sandbox) -> None:
    create(sandbox, new_order())
    sandbox.request("POST", "/v1/app/events", APP_EVENTS)
    sandbox.request("POST", "/v1/app/activity", ACTIVITY)
    sandbox.set_faults(latency_ms=1, fail_next=[500])
    sandbox.reset()
    assert sandbox.orders() == [] and sandbox.requests() == []
    assert sandbox.app_events() == [] and sandbox.activity() == []
    assert as_object(sandbox.admin("GET", "faults"))["fail_next_remaining"] == []
    assert as_object(sandbox.admin("GET", "faults"))["latency_ms"] == 0.0


def test_health_and_admin_needs_no_auth(sandbox: Sandbox) -> None:
    create(sandbox, new_order())
    assert sandbox.admin("GET", "health") == {"status": "ok", "orders": 1, "requests": 1}


# -- command line and in-process API ---------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "button_sidecar.cli", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_help() -> None:
    top = run_cli("--help")
    assert top.returncode == 0 and "sandbox" in top.stdout
    result = run_cli("sandbox", "--help")
    assert result.returncode == 0
    for flag in ("--port", "--api-key", "--seed", "--error-rate", "--rate-limit-every", "--outage-s", "--fail-next"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--error-rate", "2"], "error_rate: must be between 0 and 1"),
        (["--fail-next", "500,x"], "not a comma-separated list of HTTP statuses"),
        (["--port", "70000"], "port: must be between 0 and 65535"),
    ],
)
def test_bad_flags_stop_startup(args: list[str], message: str) -> None:
    result = run_cli("sandbox", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_busy_port_is_a_clear_error(sandbox: Sandbox) -> None:
    result = run_cli("sandbox", "--port", str(sandbox.port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{sandbox.port}" in result.stderr


def test_in_process_server() -> None:
    config = SandboxConfig(api_key=SANDBOX_API_KEY, seed=7, faults=FaultConfig(fail_next=(500,)))

    async def scenario() -> None:
        async with (
            SandboxServer(config) as server,
            aiohttp.ClientSession(headers=auth_header(SANDBOX_API_KEY)) as session,
        ):
            assert server.url.startswith("http://127.0.0.1:")
            statuses = []
            for _ in range(2):
                async with session.post(f"{server.url}/v1/order", json=new_order()) as response:
                    statuses.append(response.status)
            assert statuses == [500, 200]
            assert [o["order_id"] for o in server.orders()] == ["order-1"]
            assert [e["status"] for e in server.requests()] == [500, 200]
            server.set_faults(FaultConfig(error_rate=1.0))
            assert server.faults()["error_rate"] == 1.0
            server.reset()
            assert server.orders() == [] and server.faults()["error_rate"] == 0.0
        with pytest.raises(RuntimeError):
            _ = server.url

    asyncio.run(scenario())


def test_in_process_server_ids_follow_the_seed() -> None:
    async def ids() -> list[object]:
        server = SandboxServer(SandboxConfig(seed=3))
        url = await server.start()
        try:
            async with aiohttp.ClientSession(headers=auth_header("sk-sandbox")) as session:
                for i in range(3):
                    async with session.post(f"{url}/v1/order", json=new_order(f"o{i}")) as response:
                        assert response.status == 200
        finally:
            await server.stop()
        return [o["button_order_id"] for o in server.orders()]

    assert asyncio.run(ids()) == asyncio.run(ids())


def test_what_the_sandbox_holds_is_not_walked_by_the_garbage_collector() -> None:
    # A full collection pauses every answer for as long as it walks the tracked objects; orders and the request
    # log kept as JSON text add none, so a sandbox holding many orders does not pause longer.
    async def tracked_growth(orders: int) -> int:
        async with (
            SandboxServer(SandboxConfig(seed=1)) as server,
            aiohttp.ClientSession(headers=auth_header("sk-sandbox")) as session,
        ):

            async def create(order_id: str) -> None:
                async with session.post(f"{server.url}/v1/order", json=new_order(order_id)) as response:
                    assert response.status == 200

            await create("warm-up")
            gc.collect()
            before = len(gc.get_objects())
            for i in range(orders):
                await create(f"held-{i}")
            gc.collect()
            growth = len(gc.get_objects()) - before
            assert len(server.orders()) == len(server.requests()) == orders + 1
            return growth

    # As dicts, each order with its logged request added about six tracked objects.
    assert asyncio.run(tracked_growth(300)) < 100
