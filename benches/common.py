"""What every benchmark shares: results and their table, the machine, JSON output, processes and sampling.

A benchmark's `run(quick)` returns a `BenchReport`: `rows` (scenario, result, unit, target) are what the
table and the chart show; `details` holds everything measured, for the JSON under var/bench/.
"""

from __future__ import annotations

import json
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import psutil  # type: ignore[import-untyped]
from button_sidecar import _core

from benches.corpus import BENCH_DIR

ROOT = Path(__file__).resolve().parents[1]
SANDBOX_API_KEY = "sk-bench-sandbox-key"
_STARTUP_TIMEOUT_S = 30.0

Direction = Literal["higher", "lower"]


def output_dir() -> Path:
    """Where the JSON and the chart go: `BENCH_OUTPUT_DIR`, else var/bench/ (git ignores var/)."""
    return Path(os.environ.get("BENCH_OUTPUT_DIR") or BENCH_DIR)


def quick_from_env() -> bool:
    """`BENCH_QUICK=1`: the smoke-test sizes."""
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


# -- results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a measured value and, when the issue sets one, its target."""

    scenario: str
    value: float
    unit: str
    target: float | None = None
    direction: Direction = "higher"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """How the result compares with its target: >= 1 means met (for "lower" targets, target / value)."""
        if self.target is None or self.value <= 0:
            return None
        return self.value / self.target if self.direction == "higher" else self.target / self.value

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        return None if ratio is None else ratio >= 1.0

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


@dataclass
class BenchReport:
    """What one benchmark measured."""

    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "seconds": round(self.seconds, 2),
            "error": self.error,
            "rows": [row.to_json() for row in self.rows],
            "details": self.details,
        }


def format_value(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:,.2f}x"
    if unit == "fraction":
        return f"{value:.2f}"
    if unit in ("ms", "s"):
        return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:,.3g} {unit}"


def format_target(row: Row) -> str:
    if row.target is None:
        return ""
    sign = ">=" if row.direction == "higher" else "<"
    return f"{sign} {format_value(row.target, row.unit)}"


def table(rows: Sequence[Row]) -> str:
    """`scenario | result | target | ratio` (ratio: result over target, >= 1 is met)."""
    header = ("scenario", "result", "target", "ratio")
    lines = [
        (
            row.scenario,
            format_value(row.value, row.unit),
            format_target(row),
            "" if row.ratio is None else f"{row.ratio:.2f} {'ok' if row.met else 'MISSED'}",
        )
        for row in rows
    ]
    widths = [max(len(str(cells[i])) for cells in [header, *lines]) for i in range(4)]

    def render(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([render(header), separator, *(render(cells) for cells in lines)])


# -- the machine ----------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    load1, load5, _ = os.getloadavg()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
        "core_version": _core.__version__,
        "build_profile": _core.build_profile,
        "load_average_at_start": [round(load1, 2), round(load5, 2)],
    }


def machine_line(info: Mapping[str, object]) -> str:
    load = info.get("load_average_at_start")
    return (
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; "
        f"Python {info['python']} ({info['implementation']}); core {info['core_version']} "
        f"build profile {info['build_profile']}; load average at start {load}"
    )


def write_json(name: str, payload: Mapping[str, object], directory: Path | None = None) -> Path:
    directory = directory or output_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


# -- statistics -----------------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; 0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def timed_runs(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls of `fn`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary(times: Sequence[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "best_s": min(times), "worst_s": max(times), "runs": len(times)}


# -- processes ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli_command(*args: str) -> list[str]:
    """`button-sidecar ARGS` with this interpreter (the venv's entry point, without relying on PATH)."""
    return [sys.executable, "-m", "button_sidecar.cli", *args]


def serve_env(sandbox_url: str, http_port: int, state_dir: Path) -> dict[str, str]:
    """The environment of a `button-sidecar serve` delivering to the sandbox: gRPC on a free port (its address
    is the first stdout line), HTTP on `http_port`, the API key in the environment as in production."""
    return {
        **os.environ,
        "BUTTON_API_KEY": SANDBOX_API_KEY,
        "BUTTON_API_BASE_URL": sandbox_url,
        "BUTTON_SIDECAR_GRPC_LISTEN": "127.0.0.1:0",
        "BUTTON_SIDECAR_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "BUTTON_SIDECAR_STATE_DIR": str(state_dir),
    }


@dataclass
class Child:
    """A subprocess we started, with its first stdout line (the address it listens on)."""

    process: subprocess.Popen[bytes]
    first_line: str
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _read_first_line(process: subprocess.Popen[bytes], stdout: IO[bytes], stderr_path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stdout], [], [], 0.1)
        if ready:
            return stdout.readline().decode().strip()
        if process.poll() is not None:
            break
    tail = stderr_path.read_text(errors="replace")[-3000:] if stderr_path.exists() else ""
    state = f"exited with {process.returncode}" if process.poll() is not None else f"printed nothing in {timeout} s"
    raise RuntimeError(f"{' '.join(map(str, process.args))} {state}; stderr:\n{tail}")  # type: ignore[arg-type]


@contextmanager
def child(
    command: Sequence[str], env: Mapping[str, str], stderr_path: Path, timeout: float = _STARTUP_TIMEOUT_S
) -> Iterator[Child]:
    """Start `command`, wait for its first stdout line, and stop it (SIGTERM, then SIGKILL) on exit."""
    stderr_path.parent.mkdir(parents=True, exist_ok=True)
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=stderr, env=dict(env), cwd=ROOT)
    assert process.stdout is not None
    try:
        line = _read_first_line(process, process.stdout, stderr_path, timeout)
        yield Child(process, line, stderr_path)
    finally:
        stop_child(process)


def stop_child(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


@contextmanager
def sandbox(
    stderr_path: Path, *flags: str, port: int = 0, api_key: str = SANDBOX_API_KEY
) -> Iterator[tuple[str, Child]]:
    """`button-sidecar sandbox` as a subprocess (its own core, not our event loop); yields its URL."""
    env = {**os.environ, "BUTTON_API_KEY": api_key}  # the key never goes on the command line
    command = cli_command("sandbox", "--port", str(port), "--log-level", "warning", *flags)
    with child(command, env, stderr_path) as process:
        prefix = "Button sandbox listening on "
        if not process.first_line.startswith(prefix):
            raise RuntimeError(f"unexpected first line of the sandbox: {process.first_line!r}")
        yield process.first_line.removeprefix(prefix), process


# -- sampling a process ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    at_s: float
    rss_bytes: int
    cpu_s: float


class ProcessSampler:
    """Samples a process's RSS and CPU time (user + system, its children included) every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"sampler-{pid}", daemon=True)
        self._start = time.monotonic()
        self.samples: list[Sample] = []

    def cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system)

    def scheduler_wait(self) -> tuple[float, int]:
        """Seconds the process's threads spent runnable but waiting for a CPU, and how often they were put on one
        (summed over `/proc/<pid>/task/*/schedstat`; threads that exited are not counted). (0, 0) where Linux's
        scheduler statistics are not available."""
        waited_ns = runs = 0
        try:
            tasks = os.listdir(f"/proc/{self._process.pid}/task")
        except OSError:
            return 0.0, 0
        for task in tasks:
            try:
                with open(f"/proc/{self._process.pid}/task/{task}/schedstat") as stat:
                    _, waited, ran = stat.read().split()
            except (OSError, ValueError):  # the thread has just exited
                continue
            waited_ns += int(waited)
            runs += int(ran)
        return waited_ns / 1e9, runs

    def rss(self) -> int:
        return int(self._process.memory_info().rss)

    def sample(self) -> Sample:
        taken = Sample(time.monotonic() - self._start, self.rss(), self.cpu_seconds())
        self.samples.append(taken)
        return taken

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sample()
            except psutil.Error:
                return

    def __enter__(self) -> ProcessSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.sample()
        except psutil.Error:
            pass

    @property
    def peak_rss(self) -> int:
        return max((s.rss_bytes for s in self.samples), default=0)


def directory_bytes(path: Path) -> int:
    """Bytes the files under `path` take (their sizes; SQLite's WAL and shared memory files included)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
