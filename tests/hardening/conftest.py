"""Fixtures of the hardening tests: a private Button sandbox per module (the session's is reset before every test,
which would wipe what a module-wide sidecar delivered), and a file system that can be filled up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Sandbox, start_sandbox, stop_sandbox


@pytest.fixture(scope="module")
def module_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox of this module alone, never reset by other tests."""
    server = start_sandbox(tmp_path_factory.mktemp("module-sandbox") / "stderr.log")
    yield server
    stop_sandbox(server.process)
