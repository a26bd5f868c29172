"""What the hardening tests add to the shared helpers (`tests.server.helpers`, `tests.http_client`): their
sidecar settings, mParticle batches, the sandbox's request log and the memory of a process."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import psutil  # type: ignore[import-untyped]
from button_sidecar.v1 import sidecar_pb2 as pb
from grpc_health.v1 import health_pb2  # type: ignore[import-untyped]

from tests.conftest import Sandbox, wait_for
from tests.http_client import HttpAnswer, http_call
from tests.server.helpers import SidecarProcess, commerce, running_process, start_sidecar, stub_for

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING

# -- the sidecar process ------------------------------------------------------------------------------------

# Hardening runs drain for 1 s at most, and nothing may die of age during a test (giving up needs the attempts
# AND the age); a loaded machine may take longer to start the sidecar.
SHUTDOWN_TOML = "shutdown_deadline_secs = 1.0\n"
MAX_AGE_SECS = 600
STARTUP_TIMEOUT_S = 30.0


def _hardened(delivery_toml: str = "", **options: Any) -> dict[str, Any]:
    """`start_sidecar` options with the settings above; `delivery_toml` adds to them."""
    settings = {"max_age_secs": MAX_AGE_SECS, "startup_timeout": STARTUP_TIMEOUT_S}
    return {**settings, **options, "delivery_toml": SHUTDOWN_TOML + delivery_toml}


def start_server(directory: Path, sandbox: Sandbox, **options: Any) -> SidecarProcess:
    """`start_sidecar` with the hardening settings."""
    return start_sidecar(directory, sandbox, **_hardened(**options))


def running_server(directory: Path, sandbox: Sandbox, **options: Any) -> AbstractContextManager[SidecarProcess]:
    """`running_process` with the hardening settings."""
    return running_process(directory, sandbox, **_hardened(**options))


# -- gRPC -----------------------------------------------------------------------------------------------------


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded; an error was expected")


def drained(target: str, timeout: float = 60.0) -> None:
    """Until the sidecar's outbox holds nothing queued or in flight."""
    with stub_for(target) as stub:
        wait_for(
            lambda: stub.GetStats(pb.GetStatsRequest(), timeout=10).queue_depth == 0, timeout, "the outbox to drain"
        )


# -- HTTP -----------------------------------------------------------------------------------------------------


def post_events(url: str, raw: bytes, *, bulk: bool = False) -> HttpAnswer:
    return http_call(url, "POST", "/v2/bulkevents" if bulk else "/v2/events", raw)


# -- mParticle batches ------------------------------------------------------------------------------------------


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
