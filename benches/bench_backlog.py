"""Backlog: a long Button outage. Memory must stay flat while the outbox grows; then how fast it drains.

A `Pipeline` ingests N orders (one purchase batch each; 1,000,000, quick mode 20,000) while Button is down:
its base URL is a closed port, so every delivery attempt is refused and retried with backoff, as in a real
outage. The process's RSS is sampled throughout; the state directory's bytes per order are measured at the
end. Then the sandbox starts on that port ("recovery") and the clock runs until it holds every order, or
until the drain budget is spent (the full run would need about N / rate seconds; the rate and a projection
are reported then). The drain rate is the sustained one (to 90% delivered); the time to drain everything
includes the tail of rows whose failed attempts during the outage earned a backoff of up to a minute.
`max_queue_rows` (default 100,000) and `max_queue_bytes` are raised for this run.

    python -m benches.bench_backlog [--quick] [--orders N] [--drain-budget SECS]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from button_sidecar import Transformer
from button_sidecar.pipeline import Pipeline, PipelineSettings

from benches import corpus
from benches.bench_delivery import SandboxAdmin
from benches.common import (
    SANDBOX_API_KEY,
    BenchReport,
    ProcessSampler,
    Row,
    directory_bytes,
    free_port,
    machine,
    machine_line,
    quick_from_env,
    sandbox,
    table,
    write_json,
)

# Budgets keep `make bench` within about 20 minutes however slow the pipeline is; what was cut is reported.
FULL: dict[str, Any] = {"orders": 1_000_000, "ingest_budget_s": 720.0, "drain_budget_s": 120.0}
QUICK: dict[str, Any] = {"orders": 20_000, "ingest_budget_s": 90.0, "drain_budget_s": 45.0}
TEMPLATES = 2000
CHUNK = 500  # batches per ingest_many call: one transaction each
_POLL_SECS = 0.25


def chunk(count: int, start: int, size: int, templates: list[bytes]) -> list[bytes]:
    """Batches `start` .. `start + size` of `count`: corpus purchases made unique (order id, source_request_id)
    per round through the templates."""
    end = min(count, start + size)
    return [corpus.unique(templates[i % TEMPLATES], i // TEMPLATES + 1) for i in range(start, end)]


async def measure(quick: bool, count: int | None = None, drain_budget_s: float | None = None) -> BenchReport:
    sizes = QUICK if quick else FULL
    total = count or int(sizes["orders"])
    budget = drain_budget_s if drain_budget_s is not None else float(sizes["drain_budget_s"])
    ingest_budget = float(sizes["ingest_budget_s"])
    templates = corpus.purchases(TEMPLATES, seed=13)
    port = free_port()  # nothing listens here until the recovery
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
        state_dir = Path(tmp) / "state"
        settings = PipelineSettings(
            state_dir=state_dir,
            api_key=SANDBOX_API_KEY,
            button_base_url=url,
            max_queue_rows=total + 1000,
            max_queue_bytes=2**40,
        )
        pipeline = Pipeline(settings, Transformer())
        await pipeline.start()
        sampler = ProcessSampler(os.getpid(), interval=0.5)
        try:
            with sampler:
                rss_start = sampler.rss()
                rss_at: dict[str, int] = {}
                start = time.perf_counter()
                accepted = 0
                for offset in range(0, total, CHUNK):
                    if time.perf_counter() - start > ingest_budget:
                        break
                    results = await pipeline.ingest_many(chunk(total, offset, CHUNK, templates))
                    accepted += sum(r.accepted for r in results)
                    done = offset + CHUNK
                    for mark in (10, 50):
                        if done >= total * mark // 100 and f"{mark}%" not in rss_at:
                            rss_at[f"{mark}%"] = sampler.rss()
                ingest_s = time.perf_counter() - start
                rss_at["100%"] = sampler.rss()
                stats = await pipeline.stats()
                disk = directory_bytes(state_dir)
                ingest_cpu_s = sampler.cpu_seconds() - sampler.samples[0].cpu_s

                # Recovery: Button is back on the same address.
                logs = Path(tmp) / "sandbox.log"
                with sandbox(logs, "--port", str(port), "--request-log-limit", "1000") as (_, _child):
                    async with aiohttp.ClientSession() as session:
                        admin = SandboxAdmin(session, url)
                        recovered = time.perf_counter()
                        held = 0
                        series: list[tuple[float, int]] = [(0.0, 0)]
                        while held < accepted and time.perf_counter() - recovered < budget:
                            await asyncio.sleep(_POLL_SECS)
                            held = await admin.orders()
                            series.append((round(time.perf_counter() - recovered, 3), held))
                        drain_s = time.perf_counter() - recovered
        finally:
            await pipeline.stop(5.0)
    drained = held >= accepted
    # The sustained rate: up to 90% delivered. The last rows wait out the backoff their failed attempts during
    # the outage earned (up to max_backoff_secs), so the tail is slower than the drain itself.
    t90 = next((t for t, n in series if n >= 0.9 * accepted), None)
    drain_rate = 0.9 * accepted / t90 if t90 else (held / drain_s if drain_s > 0 else 0.0)
    rss_mb = [round(s.rss_bytes / 2**20, 1) for s in sampler.samples]
    growth = rss_at["100%"] - rss_at.get("10%", rss_start)
    rows = [
        Row(
            f"backlog: ingest {total:,} orders, Button down"
            + ("" if accepted >= total else f" ({accepted:,} within the {ingest_budget:.0f} s budget)"),
            accepted / ingest_s,
            "orders/s",
        ),
        Row("backlog: peak RSS while queuing", sampler.peak_rss / 2**20, "MiB"),
        Row("backlog: RSS growth from 10% to 100% queued", growth / 2**20, "MiB"),
        Row("backlog: disk per queued order", disk / max(1, accepted), "bytes"),
        Row(
            "backlog: drain rate after recovery" + (" (to 90%)" if t90 else f" (first {drain_s:.0f} s)"),
            drain_rate,
            "orders/s",
        ),
    ]
    if drained:
        rows.append(Row("backlog: time to drain every order (backoff tail included)", drain_s, "s"))
    else:
        rows.append(
            Row(f"backlog: projected time to drain all (budget {budget:.0f} s spent)", accepted / drain_rate, "s")
        )
    details = {
        "orders": total,
        "accepted": accepted,
        "ingest_budget_s": ingest_budget,
        "queued_after_ingest": stats.queued + stats.in_flight,
        "ingest_s": ingest_s,
        "ingest_orders_per_s": accepted / ingest_s,
        "ingest_cpu_s": ingest_cpu_s,
        "rss_start_bytes": rss_start,
        "rss_at_bytes": rss_at,
        "rss_peak_bytes": sampler.peak_rss,
        "rss_growth_10_to_100_bytes": growth,
        "rss_mib_every_0_5_s": rss_mb,
        "state_dir_bytes": disk,
        "disk_bytes_per_order": disk / max(1, accepted),
        "drain": {
            "budget_s": budget,
            "drained": drained,
            "orders_delivered": held,
            "seconds": drain_s,
            "orders_per_s_to_90_percent": drain_rate,
            "seconds_to_90_percent": t90,
            "delivered_over_time": series[:: max(1, len(series) // 400)],
            "projected_full_drain_s": accepted / drain_rate if drain_rate else None,
            "concurrency": settings.concurrency,
        },
    }
    return BenchReport("backlog", rows, details)


def run(quick: bool = False, count: int | None = None, drain_budget_s: float | None = None) -> BenchReport:
    return asyncio.run(measure(quick, count, drain_budget_s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", default=quick_from_env(), help="smoke-test sizes")
    parser.add_argument("--orders", type=int, help="orders to queue (default 1,000,000; quick 20,000)")
    parser.add_argument("--drain-budget", type=float, help="most seconds to wait for the drain")
    args = parser.parse_args()
    info = machine()
    print(machine_line(info))
    start = time.perf_counter()
    report = run(args.quick, args.orders, args.drain_budget)
    report.seconds = time.perf_counter() - start
    print(table(report.rows))
    write_json("backlog", {"machine": info, "quick": args.quick, **report.to_json()})


if __name__ == "__main__":
    main()
