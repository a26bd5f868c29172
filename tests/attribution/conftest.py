"""A real ``redis-server`` for the session, and the store backends to run the attribution tests against.

``redis_url`` starts ``redis-server`` (Debian's package; ``make redis-server-installed`` installs it) on a
free loopback port without persistence, once per session. Tests keep apart by key prefix, not by flushing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

_STARTUP_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:<port>/0`` of a private ``redis-server``, stopped after the session."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not installed; `make redis-server-installed` installs Debian's package")
    workdir = tmp_path_factory.mktemp("redis")
    port = _free_port()
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    log_path = workdir / "redis.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([*command, "--dir", str(workdir)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_ping(process, port, log_path)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)


def _wait_for_ping(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if client.ping():
                    return
            except RedisConnectionError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)
    finally:
        client.close()


@pytest.fixture(params=["sqlite", "redis"])
def store_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`PipelineSettings` fields selecting one store backend; Redis with a prefix of this test's own."""
    if request.param == "sqlite":
        return {"store_backend": "sqlite"}
    url: str = request.getfixturevalue("redis_url")
    return {"store_backend": "redis", "redis_url": url, "redis_key_prefix": f"test-{uuid.uuid4().hex}:"}
