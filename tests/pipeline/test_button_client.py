"""`ButtonClient` on its Rust transport (`_core.HttpTransport`), against the real sandbox over real sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest
from button_sidecar import __version__, _core
from button_sidecar.pipeline.button import ButtonClient, ButtonUnreachable, order_path
from button_sidecar.telemetry import SidecarMetrics
from prometheus_client import CollectorRegistry

from tests.conftest import SANDBOX_API_KEY, Sandbox, SandboxFactory, free_port
from tests.sandbox.helpers import new_order

ORDER = new_order("client-1")


@asynccontextmanager
async def started(
    base_url: str, api_key: str = SANDBOX_API_KEY, timeout_secs: float = 5.0
) -> AsyncIterator[ButtonClient]:
    client = ButtonClient(base_url, api_key, timeout_secs=timeout_secs, metrics=SidecarMetrics(CollectorRegistry()))
    await client.start()
    try:
        yield client
    finally:
        await client.close()


def test_requests_carry_auth_and_headers_and_answers_come_back_whole(sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with started(sandbox.url) as client:
            created, again, fetched = await asyncio.gather(
                client.request("POST", "/v1/order", orjson.dumps(ORDER)),
                client.request("POST", "/v1/order", orjson.dumps({**ORDER, "order_id": "client-2"})),
                client.request("GET", order_path("no-such-order")),
            )
            assert (created.status, again.status, fetched.status) == (200, 200, 404)
            assert orjson.loads(created.body)["object"]["order_id"] == "client-1"
            assert "error" in orjson.loads(fetched.body)
        seen = [r for r in sandbox.requests() if r["method"] == "POST"]
        assert [r["auth"] for r in seen] == ["api_key", "api_key"]
        sent = seen[0]["headers"]
        assert isinstance(sent, dict)
        headers = {str(k).lower(): v for k, v in sent.items()}
        assert headers["user-agent"] == f"button-sidecar/{__version__}"
        assert headers["content-type"] == "application/json"
        assert headers["accept"] == "application/json"

    asyncio.run(scenario())


def test_retry_after_comes_back_with_the_answer(sandbox: Sandbox) -> None:
    async def scenario() -> None:
        sandbox.set_faults(rate_limit_every=1, retry_after_s=7)
        async with started(sandbox.url) as client:
            answer = await client.request("POST", "/v1/order", orjson.dumps(ORDER))
        assert (answer.status, answer.retry_after) == (429, "7")

    asyncio.run(scenario())


def test_no_answer_is_unreachable_and_says_why_without_the_url_or_the_key() -> None:
    async def scenario() -> None:
        async with started(f"http://127.0.0.1:{free_port()}", api_key="sk-secret-key") as client:
            with pytest.raises(ButtonUnreachable) as refused:
                await client.request("GET", order_path("secret-order-id"))
        message = str(refused.value)
        assert "connect" in message.lower()
        assert "secret-order-id" not in message and "sk-secret-key" not in message and "127.0.0.1" not in message

    asyncio.run(scenario())


def test_a_dropped_connection_is_unreachable(sandbox: Sandbox) -> None:
    async def scenario() -> None:
        sandbox.set_faults(drop_connection_rate=1.0)
        async with started(sandbox.url) as client:
            with pytest.raises(ButtonUnreachable):
                await client.request("POST", "/v1/order", orjson.dumps(ORDER))

    asyncio.run(scenario())


def test_a_slow_answer_times_out_end_to_end(sandbox_factory: SandboxFactory) -> None:
    # Sandboxes of their own (here and below): the request held back lands after the test, in no other test's.
    sandbox = sandbox_factory()

    async def scenario() -> None:
        sandbox.set_faults(latency_ms=3000)
        async with started(sandbox.url, timeout_secs=0.3) as client:
            began = time.monotonic()
            with pytest.raises(ButtonUnreachable, match=r"^timed out$"):
                await client.request("POST", "/v1/order", orjson.dumps(ORDER))
            assert time.monotonic() - began < 2.0

    asyncio.run(scenario())


def test_closing_releases_the_callers_of_requests_under_way(sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory()

    async def scenario() -> None:
        sandbox.set_faults(latency_ms=3000)
        async with started(sandbox.url) as client:
            pending = asyncio.ensure_future(client.request("POST", "/v1/order", orjson.dumps(ORDER)))
            await asyncio.sleep(0.2)
            began = time.monotonic()
            await client.close()
            with pytest.raises(ButtonUnreachable, match="closed"):
                await pending
            assert time.monotonic() - began < 1.0
            with pytest.raises(RuntimeError, match="not started"):
                await client.request("GET", order_path("x"))

    asyncio.run(scenario())


def test_the_transport_names_the_argument_it_refuses_and_never_quotes_a_header_value() -> None:
    for timeout in (0, -1, float("nan"), float("inf"), 1e300):
        with pytest.raises(ValueError, match=r"^timeout_secs: "):
            _core.HttpTransport(timeout_secs=timeout)
    with pytest.raises(ValueError, match=r'^headers: the value of "Authorization"') as bad_value:
        _core.HttpTransport(timeout_secs=1, headers=[("Authorization", "Basic sk-secret\n")])
    assert "sk-secret" not in str(bad_value.value)
    transport = _core.HttpTransport(timeout_secs=1)
    try:
        with pytest.raises(ValueError, match=r"^method: "):
            transport.send(1, "GE T", "http://127.0.0.1/", [])
        with pytest.raises(ValueError, match=r"^url: "):
            transport.send(2, "GET", "not a url", [])
        with pytest.raises(ValueError, match=r"^headers: "):
            transport.send(3, "GET", "http://127.0.0.1/", [("Bad Name", "x")])
        assert transport.completed() == []
    finally:
        transport.close()
    with pytest.raises(RuntimeError, match="closed"):
        transport.send(4, "GET", "http://127.0.0.1/", [])
