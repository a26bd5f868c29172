"""The mParticle Events API compatible HTTP endpoint, with `GET /metrics` and `GET /healthz` beside it.

Teams sending with mParticle's server SDKs point them here by changing only the host (Python:
`Configuration().host = "http://127.0.0.1:8088/v2"`; the SDK appends `/events` or `/bulkevents`).

- `POST /v2/events` (one batch) and `POST /v2/bulkevents` (a JSON array of at most 100 batches), also without
  `/v2` for a host configured without it: `202 Accepted` with an empty body once every request the batches
  produced is durable in the outbox. As at mParticle, problems of single events (or, in a bulk, of single
  batches) do not fail the request; they are counted in `button_sidecar_rejected_events_total{code}` (by the
  pipeline) and logged with code, field and index, never the values. Refusals carry mParticle's error body
  `{"errors": [{"code": ..., "message": ...}]}`: 400 unusable JSON, 401/403 authentication, 413 size limits,
  429 outbox full (with `Retry-After`), 503 draining or the shared store (Redis) down.
- `GET /metrics`: the Prometheus text of the registry. `GET /healthz`: JSON, 200 when serving, else 503 with the
  reasons. Neither asks for authentication, so probes and scrapers need no secret.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import re
import time
from collections.abc import Sequence
from typing import Final

import orjson
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from button_sidecar.httputil import basic_credentials, url_host
from button_sidecar.pipeline import (
    IngestResult,
    OutboxFull,
    Pipeline,
    PipelineClosed,
    StorageUnavailable,
    StoreUnavailable,
)
from button_sidecar.server.health import ServingState
from button_sidecar.telemetry.metrics import HttpServerMetrics

logger = logging.getLogger(__name__)

#: mParticle's limits: one batch, one request, batches in one bulk request.
MAX_BATCH_BYTES: Final = 128 * 1024
MAX_REQUEST_BYTES: Final = 256 * 1024
MAX_BULK_BATCHES: Final = 100

#: `/healthz` reasons for not serving.
DRAINING: Final = "draining"
OUTBOX_FULL: Final = "outbox_full"

_READ_CHUNK_BYTES: Final = 16 * 1024
_UNMATCHED: Final = "other"
_JSON_SPACE: Final = re.compile(r"[ \t\n\r]*")
# Only to find where each batch of a bulk body ends; numbers stay text, so nothing is converted (or limited, as
# big integers are) on the way to the Rust core, which reads them exactly.
_BOUNDARY_DECODER: Final = json.JSONDecoder(parse_float=str, parse_int=str)


class HttpIngestServer:
    """The HTTP endpoint over a running `Pipeline`.

    `listen` is `host:port` (IPv6 in brackets; port 0 picks a free one) or `unix:/path`. `auth`, when set, is
    the `(key, secret)` clients must send as HTTP Basic credentials, as to mParticle. `health` tells whether the
    sidecar is draining (the gRPC server's `ServingState`); `registry` is where the HTTP metrics are registered
    and what `/metrics` exposes (the pipeline's, so it shows everything). A 429 carries `Retry-After:
    retry_after_secs` (whole seconds: the mParticle Python SDK then holds back every request of the process that
    long). `stop` waits up to `shutdown_timeout_secs` for requests in progress.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        listen: str,
        auth: tuple[str, str] | None,
        health: ServingState,
        registry: CollectorRegistry,
        retry_after_secs: int = 1,
        shutdown_timeout_secs: float = 10.0,
    ) -> None:
        if auth is not None and not all(auth):
            # An empty pair would let in every SDK left at its default (empty) credentials.
            raise ValueError("auth: the key and the secret must not be empty")
        if retry_after_secs < 0:
            raise ValueError("retry_after_secs: must not be negative")
        self._pipeline = pipeline
        self._listen = listen
        self._credentials = None if auth is None else (auth[0].encode(), auth[1].encode())
        self._health = health
        self._registry = registry
        self._metrics = HttpServerMetrics(registry)
        self._retry_after = str(retry_after_secs)
        self._shutdown_timeout_secs = shutdown_timeout_secs
        self._runner: web.AppRunner | None = None
        self._app = web.Application(middlewares=[self._observe])
        for prefix in ("/v2", ""):
            self._app.router.add_post(f"{prefix}/events", self._events)
            self._app.router.add_post(f"{prefix}/bulkevents", self._bulk_events)
        self._app.router.add_get("/metrics", self._metrics_text)
        self._app.router.add_get("/healthz", self._healthz)

    async def start(self) -> str:
        """Bind and serve; returns the bound URL (`http://host:port`, or `unix:/path`)."""
        if self._runner is not None:
            raise RuntimeError("the HTTP endpoint is already started")
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=self._shutdown_timeout_secs)
        await runner.setup()
        try:
            if self._listen.startswith("unix:"):
                path = self._listen.removeprefix("unix:")
                await web.UnixSite(runner, path).start()
                url = f"unix:{path}"
            else:
                host, _, port = self._listen.rpartition(":")
                await web.TCPSite(runner, host.strip("[]"), int(port)).start()
                bound_host, bound_port = runner.addresses[0][:2]
                url = f"http://{url_host(bound_host)}:{bound_port}"
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        logger.info(
            "Serving the mParticle Events API on %s (%s).",
            url,
            "HTTP Basic authentication required" if self._credentials is not None else "no authentication",
        )
        return url

    async def stop(self) -> None:
        """Stop listening and let requests in progress finish (up to `shutdown_timeout_secs`)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- handlers ------------------------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        raw = await _read_capped(request, MAX_BATCH_BYTES)
        if raw is None:
            return _too_large(f"the batch exceeds {MAX_BATCH_BYTES} bytes, the limit of one batch")
        return await self._ingest([raw], request.path, bulk=False)

    async def _bulk_events(self, request: web.Request) -> web.Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        raw = await _read_capped(request, MAX_REQUEST_BYTES)
        if raw is None:
            return _too_large(f"the request exceeds {MAX_REQUEST_BYTES} bytes, the limit of one request")
        try:
            batches = split_json_array(raw)
        except ValueError as error:
            return _bad_request(f"the body must be a JSON array of batches: {error}")
        if len(batches) > MAX_BULK_BATCHES:
            return _bad_request(f"{len(batches)} batches; a request may carry at most {MAX_BULK_BATCHES}")
        for index, batch in enumerate(batches):
            if len(batch) > MAX_BATCH_BYTES:
                return _too_large(f"batch {index} exceeds {MAX_BATCH_BYTES} bytes, the limit of one batch")
        return await self._ingest(batches, request.path, bulk=True)

    async def _ingest(self, raws: Sequence[bytes], path: str, *, bulk: bool) -> web.Response:
        try:
            ingested = await self._pipeline.ingest_many(raws)
        except OutboxFull:
            return _errors(
                429,
                "TOO_MANY_REQUESTS",
                "the outbox is full: nothing of this request was accepted; retry once deliveries have made room",
                {hdrs.RETRY_AFTER: self._retry_after},
            )
        except PipelineClosed:
            return self._draining()
        except StoreUnavailable:
            return self._unavailable("the shared store (Redis) did not answer; nothing was accepted, retry later")
        except StorageUnavailable as error:
            # 503 rather than 507: the SDKs retry a 503.
            return self._unavailable(str(error))
        _log_rejections(ingested, path)
        # A single unusable batch fails the request, as gRPC's INVALID_ARGUMENT; in a bulk it is one rejection.
        if not bulk and (unusable := ingested[0].unusable) is not None:
            return _bad_request(f"{unusable.code}: {unusable.message}")
        return web.Response(status=202)

    def _refusal(self, request: web.Request) -> web.Response | None:
        """The answer for a request that must not be ingested (draining, bad credentials); None to go on."""
        if self._health.draining:
            return self._draining()
        if self._credentials is None:
            return None
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is None:
            return _errors(
                401,
                "UNAUTHORIZED",
                "HTTP Basic authentication with the API key and secret is required",
                {hdrs.WWW_AUTHENTICATE: 'Basic realm="button-sidecar"'},
            )
        key, secret = basic_credentials(header) or ("", "")
        expected_key, expected_secret = self._credentials
        # Both compared in constant time, and both always, so timing tells nothing about which one is wrong.
        valid = hmac.compare_digest(key.encode(), expected_key) & hmac.compare_digest(secret.encode(), expected_secret)
        if not valid:
            return _errors(403, "FORBIDDEN", "the API key or secret is not valid")
        return None

    def _draining(self) -> web.Response:
        return self._unavailable("the sidecar is shutting down; retry later or elsewhere")

    def _unavailable(self, message: str) -> web.Response:
        return _errors(503, "SERVICE_UNAVAILABLE", message, {hdrs.RETRY_AFTER: self._retry_after})

    async def _metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._registry), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        body: dict[str, object] = {}
        if self._health.draining:
            reasons = [DRAINING]  # the outbox may be closed already: not read
        else:
            stats = await self._pipeline.stats()
            settings = self._pipeline.settings
            full = (
                stats.queued + stats.in_flight >= settings.max_queue_rows
                or stats.pending_bytes >= settings.max_queue_bytes
            )
            reasons = [OUTBOX_FULL] if full else []
            body["outbox"] = dataclasses.asdict(stats)
        status = "not_serving" if reasons else "serving"
        return _json({"status": status, "reasons": reasons, **body}, 503 if reasons else 200)

    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500  # unless an answer says otherwise: an unexpected exception becomes aiohttp's 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:  # 404, 405 from the router
            status = error.status
            raise
        finally:
            resource = request.match_info.route.resource
            path = resource.canonical if resource is not None else _UNMATCHED
            self._metrics.requests.labels(path=path, status=str(status)).inc()
            self._metrics.request_duration.labels(path=path).observe(time.perf_counter() - started)


def _log_rejections(ingested: Sequence[IngestResult], path: str) -> None:
    # One line per batch (a batch may hold thousands of bad events); all are counted in the metrics.
    for batch_index, result in enumerate(ingested):
        if not result.rejections:
            continue
        first = result.rejections[0]
        what = "the whole batch" if first.event_index < 0 else f"event {first.event_index}"
        # Code, field and indexes only: the message or the value may hold personal data.
        logger.warning(
            "Rejected %d event(s) of batch %d on %s; first %s: %s at %s.",
            len(result.rejections),
            batch_index,
            path,
            what,
            first.code,
            first.field,
        )


def split_json_array(raw: bytes) -> list[bytes]:
    """The text of each element of a JSON array, as it was sent. Raises ValueError unless `raw` is one array."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    position = _skip_space(text, 0)
    if not text.startswith("[", position):
        raise ValueError("not an array")
    position = _skip_space(text, position + 1)
    elements: list[bytes] = []
    if text.startswith("]", position):
        position += 1
    else:
        while True:
            try:
                _, end = _BOUNDARY_DECODER.raw_decode(text, position)
            except RecursionError:
                raise ValueError("nested too deeply") from None
            elements.append(text[position:end].encode())
            position = _skip_space(text, end)
            if text.startswith(",", position):
                position = _skip_space(text, position + 1)
            elif text.startswith("]", position):
                position += 1
                break
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, position)
    position = _skip_space(text, position)
    if position != len(text):
        raise json.JSONDecodeError("Extra data", text, position)
    return elements


def _skip_space(text: str, position: int) -> int:
    match = _JSON_SPACE.match(text, position)
    assert match is not None  # the pattern also matches the empty string
    return match.end()


async def _read_capped(request: web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is longer than `limit`: a huge body is never held in memory."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_chunked(_READ_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _json(payload: object, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers)


def _errors(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """mParticle's error body."""
    return _json({"errors": [{"code": code, "message": message}]}, status, headers)


def _bad_request(message: str) -> web.Response:
    return _errors(400, "BAD_REQUEST", message)


def _too_large(message: str) -> web.Response:
    return _errors(413, "REQUEST_TOO_LARGE", message)
