"""mParticle batches of one app user (deep links, identities, consent), a two-host fleet of pipelines, and a
private `redis-server`."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from button_sidecar import TransformConfig
from button_sidecar.pipeline import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.conftest import Sandbox, free_port
from tests.pipeline.helpers import request_log, running, settings

MPID = 8675309
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
APP_ID = "app-7a1e5c0d1e9f3b2a"
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
_REDIS_STARTUP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Token:
    """A learned token as the attribution store takes it (`LearnedToken`)."""

    user_keys: list[str]
    btn_ref: str
    timestamp_ms: int


def now_ms() -> int:
    return int(time.time() * 1000)


def deep_link(btn_ref: str, at_ms: int) -> dict[str, Any]:
    """An app open through a Button link (what mParticle SDKs record as the launch referral)."""
    return {
        "event_type": "application_state_transition",
        "data": {
            "application_transition_type": "application_initialized",
            "launch_referral": f"brand-app://products/42?btn_ref={btn_ref}&utm_source=button",
            "timestamp_unixtime_ms": at_ms,
        },
    }


def product_view(sku: str, at_ms: int) -> dict[str, Any]:
    return {
        "event_type": "commerce_event",
        "data": {
            "currency_code": "USD",
            "product_action": {"action": "view_detail", "products": [{"id": sku, "name": "Mug", "price": "12.50"}]},
            "timestamp_unixtime_ms": at_ms,
        },
    }


def user_batch(
    *events: dict[str, Any],
    mpid: int = MPID,
    customer_id: str | None = None,
    idfa: str | None = None,
    platform: str = "iOS",
    environment: str | None = "production",
    consent: dict[str, Any] | None = None,
) -> bytes:
    body: dict[str, Any] = {"mpid": mpid, "events": list(events)}
    if environment is not None:
        body["environment"] = environment
    if customer_id is not None:
        body["user_identities"] = {"customer_id": customer_id}
    if idfa is not None:
        body["device_info"] = {"platform": platform, "ios_advertising_id": idfa}
    if consent is not None:
        body["consent_state"] = consent
    return orjson.dumps(body)


@asynccontextmanager
async def hosts(
    tmp_path: Path, sandbox: Sandbox, stores: dict[str, Any], transform: TransformConfig | None = None, **changes: Any
) -> AsyncIterator[tuple[Pipeline, Pipeline]]:
    """Hosts A and B: two pipelines with state directories of their own sharing one Redis. SQLite state
    belongs to one host, so with it A and B are the same pipeline: the behaviour tests then run on one host."""
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            running(settings(tmp_path / "a", sandbox, **stores, **changes), transform=transform)
        )
        b = a
        if stores["store_backend"] == "redis":
            b = await stack.enter_async_context(
                running(settings(tmp_path / "b", sandbox, **stores, **changes), transform=transform)
            )
        yield a, b


async def requests_for(sandbox: Sandbox, *order_ids: str) -> list[tuple[object, object]]:
    """`(method, path)` of the sandbox's requests for `order_ids`, and of every app signal.

    Scoped, because the shared sandbox may log a request of an earlier test late: one it held back with
    `latency_ms` after that test's pipeline had stopped waiting for it.
    """
    log = await request_log(sandbox)
    return [
        (r["method"], r["path"]) for r in log if r["order_id"] in order_ids or str(r["path"]).startswith("/v1/app/")
    ]


@dataclass
class RedisServer:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """Stop it (idempotent): SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def redis_server(workdir: Path, password: str | None = None) -> Iterator[RedisServer]:
    """A private `redis-server` on a free loopback port, without persistence (and with `password` required when
    given; the URL then carries it); stopped on leaving."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not installed; `make redis-server-installed` installs Debian's package")
    port = free_port()
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if password is not None:
        command += ["--requirepass", password]
    log_path = workdir / "redis.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([*command, "--dir", str(workdir)], stdout=log, stderr=subprocess.STDOUT)
    server = RedisServer(f"redis://{'' if password is None else f':{password}@'}127.0.0.1:{port}/0", process)
    try:
        _wait_for_ping(process, port, password, log_path)
        yield server
    finally:
        server.stop()


def _wait_for_ping(process: subprocess.Popen[bytes], port: int, password: str | None, log_path: Path) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_connect_timeout=0.5)
    deadline = time.monotonic() + _REDIS_STARTUP_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if client.ping():
                    return
            except RedisConnectionError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)
    finally:
        client.close()
