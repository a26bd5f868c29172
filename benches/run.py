"""Run the benchmarks: a table on stdout, JSON under var/bench/, the ratio chart var/bench/ratios.png.

    python -m benches.run [--quick] [--only core,e2e,delivery,backlog]
    make bench          # everything, full sizes (about 15 minutes on 2 cores)
    make bench-quick    # smoke-test sizes (BENCH_QUICK=1; under 3 minutes)

Each benchmark writes var/bench/<name>.json; this writes var/bench/results.json with the machine, every row
and every benchmark's details (`BENCH_OUTPUT_DIR` puts all of it elsewhere). Timings are only compared within
one run (ratios): the machine is shared and noisy, so nothing here is asserted. The exit status is 1 when a
benchmark failed to run.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from benches import bench_backlog, bench_core, bench_delivery, bench_e2e
from benches.chart import write_chart
from benches.common import BenchReport, machine, machine_line, output_dir, quick_from_env, table, write_json

BENCHMARKS: dict[str, Callable[[bool], BenchReport]] = {
    "core": bench_core.run,
    "e2e": bench_e2e.run,
    "delivery": bench_delivery.run,
    "backlog": bench_backlog.run,
}


def parse_only(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(BENCHMARKS)} (got {value!r})")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", default=quick_from_env(), help="smoke-test sizes")
    parser.add_argument("--only", type=parse_only, default=list(BENCHMARKS), help="comma-separated subset")
    args = parser.parse_args(argv)
    info = machine()
    command = " ".join(["python -m benches.run", *(argv if argv is not None else sys.argv[1:])])
    print(machine_line(info), flush=True)
    reports: list[BenchReport] = []
    for name in args.only:
        print(f"== {name}{' (quick)' if args.quick else ''} ...", flush=True)
        start = time.perf_counter()
        try:
            report = BENCHMARKS[name](args.quick)
        except Exception as error:
            traceback.print_exc()
            report = BenchReport(name, error=f"{type(error).__name__}: {error}")
        report.seconds = time.perf_counter() - start
        reports.append(report)
        if report.rows:
            print(table(report.rows), flush=True)
        if report.error:
            print(f"{name}: error: {report.error}", flush=True)
        write_json(name, {"machine": info, "quick": args.quick, **report.to_json()})
        print(f"== {name}: {report.seconds:.0f} s", flush=True)

    rows = [row for report in reports for row in report.rows]
    title = machine_line(info) + (" (quick)" if args.quick else "")
    chart = write_chart(rows, output_dir() / "ratios.png", title)
    results = {
        "command": command,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": info,
        "benchmarks": {report.name: report.to_json() for report in reports},
        "rows": [row.to_json() for row in rows],
        "chart": None if chart is None else str(chart),
    }
    path = write_json("results", results)
    print()
    print(machine_line(info))
    print(table(rows))
    print(f"\nJSON: {path}" + ("" if chart is None else f"\nchart: {chart}"))
    return 1 if any(report.error for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
