"""The soak harness (`make soak`, `benches/soak.py`) runs for 15 s and reports what it promises: a line every
10 s, and a JSON summary with throughput, errors, RSS over time and nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hardening.support import ROOT

SOAK_SECS = 15


@pytest.mark.timeout(180)
def test_a_short_soak_runs_and_reports(tmp_path: Path) -> None:
    env = {**os.environ, "SOAK_SECS": str(SOAK_SECS), "BENCH_OUTPUT_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "benches.soak"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=170
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    lines = [line for line in done.stdout.splitlines() if line.startswith("t=")]
    assert len(lines) == 2, done.stdout  # at 10 s, and the last 5 s
    assert all("calls/s" in line and "RSS" in line and "queue" in line for line in lines), lines

    summary = json.loads((tmp_path / "soak.json").read_text())
    assert summary["ok"] is True and summary["server_alive"] is True
    assert SOAK_SECS <= summary["seconds"] < SOAK_SECS + 5
    assert summary["calls"]["grpc"] > 0 and summary["calls"]["http"] > 0 and summary["calls_per_s"] > 10
    assert summary["orders_created"] > 0 and summary["refunds"] > 0
    assert summary["lost_count"] == 0 and summary["dead_letters"] == [] and summary["drained"] is True
    assert summary["delivery_retries"] > 0, "the sandbox's faults should have made the sidecar retry"
    assert 0 < summary["rss_mib"]["start"] <= summary["rss_mib"]["peak"]
    assert [sample["at_s"] for sample in summary["intervals"]] == pytest.approx([10, SOAK_SECS], abs=1.5)
    assert {"p50", "p99"} <= set(summary["latency_ms"]) and "error_fraction" in summary
