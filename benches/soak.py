"""A bounded soak: `button-sidecar serve` under steady mixed load while the Button sandbox injects faults.

    make soak                      # 10 minutes (SOAK_SECS=600)
    SOAK_SECS=60 python -m benches.soak

The sidecar and the sandbox are subprocesses (as in production: configuration through a TOML file and the
environment). The load generator is this process: gRPC `Ingest` and HTTP `POST /v2/events` callers, each sending
one small batch at a time (paced to `SOAK_RATE` calls per second in all) of purchases, partial and full refunds
of orders it created, and deep links. The sandbox fails at random meanwhile (5xx, 429 with Retry-After, dropped
connections, latency), so the sidecar retries all along.

Every `SOAK_INTERVAL_SECS` (10) a line: calls and errors per transport in the interval, the sidecar's RSS, its
queue depth, delivered and dead-lettered requests. At the end the faults are cleared and the outbox drained, and
the JSON summary (throughput, errors by kind, latency percentiles, RSS over time, what was lost) goes to
var/bench/soak.json (`BENCH_OUTPUT_DIR` elsewhere). The exit status is 1 when the sidecar died, an order accepted
by Ingest never reached Button, anything was dead-lettered, or the outbox did not drain.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc  # type: ignore[import-untyped]
import orjson
import psutil  # type: ignore[import-untyped]
from button_sidecar.v1 import sidecar_pb2, sidecar_pb2_grpc

from benches.common import (
    Child,
    child,
    cli_command,
    free_port,
    machine,
    machine_line,
    percentile,
    sandbox,
    serve_env,
    write_json,
)

SANDBOX_FAULTS = (
    "--error-rate", "0.05",
    "--drop-connection-rate", "0.01",
    "--rate-limit-rate", "0.01",
    "--retry-after-s", "1",
    "--latency-ms", "5",
)  # fmt: skip
_CALL_TIMEOUT_S = 30.0
_DRAIN_TIMEOUT_S = 120.0


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    return float(value) if value else default


@dataclass
class Interval:
    """What happened in one reporting interval (and, for the run, in all of them)."""

    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)


@dataclass
class Run:
    started: float = field(default_factory=time.monotonic)
    interval: Interval = field(default_factory=Interval)
    total: Interval = field(default_factory=Interval)
    created: list[str] = field(default_factory=list)
    refunded: set[str] = field(default_factory=set)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def record(self, transport: str, latency_s: float, error: str | None) -> None:
        for bucket in (self.interval, self.total):
            bucket.calls[transport] += 1
            bucket.latencies_s.append(latency_s)
            if error is not None:
                bucket.errors[f"{transport}:{error}"] += 1


def _commerce(action: str, order_id: str, quantity: int | None) -> dict[str, Any]:
    product_action: dict[str, Any] = {"action": action, "transaction_id": order_id}
    if quantity is not None:
        product_action["products"] = [{"id": "sku-1", "name": "Soak", "price": "10.00", "quantity": quantity}]
    return {
        "event_type": "commerce_event",
        "data": {
            "currency_code": "USD",
            "timestamp_unixtime_ms": int(time.time() * 1000),
            "product_action": product_action,
        },
    }


def _batch(events: list[dict[str, Any]], user: int) -> bytes:
    return orjson.dumps(
        {
            "environment": "production",
            "mpid": 1000 + user,
            "user_identities": {"customer_id": f"soak-user-{user}", "email": f"soak-{user}@example.com"},
            "events": events,
        }
    )


class Load:
    """One caller: a closed loop over one transport, paced to `rate` calls per second."""

    def __init__(self, run: Run, name: str, rate: float, seed: int) -> None:
        self._run = run
        self._name = name
        self._interval = 1.0 / rate
        self._rng = random.Random(seed)
        self._next_order = 0

    def next_batch(self) -> tuple[bytes, str | None]:
        """A batch, and the order id it creates (None for refunds and deep links)."""
        rng, run = self._rng, self._run
        user = rng.randrange(1000)
        roll = rng.random()
        candidates = run.created[-2000:]
        if roll < 0.15 and candidates:
            order_id = rng.choice(candidates)
            if order_id not in run.refunded:
                run.refunded.add(order_id)
                partial = rng.random() < 0.6
                return _batch([_commerce("refund", order_id, 1 if partial else None)], user), None
        if roll < 0.3:
            link = {
                "event_type": "application_state_transition",
                "data": {
                    "application_transition_type": "application_initialized",
                    "launch_referral": f"https://shop.example/?btn_ref=srctok-soak{user}",
                    "timestamp_unixtime_ms": int(time.time() * 1000),
                },
            }
            return _batch([link], user), None
        self._next_order += 1
        order_id = f"soak-{self._name}-{self._next_order}"
        return _batch([_commerce("purchase", order_id, 3)], user), order_id

    async def run(self, send: Any, until: float) -> None:
        due = time.monotonic()
        while time.monotonic() < until:
            raw, created = self.next_batch()
            started = time.monotonic()
            error = await send(raw)
            self._run.record(self._name.split("-")[0], time.monotonic() - started, error)
            if error is None and created is not None:
                self._run.created.append(created)
            due += self._interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))


def _grpc_sender(stub: Any) -> Any:
    async def send(raw: bytes) -> str | None:
        try:
            await stub.Ingest(sidecar_pb2.IngestRequest(mparticle_json=raw), timeout=_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            return str(error.code().name)
        return None

    return send


def _http_sender(session: aiohttp.ClientSession, url: str) -> Any:
    async def send(raw: bytes) -> str | None:
        try:
            async with session.post(url, data=raw, headers={"Content-Type": "application/json"}) as response:
                await response.read()
                return None if response.status == 202 else f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as error:
            return type(error).__name__

    return send


async def _stats(stub: Any) -> Any:
    return await stub.GetStats(sidecar_pb2.GetStatsRequest(), timeout=_CALL_TIMEOUT_S)


async def _retries(session: aiohttp.ClientSession, metrics_url: str) -> int:
    """Delivery retries so far, from the sidecar's /metrics: the sandbox's faults at work."""
    async with session.get(metrics_url) as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("button_sidecar_delivery_retries_total "):
            return int(float(line.split()[1]))
    return 0


async def _reporter(
    run: Run, server: Child, stub: Any, session: aiohttp.ClientSession, metrics_url: str, every: float, until: float
) -> None:
    process = psutil.Process(server.pid)
    last = time.monotonic()
    while True:
        await asyncio.sleep(max(0.0, min(every, until - time.monotonic())))
        now = time.monotonic()
        at, elapsed, last = now - run.started, now - last, now
        interval, run.interval = run.interval, Interval()
        stats = await _stats(stub)
        retries = await _retries(session, metrics_url)
        sample = {
            "at_s": round(at, 1),
            "calls": dict(interval.calls),
            "errors": dict(interval.errors),
            "calls_per_s": round(sum(interval.calls.values()) / elapsed, 1) if elapsed else 0.0,
            "p99_ms": round(percentile(interval.latencies_s, 99) * 1000, 2),
            "rss_mib": round(process.memory_info().rss / 2**20, 1),
            "queue_depth": stats.queue_depth,
            "delivered": stats.delivered,
            "dead_letters": stats.dead_letters,
            "delivery_retries": retries,
        }
        run.samples.append(sample)
        errors = ", ".join(f"{k} {v}" for k, v in sorted(interval.errors.items())) or "none"
        calls = ", ".join(f"{k} {v}" for k, v in sorted(interval.calls.items()))
        print(
            f"t={at:5.0f}s  {sample['calls_per_s']:7.1f} calls/s ({calls})"
            f"  errors: {errors}  p99 {sample['p99_ms']} ms  RSS {sample['rss_mib']} MiB"
            f"  queue {stats.queue_depth}  delivered {stats.delivered} (retries {retries})  dead {stats.dead_letters}",
            flush=True,
        )
        if time.monotonic() >= until - 0.05:
            return


async def _sandbox_admin(session: aiohttp.ClientSession, url: str, method: str, path: str) -> Any:
    async with session.request(method, f"{url}/__admin/{path}") as response:
        response.raise_for_status()
        return await response.json()


async def soak(seconds: float, rate: float, every: float, directory: Path) -> dict[str, Any]:
    run = Run()
    http_port = free_port()
    with sandbox(directory / "sandbox.log", "--request-log-limit", "1000", *SANDBOX_FAULTS) as (sandbox_url, _):
        config = directory / "sidecar.toml"
        config.write_text('log_level = "warning"\n[outbox]\nmax_requests = 10000000\nmax_bytes = 1099511627776\n')
        env = serve_env(sandbox_url, http_port, directory / "state")
        with child(cli_command("serve", "--config", str(config)), env, directory / "serve.log") as server:
            address = server.first_line.removeprefix("Sidecar listening on ")
            http_url = f"http://127.0.0.1:{http_port}/v2/events"
            rss_start = psutil.Process(server.pid).memory_info().rss
            async with (
                grpc.aio.insecure_channel(address) as channel,
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_CALL_TIMEOUT_S)) as session,
            ):
                stub = sidecar_pb2_grpc.SidecarStub(channel)
                await _wait_http(session, f"http://127.0.0.1:{http_port}/healthz")
                run.started = time.monotonic()
                until = run.started + seconds
                loads = [Load(run, f"grpc-{i}", rate / 6, i) for i in range(4)]
                loads += [Load(run, f"http-{i}", rate / 6, 10 + i) for i in range(2)]
                senders = [_grpc_sender(stub)] * 4 + [_http_sender(session, http_url)] * 2
                await asyncio.gather(
                    *(load.run(send, until) for load, send in zip(loads, senders, strict=True)),
                    _reporter(run, server, stub, session, f"http://127.0.0.1:{http_port}/metrics", every, until),
                )
                load_secs = time.monotonic() - run.started
                # Faults off, then everything accepted must reach Button.
                await _sandbox_admin(session, sandbox_url, "DELETE", "faults")
                drained, drain_secs = await _drain(stub)
                stats = await _stats(stub)
                dead = await stub.ListDeadLetters(sidecar_pb2.ListDeadLettersRequest(limit=100), timeout=30)
                orders = await _sandbox_admin(session, sandbox_url, "GET", "orders")
            rss_end = psutil.Process(server.pid).memory_info().rss
            alive = server.process.poll() is None
    delivered_ids = {str(order["order_id"]) for order in orders}
    lost = [order_id for order_id in run.created if order_id not in delivered_ids]
    total_calls = sum(run.total.calls.values())
    rss_series = [s["rss_mib"] for s in run.samples]
    return {
        "seconds": round(load_secs, 1),
        "rate_target_calls_per_s": rate,
        "calls": dict(run.total.calls),
        "calls_per_s": round(total_calls / load_secs, 1) if load_secs else 0.0,
        "errors": dict(run.total.errors),
        "error_fraction": round(sum(run.total.errors.values()) / total_calls, 4) if total_calls else 0.0,
        "latency_ms": {q: round(percentile(run.total.latencies_s, float(q[1:])) * 1000, 2) for q in ("p50", "p99")},
        "orders_created": len(run.created),
        "refunds": len(run.refunded),
        "lost_orders": lost[:100],
        "lost_count": len(lost),
        "drained": drained,
        "drain_secs": round(drain_secs, 1),
        "delivered": stats.delivered,
        "delivery_retries": run.samples[-1]["delivery_retries"] if run.samples else 0,
        "dead_letters": [(d.order_id, d.kind, d.reason, d.last_status) for d in dead.dead_letters],
        "rss_mib": {
            "start": round(rss_start / 2**20, 1),
            "end": round(rss_end / 2**20, 1),
            "peak": max(rss_series, default=0.0),
            "series": rss_series,
        },
        "server_alive": alive,
        "intervals": run.samples,
        "sandbox_faults": " ".join(SANDBOX_FAULTS),
    }


async def _wait_http(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the HTTP endpoint {url} did not answer")
        await asyncio.sleep(0.1)


async def _drain(stub: Any) -> tuple[bool, float]:
    started = time.monotonic()
    while time.monotonic() - started < _DRAIN_TIMEOUT_S:
        if (await _stats(stub)).queue_depth == 0:
            return True, time.monotonic() - started
        await asyncio.sleep(0.25)
    return False, time.monotonic() - started


def main() -> int:
    seconds = _env_number("SOAK_SECS", 600.0)
    rate = _env_number("SOAK_RATE", 300.0)
    every = _env_number("SOAK_INTERVAL_SECS", 10.0)
    info = machine()
    print(machine_line(info), flush=True)
    print(f"soak: {seconds:g} s at {rate:g} calls/s (gRPC 2/3, HTTP 1/3), sandbox faults: {' '.join(SANDBOX_FAULTS)}")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        summary = asyncio.run(soak(seconds, rate, every, Path(tmp)))
    failed = not summary["server_alive"] or summary["lost_count"] or summary["dead_letters"] or not summary["drained"]
    path = write_json("soak", {"machine": info, "ok": not failed, **summary})
    rss = summary["rss_mib"]
    print(
        f"soak: {summary['calls_per_s']} calls/s over {summary['seconds']} s, {sum(summary['calls'].values())} calls,"
        f" error fraction {summary['error_fraction']}, p99 {summary['latency_ms']['p99']} ms; RSS {rss['start']} ->"
        f" {rss['end']} MiB (peak {rss['peak']}); {summary['orders_created']} orders, {summary['lost_count']} lost,"
        f" {len(summary['dead_letters'])} dead letters, drained in {summary['drain_secs']} s"
    )
    print(f"JSON: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
