"""The sidecar in-process: back-pressure and health, auth, TLS, draining, the embedded sandbox, the HTTP endpoint."""

from __future__ import annotations

import asyncio
import functools
import gc
import socket
import weakref
from collections.abc import Awaitable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]
import pytest
from button_sidecar.config import ButtonConfig, HttpConfig, OutboxConfig, Secret, TransformOptions
from button_sidecar.server import Sidecar, StartupError
from button_sidecar.server.app import freeze_startup_objects
from button_sidecar.v1 import sidecar_pb2 as pb
from button_sidecar.v1 import sidecar_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from tests.attribution.helpers import APP_ID, IDFA, deep_link, now_ms, user_batch
from tests.conftest import Sandbox
from tests.http_client import basic
from tests.pipeline.helpers import wait_until
from tests.server.helpers import config_for, ingest_json, make_certificates, purchase_batch, running_in_process
from tests.server.http_helpers import call

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_of(channel: Any, service: str = "") -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    status: int = response.status
    return status


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def test_full_outbox_is_resource_exhausted_and_health_not_serving(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.set_faults(outage_s=60)  # nothing drains the outbox
    config = replace(config_for(tmp_path, sandbox), outbox=OutboxConfig(max_requests=2))

    async def scenario() -> None:
        async with running_in_process(config) as (sidecar, stub):
            async with grpc.aio.insecure_channel(sidecar.address) as channel:
                assert await health_of(channel) == SERVING
                for i in range(2):
                    await stub.Ingest(ingest_json(purchase_batch(f"full-{i}")))
                error = await rpc_error(stub.Ingest(ingest_json(purchase_batch("full-2"))))
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "the outbox is full" in error.details() and "retry" in error.details()

                async def not_serving() -> bool:
                    statuses = [await health_of(channel, s) for s in ("", "button_sidecar.v1.Sidecar")]
                    return statuses == [NOT_SERVING, NOT_SERVING]

                await wait_until(not_serving, what="health NOT_SERVING")
                # Deliveries making room bring it back.
                sandbox.clear_faults()
                await wait_until(lambda: _serving(channel), timeout=10, what="health SERVING again")

    asyncio.run(scenario())


async def _serving(channel: Any) -> bool:
    return bool(await health_of(channel) == SERVING)


def test_bearer_token_is_required_except_for_health(tmp_path: Path, sandbox: Sandbox) -> None:
    token = "t0ken-for-tests"
    config = config_for(tmp_path, sandbox, auth_token=Secret(token))

    async def scenario() -> None:
        async with running_in_process(config) as (sidecar, stub):
            request = pb.GetStatsRequest()
            missing = await rpc_error(stub.GetStats(request))
            assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
            assert missing.details() == "missing 'authorization: Bearer <token>' metadata"
            wrong = await rpc_error(stub.GetStats(request, metadata=(("authorization", "Bearer nope"),)))
            assert (wrong.code(), wrong.details()) == (grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not valid")
            watch = await rpc_error(_first(stub.Watch(pb.WatchRequest())))
            assert watch.code() == grpc.StatusCode.UNAUTHENTICATED
            stats = await stub.GetStats(request, metadata=(("authorization", f"Bearer {token}"),))
            assert stats.button_reachable
            async with grpc.aio.insecure_channel(sidecar.address) as channel:
                assert await health_of(channel) == SERVING

    asyncio.run(scenario())


async def _first(stream: Any) -> Any:
    async for item in stream:
        return item
    return None


def test_tls_and_mutual_tls(tmp_path: Path, sandbox: Sandbox) -> None:
    certs = make_certificates(tmp_path)
    tls = {"tls_cert_file": certs["server.crt"], "tls_key_file": certs["server.key"]}

    async def stats(address: str, credentials: Any) -> pb.Stats:
        async with grpc.aio.secure_channel(address, credentials) as channel:
            result: pb.Stats = await sidecar_pb2_grpc.SidecarStub(channel).GetStats(pb.GetStatsRequest(), timeout=5)
            return result

    async def scenario() -> None:
        ca = certs["ca.crt"].read_bytes()
        client = {
            "private_key": certs["client.key"].read_bytes(),
            "certificate_chain": certs["client.crt"].read_bytes(),
        }
        sidecar = Sidecar(config_for(tmp_path / "tls", sandbox, **tls))
        await sidecar.start()
        try:
            assert (await stats(sidecar.address, grpc.ssl_channel_credentials(ca))).button_reachable
        finally:
            await sidecar.stop()
        mutual = Sidecar(config_for(tmp_path / "mtls", sandbox, **tls, tls_client_ca_file=certs["ca.crt"]))
        await mutual.start()
        try:
            assert (await stats(mutual.address, grpc.ssl_channel_credentials(ca, **client))).button_reachable
            refused = await rpc_error(stats(mutual.address, grpc.ssl_channel_credentials(ca)))
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await mutual.stop()

    asyncio.run(scenario())


def drain_1_held(sandbox: Sandbox) -> bool:
    return any(r["order_id"] == "drain-1" for r in sandbox.in_flight())


def test_draining_refuses_new_calls_and_reports_not_serving(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.set_faults(latency_ms=1500)  # a delivery stays in flight while the sidecar drains
    config = config_for(tmp_path, sandbox)
    config = replace(config, delivery=replace(config.delivery, shutdown_deadline_secs=5.0))

    async def scenario() -> None:
        sidecar = Sidecar(config)
        await sidecar.start()
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            stub = sidecar_pb2_grpc.SidecarStub(channel)
            await stub.Ingest(ingest_json(purchase_batch("drain-1")))
            await wait_until(lambda: asyncio.to_thread(drain_1_held, sandbox), what="the delivery held by the sandbox")
            stopping = asyncio.create_task(sidecar.stop())
            await asyncio.sleep(0.1)
            assert await health_of(channel) == NOT_SERVING
            for refused_call in (
                stub.Ingest(ingest_json(purchase_batch("drain-2"))),
                stub.GetStats(pb.GetStatsRequest()),
            ):
                error = await rpc_error(refused_call)
                assert (error.code(), error.details()) == (
                    grpc.StatusCode.UNAVAILABLE,
                    "the sidecar is shutting down; retry later or elsewhere",
                )
            refused = await call(sidecar.http_url, "POST", "/v2/events", purchase_batch("drain-3"))
            assert (refused.status, refused.errors[0]["code"]) == (503, "SERVICE_UNAVAILABLE")
            assert (await call(sidecar.http_url, "GET", "/healthz")).json["reasons"] == ["draining"]
            await stopping
        assert [o["order_id"] for o in sandbox.orders()] == ["drain-1"]  # the in-flight delivery finished
        with pytest.raises(aiohttp.ClientConnectionError):  # stopped with the rest
            await call(sidecar.http_url, "GET", "/healthz")

    asyncio.run(scenario())


def test_without_an_api_key_it_delivers_to_an_embedded_sandbox_app_signals_too(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = replace(
        config_for(tmp_path, sandbox),
        # Neither URL is used: with the embedded sandbox everything goes there.
        button=ButtonConfig(base_url="https://api.usebutton.com", app_base_url="http://127.0.0.1:9"),
        transform=TransformOptions(forward_app_events=True, application_ids={"ios": APP_ID}),
    )

    async def scenario() -> None:
        async with running_in_process(config) as (_, stub):
            await stub.Ingest(ingest_json(purchase_batch("embedded-1")))
            opened = await stub.Ingest(ingest_json(user_batch(deep_link("srctok-embedded", now_ms()), idfa=IDFA)))
            assert [q.kind for q in opened.queued] == ["app_event"]
            stats = await stub.GetStats(pb.GetStatsRequest())
            assert stats.button_base_url.startswith("http://127.0.0.1:") and stats.button_reachable
            async with aiohttp.ClientSession() as session:

                async def admin(what: str) -> Any:
                    async with session.get(f"{stats.button_base_url}/__admin/{what}") as response:
                        return await response.json()

                async def arrived() -> bool:
                    orders, app_events = await admin("orders"), await admin("app_events")
                    return [o["order_id"] for o in orders] == ["embedded-1"] and len(app_events) == 1

                await wait_until(arrived, what="the order and the app event at the embedded sandbox")
                assert {(r["path"], r["status"], r["auth"]) for r in await admin("requests")} == {
                    ("/v1/order", 200, "api_key"),
                    ("/v1/order/button-sidecar-reachability-probe", 404, "api_key"),  # GetStats' probe
                    ("/v1/app/events", 200, "application_id"),
                }
            assert (await stub.GetStats(pb.GetStatsRequest())).dead_letters == 0
        assert sandbox.orders() == [] and sandbox.app_events() == []

    asyncio.run(scenario())


def test_http_beside_grpc_on_a_unix_socket_with_basic_auth(tmp_path: Path, sandbox: Sandbox, socket_dir: Path) -> None:
    path = socket_dir / "http.sock"
    http = HttpConfig(listen=f"unix:{path}", api_key=Secret("mp-key"), api_secret=Secret("mp-secret"))
    config = replace(config_for(tmp_path, sandbox), http=http)

    async def scenario() -> None:
        async with running_in_process(config) as (sidecar, stub):
            assert sidecar.http_url == f"unix:{path}"
            send = functools.partial(call, "http://sidecar", "POST", "/v2/events", purchase_batch("unix-http-1"))
            assert (await send(connector=aiohttp.UnixConnector(str(path)))).status == 401
            right = basic("mp-key", "mp-secret")
            assert (await send(authorization=right, connector=aiohttp.UnixConnector(str(path)))).status == 202
            await wait_until(lambda: _delivered(stub, "unix-http-1"), what="the order delivered")
        assert [o["order_id"] for o in sandbox.orders()] == ["unix-http-1"]

    asyncio.run(scenario())


async def _delivered(stub: Any, order_id: str) -> bool:
    status = await stub.GetOrder(pb.GetOrderRequest(order_id=order_id))
    return bool(status.state == pb.OrderStatus.DELIVERED)


def test_an_http_address_in_use_stops_startup_with_a_clear_message(tmp_path: Path, sandbox: Sandbox) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        config = replace(config_for(tmp_path, sandbox), http=HttpConfig(listen=address))

        async def scenario() -> None:
            sidecar = Sidecar(config)
            with pytest.raises(StartupError) as raised:
                await sidecar.start()
            assert str(raised.value).startswith(f"cannot listen on {address} (http.listen): ")
            # Everything started before is released: the same state directory starts again at once.
            async with running_in_process(config_for(tmp_path, sandbox)) as (_, stub):
                assert (await stub.GetStats(pb.GetStatsRequest())).button_reachable

        asyncio.run(scenario())


def test_startup_objects_are_frozen_out_of_the_collectors_view_and_garbage_is_not() -> None:
    class Node:
        peer: object = None

    cycle = Node()
    cycle.peer = cycle  # unreachable once deleted: only the cyclic collector frees it
    gone = weakref.ref(cycle)
    del cycle
    frozen_before = gc.get_freeze_count()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > frozen_before
        assert gone() is None  # collected first: frozen garbage would stay for the life of the process
    finally:
        gc.unfreeze()
