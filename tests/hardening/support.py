"""What the hardening tests share: a real `button-sidecar serve` process (gRPC and HTTP on real sockets), blocking
clients for both, mParticle batches, the sandbox's request log and the memory of a process."""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import orjson
import psutil  # type: ignore[import-untyped]
from button_sidecar.v1 import sidecar_pb2 as pb
from button_sidecar.v1 import sidecar_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from tests.conftest import Sandbox

ROOT = Path(__file__).resolve().parents[2]
READY_PREFIX = "Sidecar listening on "
STARTUP_TIMEOUT_S = 30.0
SERVING = health_pb2.HealthCheckResponse.SERVING
# Retries in tenths of a second; nothing may die of age during a test (give-up needs attempts AND age).
RETRY_TOML = """
[delivery.retry]
max_attempts = 3
initial_backoff_secs = 0.05
max_backoff_secs = 0.4
max_age_secs = 600
"""
PURCHASE_MS = 1_714_592_744_066


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the sidecar process ------------------------------------------------------------------------------------


@dataclass
class Server:
    """A running sidecar process: gRPC at `address`, the mParticle HTTP endpoint at `http_url`."""

    process: subprocess.Popen[bytes]
    address: str
    http_url: str
    state_dir: Path
    stdout_path: Path
    stderr_path: Path

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, as a crash."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (a graceful drain), then SIGKILL if it hangs; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise


def write_config(directory: Path, sandbox_url: str, extra_toml: str = "", delivery_toml: str = "") -> Path:
    """`extra_toml` is appended; `delivery_toml` goes into the `[delivery]` table (a table is declared once)."""
    path = directory / "sidecar.toml"
    delivery = f"[delivery]\nshutdown_deadline_secs = 1.0\n{delivery_toml}\n{RETRY_TOML}"
    path.write_text(f'[button]\nbase_url = "{sandbox_url}"\n{delivery}\n{extra_toml}')
    return path


def start_server(
    directory: Path,
    sandbox: Sandbox,
    *,
    extra_toml: str = "",
    delivery_toml: str = "",
    state_dir: Path | None = None,
    log_level: str = "info",
    env: Mapping[str, str] | None = None,
    wait: bool = True,
) -> Server:
    """`button-sidecar serve` delivering to `sandbox`, its API key in the environment (as in production), gRPC on
    a free loopback port, HTTP on another; waits for the ready line and for HTTP to answer unless `wait` is False
    (then the caller waits with `wait_ready`)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = state_dir or directory / "state"
    config = write_config(directory, sandbox.url, extra_toml, delivery_toml)
    http_port = free_port()
    environment = {
        **os.environ,
        "BUTTON_API_KEY": sandbox.api_key,
        "BUTTON_SIDECAR_STATE_DIR": str(state),
        "BUTTON_SIDECAR_GRPC_LISTEN": "127.0.0.1:0",
        "BUTTON_SIDECAR_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        **(env or {}),
    }
    command = [sys.executable, "-m", "button_sidecar.cli", "serve", "--config", str(config), "--log-level", log_level]
    stdout_path, stderr_path = directory / "stdout.log", directory / "stderr.log"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=environment, cwd=directory)
    server = Server(process, "", f"http://127.0.0.1:{http_port}", state, stdout_path, stderr_path)
    if wait:
        try:
            wait_ready(server)
        except BaseException:
            server.kill()
            raise
    return server


def wait_ready(server: Server, timeout: float = STARTUP_TIMEOUT_S) -> None:
    """Until the ready line is out and the HTTP endpoint answers; raises with stderr if the process exits."""
    deadline = time.monotonic() + timeout
    while not server.address:
        for line in server.stdout_path.read_text(errors="replace").splitlines():
            if line.startswith(READY_PREFIX):
                server.address = line.removeprefix(READY_PREFIX)
        _check_alive(server, deadline)
    while http_call(server.http_url, "GET", "/healthz", timeout=1.0, tolerate_errors=True) is None:
        _check_alive(server, deadline)


def _check_alive(server: Server, deadline: float) -> None:
    if server.process.poll() is not None:
        raise RuntimeError(f"the sidecar exited with {server.process.returncode}:\n{server.output()}")
    if time.monotonic() > deadline:
        raise RuntimeError(f"the sidecar was not ready in time:\n{server.output()}")
    select.select([], [], [], 0.05)


@contextlib.contextmanager
def running_server(directory: Path, sandbox: Sandbox, **options: Any) -> Iterator[Server]:
    server = start_server(directory, sandbox, **options)
    try:
        yield server
    finally:
        server.stop()


# -- gRPC -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def stub_for(target: str, **options: int) -> Iterator[Any]:
    """A blocking `SidecarStub`; `options` are channel options, e.g. `max_send=...` for big requests."""
    channel_options = [
        ("grpc.max_send_message_length", options.get("max_send", 64 * 1024 * 1024)),
        ("grpc.max_receive_message_length", options.get("max_receive", 64 * 1024 * 1024)),
    ]
    with grpc.insecure_channel(target, options=channel_options) as channel:
        yield sidecar_pb2_grpc.SidecarStub(channel)


def health_status(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    status: int = response.status
    return status


def ingest_json(raw: bytes) -> pb.IngestRequest:
    return pb.IngestRequest(mparticle_json=raw)


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded; an error was expected")


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def drained(target: str, timeout: float = 60.0) -> None:
    """Until the sidecar's outbox holds nothing queued or in flight."""
    with stub_for(target) as stub:
        wait_for(
            lambda: stub.GetStats(pb.GetStatsRequest(), timeout=10).queue_depth == 0, timeout, "the outbox to drain"
        )


# -- HTTP -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def error(self) -> dict[str, str]:
        """The one error of mParticle's error body."""
        body = self.json
        assert isinstance(body, dict) and len(body.get("errors", [])) == 1, body
        error: dict[str, str] = body["errors"][0]
        return error


def http_call(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    tolerate_errors: bool = False,
) -> HttpAnswer | None:
    """One request with a fresh connection; None when the connection fails and `tolerate_errors`."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return HttpAnswer(response.status, dict(response.getheaders()), response.read())
    except OSError:
        if tolerate_errors:
            return None
        raise
    finally:
        connection.close()


def post_events(url: str, raw: bytes, *, bulk: bool = False) -> HttpAnswer:
    answer = http_call(url, "POST", "/v2/bulkevents" if bulk else "/v2/events", raw)
    assert answer is not None
    return answer


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


# -- mParticle batches ------------------------------------------------------------------------------------------


def commerce(action: str, order_id: str | None, **fields: Any) -> dict[str, Any]:
    product_action: dict[str, Any] = {"action": action, **fields}
    if order_id is not None:
        product_action["transaction_id"] = order_id
    return {
        "event_type": "commerce_event",
        "data": {"currency_code": "USD", "timestamp_unixtime_ms": PURCHASE_MS, "product_action": product_action},
    }


def purchase(order_id: str, price: str = "10.00", quantity: int = 2) -> dict[str, Any]:
    return commerce(
        "purchase", order_id, products=[{"id": "sku-1", "name": "Shoes", "price": price, "quantity": quantity}]
    )


def full_refund(order_id: str) -> dict[str, Any]:
    return commerce("refund", order_id)


def partial_refund(order_id: str, price: str = "10.00", quantity: int = 1) -> dict[str, Any]:
    return commerce(
        "refund", order_id, products=[{"id": "sku-1", "name": "Shoes", "price": price, "quantity": quantity}]
    )


def deep_link(btn_ref: str) -> dict[str, Any]:
    """An app open from a Button link a second ago (inside the attribution window, which counts from now)."""
    return {
        "event_type": "application_state_transition",
        "data": {
            "application_transition_type": "application_initialized",
            "launch_referral": f"https://shop.example/p/1?btn_ref={btn_ref}",
            "timestamp_unixtime_ms": time.time_ns() // 1_000_000 - 1000,
        },
    }


def batch(
    *events: dict[str, Any],
    email: str | None = None,
    customer_id: str = "cust-1234",
    source_request_id: str | None = None,
    **extra: Any,
) -> bytes:
    identities: dict[str, Any] = {"customer_id": customer_id}
    if email is not None:
        identities["email"] = email
    body: dict[str, Any] = {
        "environment": "production",
        "mpid": 7346244611012968789,
        "user_identities": identities,
        "events": list(events),
        **extra,
    }
    if source_request_id is not None:
        body["source_request_id"] = source_request_id
    return orjson.dumps(body)


# -- the sandbox's request log ------------------------------------------------------------------------------------


def successful_creates(requests: Sequence[Mapping[str, object]]) -> dict[str, int]:
    """Order id -> creates the sandbox answered 200 (a 409 repeat is not counted)."""
    counts: dict[str, int] = {}
    for request in requests:
        if request["method"] == "POST" and request["path"] == "/v1/order" and request["status"] == 200:
            order_id = str(request["order_id"])
            counts[order_id] = counts.get(order_id, 0) + 1
    return counts


# -- memory ------------------------------------------------------------------------------------------------------


@dataclass
class RssWatch:
    """RSS of a process at the start and now."""

    pid: int
    start: int = field(init=False)

    def __post_init__(self) -> None:
        self.start = self.now()

    def now(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def growth_mib(self) -> float:
        return (self.now() - self.start) / 2**20
