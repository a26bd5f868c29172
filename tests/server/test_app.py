"""The sidecar in-process: back-pressure and health, auth, TLS, draining, the embedded sandbox, the attribution seam."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]
import pytest
from button_sidecar.config import ButtonConfig, OutboxConfig, Secret
from button_sidecar.server import KnownAttribution, Sidecar
from button_sidecar.v1 import sidecar_pb2 as pb
from button_sidecar.v1 import sidecar_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from tests.conftest import Sandbox
from tests.server.helpers import config_for, ingest_json, make_certificates, purchase_batch, running_in_process

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_of(channel: Any, service: str = "") -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    status: int = response.status
    return status


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


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

                await eventually(not_serving, what="health NOT_SERVING")
                # Deliveries making room bring it back.
                sandbox.clear_faults()
                await eventually(lambda: _serving(channel), timeout=10, what="health SERVING again")

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
            await asyncio.sleep(0.2)  # the delivery is under way
            stopping = asyncio.create_task(sidecar.stop())
            await asyncio.sleep(0.1)
            assert await health_of(channel) == NOT_SERVING
            for call in (stub.Ingest(ingest_json(purchase_batch("drain-2"))), stub.GetStats(pb.GetStatsRequest())):
                error = await rpc_error(call)
                assert (error.code(), error.details()) == (
                    grpc.StatusCode.UNAVAILABLE,
                    "the sidecar is shutting down; retry later or elsewhere",
                )
            await stopping
        assert [o["order_id"] for o in sandbox.orders()] == ["drain-1"]  # the in-flight delivery finished

    asyncio.run(scenario())


def test_without_an_api_key_it_delivers_to_an_embedded_sandbox(tmp_path: Path, sandbox: Sandbox) -> None:
    config = config_for(tmp_path, sandbox)
    config = replace(config, button=ButtonConfig(base_url="https://api.usebutton.com"))

    async def scenario() -> None:
        async with running_in_process(config) as (_, stub):
            await stub.Ingest(ingest_json(purchase_batch("embedded-1")))
            stats = await stub.GetStats(pb.GetStatsRequest())
            assert stats.button_base_url.startswith("http://127.0.0.1:") and stats.button_reachable
            async with aiohttp.ClientSession() as session:

                async def arrived() -> bool:
                    async with session.get(f"{stats.button_base_url}/__admin/orders") as response:
                        return [o["order_id"] for o in await response.json()] == ["embedded-1"]

                await eventually(arrived, what="the order at the embedded sandbox")
        assert sandbox.orders() == []

    asyncio.run(scenario())


class _Attributions:
    async def latest(self, user_key: str) -> KnownAttribution | None:
        return KnownAttribution("srctok-abc123", 1_714_592_744_066) if user_key == "mpid:42" else None


def test_get_attribution_answers_from_the_lookup_it_is_given(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with running_in_process(config_for(tmp_path, sandbox), attribution=_Attributions()) as (_, stub):
            found = await stub.GetAttribution(pb.GetAttributionRequest(user_key="mpid:42"))
            assert (found.found, found.btn_ref, found.timestamp_ms) == (True, "srctok-abc123", 1_714_592_744_066)
            assert not (await stub.GetAttribution(pb.GetAttributionRequest(user_key="mpid:43"))).found

    asyncio.run(scenario())
