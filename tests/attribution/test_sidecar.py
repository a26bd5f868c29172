"""The attribution store behind the running sidecar, as `[attribution]` configures it: a fleet of two sidecars
sharing Redis across both transports, and a Redis outage answered UNAVAILABLE (gRPC) and 503 (HTTP)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]
import pytest
from button_sidecar.config import AttributionConfig, Secret, SidecarConfig
from button_sidecar.v1 import sidecar_pb2 as pb

from tests.attribution.helpers import MINUTE_MS, MPID, deep_link, now_ms, redis_server, user_batch
from tests.conftest import Sandbox
from tests.pipeline.helpers import purchase, wait_until
from tests.server.helpers import config_for, ingest_json, running_in_process
from tests.server.http_helpers import call


def on_redis(state_dir: Path, sandbox: Sandbox, url: str, prefix: str) -> SidecarConfig:
    store = AttributionConfig(store="redis", redis_url=Secret(url), redis_key_prefix=prefix)
    return replace(config_for(state_dir, sandbox), attribution=store)


def test_a_deep_link_over_http_to_one_sidecar_credits_a_purchase_over_grpc_to_another(
    tmp_path: Path, sandbox: Sandbox, redis_url: str
) -> None:
    prefix = f"test-{uuid.uuid4().hex}:"

    async def scenario() -> None:
        opened = now_ms() - MINUTE_MS
        async with (
            running_in_process(on_redis(tmp_path / "a", sandbox, redis_url, prefix)) as (a, _),
            running_in_process(on_redis(tmp_path / "b", sandbox, redis_url, prefix)) as (_, b),
        ):
            taught = await call(a.http_url, "POST", "/v2/events", user_batch(deep_link("srctok-shared", opened)))
            assert taught.status == 202
            assert not (await b.GetAttribution(pb.GetAttributionRequest(user_key="mpid:1"))).found
            found = await b.GetAttribution(pb.GetAttributionRequest(user_key=f"mpid:{MPID}"))
            assert (found.found, found.btn_ref, found.timestamp_ms) == (True, "srctok-shared", opened)
            bought = await b.Ingest(ingest_json(user_batch(purchase("shared-1"))))
            assert bought.counts.accepted == 1

            async def delivered() -> bool:
                status = await b.GetOrder(pb.GetOrderRequest(order_id="shared-1"))
                return bool(status.state == pb.OrderStatus.DELIVERED)

            await wait_until(delivered, what="the order delivered")
        (order,) = sandbox.orders()
        assert (order["order_id"], order["btn_ref"]) == ("shared-1", "srctok-shared")

    asyncio.run(scenario())


def test_a_redis_outage_is_unavailable_over_grpc_and_503_over_http(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    password = "redis-pw-must-not-show"

    async def scenario() -> None:
        with redis_server(tmp_path, password=password) as redis:
            async with running_in_process(on_redis(tmp_path / "state", sandbox, redis.url, "outage:")) as (
                sidecar,
                stub,
            ):
                redis.stop()
                for refused_call in (
                    stub.Ingest(ingest_json(user_batch(purchase("outage-1")))),
                    stub.GetAttribution(pb.GetAttributionRequest(user_key=f"mpid:{MPID}")),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        await refused_call
                    assert (raised.value.code(), raised.value.details()) == (
                        grpc.StatusCode.UNAVAILABLE,
                        "the shared store (Redis) did not answer; retry later",
                    )
                answer = await call(sidecar.http_url, "POST", "/v2/events", user_batch(purchase("outage-2")))
                assert (answer.status, answer.headers["Retry-After"]) == (503, "1")
                assert answer.errors[0]["code"] == "SERVICE_UNAVAILABLE"
                stats = await stub.GetStats(pb.GetStatsRequest())
                assert stats.queue_depth == 0  # nothing of either was queued
        assert sandbox.orders() == []

    with caplog.at_level(logging.DEBUG):
        asyncio.run(scenario())
    assert password not in caplog.text
