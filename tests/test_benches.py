"""Smoke test of the benchmark harness: `python -m benches.run --quick --only NAME` runs and writes its JSON.

Nothing about timings is asserted (the machine is shared and noisy): only that the harness exits 0, checked
the implementations against each other (it refuses to time them otherwise), and wrote what it promises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benches.bench_e2e import Phase, split_at

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 240


def run_benches(name: str, output: Path) -> dict[str, Any]:
    env = {**os.environ, "BENCH_OUTPUT_DIR": str(output), "BENCH_QUICK": "1"}
    command = [sys.executable, "-m", "benches.run", "--quick", "--only", name]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUDGET_S, check=False)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "machine: " in done.stdout and "| scenario" in done.stdout, done.stdout
    results: dict[str, Any] = json.loads((output / "results.json").read_text())
    assert json.loads((output / f"{name}.json").read_text())["name"] == name
    assert results["quick"] is True
    assert {"cpu", "cores", "python", "build_profile"} <= set(results["machine"])
    report = results["benchmarks"][name]
    assert report["error"] is None
    assert report["rows"] and all({"scenario", "value", "unit", "target", "ratio"} <= set(r) for r in report["rows"])
    assert (output / "ratios.png").read_bytes().startswith(b"\x89PNG")
    details: dict[str, Any] = report["details"]
    return details


@pytest.mark.timeout(BUDGET_S + 30)
def test_core_benchmark_checks_outputs_and_writes_ratios(tmp_path: Path) -> None:
    details = run_benches("core", tmp_path)

    assert details["checked_identical"] == ["stdlib reference", "orjson reference", "floor parses every batch"]
    assert details["corpus"]["orjson_number_text_edge_cases"] == 0
    assert {"rust_vs_stdlib_1t", "rust_vs_orjson_1t", "rust_over_floor_1t", "rust_2t_scaling"} <= set(details["ratios"])
    for variant in ("rust", "floor", "ref_stdlib", "ref_orjson"):
        for threads in ("1t", "2t"):
            assert {"median_s", "events_per_s", "mb_per_s"} <= set(details["variants"][f"{variant}_{threads}"])


@pytest.mark.timeout(BUDGET_S + 30)
def test_delivery_benchmark_delivers_every_order_and_writes_the_baseline(tmp_path: Path) -> None:
    details = run_benches("delivery", tmp_path)

    assert details["latency_ms"] == 20.0
    assert details["baseline"]["orders"] > 0
    assert details["runs"] and all(run["dead_letters"] == 0 for run in details["runs"])
    assert {"recommended_concurrency", "ratio_vs_pybutton", "best_concurrency"} <= set(details)


@pytest.mark.timeout(BUDGET_S + 30)
def test_e2e_benchmark_loads_both_endpoints_single_and_bulk_and_the_floor(tmp_path: Path) -> None:
    details = run_benches("e2e", tmp_path)

    assert details["errors"] == {}
    per_call = {}
    for key in ("grpc", "http", "grpc-bulk-20", "http-bulk-20"):
        result = details[key]
        phases = [*result["closed"], result["half"], result["light"], result["floor"]]
        assert all(phase["calls"] > 0 and phase["errors"] == {} for phase in phases), (key, phases)
        assert result["floor"]["concurrency"] == result["best"]["concurrency"]
        assert result["floor"]["delivery_at_end"] == {}
        for phase in (result["best"], result["half"], result["light"]):  # read from the sidecar's /metrics
            assert phase["delivery_at_end"]["delivered"] > 0 and phase["delivery_at_end"]["outbox_depth"] >= 0
            # The sidecar's own account of its calls: every stage took some time.
            stages = phase["ingest_stages_ms"]
            assert list(stages) == ["mapping", "lookups", "outbox"] and all(ms > 0 for ms in stages.values())
        for phase in (result["half"], result["light"]):  # open loops: the client timed the same calls
            assert sum(phase["ingest_stages_ms"].values()) < phase["latency_ms_mean"]
            # Every call is in the second it was due.
            assert sum(second["calls"] for second in phase["latency_ms_by_second"]) == phase["calls"]
        # Quick phases end before delivery stops yielding (10 s): every call is before the split.
        split = result["half_by_max_wait"]
        assert (split["at_s"], split["calls_before"], split["calls_after"]) == (10.0, result["half"]["calls"], 0)
        assert split["p99_ms_before"] == result["half"]["latency_ms"]["p99"] and split["p99_ms_after"] is None
        assert result["floor"]["ingest_stages_ms"] == {}
        per_call[key] = result["best"]["events"] / result["best"]["calls"]
        # The sustained search starts from the 10% and half-load phases and adds one bisection step (quick).
        sustained = result["sustained"]
        shares = [t["share_of_max"] for t in sustained["tried"]]
        assert {0.1, 0.5} <= set(shares) and len(shares) <= 3 and shares == sorted(shares)
        kept = [t["share_of_max"] for t in sustained["tried"] if t["keeps_up"]]
        assert sustained["share_of_max"] == max(kept, default=0.0)
        assert (sustained["phase"] is None) == (not kept)
        if sustained["phase"] is not None:
            assert sustained["phase"]["delivery_keeps_up"] and sustained["phase"]["calls"] > 0
    # A bulk call carries 20 corpus batches (11 events on average), a single call one.
    for protocol in ("grpc", "http"):
        assert per_call[f"{protocol}-bulk-20"] > 10 * per_call[protocol]


def test_half_load_latency_is_split_at_the_max_wait_and_by_second() -> None:
    phase = Phase("open", latencies_s=[0.004, 0.006, 0.005, 0.030, 0.040], due_s=[0.1, 0.9, 1.2, 10.0, 11.5])
    assert [(s["second"], s["calls"], s["p99"]) for s in phase.by_second()] == [
        (0, 2, 6.0),
        (1, 1, 5.0),
        (10, 1, 30.0),
        (11, 1, 40.0),
    ]
    assert split_at(phase, 10.0) == {
        "at_s": 10.0,
        "calls_before": 3,
        "p99_ms_before": 6.0,
        "calls_after": 2,
        "p99_ms_after": 40.0,
    }
    assert split_at(phase, 20.0)["p99_ms_after"] is None
