"""Running the sidecar for tests: as a real `button-sidecar serve` subprocess, or in-process, against the sandbox."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]
import orjson
from button_sidecar.config import (
    ButtonConfig,
    DeliveryConfig,
    GrpcConfig,
    HttpConfig,
    RetryConfig,
    Secret,
    SidecarConfig,
)
from button_sidecar.server import Sidecar
from button_sidecar.v1 import sidecar_pb2 as pb
from button_sidecar.v1 import sidecar_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Sandbox

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 20.0
READY_PREFIX = "Sidecar listening on "
# What the HTTP endpoint logs once it listens.
HTTP_URL_LOG = re.compile(r"Serving the mParticle Events API on (\S+) \(")
# Retries in tenths of a second, and nothing dies of age during a test.
FAST_RETRY_TOML = """
[delivery.retry]
max_attempts = 3
initial_backoff_secs = 0.05
max_backoff_secs = 0.4
max_age_secs = 60
"""
EMAIL = "Jane.Doe@Example.com"


@dataclass
class SidecarProcess:
    """A `button-sidecar serve` subprocess."""

    process: subprocess.Popen[bytes]
    address: str
    http_url: str
    """`http://127.0.0.1:PORT` or `unix:/path`."""
    stdout_path: Path
    stderr_path: Path
    state_dir: Path

    def output(self) -> str:
        """Everything it wrote to stdout and stderr so far."""
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")


def write_config(directory: Path, sandbox: Sandbox, extra_toml: str = "") -> Path:
    path = directory / "sidecar.toml"
    path.write_text(f'[button]\nbase_url = "{sandbox.url}"\n{FAST_RETRY_TOML}\n{extra_toml}')
    return path


def start_sidecar(
    directory: Path,
    sandbox: Sandbox,
    *,
    listen: str = "127.0.0.1:0",
    http_listen: str = "127.0.0.1:0",
    extra_toml: str = "",
    state_dir: Path | None = None,
    embedded_sandbox: bool = False,
    env: Mapping[str, str] | None = None,
) -> SidecarProcess:
    """`python -m button_sidecar.cli serve` delivering to `sandbox` (or, with `embedded_sandbox`, without an
    API key, to the sandbox it starts itself); waits for its ready line. `env` adds environment variables."""
    directory.mkdir(parents=True, exist_ok=True)
    state = state_dir or directory / "state"
    config = write_config(directory, sandbox, extra_toml)
    # The API key goes through the environment, as in production; it must never come back out.
    environment = {
        **os.environ,
        "BUTTON_API_KEY": "" if embedded_sandbox else sandbox.api_key,
        "BUTTON_SIDECAR_STATE_DIR": str(state),
        "BUTTON_SIDECAR_GRPC_LISTEN": listen,
        "BUTTON_SIDECAR_HTTP_LISTEN": http_listen,
        **(env or {}),
    }
    stdout_path, stderr_path = directory / "stdout.log", directory / "stderr.log"
    command = [sys.executable, "-m", "button_sidecar.cli", "serve", "--config", str(config)]
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=environment, cwd=directory)
    try:
        address = _wait_ready(process, stdout_path, stderr_path)
        # Logged before the ready line is printed.
        http_url = HTTP_URL_LOG.search(stderr_path.read_text())
        assert http_url is not None, stderr_path.read_text()
    except BaseException:
        stop_sidecar(process)
        raise
    return SidecarProcess(process, address, http_url.group(1), stdout_path, stderr_path, state)


def _wait_ready(process: subprocess.Popen[bytes], stdout_path: Path, stderr_path: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in stdout_path.read_text().splitlines():
            if line.startswith(READY_PREFIX):
                return line.removeprefix(READY_PREFIX)
        if process.poll() is not None:
            raise RuntimeError(f"the sidecar exited with {process.returncode}:\n{stderr_path.read_text()}")
        select.select([], [], [], 0.05)
    raise RuntimeError(f"the sidecar was not ready within {STARTUP_TIMEOUT_S} s:\n{stderr_path.read_text()}")


def stop_sidecar(process: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM (a graceful drain), then SIGKILL if it hangs; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


@contextmanager
def running_process(directory: Path, sandbox: Sandbox, **options: Any) -> Iterator[SidecarProcess]:
    sidecar = start_sidecar(directory, sandbox, **options)
    try:
        yield sidecar
    finally:
        stop_sidecar(sidecar.process)


@contextmanager
def stub_for(target: str) -> Iterator[Any]:
    """A blocking `SidecarStub` on `target`."""
    with grpc.insecure_channel(target) as channel:
        yield sidecar_pb2_grpc.SidecarStub(channel)


def http_call(
    url: str, method: str = "GET", body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One blocking HTTP request (urllib): status, headers and body, also for an error status."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def metric_samples(http_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`GET /metrics` of a running sidecar: value by (sample name, sorted labels)."""
    status, _, raw = http_call(f"{http_url}/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(raw.decode())
        for sample in family.samples
    }


def health_status(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    status: int = response.status
    return status


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def orders_arrive(sandbox: Sandbox, order_ids: Iterable[str], timeout: float = 20.0) -> dict[str, dict[str, object]]:
    """Poll the sandbox until every order in `order_ids` is there; returns the sandbox's orders by id."""
    wanted = set(order_ids)
    found: dict[str, dict[str, object]] = {}

    def arrived() -> bool:
        found.clear()
        found.update({str(order["order_id"]): order for order in sandbox.orders()})
        return wanted <= set(found)

    wait_for(arrived, timeout, what=f"orders {sorted(wanted)} at the sandbox")
    return found


def purchase_batch(order_id: str, *, email: str | None = None, source_request_id: str | None = None) -> bytes:
    """One mParticle batch with one purchase (and the user's email when given)."""
    identities: dict[str, object] = {"customer_id": "cust-1234"}
    if email is not None:
        identities["email"] = email
    batch: dict[str, object] = {
        "environment": "production",
        "mpid": 7346244611012968789,
        "user_identities": identities,
        "events": [
            {
                "event_type": "commerce_event",
                "data": {
                    "currency_code": "USD",
                    "timestamp_unixtime_ms": 1_714_592_744_066,
                    "product_action": {
                        "action": "purchase",
                        "transaction_id": order_id,
                        "products": [{"id": "sku-1", "name": "Shoes", "price": "10.00", "quantity": 2}],
                    },
                },
            }
        ],
    }
    if source_request_id is not None:
        batch["source_request_id"] = source_request_id
    return orjson.dumps(batch)


def full_refund_batch(order_id: str) -> bytes:
    """A full refund (a cancel) of `order_id`."""
    return orjson.dumps(
        {
            "events": [
                {
                    "event_type": "commerce_event",
                    "data": {"product_action": {"action": "refund", "transaction_id": order_id}},
                }
            ]
        }
    )


def ingest_json(raw: bytes) -> pb.IngestRequest:
    return pb.IngestRequest(mparticle_json=raw)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, and a server (localhost, 127.0.0.1) and a client certificate it signed (EC keys: fast)."""
    paths = {
        f"{name}.{ext}": directory / f"{name}.{ext}" for name in ("ca", "server", "client") for ext in ("crt", "key")
    }
    new_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout")
    _openssl("req", "-x509", *new_key, str(paths["ca.key"]), "-out", str(paths["ca.crt"]), "-subj", "/CN=test-ca")
    signing = ("-CA", str(paths["ca.crt"]), "-CAkey", str(paths["ca.key"]), "-CAcreateserial", "-days", "1")
    for name, extension in (
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        request, extensions = directory / f"{name}.csr", directory / f"{name}.ext"
        extensions.write_text(extension + "\n")
        _openssl("req", *new_key, str(paths[f"{name}.key"]), "-out", str(request), "-subj", f"/CN={name}")
        out = str(paths[f"{name}.crt"])
        _openssl("x509", "-req", "-in", str(request), *signing, "-out", out, "-extfile", str(extensions))
    return paths


# -- in-process ------------------------------------------------------------------------------------------


def config_for(state_dir: Path, sandbox: Sandbox, **grpc_changes: Any) -> SidecarConfig:
    """A config delivering to `sandbox` from `state_dir`, serving gRPC and HTTP on free loopback ports."""
    return SidecarConfig(
        state_dir=state_dir,
        button=ButtonConfig(api_key=Secret(sandbox.api_key), base_url=sandbox.url),
        grpc=replace(GrpcConfig(listen="127.0.0.1:0"), **grpc_changes),
        http=HttpConfig(listen="127.0.0.1:0"),
        delivery=DeliveryConfig(
            shutdown_deadline_secs=0.5,
            retry=RetryConfig(max_attempts=3, initial_backoff_secs=0.05, max_backoff_secs=0.4, max_age_secs=60),
        ),
    )


@asynccontextmanager
async def running_in_process(config: SidecarConfig) -> AsyncIterator[tuple[Sidecar, Any]]:
    """A started `Sidecar` and an aio `SidecarStub` connected to it (plaintext)."""
    sidecar = Sidecar(config)
    await sidecar.start()
    try:
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            yield sidecar, sidecar_pb2_grpc.SidecarStub(channel)
    finally:
        await sidecar.stop()
