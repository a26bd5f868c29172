"""A pipeline process killed with SIGKILL mid-delivery loses nothing: a restart delivers every accepted order."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.conftest import Sandbox
from tests.pipeline.helpers import drained, orders_by_id, request_log, running, settings

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 40


def test_sigkill_mid_delivery_loses_nothing(tmp_path: Path, sandbox: Sandbox) -> None:
    # Slow answers, so the kill lands while requests are in flight.
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
        deadline = time.monotonic() + 20
        while not any(r["status"] == 200 for r in sandbox.requests()):
            assert time.monotonic() < deadline, "no delivery started"
            time.sleep(0.02)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        runner.stdout.close()
    delivered_before = len(sandbox.orders())
    assert 0 < delivered_before < ORDERS, "the kill should land in the middle of delivery"

    async def restart() -> None:
        async with running(settings(tmp_path, sandbox)) as pipeline:
            await drained(pipeline, timeout=60)
            assert await pipeline.dead_letters() == []

    asyncio.run(restart())
    orders = asyncio.run(orders_by_id(sandbox))
    assert sorted(orders) == sorted(accepted)
    creates = [r for r in asyncio.run(request_log(sandbox)) if r["path"] == "/v1/order"]
    # Each order was created once; a repeat of an attempt the kill cut off is absorbed as 409.
    assert Counter(r["order_id"] for r in creates if r["status"] == 200) == Counter(accepted)
    statuses = Counter(r["status"] for r in creates)
    assert set(statuses) <= {200, 409} and statuses[409] >= 1, statuses  # requests in flight at the kill came again
