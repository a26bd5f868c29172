"""Shared fixtures: the real Button sandbox (``button-sidecar sandbox``) as a subprocess on a real socket.

``sandbox`` is one process shared by the whole session and reset before each test (starting Python
and aiohttp per test would dominate the run time). ``sandbox_factory(*flags)`` starts a private one,
e.g. with fault flags that must hold from the first request; it is stopped after the test.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import urlsplit

import orjson
import pytest

from tests.http_client import HttpAnswer, basic, http_call

SANDBOX_API_KEY = "sk-test-sandbox-key"
_STARTUP_TIMEOUT_S = 20.0
_REQUEST_TIMEOUT_S = 10.0


@dataclass
class Sandbox:
    """A running sandbox process and helpers to call it."""

    url: str
    api_key: str
    process: subprocess.Popen[bytes]
    stderr_path: Path
    host: str = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        assert parts.hostname is not None and parts.port is not None, self.url
        self.host, self.port = parts.hostname, parts.port

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        raw_body: bytes | None = None,
        api_key: str | None = None,
        authorization: str | None = None,
        timeout: float = _REQUEST_TIMEOUT_S,
    ) -> HttpAnswer:
        """Send one request with ``path`` exactly as given (no re-encoding) and Basic auth with the key.

        ``body`` is sent as JSON unless ``raw_body`` is given; ``authorization`` replaces the header,
        an empty string leaves it out.
        """
        if authorization is None:
            authorization = basic(api_key if api_key is not None else self.api_key, "")
        headers = {"Authorization": authorization} if authorization else {}
        payload = raw_body if raw_body is not None else (orjson.dumps(body) if body is not None else None)
        answer = http_call(self.url, method, path, payload, headers=headers, timeout=timeout)
        _ = answer.json  # the sandbox answers JSON or nothing: anything else fails the request here
        return answer

    def admin(self, method: str, path: str, body: object = None) -> object:
        reply = self.request(method, f"/__admin/{path}", body, authorization="")
        assert reply.status == 200, reply
        return reply.json

    def reset(self) -> None:
        self.admin("POST", "reset")

    def set_faults(self, **faults: object) -> dict[str, object]:
        """Replace the fault profile (keys as in ``FaultConfig``); returns the active profile."""
        snapshot = self.admin("POST", "faults", faults)
        assert isinstance(snapshot, dict)
        return snapshot

    def clear_faults(self) -> None:
        self.admin("DELETE", "faults")

    def orders(self) -> list[dict[str, object]]:
        return _list_of_objects(self.admin("GET", "orders"))

    def requests(self) -> list[dict[str, object]]:
        return _list_of_objects(self.admin("GET", "requests"))

    def in_flight(self) -> list[dict[str, object]]:
        return _list_of_objects(self.admin("GET", "in_flight"))

    def app_events(self) -> list[dict[str, object]]:
        return _list_of_objects(self.admin("GET", "app_events"))

    def activity(self) -> list[dict[str, object]]:
        return _list_of_objects(self.admin("GET", "activity"))

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


class SandboxFactory(Protocol):
    def __call__(self, *flags: str, api_key: str = SANDBOX_API_KEY) -> Sandbox: ...


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (when it returns)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def start_sandbox(stderr_path: Path, *flags: str, api_key: str = SANDBOX_API_KEY) -> Sandbox:
    """Start ``button-sidecar sandbox --port 0 FLAGS`` and wait for the URL on its first stdout line."""
    # The key goes through the environment, so it is not on the command line for `ps` to show.
    env = {**os.environ, "BUTTON_API_KEY": api_key}
    command = [sys.executable, "-m", "button_sidecar.cli", "sandbox", "--port", "0", "--log-level", "info", *flags]
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env)
    assert process.stdout is not None
    try:
        url = _read_url(process, process.stdout, stderr_path)
    except BaseException:
        stop_sandbox(process)
        raise
    return Sandbox(url=url, api_key=api_key, process=process, stderr_path=stderr_path)


def stop_sandbox(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _read_url(process: subprocess.Popen[bytes], stdout: IO[bytes], stderr_path: Path) -> str:
    prefix = "Button sandbox listening on "
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stdout], [], [], 0.1)
        if ready:
            line = stdout.readline().decode().strip()
            if not line.startswith(prefix):
                raise RuntimeError(f"unexpected first line {line!r}; stderr:\n{stderr_path.read_text()}")
            return line.removeprefix(prefix)
        if process.poll() is not None:
            raise RuntimeError(f"the sandbox exited with {process.returncode}; stderr:\n{stderr_path.read_text()}")
    raise RuntimeError(f"the sandbox printed no URL within {_STARTUP_TIMEOUT_S} s")


def _list_of_objects(value: object) -> list[dict[str, object]]:
    assert isinstance(value, list) and all(isinstance(item, dict) for item in value), value
    return value


@pytest.fixture(scope="session")
def _shared_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    # Seeded (and re-seeded by every reset): a test's random faults fire the same way on every run, so a test
    # that needs one of them to fire cannot pass or fail by luck.
    server = start_sandbox(tmp_path_factory.mktemp("sandbox") / "stderr.log", "--seed", "7")
    yield server
    stop_sandbox(server.process)


@pytest.fixture
def sandbox(_shared_sandbox: Sandbox) -> Sandbox:
    """The session's sandbox, emptied and without faults."""
    assert _shared_sandbox.process.poll() is None, f"the sandbox died:\n{_shared_sandbox.stderr()}"
    _shared_sandbox.reset()
    return _shared_sandbox


@pytest.fixture
def sandbox_factory(tmp_path: Path) -> Iterator[SandboxFactory]:
    """Start private sandboxes with extra CLI flags, e.g. ``sandbox_factory("--error-rate", "1")``."""
    started: list[Sandbox] = []

    def start(*flags: str, api_key: str = SANDBOX_API_KEY) -> Sandbox:
        server = start_sandbox(tmp_path / f"sandbox-{len(started)}.log", *flags, api_key=api_key)
        started.append(server)
        return server

    yield start
    for server in started:
        stop_sandbox(server.process)
