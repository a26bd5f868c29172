"""Button's official Python client (pybutton 3.0.0) against the sandbox: the sandbox speaks Button's protocol."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from pybutton import Client, HTTPResponseError  # type: ignore[import-untyped]

from tests.conftest import Sandbox
from tests.sandbox.helpers import new_order


def button_client(sandbox: Sandbox, api_key: str | None = None) -> Any:
    config = {"hostname": sandbox.host, "port": sandbox.port, "secure": False, "timeout": 5}
    return Client(api_key if api_key is not None else sandbox.api_key, config)


def order(order_id: str = "1989", **changes: object) -> dict[str, object]:
    """A plainer order than `new_order`'s (no optional customer or line item fields), with the ids checked here."""
    plain: dict[str, object] = {
        "btn_ref": "srctok-XXX",
        "customer": {"id": "mycustomer-1234", "email_sha256": "b" * 64},
        "line_items": [{"identifier": "sku-1234", "total": 4000, "quantity": 2, "amount": 2000}],
    }
    return new_order(order_id, **{**plain, **changes})


@pytest.fixture
def client(sandbox: Sandbox) -> Any:
    return button_client(sandbox)


def test_orders_round_trip(sandbox: Sandbox, client: Any) -> None:
    created = client.orders.create(order()).data()
    assert re.fullmatch(r"btnorder-[0-9a-f]{16}", created["button_order_id"])
    assert created["order_id"] == "1989" and created["status"] == "open"

    assert client.orders.get("1989").data() == created

    update = {"total": 2000, "currency": "USD", "purchase_date": "2017-07-25T08:23:52Z"}
    updated = client.orders.update("1989", update).data()
    assert updated["total"] == 2000 and updated["btn_ref"] == "srctok-XXX"

    assert client.orders.delete("1989").data() is None
    assert client.orders.get("1989").data()["status"] == "deleted"
    assert [(e["method"], e["status"]) for e in sandbox.requests()] == [
        ("POST", 200),
        ("GET", 200),
        ("POST", 200),
        ("DELETE", 200),
        ("GET", 200),
    ]
    assert all(str(e["headers"]["User-Agent"]).startswith("pybutton/") for e in sandbox.requests())  # type: ignore[index]


def test_percent_encoded_ids_pass_through_the_client(client: Any) -> None:
    # pybutton puts the id into the path as given, so the caller encodes it.
    client.orders.create(order("A/B 100%"))
    path_id = quote("A/B 100%", safe="")
    assert client.orders.get(path_id).data()["order_id"] == "A/B 100%"
    assert client.orders.update(path_id, order("A/B 100%", total=1)).data()["total"] == 1
    assert client.orders.delete(path_id).data() is None


def test_validation_error_surfaces_the_sandbox_message(sandbox: Sandbox, client: Any) -> None:
    line_items = [{"identifier": "a", "total": 100}, {"identifier": "b", "total": 12.5}]
    with pytest.raises(HTTPResponseError) as caught:
        client.orders.create(order(line_items=line_items))
    assert str(caught.value) == "line_items[1].total: must be an integer"
    assert caught.value.status_code == 400
    assert sandbox.orders() == []


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        pytest.param(lambda c: c.orders.create(order()), 409, "Order already exists", id="duplicate"),
        pytest.param(lambda c: c.orders.get("nope"), 404, "Order not found", id="get-unknown"),
        pytest.param(lambda c: c.orders.update("nope", order("nope")), 404, "Order not found", id="update-unknown"),
        pytest.param(lambda c: c.orders.delete("nope"), 404, "Order not found", id="delete-unknown"),
    ],
)
def test_error_statuses(client: Any, call: Any, status: int, message: str) -> None:
    client.orders.create(order())
    with pytest.raises(HTTPResponseError) as caught:
        call(client)
    assert caught.value.status_code == status
    assert str(caught.value) == message


def test_wrong_api_key(sandbox: Sandbox) -> None:
    with pytest.raises(HTTPResponseError) as caught:
        button_client(sandbox, "sk-wrong").orders.get("1989")
    assert caught.value.status_code == 401
    assert str(caught.value) == "Invalid api_key"


def test_injected_faults_reach_the_client(sandbox: Sandbox, client: Any) -> None:
    sandbox.set_faults(fail_next=[400, 503], fail_next_message="Order rejected by the sandbox")
    with pytest.raises(HTTPResponseError) as caught:
        client.orders.create(order())
    assert (caught.value.status_code, str(caught.value)) == (400, "Order rejected by the sandbox")
    with pytest.raises(HTTPResponseError) as caught:
        client.orders.create(order())
    assert caught.value.status_code == 503
    assert client.orders.create(order()).data()["order_id"] == "1989"


def test_dropped_connection_is_not_an_http_error(sandbox: Sandbox, client: Any) -> None:
    sandbox.set_faults(drop_connection_rate=1.0)
    with pytest.raises(ConnectionError):
        client.orders.create(order())
    assert sandbox.orders() == []
