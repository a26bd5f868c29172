"""Running the sidecar for tests: as a real `button-sidecar serve` subprocess, or in-process, against the sandbox."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
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

from tests.conftest import Sandbox, wait_for
from tests.http_client import http_call
from tests.pipeline.helpers import PURCHASE_MS

STARTUP_TIMEOUT_S = 20.0
READY_PREFIX = "Sidecar listening on "
# What the HTTP endpoint logs once it listens.
HTTP_URL_LOG = re.compile(r"Serving the mParticle Events API on (\S+) \(")
# Big enough for any message a test sends: the server's limit is the one under test.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
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


def write_config(
    directory: Path, sandbox_url: str, extra_toml: str = "", *, delivery_toml: str = "", max_age_secs: int = 60
) -> Path:
    """Retries in tenths of a second, given up only after `max_age_secs` too, so nothing dies of age during a
    test. `delivery_toml` goes into the `[delivery]` table (TOML declares a table once); `extra_toml` is appended."""
    path = directory / "sidecar.toml"
    retry = "max_attempts = 3\ninitial_backoff_secs = 0.05\nmax_backoff_secs = 0.4\n"
    delivery = f"[delivery]\n{delivery_toml}\n[delivery.retry]\n{retry}max_age_secs = {max_age_secs}\n"
    path.write_text(f'[button]\nbase_url = "{sandbox_url}"\n{delivery}\n{extra_toml}')
    return path


def start_sidecar(
    directory: Path,
    sandbox: Sandbox,
    *,
    listen: str = "127.0.0.1:0",
    http_listen: str = "127.0.0.1:0",
    extra_toml: str = "",
    delivery_toml: str = "",
    max_age_secs: int = 60,
    state_dir: Path | None = None,
    embedded_sandbox: bool = False,
    env: Mapping[str, str] | None = None,
    log_level: str = "info",
    startup_timeout: float = STARTUP_TIMEOUT_S,
) -> SidecarProcess:
    """`python -m button_sidecar.cli serve` delivering to `sandbox` (or, with `embedded_sandbox`, without an
    API key, to the sandbox it starts itself); waits for its ready line. `env` adds environment variables; the
    TOML options are `write_config`'s."""
    directory.mkdir(parents=True, exist_ok=True)
    state = state_dir or directory / "state"
    config = write_config(directory, sandbox.url, extra_toml, delivery_toml=delivery_toml, max_age_secs=max_age_secs)
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
    command = [sys.executable, "-m", "button_sidecar.cli", "serve", "--config", str(config), "--log-level", log_level]
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=environment, cwd=directory)
    sidecar = SidecarProcess(process, "", "", stdout_path, stderr_path, state)
    try:
        sidecar.address = _wait_ready(sidecar, startup_timeout)
        # Logged before the ready line is printed.
        http_url = HTTP_URL_LOG.search(stderr_path.read_text())
        assert http_url is not None, sidecar.output()
        sidecar.http_url = http_url.group(1)
    except BaseException:
        sidecar.kill()
        raise
    return sidecar


def _wait_ready(sidecar: SidecarProcess, timeout: float) -> str:
    """The gRPC address from the ready line; raises with the output if the process exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in sidecar.stdout_path.read_text(errors="replace").splitlines():
            if line.startswith(READY_PREFIX):
                return line.removeprefix(READY_PREFIX)
        if sidecar.process.poll() is not None:
            raise RuntimeError(f"the sidecar exited with {sidecar.process.returncode}:\n{sidecar.output()}")
        select.select([], [], [], 0.05)
    raise RuntimeError(f"the sidecar was not ready within {timeout} s:\n{sidecar.output()}")


@contextmanager
def running_process(directory: Path, sandbox: Sandbox, **options: Any) -> Iterator[SidecarProcess]:
    """`start_sidecar(directory, sandbox, **options)`, stopped with SIGTERM at the end."""
    sidecar = start_sidecar(directory, sandbox, **options)
    try:
        yield sidecar
    finally:
        sidecar.stop()


@contextmanager
def stub_for(target: str, max_message_bytes: int = MAX_MESSAGE_BYTES) -> Iterator[Any]:
    """A blocking `SidecarStub` on `target`."""
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    with grpc.insecure_channel(target, options=options) as channel:
        yield sidecar_pb2_grpc.SidecarStub(channel)


def metric_samples(http_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`GET /metrics` of a running sidecar: value by (sample name, sorted labels)."""
    answer = http_call(http_url, "GET", "/metrics")
    assert answer.status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.body.decode())
        for sample in family.samples
    }


def health_status(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    status: int = response.status
    return status


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


def commerce(action: str, order_id: str | None, **fields: Any) -> dict[str, Any]:
    """A commerce event; `fields` go into its `product_action`."""
    product_action: dict[str, Any] = {"action": action}
    if order_id is not None:
        product_action["transaction_id"] = order_id
    product_action.update(fields)
    return {
        "event_type": "commerce_event",
        "data": {"currency_code": "USD", "timestamp_unixtime_ms": PURCHASE_MS, "product_action": product_action},
    }


def purchase(order_id: str, price: str = "10.00", quantity: int = 2) -> dict[str, Any]:
    """A purchase of one product, 20.00 USD by default."""
    return commerce(
        "purchase", order_id, products=[{"id": "sku-1", "name": "Shoes", "price": price, "quantity": quantity}]
    )


def batch(
    *events: dict[str, Any],
    email: str | None = None,
    customer_id: str = "cust-1234",
    source_request_id: str | None = None,
    **extra: Any,
) -> bytes:
    """One mParticle batch of `events`; `extra` adds top-level fields."""
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


def purchase_batch(order_id: str, *, email: str | None = None, source_request_id: str | None = None) -> bytes:
    """One mParticle batch with one purchase (and the user's email when given)."""
    return batch(purchase(order_id), email=email, source_request_id=source_request_id)


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
