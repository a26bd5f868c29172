"""The Button API over HTTP: one shared connection pool, auth, and what each answer means."""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

import orjson

from button_sidecar import __version__, _core
from button_sidecar.pipeline.retry import Delivered, Outcome, Reject, Retry, classify_status, parse_retry_after
from button_sidecar.telemetry.metrics import CONNECTION_ERROR, SidecarMetrics, status_class

# Long enough for any message Button writes; short enough that a stray HTML error page stays small.
_MAX_MESSAGE_CHARS = 500

DEFAULT_APP_BASE_URL: Final = "https://mobileapi.usebutton.com"
# Button's Merchant Library sends an app whose id has this form to its own host (button-api.md section 3.2).
_APP_ID_WITH_HOST: Final = re.compile(r"app-[0-9a-zA-Z]+")

#: Request kinds that go to the Merchant Library API (button-api.md section 3.2), not the Order API.
APP_KINDS: Final = frozenset({"app_event", "activity"})


def order_path(order_id: str) -> str:
    """`/v1/order/{order_id}` with the id as one percent-encoded segment (ids may hold `/`, spaces, `%`)."""
    return "/v1/order/" + quote(order_id, safe="")


def application_id_of(body: bytes | None) -> str | None:
    """The `application_id` an app event or activity body authenticates with; None when it has none."""
    try:
        signal = orjson.loads(body) if body is not None else None
    except orjson.JSONDecodeError:
        return None
    found = signal.get("application_id") if isinstance(signal, dict) else None
    return found if isinstance(found, str) and found else None


def app_base_url_for(app_base_url: str, application_id: str) -> str:
    """Where an app's Merchant Library requests go: `https://{app-id}.mobileapi.usebutton.com` for an
    `app-…` id on Button's default host, as Button's own SDKs do; otherwise `app_base_url` as configured
    (e.g. the sandbox, or a proxy)."""
    if app_base_url == DEFAULT_APP_BASE_URL and _APP_ID_WITH_HOST.fullmatch(application_id):
        return f"https://{application_id}.mobileapi.usebutton.com"
    return app_base_url


def _basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:".encode()).decode("ascii")


@dataclass(frozen=True, slots=True)
class ButtonResponse:
    status: int
    body: bytes
    retry_after: str | None


class ButtonUnreachable(Exception):
    """No HTTP answer: connection refused or reset, DNS failure, or the request timed out."""


class ButtonClient:
    """Requests to the Button API through one `_core.HttpTransport`: a connection pool on a thread of its own,
    outside the GIL, so that delivery costs the event loop little more than handing requests over.

    Order API requests go to `base_url` with `Authorization: Basic base64(api_key + ":")` (the key is never
    logged); Merchant Library requests (`application_id` given) go to `app_base_url` (the app's own host on
    Button's default one, see `app_base_url_for`) with `Basic base64(application_id + ":")`, so the API key
    never reaches that host. Every request carries `Content-Type: application/json` and
    `User-Agent: button-sidecar/<version>`, and is bounded by `timeout_secs` end to end. How many requests
    are under way at once is the caller's to bound (the delivery worker's concurrency).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        app_base_url: str = DEFAULT_APP_BASE_URL,
        timeout_secs: float,
        metrics: SidecarMetrics,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._app_base_url = app_base_url.rstrip("/")
        self._api_auth = _basic(api_key)
        self._timeout_secs = timeout_secs
        self._metrics = metrics
        self._transport: _core.HttpTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future[_Completion]] = {}

    def __repr__(self) -> str:  # never shows the Authorization header
        return f"ButtonClient({self._base_url!r})"

    async def start(self) -> None:
        headers = [
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("User-Agent", f"button-sidecar/{__version__}"),
        ]
        self._transport = _core.HttpTransport(timeout_secs=self._timeout_secs, headers=headers)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._transport.fileno(), self._collect)

    async def close(self) -> None:
        """Abandon the requests under way: their callers get `ButtonUnreachable`."""
        transport, self._transport = self._transport, None
        if transport is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(transport.fileno())
        transport.close()
        for future in self._waiting.values():
            if not future.done():
                future.set_result((None, b"", None, "the Button client was closed"))
        self._waiting.clear()

    def _collect(self) -> None:
        if self._transport is None:
            return
        for request_id, status, body, retry_after, error in self._transport.completed():
            future = self._waiting.pop(request_id, None)
            if future is not None and not future.done():  # done: its caller stopped waiting
                future.set_result((status, body, retry_after, error))

    async def request(
        self, method: str, path: str, body: bytes | None = None, *, application_id: str | None = None
    ) -> ButtonResponse:
        """Send one request, to the Merchant Library API as `application_id` when given, else to the Order
        API with the API key; raises `ButtonUnreachable` when no HTTP answer came back."""
        if self._transport is None or self._loop is None:
            raise RuntimeError("the Button client is not started")
        if application_id is None:
            url, auth = self._base_url + path, self._api_auth
        else:
            url, auth = app_base_url_for(self._app_base_url, application_id) + path, _basic(application_id)
        request_id = next(self._ids)
        future: asyncio.Future[_Completion] = self._loop.create_future()
        self._waiting[request_id] = future
        started = time.monotonic()
        try:
            self._transport.send(request_id, method, url, [("Authorization", auth)], body)
            status, payload, retry_after, error = await future
        finally:
            self._waiting.pop(request_id, None)
            self._metrics.button_request_duration.observe(time.monotonic() - started)
        if status is None:
            self._metrics.button_requests.labels(status=CONNECTION_ERROR).inc()
            raise ButtonUnreachable((error or "no answer")[:_MAX_MESSAGE_CHARS])
        self._metrics.button_requests.labels(status=status_class(status)).inc()
        return ButtonResponse(status, payload, retry_after)


# A transport completion without its id: status, body and Retry-After of an answer, or else the error.
_Completion = tuple[int | None, bytes, str | None, str | None]


def error_message(response: ButtonResponse) -> str:
    """Button's `error.message`, else `HTTP <status>` (like pybutton does)."""
    try:
        envelope = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        envelope = None
    if isinstance(envelope, dict):
        error = envelope.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:_MAX_MESSAGE_CHARS]
    return f"HTTP {response.status}"


def classify(kind: str, response: ButtonResponse) -> Outcome:
    """What Button's answer to a request of `kind` means for its delivery.

    2xx: delivered. A create answered 409 means Button already has that order (typically our own earlier
    attempt whose answer was lost), so it counts as delivered, as a duplicate. 408, 429 and 5xx: retried,
    honouring `Retry-After`. Any other answer is permanent: a 404 on an order path is an unknown order,
    the rest is rejected with Button's message.
    """
    status = response.status
    if kind == "create_order" and status == 409:
        return Delivered(status, duplicate=True)
    meaning = classify_status(status)
    if meaning == "delivered":
        return Delivered(status)
    message = error_message(response)
    if meaning == "retry":
        return Retry(f"HTTP {status}", status, parse_retry_after(response.retry_after, time.time()), message)
    if status == 404 and kind in ("update_order", "cancel_order"):
        return Reject("unknown_order", message, status)
    return Reject("button_rejected", message, status)
