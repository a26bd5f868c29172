"""The sandbox: a local Button-compatible API server with an order store and fault injection.

Button routes (HTTP Basic auth with the API key): ``POST /v1/order``, ``GET|POST|DELETE /v1/order/{order_id}``,
``POST /v1/app/events``, ``POST /v1/app/activity``; the two ``/v1/app`` routes also take the body's
``application_id`` as the Basic user, as Button's Merchant Library API does. Admin routes (no auth) live under
``/__admin``.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import unquote

import orjson
from aiohttp import hdrs, web

from button_sidecar.httputil import basic_credentials, url_host
from button_sidecar.sandbox.faults import FaultConfig, FaultState, InjectedFault
from button_sidecar.sandbox.validation import (
    JsonObject,
    ValidationError,
    validate_activity,
    validate_app_events,
    validate_order,
)

logger = logging.getLogger(__name__)

# Button derives finalization_date from the account's finalization window; this stands in for it.
_FINALIZATION_WINDOW: Final = timedelta(days=30)
# Short, so stopping a sandbox that is holding requests back with latency_ms does not hang a test run.
_SHUTDOWN_TIMEOUT_S: Final = 1.0
_ORDER_PREFIX: Final = "/v1/order/"
_SECRET_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie"})
_ALLOWED_METHODS: Final = {
    "orders": ("POST",),
    "order": ("GET", "POST", "DELETE"),
    "app_events": ("POST",),
    "activity": ("POST",),
}
_APP_ROUTES: Final = frozenset({"app_events", "activity"})


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How to run a sandbox. ``port`` 0 picks a free port; ``seed`` makes faults and Button order ids repeat."""

    host: str = "127.0.0.1"
    port: int = 0
    api_key: str = field(default="sk-sandbox", repr=False)  # kept out of reprs so it never reaches a log
    seed: int | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)
    request_log_limit: int = 100_000  # oldest entries go first, so a long benchmark cannot exhaust memory

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port: must be between 0 and 65535")
        if not self.api_key:
            raise ValueError("api_key: must not be empty")
        if self.request_log_limit < 1:
            raise ValueError("request_log_limit: must be >= 1")


@dataclass(frozen=True, slots=True)
class _Route:
    kind: str  # a key of _ALLOWED_METHODS, or "unknown"
    order_id: str | None = None


class SandboxServer:
    """A Button-compatible API server on a real socket.

    ``url = await server.start()`` binds and returns the base URL (``http://127.0.0.1:PORT``);
    ``await server.stop()`` closes it. Also usable as ``async with SandboxServer(config) as server``.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self._config = config or SandboxConfig()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        # Orders and logged requests are kept as their JSON text: the cyclic garbage collector never walks bytes,
        # so its full passes do not grow with what the sandbox holds (as dicts, 6,000 orders made 67 ms pauses
        # of every answer in a delivery benchmark).
        self._orders: dict[str, bytes] = {}
        self._requests: deque[bytes] = deque(maxlen=self._config.request_log_limit)
        self._app_events: list[JsonObject] = []
        self._activity: list[JsonObject] = []
        # Requests received and not yet answered, by arrival; a reset does not touch them (they end on their own).
        self._in_flight: dict[int, JsonObject] = {}
        self._arrivals = itertools.count()
        self._seq = 0
        self._ids, self._faults = self._fresh_randomness()
        self._faults.apply(self._config.faults)
        self._app = self._build_app()

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def config(self) -> SandboxConfig:
        return self._config

    @property
    def app(self) -> web.Application:
        return self._app

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the sandbox is not started")
        return self._url

    async def start(self) -> str:
        if self._runner is not None:
            raise RuntimeError("the sandbox is already started")
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._config.host, self._config.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._url = f"http://{url_host(host)}:{port}"
        logger.info("Button sandbox listening on %s", self._url)
        return self._url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner, self._url = self._runner, None, None
            await runner.cleanup()

    async def __aenter__(self) -> SandboxServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- in-process access to what the admin endpoints expose ---------------------------------------

    def orders(self) -> list[JsonObject]:
        return [orjson.loads(order) for order in self._orders.values()]

    def requests(self) -> list[JsonObject]:
        return [orjson.loads(entry) for entry in self._requests]

    def app_events(self) -> list[JsonObject]:
        return copy.deepcopy(self._app_events)

    def activity(self) -> list[JsonObject]:
        return copy.deepcopy(self._activity)

    def in_flight(self) -> list[JsonObject]:
        """The /v1 requests received and not answered yet (held by ``latency_ms``), oldest first."""
        return copy.deepcopy(list(self._in_flight.values()))

    def faults(self) -> dict[str, object]:
        """The active fault profile, with what is left of ``fail_next`` and of the outage window."""
        return self._faults.snapshot()

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the fault profile (``FaultConfig()`` clears it); an outage window starts now."""
        self._faults.apply(faults)

    def reset(self) -> None:
        """Forget orders, logs and signals, clear the faults, and restart the seeded randomness."""
        self._orders.clear()
        self._requests.clear()
        self._app_events.clear()
        self._activity.clear()
        self._seq = 0
        self._ids, self._faults = self._fresh_randomness()

    def _fresh_randomness(self) -> tuple[random.Random, FaultState]:
        seed = self._config.seed
        # Separate streams: whether a fault fires must not shift the order ids, and the reverse.
        if seed is None:
            return random.Random(), FaultState(random.Random())
        return random.Random(f"ids:{seed}"), FaultState(random.Random(f"faults:{seed}"))

    # -- HTTP ------------------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application()
        # One catch-all: routing is done on the raw path (see _resolve), and every /v1 request goes
        # through the same logging and fault injection.
        app.router.add_route("*", "/v1/{tail:.*}", self._handle_v1)
        app.router.add_get("/__admin/health", self._admin_health)
        app.router.add_get("/__admin/orders", self._admin_orders)
        app.router.add_get("/__admin/requests", self._admin_requests)
        app.router.add_get("/__admin/app_events", self._admin_app_events)
        app.router.add_get("/__admin/activity", self._admin_activity)
        app.router.add_get("/__admin/in_flight", self._admin_in_flight)
        app.router.add_get("/__admin/faults", self._admin_get_faults)
        app.router.add_post("/__admin/faults", self._admin_set_faults)
        app.router.add_delete("/__admin/faults", self._admin_clear_faults)
        app.router.add_post("/__admin/reset", self._admin_reset)
        return app

    async def _handle_v1(self, request: web.Request) -> web.StreamResponse:
        received_monotonic, received_wall = time.monotonic(), time.time()
        # Numbered on arrival: with latency_ms, concurrent requests may finish (and be listed) out of order.
        self._seq += 1
        seq = self._seq
        raw_path = request.rel_url.raw_path
        route = _resolve(raw_path)
        too_large: str | None = None
        try:
            body_ok, body = _parse_body(await request.read())
        except web.HTTPRequestEntityTooLarge as error:
            body_ok, body, too_large = False, None, error.text
        order_id = route.order_id
        if order_id is None and route.kind == "orders" and isinstance(body, dict):
            order_id = body.get("order_id") if isinstance(body.get("order_id"), str) else None

        identity = self._identity(request.headers.get(hdrs.AUTHORIZATION), route, body)

        latency_ms = self._faults.config.latency_ms
        # What both the in-flight listing and the request log say of this request.
        seen: JsonObject = {
            "seq": seq,
            "time_monotonic": received_monotonic,
            "time_wall": received_wall,
            "method": request.method,
            "path": raw_path,
            "order_id": order_id,
        }
        arrival = next(self._arrivals)
        self._in_flight[arrival] = {**seen, "latency_ms": latency_ms}
        try:
            if latency_ms:
                await asyncio.sleep(latency_ms / 1000)
        finally:
            # Also when the wait is cancelled (the sandbox stopping): the request is no longer held.
            del self._in_flight[arrival]
        fault = self._faults.decide(order_id)
        response: web.Response
        if fault is not None:
            response = _fault_response(request, fault)
        elif too_large is not None:
            response = _error(413, too_large, "request_too_large")
        else:
            response = self._answer(request, route, body_ok, body, identity)

        status = None if fault is not None and fault.status is None else response.status
        self._requests.append(
            orjson.dumps(
                {
                    **seen,
                    "status": status,
                    "fault": fault.kind if fault is not None else None,
                    # Which credential it authenticated with (never the credential itself).
                    "auth": identity,
                    # str(): aiohttp's header names are istr, which orjson refuses as keys.
                    "headers": {str(k): v for k, v in request.headers.items() if k.lower() not in _SECRET_HEADERS},
                    "body": body,
                    "duration_ms": (time.monotonic() - received_monotonic) * 1000,
                }
            )
        )
        logger.debug("%s %s -> %s", request.method, raw_path, status if status is not None else "connection dropped")
        return response

    def _answer(
        self, request: web.Request, route: _Route, body_ok: bool, body: object, identity: str | None
    ) -> web.Response:
        if identity is None:
            return _error(401, "Invalid api_key", "unauthorized", {hdrs.WWW_AUTHENTICATE: 'Basic realm="Button"'})
        allowed = _ALLOWED_METHODS.get(route.kind)
        if allowed is None:
            return _error(404, "Not found", "not_found")
        if request.method not in allowed:
            return _error(405, "Method not allowed", "method_not_allowed", {hdrs.ALLOW: ", ".join(allowed)})
        if request.method == "POST" and not body_ok:
            return _error(400, "body: must be valid JSON", "validation_error")
        try:
            if route.kind == "orders":
                return self._create_order(body)
            if route.kind == "app_events":
                self._app_events.append(validate_app_events(body))
                return _ok(None)
            if route.kind == "activity":
                self._activity.append(validate_activity(body))
                return _ok(None)
            assert route.order_id is not None  # "order" routes always carry one
            if request.method == "GET":
                return self._get_order(route.order_id)
            if request.method == "POST":
                return self._update_order(route.order_id, body)
            return self._delete_order(route.order_id)
        except ValidationError as error:
            return _error(400, str(error), "validation_error")

    def _identity(self, header: str | None, route: _Route, body: object) -> str | None:
        """What the request's Basic user (with an empty password) is: ``"api_key"``, or on the ``/v1/app``
        routes ``"application_id"`` when it is the body's ``application_id``; None when neither."""
        credentials = basic_credentials(header) if header is not None else None
        if credentials is None or credentials[1] != "":
            return None
        login = credentials[0].encode()
        # Constant-time, so the key cannot be probed by timing even on a shared machine.
        if hmac.compare_digest(login, self._config.api_key.encode()):
            return "api_key"
        application_id = body.get("application_id") if isinstance(body, dict) else None
        if route.kind in _APP_ROUTES and isinstance(application_id, str) and application_id:
            return "application_id" if hmac.compare_digest(login, application_id.encode()) else None
        return None

    # -- order store -----------------------------------------------------------------------------------

    def _create_order(self, body: object) -> web.Response:
        fields = validate_order(body)
        order_id = str(fields["order_id"])
        existing = self._order(order_id)
        if existing is not None and existing["status"] != "deleted":
            return _error(409, "Order already exists", "order_exists")
        button_order_id = f"btnorder-{self._ids.getrandbits(64):016x}"
        finalization = datetime.now(UTC) + _FINALIZATION_WINDOW
        default_finalization = finalization.strftime("%Y-%m-%dT%H:%M:%SZ")
        order = _order_object(button_order_id, order_id, fields, fields.get("btn_ref"), default_finalization)
        # Re-creating a deleted order starts it afresh, at the end of the admin listing.
        self._orders.pop(order_id, None)
        self._orders[order_id] = orjson.dumps(order)
        return _ok(order)

    def _order(self, order_id: str) -> JsonObject | None:
        stored = self._orders.get(order_id)
        if stored is None:
            return None
        order: JsonObject = orjson.loads(stored)
        return order

    def _get_order(self, order_id: str) -> web.Response:
        order = self._order(order_id)
        if order is None:
            return _error(404, "Order not found", "not_found")
        return _ok(order)

    def _update_order(self, order_id: str, body: object) -> web.Response:
        existing = self._order(order_id)
        if existing is None:
            return _error(404, "Order not found", "not_found")
        fields = validate_order(body, path_order_id=order_id)
        if existing["status"] == "deleted":
            return _error(409, "Order has been deleted", "order_deleted")
        # Full-state update: everything is replaced, except what Button keeps when it is left out.
        order = _order_object(
            str(existing["button_order_id"]),
            order_id,
            fields,
            fields.get("btn_ref", existing["btn_ref"]),
            str(existing["finalization_date"]),
        )
        self._orders[order_id] = orjson.dumps(order)
        return _ok(order)

    def _delete_order(self, order_id: str) -> web.Response:
        order = self._order(order_id)
        if order is None:
            return _error(404, "Order not found", "not_found")
        # Deleting twice succeeds: a delivery retried after a lost answer must not turn into an error.
        order["status"] = "deleted"
        self._orders[order_id] = orjson.dumps(order)
        return _ok(None)

    # -- admin -----------------------------------------------------------------------------------------

    async def _admin_health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "orders": len(self._orders), "requests": len(self._requests)})

    async def _admin_orders(self, request: web.Request) -> web.Response:
        return _json_array(self._orders.values())

    async def _admin_requests(self, request: web.Request) -> web.Response:
        return _json_array(self._requests)

    async def _admin_app_events(self, request: web.Request) -> web.Response:
        return _json(self._app_events)

    async def _admin_activity(self, request: web.Request) -> web.Response:
        return _json(self._activity)

    async def _admin_in_flight(self, request: web.Request) -> web.Response:
        return _json(list(self._in_flight.values()))

    async def _admin_get_faults(self, request: web.Request) -> web.Response:
        return _json(self._faults.snapshot())

    async def _admin_set_faults(self, request: web.Request) -> web.Response:
        body_ok, body = _parse_body(await request.read())
        try:
            if not body_ok:
                raise ValueError("body: must be valid JSON")
            faults = FaultConfig.from_json(body)
        except ValueError as error:
            return _error(400, str(error), "invalid_faults")
        self._faults.apply(faults)
        return _json(self._faults.snapshot())

    async def _admin_clear_faults(self, request: web.Request) -> web.Response:
        self._faults.apply(FaultConfig())
        return _json(self._faults.snapshot())

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return _json({"status": "ok"})


def _resolve(raw_path: str) -> _Route:
    """Route on the raw path: an order id is one percent-encoded segment and may itself hold "/" or "%"."""
    if raw_path == "/v1/order":
        return _Route("orders")
    if raw_path == "/v1/app/events":
        return _Route("app_events")
    if raw_path == "/v1/app/activity":
        return _Route("activity")
    if raw_path.startswith(_ORDER_PREFIX):
        segment = raw_path[len(_ORDER_PREFIX) :]
        if segment and "/" not in segment:
            return _Route("order", unquote(segment))
    return _Route("unknown")


def _parse_body(raw: bytes) -> tuple[bool, object]:
    """``(True, value)`` for JSON or an empty body (None); ``(False, text)`` for anything else."""
    if not raw:
        return True, None
    try:
        return True, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False, raw.decode("utf-8", "replace")


def _order_object(
    button_order_id: str, order_id: str, fields: JsonObject, btn_ref: object, finalization_date: str
) -> JsonObject:
    order: JsonObject = {
        "button_order_id": button_order_id,
        "order_id": order_id,
        "total": fields["total"],
        "currency": fields["currency"],
        "btn_ref": btn_ref,
        "customer": fields.get("customer"),
        "line_items": fields.get("line_items", []),
        "purchase_date": fields["purchase_date"],
        "status": "open",
        "finalization_date": fields.get("finalization_date", finalization_date),
    }
    if "customer_order_id" in fields:
        order["customer_order_id"] = fields["customer_order_id"]
    return order


def _fault_response(request: web.Request, fault: InjectedFault) -> web.Response:
    if fault.status is None:
        # Close without a byte of response, so the client sees a connection error. The response
        # returned below is never written: aiohttp drops writes to a closed transport.
        if request.transport is not None:
            request.transport.close()
        return web.Response()
    headers: dict[str, str] | None = None
    if fault.retry_after_s is not None:
        headers = {hdrs.RETRY_AFTER: str(fault.retry_after_s)}
    return _error(fault.status, fault.message, fault.error_type, headers)


def _json(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers)


def _json_array(items: Iterable[bytes]) -> web.Response:
    """A JSON array of items that are JSON texts already."""
    return web.Response(body=b"[" + b",".join(items) + b"]", content_type="application/json")


def _ok(obj: object) -> web.Response:
    return _json({"meta": {"status": "ok"}, "object": obj})


def _error(status: int, message: str, error_type: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"meta": {"status": "error"}, "error": {"message": message, "type": error_type}}, status, headers)
