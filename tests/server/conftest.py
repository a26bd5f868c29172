"""Fixtures of the server tests: a `button-sidecar serve` subprocess shared by a module, short socket paths."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Sandbox
from tests.server.helpers import SidecarProcess, running_process


@pytest.fixture(scope="module")
def sidecar(_shared_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    """A real `button-sidecar serve` subprocess on a free TCP port, delivering to the session's sandbox.

    Shared by the tests of a module (its ledger and outbox persist between them): use fresh order ids.
    """
    with running_process(tmp_path_factory.mktemp("sidecar"), _shared_sandbox) as process:
        yield process
    assert _shared_sandbox.api_key not in process.output()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A directory for unix sockets with a short path (the limit is 107 bytes; pytest's tmp paths are long)."""
    directory = Path(tempfile.mkdtemp(prefix="bsc-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
