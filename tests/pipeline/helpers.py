"""mParticle batches, settings and waiting helpers for the pipeline tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from button_sidecar import TransformConfig, Transformer
from button_sidecar.pipeline import Pipeline, PipelineSettings, RetryPolicy
from prometheus_client import CollectorRegistry

from tests.conftest import Sandbox

# Small backoff so retries take tenths of a second; the age limit keeps anything from dying mid-test.
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_secs=0.05, max_backoff_secs=0.4, max_age_secs=60.0)
PURCHASE_MS = 1_714_592_744_066
EMAIL = "Jane.Doe@Example.com"


def settings(state_dir: Path, sandbox: Sandbox, **changes: Any) -> PipelineSettings:
    values: dict[str, Any] = {
        "state_dir": state_dir,
        "api_key": sandbox.api_key,
        "button_base_url": sandbox.url,
        "concurrency": 8,
        "request_timeout_secs": 5.0,
        "retry": FAST_RETRY,
    }
    return PipelineSettings(**{**values, **changes})


@asynccontextmanager
async def running(
    config: PipelineSettings,
    registry: CollectorRegistry | None = None,
    stop_deadline_secs: float = 5.0,
    transform: TransformConfig | None = None,
) -> AsyncIterator[Pipeline]:
    pipeline = Pipeline(config, Transformer(transform or TransformConfig()), registry=registry)
    await pipeline.start()
    try:
        yield pipeline
    finally:
        await pipeline.stop(stop_deadline_secs)


def product(sku: str, price: str, quantity: int = 1) -> dict[str, Any]:
    return {"id": sku, "name": f"Product {sku}", "price": price, "quantity": quantity}


def batch(*events: dict[str, Any], source_request_id: str | None = None, email: str | None = None) -> bytes:
    body: dict[str, Any] = {
        "environment": "production",
        "mpid": 7346244611012968789,
        "user_identities": {"customer_id": "cust-1234", **({"email": email} if email else {})},
        "events": list(events),
    }
    if source_request_id is not None:
        body["source_request_id"] = source_request_id
    return orjson.dumps(body)


def purchase(order_id: str, products: Sequence[dict[str, Any]] = (), total: str | None = None) -> dict[str, Any]:
    items = list(products) or [product("sku-1", "10.00")]
    action: dict[str, Any] = {"action": "purchase", "transaction_id": order_id, "products": items}
    if total is not None:
        action["total_amount"] = total
    return _commerce(action)


def refund(order_id: str, products: Sequence[dict[str, Any]] = (), total: str | None = None) -> dict[str, Any]:
    """A full refund without products and total, else a partial one."""
    action: dict[str, Any] = {"action": "refund", "transaction_id": order_id}
    if products:
        action["products"] = list(products)
    if total is not None:
        action["total_amount"] = total
    return _commerce(action)


def _commerce(action: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_type": "commerce_event",
        "data": {"currency_code": "USD", "product_action": action, "timestamp_unixtime_ms": PURCHASE_MS},
    }


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 20.0, interval: float = 0.05, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def drained(pipeline: Pipeline, timeout: float = 20.0) -> None:
    """Wait until nothing is queued or in flight."""

    async def empty() -> bool:
        stats = await pipeline.stats()
        return stats.queued + stats.in_flight == 0

    await wait_until(empty, timeout, what="the outbox to drain")


async def orders_by_id(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    return {str(order["order_id"]): order for order in await asyncio.to_thread(sandbox.orders)}


async def request_log(sandbox: Sandbox) -> list[dict[str, object]]:
    return await asyncio.to_thread(sandbox.requests)


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0
