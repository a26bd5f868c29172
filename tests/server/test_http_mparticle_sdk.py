"""mParticle's official Python SDK (`mparticle` 0.16.1), unchanged but for its host, against the HTTP endpoint:
in-process over a pipeline, and in a `button-sidecar serve` subprocess beside gRPC.

The SDK is synchronous (urllib3): in-process, its calls run in a thread while the endpoint serves on the event loop.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import mparticle  # type: ignore[import-untyped]
import orjson
import pytest
from button_sidecar import hash_email
from button_sidecar.v1 import sidecar_pb2 as pb
from grpc_health.v1 import health_pb2  # type: ignore[import-untyped]
from mparticle.rest import ApiException  # type: ignore[import-untyped]

from tests.conftest import Sandbox, SandboxFactory, wait_for
from tests.http_client import basic, http_call
from tests.pipeline.helpers import EMAIL, PURCHASE_MS, metric, orders_by_id, request_log, wait_until
from tests.server.helpers import (
    health_status,
    ingest_json,
    metric_samples,
    orders_arrive,
    purchase_batch,
    start_sidecar,
    stub_for,
)
from tests.server.http_helpers import http_sidecar

KEY, SECRET = "mp-server-key", "mp-server-secret"
DELIVERED = ("button_sidecar_delivered_requests_total", (("kind", "create_order"),))


@contextmanager
def events_api(host: str, key: str = KEY, secret: str = SECRET) -> Iterator[Any]:
    """The SDK's client as its docs set it up; its connection pool is closed afterwards."""
    configuration = mparticle.Configuration()  # a fresh one: the SDK caches its client on the configuration
    configuration.host = host
    configuration.api_key = key
    configuration.api_secret = secret
    api = mparticle.EventsApi(configuration)
    try:
        yield api
    finally:
        api.api_client.rest_client.pool_manager.clear()


def product(sku: str, price: float, quantity: int) -> Any:
    item = mparticle.Product()
    item.id, item.name, item.price, item.quantity = sku, f"Product {sku}", price, quantity
    return item


def commerce_batch(action: str, order_id: str, products: list[Any], **amounts: float) -> Any:
    """One user's batch with one purchase or refund, built from the SDK's models only."""
    product_action = mparticle.ProductAction(action)
    product_action.transaction_id = order_id
    product_action.products = products or None
    for name, amount in amounts.items():
        setattr(product_action, name, amount)
    event = mparticle.CommerceEvent(product_action)
    event.currency_code = "USD"
    event.timestamp_unixtime_ms = PURCHASE_MS
    identities = mparticle.UserIdentities()
    identities.customerid = "cust-sdk-1"
    identities.email = EMAIL
    batch = mparticle.Batch()
    batch.environment = "production"
    batch.user_identities = identities
    batch.events = [event]
    return batch


def test_purchases_and_refunds_sent_with_the_sdk_reach_button_exactly(tmp_path: Path, sandbox: Sandbox) -> None:
    # Floats as the SDK sends them: 54.96 - 4.0 - 0.99 must be 4997 cents, and 10.015 (in binary a hair below
    # 10.015) must round half-to-even from its decimal text to 1002, not to 1001.
    sdk_1 = commerce_batch(
        "purchase",
        "sdk-1",
        [product("sku-1", 39.99, 1), product("sku-2", 4.99, 2)],
        total_amount=54.96,
        tax_amount=4.0,
        shipping_amount=0.99,
    )
    sdk_2 = commerce_batch("purchase", "sdk-2", [product("sku-9", 10.015, 1)], total_amount=10.015)
    bulk = [
        commerce_batch("refund", "sdk-1", [product("sku-2", 4.99, 2)], total_amount=9.98),  # partial: an update
        commerce_batch("refund", "sdk-2", []),  # full: a cancellation
        commerce_batch("purchase", "sdk-3", [product("sku-3", 0.1, 3)]),  # 3 x 0.1 is 0.30 exactly
    ]

    async def orders_settled() -> bool:
        orders = await orders_by_id(sandbox)
        return (
            sorted(orders) == ["sdk-1", "sdk-2", "sdk-3", "sdk-4"]
            and orders["sdk-1"]["total"] == 3999
            and orders["sdk-2"]["status"] == "deleted"
        )

    async def scenario() -> None:
        async with http_sidecar(tmp_path, sandbox, auth=(KEY, SECRET)) as sidecar:
            with events_api(f"{sidecar.url}/v2") as api:  # what users configure: the host with its /v2
                _, status, _ = await asyncio.to_thread(api.upload_events, sdk_1)
                assert status == 202
                _, status, _ = await asyncio.to_thread(api.upload_events, sdk_2)
                assert status == 202
                _, status, _ = await asyncio.to_thread(api.bulk_upload_events, bulk)
                assert status == 202
            with events_api(sidecar.url) as api:  # a host without /v2: the SDK posts to /events
                _, status, _ = await asyncio.to_thread(
                    api.upload_events, commerce_batch("purchase", "sdk-4", [product("sku-4", 1.5, 1)])
                )
                assert status == 202
            await wait_until(orders_settled, what="the SDK's orders at the sandbox")
            for path, count in (("/v2/events", 2), ("/v2/bulkevents", 1), ("/events", 1)):
                assert metric(sidecar.registry, "button_sidecar_http_requests_total", path=path, status="202") == count

        orders = await orders_by_id(sandbox)
        customer = {"id": "cust-sdk-1", "email_sha256": hash_email(EMAIL)}  # from the SDK's `customerid`
        assert orders["sdk-1"]["customer"] == customer
        assert [(i["identifier"], i["total"]) for i in orders["sdk-1"]["line_items"]] == [("sku-1", 3999)]
        assert (orders["sdk-2"]["total"], orders["sdk-2"]["line_items"][0]["total"]) == (1002, 1002)
        assert (orders["sdk-3"]["total"], orders["sdk-3"]["status"]) == (30, "open")
        assert orders["sdk-4"]["total"] == 150
        creates = [r["body"] for r in await request_log(sandbox) if r["method"] == "POST" and r["path"] == "/v1/order"]
        assert sorted(body["total"] for body in creates if isinstance(body, dict)) == [30, 150, 1002, 4997]

    asyncio.run(scenario())


def test_the_sdk_gets_403_for_a_wrong_secret(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with http_sidecar(tmp_path, sandbox, auth=(KEY, SECRET)) as sidecar:
            with events_api(f"{sidecar.url}/v2", secret="not-the-secret") as api:
                with pytest.raises(ApiException) as raised:
                    await asyncio.to_thread(api.upload_events, commerce_batch("purchase", "sdk-x", []))
            assert raised.value.status == 403
            assert orjson.loads(raised.value.body)["errors"][0]["code"] == "FORBIDDEN"
            assert (await sidecar.pipeline.stats()).queued == 0

    asyncio.run(scenario())


def test_serve_takes_the_sdk_over_http_beside_grpc_and_sigterm_drains_both(
    tmp_path: Path, sandbox_factory: SandboxFactory
) -> None:
    """One `button-sidecar serve`: the SDK over HTTP (Basic auth from the environment) and the gRPC client side by
    side, `/healthz` and `/metrics` on the same process, and a drain that refuses both cleanly."""
    # A sandbox of its own: the request it holds back while the sidecar drains lands after this test.
    sandbox = sandbox_factory()
    credentials = {"BUTTON_SIDECAR_HTTP_API_KEY": KEY, "BUTTON_SIDECAR_HTTP_API_SECRET": SECRET}
    drain = "shutdown_deadline_secs = 2\n"
    process = start_sidecar(tmp_path, sandbox, delivery_toml=drain, env=credentials)
    try:
        assert process.http_url.startswith("http://127.0.0.1:")
        with events_api(f"{process.http_url}/v2") as api:
            _, status, _ = api.upload_events(commerce_batch("purchase", "serve-http-1", [product("sku-1", 12.5, 2)]))
        assert status == 202
        with stub_for(process.address) as stub:
            assert stub.Ingest(ingest_json(purchase_batch("serve-grpc-1")), timeout=5).counts.accepted == 1
        orders = orders_arrive(sandbox, ["serve-http-1", "serve-grpc-1"])
        assert (orders["serve-http-1"]["total"], orders["serve-grpc-1"]["total"]) == (2500, 2000)

        healthz = http_call(process.http_url, "GET", "/healthz")
        assert (healthz.status, healthz.json["status"]) == (200, "serving")
        wait_for(lambda: metric_samples(process.http_url).get(DELIVERED) == 2, what="both deliveries in the metrics")
        samples = metric_samples(process.http_url)
        assert samples[("button_sidecar_http_requests_total", (("path", "/v2/events"), ("status", "202")))] == 1
        assert samples[("button_sidecar_received_batches_total", ())] == 2

        # A delivery is still in flight at Button when SIGTERM comes: the drain waits for it, refusing new work.
        sandbox.set_faults(latency_ms=4000)
        with stub_for(process.address) as stub:
            stub.Ingest(ingest_json(purchase_batch("serve-slow")), timeout=5)
            wait_for(
                lambda: (
                    stub.GetOrder(pb.GetOrderRequest(order_id="serve-slow"), timeout=5).state
                    == pb.OrderStatus.IN_FLIGHT
                ),
                what="the delivery under way",
            )
            process.process.send_signal(signal.SIGTERM)
            wait_for(lambda: http_call(process.http_url, "GET", "/healthz").status == 503, what="/healthz draining")
            healthz = http_call(process.http_url, "GET", "/healthz")
            assert healthz.json == {"status": "not_serving", "reasons": ["draining"]}
            auth = {"Authorization": basic(KEY, SECRET), "Content-Type": "application/json"}
            late = http_call(process.http_url, "POST", "/v2/events", purchase_batch("serve-late"), headers=auth)
            assert (late.status, late.headers["Retry-After"]) == (503, "1")
            assert orjson.loads(late.body)["errors"][0]["code"] == "SERVICE_UNAVAILABLE"
            with pytest.raises(grpc.RpcError) as refused:
                stub.Ingest(ingest_json(purchase_batch("serve-late-grpc")), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert health_status(process.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert process.process.wait(timeout=10) == 0
    finally:
        process.stop()
    with pytest.raises(ConnectionRefusedError):  # both servers are gone
        http_call(process.http_url, "GET", "/healthz")
    output = process.output()
    assert "Shutting down" in output and f"Serving the mParticle Events API on {process.http_url}" in output
    for secret in (sandbox.api_key, KEY, SECRET):
        assert secret not in output
    assert "serve-late" not in {str(o["order_id"]) for o in sandbox.orders()}
