"""A real ``redis-server`` for the session, and the store backends to run the attribution tests against.

``redis_url`` starts ``redis-server`` (Debian's package; ``make redis-server-installed`` installs it) on a
free loopback port without persistence, once per session. Tests keep apart by key prefix, not by flushing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.attribution.helpers import redis_server


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:<port>/0`` of a private ``redis-server``, stopped after the session."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(params=["sqlite", "redis"])
def store_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`PipelineSettings` fields selecting one store backend; Redis with a prefix of this test's own."""
    if request.param == "sqlite":
        return {"store_backend": "sqlite"}
    url: str = request.getfixturevalue("redis_url")
    return {"store_backend": "redis", "redis_url": url, "redis_key_prefix": f"test-{uuid.uuid4().hex}:"}
