"""A pipeline process killed with SIGKILL mid-delivery loses nothing: a restart delivers every accepted order."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.conftest import Sandbox, wait_for
from tests.pipeline.helpers import drained, orders_by_id, request_log, running, settings

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 40
HOLD_MS = 3000.0


def test_sigkill_mid_delivery_loses_nothing(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.set_faults(latency_ms=200)
    env = {**os.environ, "BUTTON_API_KEY": sandbox.api_key, "PYTHONPATH": str(ROOT)}
    runner = subprocess.Popen(
        [sys.executable, "-m", "tests.pipeline.crash_runner", str(tmp_path), sandbox.url, str(ORDERS)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    assert runner.stdout is not None
    accepted: list[str] = []
    try:
        while len(accepted) < ORDERS:
            line = runner.stdout.readline().decode()
            assert line, f"the runner exited with {runner.poll()}"
            accepted.append(line.split()[1])
        wait_for(lambda: any(r["status"] == 200 for r in sandbox.requests()), what="a delivered order")
        # From now on the sandbox holds each new request for HOLD_MS, so the kill lands on requests the sandbox has
        # received and will answer, but whose answer the runner never sees.
        sandbox.set_faults(latency_ms=HOLD_MS)
        held: list[dict[str, object]] = []

        def some_held() -> bool:
            held[:] = [r for r in sandbox.in_flight() if r["latency_ms"] == HOLD_MS]
            return bool(held)

        wait_for(some_held, what="a request held in flight")
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        runner.stdout.close()
    delivered_before = len(sandbox.orders())
    assert 0 < delivered_before < ORDERS, "the kill should land in the middle of delivery"
    sandbox.clear_faults()

    async def restart() -> None:
        async with running(settings(tmp_path, sandbox)) as pipeline:
            await drained(pipeline, timeout=60)
            assert await pipeline.dead_letters() == []

    asyncio.run(restart())
    # The held requests are answered after the restart sent their orders again.
    wait_for(lambda: not sandbox.in_flight(), timeout=HOLD_MS / 1000 + 10, what="the held requests' answers")
    orders = asyncio.run(orders_by_id(sandbox))
    assert sorted(orders) == sorted(accepted)
    creates = [r for r in asyncio.run(request_log(sandbox)) if r["path"] == "/v1/order"]
    # Each order was created once: the first answer to a held order is its repeat's 200, the held one is a 409.
    assert Counter(r["order_id"] for r in creates if r["status"] == 200) == Counter(accepted)
    assert {r["status"] for r in creates} <= {200, 409}
    for entry in held:
        statuses = Counter(r["status"] for r in creates if r["order_id"] == entry["order_id"])
        assert statuses == Counter({200: 1, 409: 1}), (entry, statuses)
