"""Delivery: orders/s the Pipeline delivers to a Button sandbox answering in 20 ms, against pybutton.

The sidecar: N orders (one purchase batch each, mapped by the core) are written to the outbox first, then
a `Pipeline` starts on that state directory and the clock runs until the sandbox holds all N orders. The
sandbox is a separate process (`button-sidecar sandbox --latency-ms 20`), so it does not share our event
loop. `PipelineSettings.concurrency` is swept to find what reaches the target.

The baseline is what a team writes without the sidecar: Button's official client, `pybutton`, creating
each order in the request path, one at a time, against the same sandbox.

    python -m benches.bench_delivery [--quick] [--concurrency 16,32,64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from button_sidecar import Transformer
from button_sidecar.pipeline import Pipeline, PipelineSettings
from button_sidecar.pipeline.outbox import Outbox
from button_sidecar.pipeline.records import OutboxItem
from pybutton import Client  # type: ignore[import-untyped]

from benches import corpus
from benches.common import (
    SANDBOX_API_KEY,
    BenchReport,
    ProcessSampler,
    Row,
    machine,
    machine_line,
    quick_from_env,
    sandbox,
    table,
    write_json,
)

LATENCY_MS = 20.0
TARGET_ORDERS_PER_S = 1000.0
TARGET_VS_PYBUTTON = 50.0
# Includes the default of PipelineSettings.concurrency (64), so the default is measured too.
FULL: dict[str, Any] = {"orders": 6000, "baseline_orders": 150, "concurrency": [16, 32, 64, 128, 256]}
QUICK: dict[str, Any] = {"orders": 800, "baseline_orders": 25, "concurrency": [16, 64]}
_POLL_SECS = 0.02
_DEADLINE_SECS = 300.0


def outbox_items(raws: Sequence[bytes], transformer: Transformer) -> list[tuple[list[OutboxItem], str | None]]:
    """The outbox rows the pipeline would write for `raws` (creates dedupe on their order id)."""
    batches = []
    for result in transformer.transform_many(raws, corpus.BASE_TIME_MS):
        items = [
            OutboxItem(
                kind=r.kind,
                method=r.method,
                path=r.path,
                body=r.body,
                order_key=r.order_id or None,
                dedupe_key=r.order_id if r.kind == "create_order" else None,
            )
            for r in result.requests
        ]
        batches.append((items, result.source_request_id))
    return batches


async def preload(state_dir: Path, batches: Sequence[tuple[list[OutboxItem], str | None]]) -> int:
    """Write the batches to a fresh outbox in `state_dir` (nothing delivers yet); how many rows were queued."""
    rows = sum(len(items) for items, _ in batches)
    outbox = Outbox(state_dir, max_rows=rows + 1, max_bytes=2**40)
    await outbox.open()
    queued = 0
    try:
        for start in range(0, len(batches), 1000):
            for result in await outbox.enqueue_many(batches[start : start + 1000]):
                queued += sum(seq is not None for seq in result.seqs)
    finally:
        await outbox.close()
    return queued


class SandboxAdmin:
    """The sandbox's admin endpoints (no auth)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url

    async def call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        async with self._session.request(method, f"{self._url}/__admin/{path}", data=data) as response:
            response.raise_for_status()
            return orjson.loads(await response.read())

    async def fresh(self, latency_ms: float) -> None:
        """Forget every order, then answer every /v1 request after `latency_ms`."""
        await self.call("POST", "reset")
        await self.call("POST", "faults", {"latency_ms": latency_ms})

    async def orders(self) -> int:
        health = await self.call("GET", "health")
        return int(health["orders"])


async def wait_for_orders(admin: SandboxAdmin, expected: int, deadline_secs: float = _DEADLINE_SECS) -> int:
    deadline = time.monotonic() + deadline_secs
    while (held := await admin.orders()) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the sandbox holds {held} of {expected} orders after {deadline_secs} s")
        await asyncio.sleep(_POLL_SECS)
    return held


async def pipeline_run(
    url: str, admin: SandboxAdmin, raws: Sequence[bytes], concurrency: int, sandbox_pid: int
) -> dict[str, Any]:
    """Orders/s the pipeline delivers with `concurrency`, from a pre-loaded outbox; the CPU each side used."""
    transformer = Transformer()
    batches = outbox_items(raws, transformer)
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        state_dir = Path(tmp)
        orders = await preload(state_dir, batches)
        await admin.fresh(LATENCY_MS)
        settings = PipelineSettings(
            state_dir=state_dir,
            api_key=SANDBOX_API_KEY,
            button_base_url=url,
            concurrency=concurrency,
            max_queue_rows=max(100_000, orders + 1),
            max_queue_bytes=2**40,
        )
        pipeline = Pipeline(settings, transformer)
        ours, theirs = ProcessSampler(os.getpid()), ProcessSampler(sandbox_pid)
        cpu_before = ours.cpu_seconds(), theirs.cpu_seconds()
        start = time.perf_counter()
        await pipeline.start()
        try:
            await wait_for_orders(admin, orders)
            seconds = time.perf_counter() - start
            pipeline_cpu, sandbox_cpu = ours.cpu_seconds() - cpu_before[0], theirs.cpu_seconds() - cpu_before[1]
            stats = await pipeline.stats()
        finally:
            await pipeline.stop(5.0)
    return {
        "concurrency": concurrency,
        "orders": orders,
        "seconds": seconds,
        "orders_per_s": orders / seconds,
        "dead_letters": stats.dead,
        "pipeline_cores_busy": pipeline_cpu / seconds,
        "sandbox_cores_busy": sandbox_cpu / seconds,
        "pipeline_cpu_ms_per_order": pipeline_cpu / orders * 1000,
        "retries": pipeline.registry.get_sample_value("button_sidecar_delivery_retries_total") or 0.0,
    }


def pybutton_run(url: str, bodies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Orders/s of pybutton creating each order in turn (what the request path would do)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    client = Client(SANDBOX_API_KEY, {"hostname": host, "port": int(port), "secure": False, "timeout": 10})
    start = time.perf_counter()
    for body in bodies:
        client.orders.create(body)
    seconds = time.perf_counter() - start
    return {"orders": len(bodies), "seconds": seconds, "orders_per_s": len(bodies) / seconds}


async def measure(quick: bool, concurrencies: Sequence[int] | None = None) -> BenchReport:
    sizes = QUICK if quick else FULL
    levels = list(concurrencies or sizes["concurrency"])
    raws = corpus.purchases(sizes["orders"])
    bodies = [
        orjson.loads(r.body)
        for result in Transformer().transform_many(corpus.purchases(sizes["baseline_orders"], seed=12))
        for r in result.requests
        if r.body is not None
    ]
    with tempfile.TemporaryDirectory(prefix="bench-delivery-logs-") as logs:
        log = Path(logs) / "sandbox.log"
        with sandbox(log, "--latency-ms", str(LATENCY_MS), "--request-log-limit", "1000") as (url, process):
            async with aiohttp.ClientSession() as session:
                admin = SandboxAdmin(session, url)
                await admin.fresh(LATENCY_MS)
                baseline = await asyncio.to_thread(pybutton_run, url, bodies)
                if await admin.orders() != len(bodies):
                    raise AssertionError("pybutton: the sandbox does not hold every order")
                runs = [await pipeline_run(url, admin, raws, level, process.pid) for level in levels]

    best = max(runs, key=lambda run: run["orders_per_s"])
    default_level = PipelineSettings.__dataclass_fields__["concurrency"].default
    default = next((run for run in runs if run["concurrency"] == default_level), None)
    reaching = [run["concurrency"] for run in runs if run["orders_per_s"] >= TARGET_ORDERS_PER_S]
    recommended = min(reaching) if reaching else best["concurrency"]
    rows = [
        Row("delivery: pybutton baseline, one at a time", baseline["orders_per_s"], "orders/s"),
        *(
            Row(f"delivery: pipeline, concurrency {run['concurrency']}", run["orders_per_s"], "orders/s")
            for run in runs
            if run is not best
        ),
        Row(
            f"delivery: pipeline, best (concurrency {best['concurrency']})",
            best["orders_per_s"],
            "orders/s",
            TARGET_ORDERS_PER_S,
        ),
        Row(
            f"delivery vs pybutton (concurrency {best['concurrency']})",
            best["orders_per_s"] / baseline["orders_per_s"],
            "x",
            TARGET_VS_PYBUTTON,
        ),
    ]
    if default is not None and default is not best:  # only when the default was among the levels measured
        rows.append(
            Row(
                f"delivery vs pybutton (default concurrency {default_level})",
                default["orders_per_s"] / baseline["orders_per_s"],
                "x",
            )
        )
    details = {
        "latency_ms": LATENCY_MS,
        "baseline": baseline,
        "runs": runs,
        "best_concurrency": best["concurrency"],
        "recommended_concurrency": recommended,
        "target_reached": bool(reaching),
        "little_law_concurrency_at_target": TARGET_ORDERS_PER_S * LATENCY_MS / 1000,
        "ratio_vs_pybutton": best["orders_per_s"] / baseline["orders_per_s"],
    }
    return BenchReport("delivery", rows, details)


def run(quick: bool = False, concurrencies: Sequence[int] | None = None) -> BenchReport:
    return asyncio.run(measure(quick, concurrencies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", default=quick_from_env(), help="smoke-test sizes")
    parser.add_argument("--concurrency", help="comma-separated PipelineSettings.concurrency values to try")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")] if args.concurrency else None
    info = machine()
    print(machine_line(info))
    start = time.perf_counter()
    report = run(args.quick, levels)
    report.seconds = time.perf_counter() - start
    print(table(report.rows))
    write_json("delivery", {"machine": info, "quick": args.quick, **report.to_json()})


if __name__ == "__main__":
    main()
