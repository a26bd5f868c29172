"""Blocking HTTP for the tests: one request on a fresh connection, the answer read whole.

Shared by the sandbox client (Button's API) and the tests of the sidecar's mParticle endpoint.
"""

from __future__ import annotations

import base64
import http.client
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body parsed; None when it is empty."""
        return orjson.loads(self.body) if self.body else None

    # -- mParticle's error body: {"errors": [{"code": ..., "message": ...}]} --

    @property
    def error(self) -> dict[str, str]:
        """The one error of mParticle's error body."""
        body = self.json
        assert isinstance(body, dict) and len(body.get("errors", [])) == 1, body
        error: dict[str, str] = body["errors"][0]
        return error

    @property
    def errors(self) -> list[dict[str, str]]:
        """`[error]`; asserts that the body and the error hold nothing more than mParticle's shape."""
        error = self.error
        assert list(self.json) == ["errors"] and sorted(error) == ["code", "message"], self.json
        return [error]

    # -- Button's envelope: {"meta": {"status": ...}, "object": ...} or {"meta": ..., "error": {...}} --

    @property
    def error_message(self) -> object:
        """``error.message`` of a Button error envelope."""
        body = self.json
        assert isinstance(body, dict), body
        error = body.get("error")
        assert isinstance(error, dict), body
        return error.get("message")

    @property
    def data(self) -> object:
        """``object`` of a Button success envelope."""
        body = self.json
        assert isinstance(body, dict), body
        assert body.get("meta") == {"status": "ok"}, body
        return body["object"]


def http_call(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> HttpAnswer:
    """`method path` at `url` (`http://host:port`), `path` sent exactly as given; JSON unless `headers` say else.
    Any status is an answer; a failed connection raises `OSError`."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return HttpAnswer(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def basic(key: str, secret: str) -> str:
    """An `Authorization` value for HTTP Basic auth."""
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
