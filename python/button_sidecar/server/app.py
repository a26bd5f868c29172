"""Assembly of the running sidecar: config -> (embedded sandbox) -> pipeline -> gRPC and HTTP servers -> signals
-> drain."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from button_sidecar import Transformer
from button_sidecar.config import GrpcConfig, SidecarConfig
from button_sidecar.pipeline import DeliveryEvent, Pipeline
from button_sidecar.sandbox import SandboxConfig, SandboxServer
from button_sidecar.server.auth import BearerTokenInterceptor
from button_sidecar.server.grpc_service import SERVICE_NAME, SidecarServicer, add_to_server
from button_sidecar.server.health import ServingState
from button_sidecar.server.http_api import HttpIngestServer
from button_sidecar.server.reachability import ButtonReachability
from button_sidecar.server.watch import SidecarEvent, WatchHub
from button_sidecar.telemetry import GrpcServerMetrics

logger = logging.getLogger(__name__)

# Calls still running after the pipeline drained (a Watch, a health Watch, an HTTP answer being written) get
# this long before they are cut.
_SERVER_GRACE_SECS = 1.0


class StartupError(Exception):
    """The sidecar cannot start (e.g. it cannot listen, or read its TLS files); the message says why."""


class Sidecar:
    """One running sidecar: gRPC and the mParticle-compatible HTTP endpoint over one pipeline. `await start()`,
    then `await stop()` drains it.

    Without an API key it starts the Button sandbox in-process on a free loopback port and delivers there,
    app signals included.
    """

    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        self._sandbox: SandboxServer | None = None
        self._pipeline: Pipeline | None = None
        self._reachability: ButtonReachability | None = None
        self._state: ServingState | None = None
        self._hub = WatchHub()
        self._server: grpc.aio.Server | None = None
        self._address: str | None = None
        self._http: HttpIngestServer | None = None
        self._http_url: str | None = None

    @property
    def address(self) -> str:
        """The gRPC address served, with the real port when the configured one was 0."""
        if self._address is None:
            raise RuntimeError("the sidecar is not started")
        return self._address

    @property
    def http_url(self) -> str:
        """The HTTP endpoint's URL (`http://host:port`, with the real port when the configured one was 0), or
        `unix:/path`."""
        if self._http_url is None:
            raise RuntimeError("the sidecar is not started")
        return self._http_url

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        config = self.config
        if config.button.api_key is None:
            self._sandbox = SandboxServer(SandboxConfig(host="127.0.0.1", port=0))
            base_url, api_key = await self._sandbox.start(), self._sandbox.config.api_key
            # The sandbox takes the Merchant Library's app signals too (authenticated as the application id).
            app_base_url = base_url
            logger.warning(
                "No BUTTON_API_KEY set: delivering to an embedded Button sandbox at %s (orders at %s/__admin/orders);"
                " nothing reaches Button.",
                base_url,
                base_url,
            )
        else:
            base_url, api_key = config.button.base_url, config.button.api_key.reveal()
            app_base_url = config.button.app_base_url
        transformer = Transformer(config.transform.core())
        pipeline = Pipeline(config.pipeline_settings(api_key, base_url, app_base_url), transformer)
        pipeline.add_delivery_listener(self._watch_delivery)
        await pipeline.start()
        self._pipeline = pipeline
        self._reachability = ButtonReachability(base_url, api_key)
        await self._reachability.start()
        self._state = ServingState(pipeline)
        servicer = SidecarServicer(pipeline, transformer, self._hub, self._reachability)

        grpc_config = config.grpc
        interceptors = [] if grpc_config.auth_token is None else [BearerTokenInterceptor(grpc_config.auth_token)]
        self._server = server = grpc.aio.server(interceptors=interceptors, options=_server_options(grpc_config))
        add_to_server(servicer, self._state, server, GrpcServerMetrics(pipeline.registry))
        health_pb2_grpc.add_HealthServicer_to_server(self._state.health, server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        self._address = _bind(server, grpc_config)
        await self._state.start()  # first, so the health service never answers without the Sidecar's status
        await server.start()
        logger.info(
            "Serving gRPC on %s (%s, %s); state in %s.",
            self._address,
            _tls_mode(grpc_config),
            "bearer token required" if grpc_config.auth_token is not None else "no authentication",
            config.state_dir,
        )
        self._http = HttpIngestServer(
            pipeline,
            listen=config.http.listen,
            auth=config.http.credentials(),
            health=self._state,
            registry=pipeline.registry,
            shutdown_timeout_secs=_SERVER_GRACE_SECS,
        )
        try:
            self._http_url = await self._http.start()  # it logs the URL
        except OSError as error:
            raise StartupError(
                f"cannot listen on {config.http.listen} (http.listen): {error.strerror or error}"
            ) from None

    def _watch_delivery(self, event: DeliveryEvent) -> None:
        if self._hub.watched:
            self._hub.publish(
                SidecarEvent(
                    event.type,
                    order_id=event.order_id,
                    kind=event.kind,
                    status=event.status or 0,
                    detail=event.detail,
                    attempt=event.attempt,
                )
            )

    async def stop(self) -> None:
        """Drain: report NOT_SERVING and refuse new calls (gRPC UNAVAILABLE, HTTP 503), let in-flight deliveries
        finish up to `delivery.shutdown_deadline_secs`, keep the rest on disk, then close everything. Safe after a
        failed start."""
        if self._state is not None:
            await self._state.drain()
        if self._pipeline is not None:
            await self._pipeline.stop(self.config.delivery.shutdown_deadline_secs)
        # Both servers stay up while the pipeline drains, so clients get a clean refusal rather than a reset.
        if self._http is not None:
            await self._http.stop()
        self._hub.close()
        if self._server is not None:
            await self._server.stop(_SERVER_GRACE_SECS)
        if self._reachability is not None:
            await self._reachability.close()
        if self._sandbox is not None:
            await self._sandbox.stop()


async def serve(config: SidecarConfig, on_ready: Callable[[str], None]) -> None:
    """Run a sidecar until SIGTERM or SIGINT, then drain it. `on_ready` gets the served address."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    sidecar = Sidecar(config)
    await sidecar.start()
    freeze_startup_objects()
    on_ready(sidecar.address)
    await stopping.wait()
    logger.info(
        "Shutting down: refusing new calls, giving deliveries in flight up to %g s.",
        config.delivery.shutdown_deadline_secs,
    )
    await sidecar.stop()
    logger.info("Stopped; anything not delivered stays queued in %s.", config.state_dir)


def freeze_startup_objects() -> None:
    """Collect, then take every object alive after start-up out of the cyclic collector's view (`gc.freeze`).

    A full collection traverses every tracked object, and with grpc, protobuf, aiohttp and the rest loaded
    each took up to 30 ms with the GIL held, about once a second under load: pauses of the event loop that
    made the ingest p99. Start-up objects live as long as the process; frozen, they are not traversed again
    and a full collection takes about a millisecond. For the process `serve` owns, not for an embedder's.
    """
    gc.collect()
    gc.freeze()


def _server_options(config: GrpcConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", round(config.keepalive_time_secs * 1000)),
        ("grpc.keepalive_timeout_ms", round(config.keepalive_timeout_secs * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", round(config.keepalive_min_ping_interval_secs * 1000)),
        ("grpc.keepalive_permit_without_calls", int(config.keepalive_permit_without_calls)),
        # Pings are policed by the interval above, not by a count.
        ("grpc.http2.max_pings_without_data", 0),
        # Without this a second sidecar could bind the same port and silently share the traffic.
        ("grpc.so_reuseport", 0),
    ]


def _bind(server: grpc.aio.Server, config: GrpcConfig) -> str:
    """Listen on `config.listen`; returns the address with the port gRPC picked when it was 0."""
    try:
        if config.tls_cert_file is None or config.tls_key_file is None:
            port = server.add_insecure_port(config.listen)
        else:
            client_ca = None if config.tls_client_ca_file is None else config.tls_client_ca_file.read_bytes()
            credentials = grpc.ssl_server_credentials(
                [(config.tls_key_file.read_bytes(), config.tls_cert_file.read_bytes())],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
            port = server.add_secure_port(config.listen, credentials)
    except OSError as error:
        raise StartupError(f"cannot read a TLS file: {error}") from None
    except RuntimeError as error:  # grpc's way of saying the address is taken or invalid
        raise StartupError(f"cannot listen on {config.listen}: {error}") from None
    if config.listen.startswith("unix:"):
        return config.listen
    host = config.listen.rpartition(":")[0]
    return f"{host}:{port}"


def _tls_mode(config: GrpcConfig) -> str:
    if config.tls_cert_file is None:
        return "plaintext"
    return "mutual TLS" if config.tls_client_ca_file is not None else "TLS"
