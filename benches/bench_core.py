"""The Rust core against the pure-Python reference (stdlib `json` and `orjson`) and the parse-only floor.

Same bytes for everyone: the deterministic corpus (benches/corpus.py). Before anything is timed, every
pairing is checked to give identical outputs (requests with their bodies parsed, rejections, attributions,
skips; the floor must parse every batch). Each variant then runs `repeats` times, one thread and two
threads (each thread maps half of the corpus: the core releases the GIL, the reference cannot), interleaved
round-robin so that a noisy neighbour hits every variant alike; the median is reported (best in the JSON).

    python -m benches.bench_core [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from button_sidecar import Transformer, TransformResult, _core

from benches import corpus
from benches.common import BenchReport, Row, machine, machine_line, quick_from_env, table, write_json
from benches.reference import MAX_JSON_DEPTH, InvalidJson, JsonNumber, JsonValue, ReferenceTransformer, RefResult

RECEIVED_AT_MS = corpus.BASE_TIME_MS
FULL = {"batches": 2000, "repeats": 7}
QUICK = {"batches": 300, "repeats": 3}


# -- the orjson reference ---------------------------------------------------------------------------------------


def orjson_batch(raw: bytes | bytearray | str) -> JsonValue:
    """The reference's JSON reading with orjson: numbers back to `JsonNumber` (their text), depth as serde's.

    orjson gives ints and floats, so a number's text is rebuilt (`str(int)`, `repr(float)`): exact for
    the corpus, whose numbers are plain decimals written by `json.dumps` (`number_text_edge_cases` checks);
    `1E5` or `2.50` would come back as `100000.0` and `2.5`, which is why the stdlib reference keeps the text.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidJson(str(error)) from error
    return _from_orjson(value, 1)


def _from_orjson(value: object, depth: int) -> JsonValue:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if depth >= MAX_JSON_DEPTH:
            raise InvalidJson("nested too deeply")
        return {key: _from_orjson(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        if depth >= MAX_JSON_DEPTH:
            raise InvalidJson("nested too deeply")
        return [_from_orjson(item, depth + 1) for item in value]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return JsonNumber(str(value))
    if isinstance(value, float):
        return JsonNumber(repr(value))
    raise InvalidJson(f"unexpected {type(value).__name__}")


def number_text_edge_cases(raws: Sequence[bytes]) -> int:
    """How many JSON numbers of `raws` orjson would not give back with their exact text."""
    count = 0

    def number(text: str) -> None:
        nonlocal count
        value: float | int = float(text) if any(c in text for c in ".eE") else int(text)
        count += (repr(value) if isinstance(value, float) else str(value)) != text

    for raw in raws:
        json.loads(raw, parse_int=number, parse_float=number)
    return count


# -- equality ----------------------------------------------------------------------------------------------------


def normalise(result: TransformResult | RefResult) -> tuple[object, ...]:
    """What both implementations must agree on (rejection messages may differ)."""
    return (
        [
            (r.kind, r.method, r.path, r.order_id, r.event_index, None if r.body is None else orjson.loads(r.body))
            for r in result.requests
        ],
        [(r.event_index, r.code, r.field) for r in result.rejections],
        [(a.user_keys, a.btn_ref, a.timestamp_ms) for a in result.attributions],
        [(s.event_index, s.reason) for s in result.skipped],
    )


def check_identical(
    name: str, expected: Sequence[TransformResult], actual: Sequence[TransformResult | RefResult]
) -> None:
    if len(expected) != len(actual):
        raise AssertionError(f"{name}: {len(actual)} results for {len(expected)} batches")
    for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
        if normalise(want) != normalise(got):
            raise AssertionError(
                f"{name}: batch {index} differs from the Rust core:\n{normalise(want)}\n{normalise(got)}"
            )


# -- timing ------------------------------------------------------------------------------------------------------


def two_threads(work: Callable[[Sequence[bytes]], object], raws: Sequence[bytes]) -> Callable[[], None]:
    """A run in which two threads each process half of `raws` (alternate batches, so the halves weigh alike)."""
    halves = [raws[0::2], raws[1::2]]

    def run() -> None:
        barrier = threading.Barrier(3)

        def worker(half: Sequence[bytes]) -> None:
            barrier.wait()
            work(half)

        threads = [threading.Thread(target=worker, args=(half,)) for half in halves]
        for thread in threads:
            thread.start()
        barrier.wait()
        for thread in threads:
            thread.join()

    return run


def interleaved(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall seconds per run of each variant, the variants taking turns."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def run(quick: bool = False) -> BenchReport:
    sizes = QUICK if quick else FULL
    raws = corpus.load(sizes["batches"])
    megabytes = sum(map(len, raws)) / 1e6
    transformer = Transformer()
    stdlib_ref = ReferenceTransformer()
    orjson_ref = ReferenceTransformer(json_loader=orjson_batch)

    expected = transformer.transform_many(raws, RECEIVED_AT_MS)
    events = sum(r.event_count for r in expected)
    check_identical("stdlib reference", expected, stdlib_ref.transform_many(raws, RECEIVED_AT_MS))
    edge_cases = number_text_edge_cases(raws)
    check_identical("orjson reference", expected, orjson_ref.transform_many(raws, RECEIVED_AT_MS))
    parsed = _core._parse_floor(raws)
    if parsed != len(raws):
        raise AssertionError(f"the floor parsed {parsed} of {len(raws)} batches")

    def rust(part: Sequence[bytes]) -> object:
        return transformer.transform_many(part, RECEIVED_AT_MS)

    def floor(part: Sequence[bytes]) -> object:
        return _core._parse_floor(part)

    def ref_stdlib(part: Sequence[bytes]) -> object:
        return stdlib_ref.transform_many(part, RECEIVED_AT_MS)

    def ref_orjson(part: Sequence[bytes]) -> object:
        return orjson_ref.transform_many(part, RECEIVED_AT_MS)

    functions = {"rust": rust, "floor": floor, "ref_stdlib": ref_stdlib, "ref_orjson": ref_orjson}
    variants: dict[str, Callable[[], object]] = {}
    for name, fn in functions.items():
        variants[f"{name}_1t"] = lambda fn=fn: fn(raws)  # type: ignore[misc]
        variants[f"{name}_2t"] = two_threads(fn, raws)
    # The Rust variants are quick, so they get more runs (the same wall time would give the reference few).
    fast = {k: v for k, v in variants.items() if k.startswith(("rust", "floor"))}
    slow = {k: v for k, v in variants.items() if k not in fast}
    interleaved(fast, 1)  # warm-up: page cache, allocator, branch predictors
    times = interleaved(fast, sizes["repeats"] * 2) | interleaved(slow, sizes["repeats"])

    median = {name: statistics.median(values) for name, values in times.items()}
    rates = {name: events / seconds for name, seconds in median.items()}
    throughputs = [
        ("core: Rust transform_many, 1 thread", "rust_1t"),
        ("core: Rust transform_many, 2 threads", "rust_2t"),
        ("core: parse-only floor (_parse_floor), 1 thread", "floor_1t"),
        ("core: stdlib reference, 1 thread", "ref_stdlib_1t"),
        ("core: orjson reference, 1 thread", "ref_orjson_1t"),
    ]
    rows = [
        *(Row(scenario, rates[name], "events/s") for scenario, name in throughputs),
        *(Row(f"{scenario}, batch JSON", megabytes / median[name], "MB/s") for scenario, name in throughputs),
        Row("core vs stdlib reference, 1 thread", rates["rust_1t"] / rates["ref_stdlib_1t"], "x", 20.0),
        Row("core vs orjson reference, 1 thread", rates["rust_1t"] / rates["ref_orjson_1t"], "x", 8.0),
        Row("core / parse-only floor, 1 thread", rates["rust_1t"] / rates["floor_1t"], "fraction", 0.5),
        Row("core vs stdlib reference, 2 threads", rates["rust_2t"] / rates["ref_stdlib_2t"], "x"),
        Row("core vs orjson reference, 2 threads", rates["rust_2t"] / rates["ref_orjson_2t"], "x"),
        Row("core 2-thread scaling (GIL released)", rates["rust_2t"] / rates["rust_1t"], "x"),
        Row("stdlib reference 2-thread scaling (GIL held)", rates["ref_stdlib_2t"] / rates["ref_stdlib_1t"], "x"),
    ]
    details: dict[str, Any] = {
        "corpus": {
            "batches": len(raws),
            "events": events,
            "megabytes": round(megabytes, 3),
            "seed": 7,
            "orjson_number_text_edge_cases": edge_cases,
        },
        "checked_identical": ["stdlib reference", "orjson reference", "floor parses every batch"],
        "variants": {
            name: {
                "median_s": median[name],
                "best_s": min(times[name]),
                "runs": len(times[name]),
                "events_per_s": rates[name],
                "events_per_s_best": events / min(times[name]),
                "mb_per_s": megabytes / median[name],
            }
            for name in times
        },
        "ratios": {
            "rust_vs_stdlib_1t": rates["rust_1t"] / rates["ref_stdlib_1t"],
            "rust_vs_orjson_1t": rates["rust_1t"] / rates["ref_orjson_1t"],
            "rust_over_floor_1t": rates["rust_1t"] / rates["floor_1t"],
            "rust_vs_stdlib_2t": rates["rust_2t"] / rates["ref_stdlib_2t"],
            "rust_vs_orjson_2t": rates["rust_2t"] / rates["ref_orjson_2t"],
            "rust_over_floor_2t": rates["rust_2t"] / rates["floor_2t"],
            "rust_2t_scaling": rates["rust_2t"] / rates["rust_1t"],
            "floor_2t_scaling": rates["floor_2t"] / rates["floor_1t"],
            "ref_stdlib_2t_scaling": rates["ref_stdlib_2t"] / rates["ref_stdlib_1t"],
            "ref_orjson_2t_scaling": rates["ref_orjson_2t"] / rates["ref_orjson_1t"],
        },
    }
    return BenchReport("core", rows, details)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", default=quick_from_env(), help="smoke-test sizes")
    args = parser.parse_args()
    info = machine()
    print(machine_line(info))
    start = time.perf_counter()
    report = run(args.quick)
    report.seconds = time.perf_counter() - start
    print(table(report.rows))
    write_json("core", {"machine": info, "quick": args.quick, **report.to_json()})


if __name__ == "__main__":
    main()
