"""The HTTP endpoint in-process over a real pipeline (real SQLite, the real sandbox), and a raw client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from button_sidecar.pipeline import Pipeline
from button_sidecar.server.health import ServingState
from button_sidecar.server.http_api import HttpIngestServer
from prometheus_client import CollectorRegistry

from tests.conftest import Sandbox
from tests.http_client import HttpAnswer
from tests.pipeline.helpers import running, settings


@dataclass(frozen=True, slots=True)
class HttpSidecar:
    url: str
    pipeline: Pipeline
    health: ServingState
    registry: CollectorRegistry


@asynccontextmanager
async def http_sidecar(
    state_dir: Path,
    sandbox: Sandbox,
    *,
    auth: tuple[str, str] | None = None,
    listen: str = "127.0.0.1:0",
    **setting_changes: Any,
) -> AsyncIterator[HttpSidecar]:
    """A pipeline delivering to `sandbox`, with the HTTP endpoint in front of it on a real socket."""
    registry = CollectorRegistry()
    async with running(settings(state_dir, sandbox, **setting_changes), registry) as pipeline:
        health = ServingState(pipeline)
        server = HttpIngestServer(pipeline, listen=listen, auth=auth, health=health, registry=registry)
        url = await server.start()
        try:
            yield HttpSidecar(url, pipeline, health, registry)
        finally:
            await server.stop()


async def call(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    authorization: str | None = None,
    connector: aiohttp.BaseConnector | None = None,
) -> HttpAnswer:
    """One request with aiohttp. `body` is sent as is (bytes or an async iterator of bytes: chunked)."""
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, url + path, data=body, headers=headers) as response,
    ):
        return HttpAnswer(response.status, dict(response.headers), await response.read())
