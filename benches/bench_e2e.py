"""End to end: `button-sidecar serve` under load over gRPC (`Sidecar/Ingest`, `IngestBulk`) and HTTP
(`POST /v2/events`, `/v2/bulkevents`).

The sidecar runs as it would in production: a subprocess (`button-sidecar serve`, configured through its
environment variables and a TOML file that only raises the outbox limits), a fresh one with its own
temporary state directory for each phase (so no phase inherits the delivery backlog of the one before), the
outbox durable (SQLite, `synchronous=FULL`), delivering to a Button sandbox subprocess while it ingests.
The load generator is this process (asyncio): it sends corpus batches, `batches_per_call` per call (1: the
single-batch endpoints; more: the bulk ones), each made unique (order ids and `source_request_id`) per round
so nothing is deduplicated away.

- Max load: a closed loop, `concurrency` calls always outstanding, for `duration` seconds (after a warm-up):
  events/s, latency percentiles, the server's CPU seconds per million events (psutil, user + system).
- Floor: the same closed loop against `benches.floor_server`, the same endpoints on the same frameworks doing
  nothing: what the frameworks and the machine allow at all.
- Half load: an open loop at half the max call rate, each call's latency counted from when it was due
  (no coordinated omission): the p99 that the target is about. Then the same at a tenth of the max rate:
  the latency of the path itself, nearly without queueing. And the half-load calls against the floor server:
  the latency the load generator, the frameworks and the machine add at that rate by themselves.
- Sustained load: the highest rate at which delivery keeps up with ingest (what the sidecar can carry for
  good, not only absorb into its outbox), found by bisecting the share of the max call rate between the
  10% and the half-load phases (`sustained_steps` more phases), with that phase's latency: the rate to size
  a deployment by.
- For the half-load phase, the cores each process used (sidecar, Button sandbox, load generator): a sidecar
  near 1.0 is bound by its one event loop. And its p99 apart for the calls due within the sidecar's
  `delivery.ingest_first_max_wait_secs` of the phase's start and after it: half load queues more than delivery
  sends beside it, and past that wait delivery runs at full concurrency again, beside ingest in one process.
  The JSON also has every phase's p50 and p99 per second.
- After each sidecar phase, its `/metrics`: requests still waiting in the outbox, delivered, and how often
  delivery yielded to ingest (what was ingested is not necessarily delivered yet). For the open-loop phases
  also per second: requests queued and requests delivered, i.e. whether delivery keeps up with that load.

The gRPC client sends pre-serialised request bytes (the generated stub checks the first answer), so the
client spends its CPU on the calls, not on protobuf.

    python -m benches.bench_e2e [--quick] [--only grpc,http] [--batches-per-call 1,20] [--concurrency 64]
                                [--duration 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc  # type: ignore[import-untyped]
import orjson
from button_sidecar import Transformer
from button_sidecar.config import DeliveryConfig
from button_sidecar.v1 import sidecar_pb2, sidecar_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from benches import corpus
from benches.common import (
    BenchReport,
    Child,
    ProcessSampler,
    Row,
    child,
    cli_command,
    free_port,
    machine,
    machine_line,
    percentile,
    quick_from_env,
    sandbox,
    serve_env,
    table,
    write_json,
)

TARGET_EVENTS_S = 50_000.0
TARGET_P99_MS = 10.0
INGEST_METHOD = "/button_sidecar.v1.Sidecar/Ingest"
INGEST_BULK_METHOD = "/button_sidecar.v1.Sidecar/IngestBulk"
FULL: dict[str, Any] = {
    "batches": 2000,
    "batches_per_call": [1, 20],
    "concurrency": [16, 64],
    "duration_s": 12.0,
    "warmup_s": 2.0,
    "sustained_steps": 3,
}
QUICK: dict[str, Any] = {
    "batches": 300,
    "batches_per_call": [1, 20],
    "concurrency": [32],
    "duration_s": 3.0,
    "warmup_s": 0.5,
    "sustained_steps": 1,
}
_CALL_TIMEOUT_S = 30.0
_MAX_OUTSTANDING = 2000  # open loop: beyond this many calls in flight the server is not keeping up anyway

Send = Callable[[bytes], Awaitable[None]]


class Payloads:
    """Corpus batches as request bodies of `per_call` batches each, round after round, each round unique;
    with their event counts."""

    def __init__(self, raws: Sequence[bytes], encode: Callable[[Sequence[bytes]], bytes], per_call: int) -> None:
        self._calls = [list(raws[i : i + per_call]) for i in range(0, len(raws), per_call)]
        self._events = [sum(len(orjson.loads(raw)["events"]) for raw in call) for call in self._calls]
        self._encode = encode
        self._round = 0
        self._iterator = self._stream()

    def _stream(self) -> Iterator[tuple[bytes, int]]:
        while True:
            self._round += 1
            # One body at a time: a whole round at once would stall the load generator (and count the stall
            # as the latency of every call due meanwhile).
            for call, events in zip(self._calls, self._events, strict=True):
                yield self._encode([corpus.unique(raw, self._round) for raw in call]), events

    def next(self) -> tuple[bytes, int]:
        return next(self._iterator)


@dataclass
class Phase:
    """What one load phase measured."""

    mode: str
    seconds: float = 0.0
    calls: int = 0
    events: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    # Per call, parallel to `latencies_s`: when it was due, in seconds from the start of the phase.
    due_s: list[float] = field(default_factory=list)
    started_at: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    sandbox_cpu_s: float = 0.0
    # The sidecar's threads: time spent runnable but waiting for a CPU, and how often one was put on a CPU.
    server_cpu_wait_s: float = 0.0
    server_runs: int = 0
    delivery: dict[str, float] = field(default_factory=dict)
    # Mean ms per ingest call of each stage, from the sidecar's own histogram.
    stages_ms: dict[str, float] = field(default_factory=dict)
    target_calls_per_s: float | None = None
    concurrency: int | None = None

    @property
    def delivery_keeps_up(self) -> bool:
        """Whether delivery kept pace with ingest: at the end of the phase (which started on a fresh server),
        at most one second's worth of what it queued still waits in the outbox (the depth gauge is itself
        up to a second old)."""
        depth = self.delivery.get("outbox_depth", 0.0)
        queued = self.delivery.get("delivered", 0.0) + depth
        return queued > 0 and depth <= queued / self.seconds

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def latency_ms(self, q: float) -> float:
        return percentile(self.latencies_s, q) * 1000

    def latencies_due(self, start_s: float, end_s: float) -> list[float]:
        """The latencies of the calls due from `start_s` to before `end_s` into the phase."""
        return [latency for due, latency in zip(self.due_s, self.latencies_s, strict=True) if start_s <= due < end_s]

    def by_second(self) -> list[dict[str, float]]:
        """The p50 and p99 (ms) of the calls due in each second of the phase."""
        seconds = int(max(self.due_s, default=-1.0)) + 1
        return [
            {"second": second, "calls": len(due), "p50": percentile(due, 50) * 1000, "p99": percentile(due, 99) * 1000}
            for second in range(seconds)
            if (due := self.latencies_due(second, second + 1))
        ]

    def to_json(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "target_calls_per_s": self.target_calls_per_s,
            "seconds": self.seconds,
            "calls": self.calls,
            "events": self.events,
            "errors": self.errors,
            "calls_per_s": self.calls_per_s,
            "events_per_s": self.events_per_s,
            "latency_ms": {f"p{q:g}": self.latency_ms(q) for q in (50, 90, 99, 99.9)} | {"max": self.latency_ms(100)},
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_s_per_million_events": self.server_cpu_s / self.events * 1e6 if self.events else None,
            "server_cores_busy": self.server_cpu_s / self.seconds if self.seconds else None,
            "client_cpu_s": self.client_cpu_s,
            "sandbox_cpu_s": self.sandbox_cpu_s,
            "server_cpu_wait_s": self.server_cpu_wait_s,
            "server_runs": self.server_runs,
            "server_wait_ms_per_run": self.server_cpu_wait_s / self.server_runs * 1000 if self.server_runs else None,
            "delivery_at_end": self.delivery,
            "ingest_stages_ms": self.stages_ms,
            "latency_ms_mean": sum(self.latencies_s) / len(self.latencies_s) * 1000 if self.latencies_s else None,
            "delivery_keeps_up": self.delivery_keeps_up,
            "latency_ms_by_second": self.by_second(),
        }


class Meters:
    """CPU of the server, this client and the sandbox, and the server's wait for a CPU, read at the start and
    end of a phase."""

    def __init__(self, server_pid: int, sandbox_pid: int) -> None:
        self.server = ProcessSampler(server_pid)
        self.client = ProcessSampler(os.getpid())
        self.sandbox = ProcessSampler(sandbox_pid)

    def read(self) -> tuple[float, float, float, float, int]:
        waited, runs = self.server.scheduler_wait()
        return self.server.cpu_seconds(), self.client.cpu_seconds(), self.sandbox.cpu_seconds(), waited, runs

    @staticmethod
    def record(
        phase: Phase, start: tuple[float, float, float, float, int], end: tuple[float, float, float, float, int]
    ) -> None:
        phase.server_cpu_s, phase.client_cpu_s, phase.sandbox_cpu_s = (
            b - a for a, b in zip(start[:3], end[:3], strict=True)
        )
        phase.server_cpu_wait_s, phase.server_runs = max(0.0, end[3] - start[3]), max(0, end[4] - start[4])


async def _call(send: Send, payload: bytes, events: int, due: float, phase: Phase, record: bool) -> None:
    try:
        await send(payload)
    except Exception as error:  # every failure is counted and reported, none is fatal to the run
        name = getattr(error, "code", lambda: None)()
        key = str(name) if name is not None else type(error).__name__
        phase.errors[key] = phase.errors.get(key, 0) + 1
        return
    if record:
        phase.latencies_s.append(time.perf_counter() - due)
        phase.due_s.append(due - phase.started_at)
        phase.calls += 1
        phase.events += events


async def closed_loop(
    send: Send, payloads: Payloads, concurrency: int, warmup_s: float, duration_s: float, meters: Meters
) -> Phase:
    """`concurrency` calls always in flight; only calls started after the warm-up are counted."""
    phase = Phase("closed", concurrency=concurrency)
    loop_start = time.perf_counter()
    measure_from = phase.started_at = loop_start + warmup_s
    stop_at = measure_from + duration_s
    marks: dict[str, tuple[float, float, float, float, int]] = {}

    async def worker() -> None:
        while (now := time.perf_counter()) < stop_at:
            if now >= measure_from and "start" not in marks:
                marks["start"] = meters.read()
            payload, events = payloads.next()
            await _call(send, payload, events, now, phase, record=now >= measure_from)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    end = meters.read()
    phase.seconds = time.perf_counter() - measure_from
    meters.record(phase, marks.get("start", end), end)
    return phase


async def open_loop(send: Send, payloads: Payloads, calls_per_s: float, duration_s: float, meters: Meters) -> Phase:
    """Calls due at a fixed rate, whether or not earlier ones have answered; latency counted from when due."""
    phase = Phase("open", target_calls_per_s=calls_per_s)
    interval = 1.0 / calls_per_s
    tasks: set[asyncio.Task[None]] = set()
    start_cpu = meters.read()
    start = phase.started_at = time.perf_counter()
    i = 0
    while (due := start + i * interval) < start + duration_s:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= _MAX_OUTSTANDING:
            phase.errors["client_backlog_full"] = phase.errors.get("client_backlog_full", 0) + 1
        else:
            payload, events = payloads.next()
            task = asyncio.create_task(_call(send, payload, events, due, phase, record=True))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.gather(*tasks)
    phase.seconds = time.perf_counter() - start
    meters.record(phase, start_cpu, meters.read())
    return phase


# -- the protocols -------------------------------------------------------------------------------------------------


class GrpcClient:
    """`Ingest` with one batch per call, `IngestBulk` with more."""

    def __init__(self, target: str, per_call: int) -> None:
        self.target = target
        self._per_call = per_call
        self._channel: Any = None
        self._ingest: Any = None

    async def __aenter__(self) -> GrpcClient:
        self._channel = grpc.aio.insecure_channel(self.target)
        # No serialisers: the payloads are request bytes already, the answers are not decoded.
        self._ingest = self._channel.unary_unary(INGEST_BULK_METHOD if self._per_call > 1 else INGEST_METHOD)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._channel.close()

    async def check(self, raw: bytes) -> int:
        """One call through the generated stub; the number of requests the sidecar queued."""
        stub = sidecar_pb2_grpc.SidecarStub(self._channel)
        response = await stub.Ingest(sidecar_pb2.IngestRequest(mparticle_json=raw), timeout=_CALL_TIMEOUT_S)
        return int(response.counts.accepted)

    def encode(self, raws: Sequence[bytes]) -> bytes:
        requests = [sidecar_pb2.IngestRequest(mparticle_json=raw) for raw in raws]
        if self._per_call > 1:
            return bytes(sidecar_pb2.IngestBulkRequest(batches=requests).SerializeToString())
        return bytes(requests[0].SerializeToString())

    async def send(self, payload: bytes) -> None:
        await self._ingest(payload, timeout=_CALL_TIMEOUT_S)


class HttpStatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self._status = status

    def code(self) -> str:
        return f"HTTP {self._status}"


class HttpClient:
    """`POST /v2/events` with one batch per call, `POST /v2/bulkevents` (a JSON array) with more."""

    def __init__(self, base_url: str, concurrency: int, per_call: int) -> None:
        self.url = f"{base_url}/v2/bulkevents" if per_call > 1 else f"{base_url}/v2/events"
        self._per_call = per_call
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpClient:
        connector = aiohttp.TCPConnector(limit=max(self._concurrency, 100))
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=_CALL_TIMEOUT_S),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def check(self, raw: bytes) -> int:
        await self.send(self.encode([raw]))
        return -1  # 202 carries no counts

    def encode(self, raws: Sequence[bytes]) -> bytes:
        return b"[" + b",".join(raws) + b"]" if self._per_call > 1 else raws[0]

    async def send(self, payload: bytes) -> None:
        assert self._session is not None
        async with self._session.post(self.url, data=payload) as response:
            await response.read()
            if response.status != 202:
                raise HttpStatusError(response.status)


async def wait_http_ready(base_url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{base_url}/healthz") as response:
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}: {(await response.read())[:200]!r}"
            except aiohttp.ClientError as error:
                last = str(error)
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the HTTP endpoint {base_url} is not ready after {timeout_s} s ({last})")


def server_config(directory: Path) -> Path:
    """The TOML file of the server: only the outbox limits raised (a run queues far more than 100,000), then
    `BENCH_SIDECAR_TOML` for experiments, e.g. `BENCH_SIDECAR_TOML=$'[delivery]\\ningest_first_max_wait_secs = 0'`."""
    path = directory / "sidecar.toml"
    extra = os.environ.get("BENCH_SIDECAR_TOML", "")
    path.write_text(f'log_level = "error"\n\n[outbox]\nmax_requests = 100000000\nmax_bytes = 1099511627776\n{extra}\n')
    return path


def sandbox_flags() -> list[str]:
    """The Button sandbox's flags: a bounded request log, then `BENCH_SANDBOX_FLAGS` for experiments, e.g.
    `BENCH_SANDBOX_FLAGS='--latency-ms 600000'`: every delivery waits for an answer, so a phase measures ingest
    without delivery's share of the sidecar."""
    return ["--request-log-limit", "1000", *shlex.split(os.environ.get("BENCH_SANDBOX_FLAGS", ""))]


def ingest_first_max_wait_secs() -> float:
    """The served sidecar's `delivery.ingest_first_max_wait_secs`: its default, or what `BENCH_SIDECAR_TOML` sets."""
    delivery = tomllib.loads(os.environ.get("BENCH_SIDECAR_TOML", "")).get("delivery", {})
    return float(delivery.get("ingest_first_max_wait_secs", DeliveryConfig().ingest_first_max_wait_secs))


def split_at(phase: Phase, at_s: float) -> dict[str, object]:
    """The phase's p99 (ms; None without calls) for the calls due before `at_s` into it, and after."""
    before, after = phase.latencies_due(0.0, at_s), phase.latencies_due(at_s, float("inf"))
    return {
        "at_s": at_s,
        "calls_before": len(before),
        "p99_ms_before": percentile(before, 99) * 1000 if before else None,
        "calls_after": len(after),
        "p99_ms_after": percentile(after, 99) * 1000 if after else None,
    }


@dataclass
class Server:
    """A running `serve` and a connected client."""

    client: GrpcClient | HttpClient
    meters: Meters
    process: Child
    metrics_url: str | None  # the sidecar's /metrics; None for the floor

    async def state_at_end(self) -> tuple[dict[str, float], dict[str, float]]:
        """From the sidecar's /metrics at the end of a phase: where delivery stands (what waits in the outbox,
        the gauge refreshed every second; what was delivered; how often delivery yielded to ingest), and the
        mean ms per ingest call of each stage (`button_sidecar_ingest_stage_seconds`)."""
        if self.metrics_url is None:
            return {}, {}
        async with aiohttp.ClientSession() as session, session.get(self.metrics_url) as response:
            text = await response.text()
        wanted = {
            "button_sidecar_outbox_depth": "outbox_depth",
            "button_sidecar_delivered_requests_total": "delivered",
            "button_sidecar_delivery_yields_total": "delivery_yields",
        }
        delivery = dict.fromkeys(wanted.values(), 0.0)
        stage_sums: dict[str, float] = {}
        stage_counts: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted:
                    delivery[wanted[sample.name]] += sample.value
                elif sample.name == "button_sidecar_ingest_stage_seconds_sum":
                    stage_sums[sample.labels["stage"]] = sample.value
                elif sample.name == "button_sidecar_ingest_stage_seconds_count":
                    stage_counts[sample.labels["stage"]] = sample.value
        stages_ms = {
            stage: total / stage_counts[stage] * 1000 for stage, total in stage_sums.items() if stage_counts.get(stage)
        }
        return delivery, stages_ms


@asynccontextmanager
async def serving(
    protocol: str,
    directory: Path,
    sandbox_url: str,
    sandbox_pid: int,
    concurrency: int,
    per_call: int,
    *,
    floor: bool = False,
) -> AsyncIterator[Server]:
    """`button-sidecar serve` on a fresh state directory, delivering to the sandbox, with a client for `protocol`;
    with `floor`, the do-nothing server of `benches.floor_server` instead."""
    directory.mkdir(parents=True)
    http_port = free_port()
    if floor:
        env: dict[str, str] = dict(os.environ)
        command = [sys.executable, "-m", "benches.floor_server", "--http-port", str(http_port)]
        prefix = "Floor listening on "
    else:
        env = serve_env(sandbox_url, http_port, directory / "state")
        command = cli_command("serve", "--config", str(server_config(directory)))
        prefix = "Sidecar listening on "
    with child(command, env, directory / "server.log") as process:
        if not process.first_line.startswith(prefix):
            raise RuntimeError(f"unexpected first line of {command[2]}: {process.first_line!r}")
        client: GrpcClient | HttpClient
        if protocol == "grpc":
            client = GrpcClient(process.first_line.removeprefix(prefix), per_call)
        else:
            base_url = f"http://127.0.0.1:{http_port}"
            await wait_http_ready(base_url)
            client = HttpClient(base_url, concurrency, per_call)
        try:
            async with client:
                metrics_url = None if floor else f"http://127.0.0.1:{http_port}/metrics"
                yield Server(client, Meters(process.pid, sandbox_pid), process, metrics_url)
        except BaseException:
            print(f"{command[2]} stderr:\n{process.stderr_tail()}")
            raise


async def protocol_run(
    protocol: str,
    raws: Sequence[bytes],
    per_call: int,
    concurrencies: Sequence[int],
    duration_s: float,
    warmup_s: float,
    sustained_steps: int,
) -> dict[str, Any]:
    """Each phase on a fresh server, so that none inherits the delivery backlog of the one before."""
    logs: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"bench-e2e-{protocol}-") as tmp:
        directory = Path(tmp)
        with sandbox(directory / "sandbox.log", *sandbox_flags()) as (sandbox_url, sandbox_process):
            payloads: Payloads | None = None

            async def phase(
                name: str, concurrency: int, load: Callable[[Server, Payloads], Awaitable[Phase]], floor: bool = False
            ) -> Phase:
                nonlocal payloads
                async with serving(
                    protocol, directory / name, sandbox_url, sandbox_process.pid, concurrency, per_call, floor=floor
                ) as server:
                    if payloads is None:
                        payloads = Payloads(raws, server.client.encode, per_call)
                        expected = len(Transformer().transform_json(raws[0], corpus.BASE_TIME_MS).requests)
                        accepted = await server.client.check(corpus.unique(raws[0], 0))
                        if accepted not in (-1, expected):
                            raise AssertionError(f"{protocol}: the sidecar queued {accepted} requests, not {expected}")
                    measured = await load(server, payloads)
                    measured.delivery, measured.stages_ms = await server.state_at_end()
                    if measured.errors:
                        logs.append(f"--- {name}\n{server.process.stderr_tail(60)}")
                return measured

            closed = [
                await phase(
                    f"closed-{c}",
                    c,
                    lambda server, p, c=c: closed_loop(server.client.send, p, c, warmup_s, duration_s, server.meters),  # type: ignore[misc]
                )
                for c in concurrencies
            ]
            best = max(closed, key=lambda measured: measured.events_per_s)
            level = best.concurrency or max(concurrencies)  # every closed phase has its concurrency

            def open_at(calls_per_s: float) -> Callable[[Server, Payloads], Awaitable[Phase]]:
                return lambda server, p: open_loop(server.client.send, p, calls_per_s, duration_s, server.meters)

            floor = await phase(
                "floor",
                level,
                lambda server, p: closed_loop(server.client.send, p, level, warmup_s, duration_s, server.meters),
                floor=True,
            )
            rates = {"half": best.calls_per_s / 2, "light": best.calls_per_s / 10}
            open_phases = {name: await phase(name, max(concurrencies), open_at(rate)) for name, rate in rates.items()}
            sustained = await sustained_search(
                best.calls_per_s,
                {0.1: open_phases["light"], 0.5: open_phases["half"]},
                sustained_steps,
                lambda share: phase(f"sustained-{share:.3f}", max(concurrencies), open_at(best.calls_per_s * share)),
            )
            # The half-load calls against the do-nothing server: the latency of the load generator, the
            # frameworks and the machine at that rate, without any of the sidecar's work.
            floor_half = await phase("floor-half", max(concurrencies), open_at(rates["half"]), floor=True)
    return {
        "closed": [measured.to_json() for measured in closed],
        "best": best.to_json(),
        # The same load against the same frameworks doing nothing (benches/floor_server.py).
        "floor": floor.to_json(),
        "floor_half": floor_half.to_json(),
        "half": open_phases["half"].to_json(),
        # Delivery yields to ingest for at most this long; then it runs at full concurrency beside it.
        "half_by_max_wait": split_at(open_phases["half"], ingest_first_max_wait_secs()),
        # What a call costs nearly without queueing: the latency floor of the path itself.
        "light": open_phases["light"].to_json(),
        "sustained": sustained,
        "server_log_tail_on_errors": "\n".join(logs),
    }


async def sustained_search(
    max_calls_per_s: float,
    measured: dict[float, Phase],
    steps: int,
    load_at: Callable[[float], Awaitable[Phase]],
) -> dict[str, Any]:
    """The highest share of `max_calls_per_s` at which delivery keeps up (`Phase.delivery_keeps_up`), by
    bisection from the phases `measured` already (share -> phase), with `steps` more phases (`load_at`)."""
    tried = dict(measured)
    kept = [share for share, phase in tried.items() if phase.delivery_keeps_up]
    low = max(kept, default=0.0)
    high = min((share for share, phase in tried.items() if not phase.delivery_keeps_up), default=1.0)
    for _ in range(steps):
        if high <= low:  # a lower share failed where a higher one held: the load is too noisy to bisect
            break
        share = (low + high) / 2
        tried[share] = await load_at(share)
        if tried[share].delivery_keeps_up:
            low = share
        else:
            high = share
    found = tried.get(low)
    return {
        "share_of_max": low,  # 0.0 when even the lowest share measured fell behind
        "calls_per_s_target": max_calls_per_s * low,
        "phase": found.to_json() if found is not None else None,
        "tried": [
            {
                "share_of_max": share,
                "keeps_up": phase.delivery_keeps_up,
                "events_per_s": phase.events_per_s,
                "p99_ms": phase.latency_ms(99),
                "outbox_depth_at_end": phase.delivery.get("outbox_depth"),
                "errors": phase.errors,
            }
            for share, phase in sorted(tried.items())
        ],
    }


async def measure(
    quick: bool,
    protocols: Sequence[str],
    concurrencies: Sequence[int] | None,
    duration_s: float | None,
    batches_per_call: Sequence[int] | None,
) -> BenchReport:
    sizes = QUICK if quick else FULL
    raws = corpus.load(int(sizes["batches"]))
    levels = list(concurrencies or sizes["concurrency"])
    duration = duration_s or float(sizes["duration_s"])
    rows: list[Row] = []
    details: dict[str, Any] = {"batches": len(raws), "duration_s": duration, "errors": {}}
    for protocol in protocols:
        for per_call in batches_per_call or sizes["batches_per_call"]:
            key = protocol if per_call == 1 else f"{protocol}-bulk-{per_call}"
            try:
                result = await protocol_run(
                    protocol, raws, per_call, levels, duration, float(sizes["warmup_s"]), int(sizes["sustained_steps"])
                )
            except Exception as error:
                details["errors"][key] = f"{type(error).__name__}: {error}"
                continue
            details[key] = result | {"batches_per_call": per_call}
            rows += _rows(_name(protocol, per_call), result)
    report = BenchReport("e2e", rows, details)
    if details["errors"]:
        report.error = "; ".join(f"{p}: {e}" for p, e in details["errors"].items())
    return report


def _name(protocol: str, per_call: int) -> str:
    if protocol == "grpc":
        return "gRPC Ingest" if per_call == 1 else f"gRPC IngestBulk ({per_call} batches/call)"
    return "HTTP POST /v2/events" if per_call == 1 else f"HTTP POST /v2/bulkevents ({per_call} batches/call)"


def _rows(name: str, result: dict[str, Any]) -> list[Row]:
    best, half, light, floor = result["best"], result["half"], result["light"], result["floor"]
    floor_half, split = result["floor_half"], result["half_by_max_wait"]
    rows = [
        Row(f"e2e {name}: max events/s (c={best['concurrency']})", best["events_per_s"], "events/s", TARGET_EVENTS_S),
        Row(f"e2e {name}: max events/s of a do-nothing server (floor)", floor["events_per_s"], "events/s"),
        Row(
            f"e2e {name}: max events/s as a share of the floor",
            best["events_per_s"] / floor["events_per_s"],
            "fraction",
        ),
        Row(f"e2e {name}: p50 latency at max", best["latency_ms"]["p50"], "ms"),
        Row(f"e2e {name}: p99 latency at max", best["latency_ms"]["p99"], "ms"),
        Row(f"e2e {name}: server CPU per million events", best["server_cpu_s_per_million_events"] or 0, "s"),
        Row(f"e2e {name}: events/s at half load", half["events_per_s"], "events/s"),
        Row(f"e2e {name}: p50 latency at half load", half["latency_ms"]["p50"], "ms"),
        Row(f"e2e {name}: p99 latency at half load", half["latency_ms"]["p99"], "ms", TARGET_P99_MS, "lower"),
        Row(f"e2e {name}: p99.9 latency at half load", half["latency_ms"]["p99.9"], "ms"),
        *(
            Row(f"e2e {name}: p99 latency at half load, calls due {when} {split['at_s']:g} s", split[key], "ms")
            for when, key in (("in the first", "p99_ms_before"), ("after", "p99_ms_after"))
            if split[key] is not None
        ),
        Row(f"e2e {name}: p99 latency at half load, do-nothing server (floor)", floor_half["latency_ms"]["p99"], "ms"),
        # Who used the 2 cores at half load: a sidecar near 1.0 is bound by its one event loop (the GIL).
        *(
            Row(f"e2e {name}: cores busy at half load, {who}", half[key] / half["seconds"], "cores")
            for who, key in (
                ("sidecar", "server_cpu_s"),
                ("Button sandbox", "sandbox_cpu_s"),
                ("load generator", "client_cpu_s"),
            )
        ),
        # How long a sidecar thread that became runnable waited for a core (each call wakes several threads).
        *(
            Row(
                f"e2e {name}: sidecar threads' wait for a CPU per run at {label}", phase["server_wait_ms_per_run"], "ms"
            )
            for label, phase in (("half load", half), ("10% load", light))
            if phase.get("server_wait_ms_per_run") is not None
        ),
        Row(f"e2e {name}: p50 latency at 10% load", light["latency_ms"]["p50"], "ms"),
        Row(f"e2e {name}: p99 latency at 10% load", light["latency_ms"]["p99"], "ms"),
        # Where a call's time goes, by the sidecar's own count, beside the mean the client saw: the rest is
        # planning, the answer, the framework, and waiting for the event loop.
        *(
            row
            for label, phase in (("half load", half), ("10% load", light))
            for row in (
                Row(f"e2e {name}: mean latency at {label}", phase["latency_ms_mean"] or 0.0, "ms"),
                *(
                    Row(f"e2e {name}: mean {stage} stage of a call at {label}", ms, "ms")
                    for stage, ms in phase["ingest_stages_ms"].items()
                ),
            )
        ),
        # Ingested is not delivered yet: what each phase left for delivery (the outbox absorbs it).
        *(
            Row(
                f"e2e {name}: requests waiting for delivery after {label}",
                phase["delivery_at_end"]["outbox_depth"],
                "requests",
            )
            for label, phase in (("max", best), ("half load", half), ("10% load", light))
        ),
        # Sustained: each open-loop phase starts on a fresh server without a warm-up, so everything it queued is
        # delivered or still waiting at its end (the depth gauge is at most a second old).
        *(
            row
            for label, phase in (("half load", half), ("10% load", light))
            for row in (
                Row(
                    f"e2e {name}: requests queued per second at {label}",
                    (phase["delivery_at_end"]["delivered"] + phase["delivery_at_end"]["outbox_depth"])
                    / phase["seconds"],
                    "requests/s",
                ),
                Row(
                    f"e2e {name}: requests delivered per second at {label}",
                    phase["delivery_at_end"]["delivered"] / phase["seconds"],
                    "requests/s",
                ),
            )
        ),
    ]
    sustained = result["sustained"]
    at = sustained["phase"]
    rows += [
        Row(f"e2e {name}: sustained load (delivery keeps up), share of max", sustained["share_of_max"], "fraction"),
        Row(f"e2e {name}: events/s at sustained load", at["events_per_s"] if at else 0.0, "events/s"),
    ]
    if at is not None:
        rows += [
            Row(f"e2e {name}: p50 latency at sustained load", at["latency_ms"]["p50"], "ms"),
            Row(f"e2e {name}: p99 latency at sustained load", at["latency_ms"]["p99"], "ms"),
        ]
    phases = [*result["closed"], half, light, floor, floor_half, *([at] if at is not None else [])]
    failed = sum(sum(phase["errors"].values()) for phase in phases)
    if failed:
        calls = sum(phase["calls"] for phase in phases)
        rows.append(Row(f"e2e {name}: failed calls (see the JSON)", failed / (failed + calls), "fraction"))
    return rows


def run(
    quick: bool = False,
    protocols: Sequence[str] = ("grpc", "http"),
    concurrencies: Sequence[int] | None = None,
    duration_s: float | None = None,
    batches_per_call: Sequence[int] | None = None,
) -> BenchReport:
    return asyncio.run(measure(quick, protocols, concurrencies, duration_s, batches_per_call))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", default=quick_from_env(), help="smoke-test sizes")
    parser.add_argument("--only", default="grpc,http", help="protocols: grpc,http")
    parser.add_argument("--concurrency", help="comma-separated calls in flight for the max-load phase")
    parser.add_argument("--duration", type=float, help="seconds per phase")
    parser.add_argument(
        "--batches-per-call",
        help="comma-separated mParticle batches per call: 1 is Ingest and /v2/events, more is IngestBulk and "
        "/v2/bulkevents (at most 100)",
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")] if args.concurrency else None
    per_call = [int(n) for n in args.batches_per_call.split(",")] if args.batches_per_call else None
    info = machine()
    print(machine_line(info))
    start = time.perf_counter()
    report = run(args.quick, args.only.split(","), levels, args.duration, per_call)
    report.seconds = time.perf_counter() - start
    print(table(report.rows))
    if report.error:
        print(f"errors: {report.error}")
    write_json("e2e", {"machine": info, "quick": args.quick, **report.to_json()})


if __name__ == "__main__":
    main()
