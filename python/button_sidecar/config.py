"""The sidecar's configuration: models, defaults, the TOML file, environment variables and validation.

Precedence: defaults < TOML file (`--config`) < environment variables < command-line flags. Every model is a
frozen dataclass whose fields carry a docstring (what, unit, default, example); `load_config` rejects unknown
keys and wrong types, and each model's `__post_init__` checks its values. Any problem is one `ConfigError`
whose message starts with the setting's dotted TOML name, e.g. `grpc.max_message_bytes: must be a positive
integer`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, Union, final, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from button_sidecar import TransformConfig
from button_sidecar.pipeline import ForwardEnvironments, PipelineSettings, RetryPolicy, StoreBackend
from button_sidecar.pipeline.button.client import DEFAULT_APP_BASE_URL
from button_sidecar.pipeline.outbox import WhenFull

LogLevel = Literal["debug", "info", "warning", "error"]
_Model = TypeVar("_Model")

ENVIRONMENT: Final[Mapping[str, str]] = {
    "BUTTON_API_KEY": "button.api_key",
    "BUTTON_API_BASE_URL": "button.base_url",
    "BUTTON_APP_BASE_URL": "button.app_base_url",
    "BUTTON_SIDECAR_GRPC_LISTEN": "grpc.listen",
    "BUTTON_SIDECAR_GRPC_AUTH_TOKEN": "grpc.auth_token",
    "BUTTON_SIDECAR_HTTP_LISTEN": "http.listen",
    "BUTTON_SIDECAR_HTTP_API_KEY": "http.api_key",
    "BUTTON_SIDECAR_HTTP_API_SECRET": "http.api_secret",
    "BUTTON_SIDECAR_REDIS_URL": "attribution.redis_url",
    "BUTTON_SIDECAR_STATE_DIR": "state_dir",
}
"""Environment variable -> the setting it overrides."""


class ConfigError(ValueError):
    """Invalid configuration; the message names the setting first, e.g. `grpc.listen: ...`."""


@final
class Secret:
    """A string that must never be printed or logged: `repr` and `str` show a mask, `reveal()` the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


def _check(ok: bool, name: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {problem}")


def _positive_int(owner: object, *names: str) -> None:
    for name in names:
        _check(getattr(owner, name) >= 1, name, "must be a positive integer")


def _positive(owner: object, *names: str) -> None:
    for name in names:
        _check(getattr(owner, name) > 0, name, "must be greater than 0")


def _check_listen(name: str, address: str) -> None:
    """`host:port` (IPv6 in brackets, port 0 picks a free one) or `unix:/path`."""
    if address.startswith("unix:"):
        _check(len(address) > len("unix:"), name, "unix: needs a socket path, e.g. unix:/run/button-sidecar.sock")
        return
    host, _, port = address.rpartition(":")
    _check(
        bool(host) and not any(c.isspace() for c in host), name, "must be host:port or unix:/path, e.g. 127.0.0.1:50051"
    )
    _check(port.isdigit() and int(port) <= 65535, name, "the port must be 0..65535, in host:port or unix:/path")


def _check_base_url(name: str, url: str, example: str) -> None:
    parts = urlsplit(url)
    _check(
        parts.scheme in ("http", "https") and bool(parts.netloc) and parts.path in ("", "/") and not parts.query,
        name,
        f"must be an http(s) URL with a host and no path, e.g. {example}",
    )


def _check_token(name: str, secret: Secret | None, what: str) -> None:
    # The message never quotes the value: it is secret.
    if secret is not None:
        value = secret.reveal()
        _check(bool(value), name, "must not be empty (leave it unset instead)")
        _check(value.isprintable() and value.isascii(), name, f"{what} must be printable ASCII")
        _check(not any(c.isspace() or c == ":" for c in value), name, f"{what} must not hold spaces or ':'")


@dataclass(frozen=True, slots=True)
class ButtonConfig:
    """`[button]`: where and as whom requests go."""

    api_key: Secret | None = None
    """Button API key, sent as the HTTP Basic user with an empty password. Never printed or logged.
    Unset: `serve` starts an embedded Button sandbox on a free loopback port and delivers there.
    Environment: `BUTTON_API_KEY`. Default: unset. Example: `"sk-1a2b3c4d5e6f"`."""
    base_url: str = "https://api.usebutton.com"
    """Base URL of the Button API: scheme and host, no path. Ignored while the embedded sandbox is used.
    Environment: `BUTTON_API_BASE_URL`. Default: `"https://api.usebutton.com"`. Example: `"http://127.0.0.1:8089"`."""
    app_base_url: str = DEFAULT_APP_BASE_URL
    """Base URL of Button's Merchant Library API, where app events and user activity go, authenticated as the
    body's application id (the API key is never sent there): scheme and host, no path. Ignored while the
    embedded sandbox is used (it takes these too). Environment: `BUTTON_APP_BASE_URL`.
    Default: `"https://mobileapi.usebutton.com"`. Example: `"http://127.0.0.1:8089"`."""

    def __post_init__(self) -> None:
        _check_token("api_key", self.api_key, "an API key")
        _check_base_url("base_url", self.base_url, "https://api.usebutton.com")
        _check_base_url("app_base_url", self.app_base_url, "https://mobileapi.usebutton.com")


@dataclass(frozen=True, slots=True)
class GrpcConfig:
    """`[grpc]`: the gRPC server."""

    listen: str = "127.0.0.1:50051"
    """Address to serve on: `host:port` (port 0 picks a free one) or `unix:/path` for a unix socket.
    Environment: `BUTTON_SIDECAR_GRPC_LISTEN`. Default: `"127.0.0.1:50051"`. Example: `"unix:/run/sidecar.sock"`."""
    max_message_bytes: int = 4 * 1024 * 1024
    """Largest request or response message, in bytes; a larger one fails with RESOURCE_EXHAUSTED.
    Default: `4194304` (4 MiB). Example: `16777216`."""
    auth_token: Secret | None = None
    """Bearer token every call must carry as `authorization: Bearer <token>` metadata (the health service
    stays open). Never printed or logged. Environment: `BUTTON_SIDECAR_GRPC_AUTH_TOKEN`. Default: unset (no
    authentication). Example: `"0c9f2e7a41d84b6b"`."""
    tls_cert_file: Path | None = None
    """PEM certificate chain of the server; with `tls_key_file` it turns on TLS. Default: unset (plaintext).
    Example: `"/etc/button-sidecar/tls.crt"`."""
    tls_key_file: Path | None = None
    """PEM private key of `tls_cert_file`. Default: unset. Example: `"/etc/button-sidecar/tls.key"`."""
    tls_client_ca_file: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS). Needs
    `tls_cert_file`. Default: unset. Example: `"/etc/button-sidecar/clients-ca.crt"`."""
    keepalive_time_secs: float = 60.0
    """Seconds of silence on a connection after which the server pings the client. Default: `60`. Example: `30`."""
    keepalive_timeout_secs: float = 20.0
    """Seconds the server waits for a ping's answer before it closes the connection. Default: `20`. Example: `5`."""
    keepalive_min_ping_interval_secs: float = 10.0
    """Shortest interval, in seconds, at which clients may ping; faster pingers are disconnected.
    Default: `10`. Example: `5`."""
    keepalive_permit_without_calls: bool = True
    """Allow keepalive pings on a connection that has no call in progress. Default: `true`. Example: `false`."""

    def __post_init__(self) -> None:
        _check_listen("listen", self.listen)
        _positive_int(self, "max_message_bytes")
        _check(self.max_message_bytes < 2**31, "max_message_bytes", "must be below 2147483648 (2 GiB)")
        _check_token("auth_token", self.auth_token, "a bearer token")
        _check((self.tls_cert_file is None) == (self.tls_key_file is None), "tls_key_file", "needs tls_cert_file")
        _check(
            self.tls_client_ca_file is None or self.tls_cert_file is not None,
            "tls_client_ca_file",
            "needs tls_cert_file and tls_key_file",
        )
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path: Path | None = getattr(self, name)
            _check(path is None or path.is_file(), name, f"no such file: {path}")
        _positive(self, "keepalive_time_secs", "keepalive_timeout_secs", "keepalive_min_ping_interval_secs")


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """`[http]`: the mParticle Events API compatible HTTP endpoint."""

    listen: str = "127.0.0.1:8088"
    """Address of the HTTP endpoint: `host:port` (port 0 picks a free one) or `unix:/path` for a unix socket.
    Environment: `BUTTON_SIDECAR_HTTP_LISTEN`. Default: `"127.0.0.1:8088"`. Example: `"0.0.0.0:8088"`."""
    api_key: Secret | None = None
    """Key clients must send as the HTTP Basic user (what mParticle's SDKs send as `api_key`); set with
    `api_secret`, both or neither. `/metrics` and `/healthz` stay open. Never printed or logged.
    Environment: `BUTTON_SIDECAR_HTTP_API_KEY`. Default: unset (no authentication). Example: `"mp-server-key"`."""
    api_secret: Secret | None = None
    """Secret clients must send as the HTTP Basic password (the SDKs' `api_secret`); set with `api_key`.
    Never printed or logged. Environment: `BUTTON_SIDECAR_HTTP_API_SECRET`. Default: unset.
    Example: `"mp-server-secret"`."""

    def __post_init__(self) -> None:
        _check_listen("listen", self.listen)
        _check_token("api_key", self.api_key, "an API key")
        _check_token("api_secret", self.api_secret, "an API secret")
        _check(self.api_key is not None or self.api_secret is None, "api_secret", "needs api_key (both or neither)")
        _check(self.api_secret is not None or self.api_key is None, "api_key", "needs api_secret (both or neither)")

    def credentials(self) -> tuple[str, str] | None:
        """The `(key, secret)` clients must send, revealed, or None without authentication."""
        if self.api_key is None or self.api_secret is None:
            return None
        return self.api_key.reveal(), self.api_secret.reveal()


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    """`[outbox]`: the durable queue in the state directory."""

    max_requests: int = 100_000
    """Most requests waiting for delivery (queued or in flight; dead letters not counted). Past it, Ingest
    answers RESOURCE_EXHAUSTED (or waits, see `when_full`). Default: `100000`. Example: `1000000`."""
    max_bytes: int = 256 * 1024 * 1024
    """Most request body bytes waiting for delivery. Default: `268435456` (256 MiB). Example: `1073741824`."""
    when_full: WhenFull = "reject"
    """At a limit: `"reject"` (RESOURCE_EXHAUSTED at once) or `"block"` (wait up to `block_timeout_secs` for
    room). Default: `"reject"`. Example: `"block"`."""
    block_timeout_secs: float = 30.0
    """With `when_full = "block"`, seconds an Ingest waits for room before RESOURCE_EXHAUSTED. Default: `30`.
    Example: `5`."""
    dedupe_window_secs: float = 86400.0
    """Seconds a batch `source_request_id` is remembered; a repeat within it is skipped as a duplicate.
    Default: `86400` (24 h). Example: `3600`."""

    def __post_init__(self) -> None:
        _positive_int(self, "max_requests", "max_bytes")
        _check(self.when_full in ("reject", "block"), "when_full", 'must be "reject" or "block"')
        _positive(self, "block_timeout_secs", "dedupe_window_secs")


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """`[delivery.retry]`: capped exponential backoff with full jitter; give up after attempts AND age."""

    max_attempts: int = 12
    """Attempts (the first included) before a failing request may become a dead letter; `max_age_secs` must
    have passed too. Default: `12`. Example: `20`."""
    initial_backoff_secs: float = 0.5
    """Upper bound of the first retry's random wait, in seconds; doubles per retry. Default: `0.5`. Example: `1`."""
    max_backoff_secs: float = 60.0
    """Cap of the random wait between attempts, in seconds (a `Retry-After` may exceed it). Default: `60`.
    Example: `300`."""
    max_age_secs: float = 86400.0
    """Seconds since a request was queued before it may become a dead letter; `max_attempts` must be reached
    too. Default: `86400` (24 h). Example: `3600`."""

    def __post_init__(self) -> None:
        _positive_int(self, "max_attempts")
        _positive(self, "initial_backoff_secs")
        _check(
            self.max_backoff_secs >= self.initial_backoff_secs, "max_backoff_secs", "must be >= initial_backoff_secs"
        )
        _check(self.max_age_secs >= 0, "max_age_secs", "must not be negative")

    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.initial_backoff_secs, self.max_backoff_secs, self.max_age_secs)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """`[delivery]`: sending to Button."""

    concurrency: int = 64
    """Most requests in flight to Button at once (also the connection pool size); adaptive below it while
    Button answers 429 or 503. Default: `64`. Example: `128`."""
    request_timeout_secs: float = 10.0
    """Seconds one Button request may take end to end before it counts as failed and is retried.
    Default: `10`. Example: `30`."""
    ingest_first_max_wait_secs: float = 10.0
    """Delivery yields the event loop to ingest: while ingest calls arrive and wait (the loop runs late, an
    outbox write is slow), fewer requests go to Button at once (never fewer than one), so callers are answered
    first and the outbox holds what waits, as long as no request has waited longer than this and the outbox is
    less than half full; then delivery goes at full speed again (a sustained load is delivered, not only
    queued, and the outbox does not fill up). `0` turns yielding off. Default: `10`. Example: `60`."""
    shutdown_deadline_secs: float = 10.0
    """On SIGTERM/SIGINT, seconds in-flight requests may take to finish; what is left stays queued on disk
    for the next start. Default: `10`. Example: `25`."""
    retry: RetryConfig = field(default_factory=RetryConfig)
    """`[delivery.retry]`: retry and give-up rule for transient failures (connection errors, timeouts, 408, 429,
    5xx). Default: its fields' defaults. Example: `[delivery.retry]` then `max_attempts = 20`."""

    def __post_init__(self) -> None:
        _positive_int(self, "concurrency")
        _positive(self, "request_timeout_secs")
        _check(self.ingest_first_max_wait_secs >= 0, "ingest_first_max_wait_secs", "must not be negative")
        _check(self.shutdown_deadline_secs >= 0, "shutdown_deadline_secs", "must not be negative")


@dataclass(frozen=True, slots=True)
class FiltersConfig:
    """`[filters]`: whole batches not forwarded."""

    forward_environments: ForwardEnvironments = "both"
    """Batches forwarded, by their mParticle `environment`: `"production"`, `"development"` or `"both"` (a
    batch without one counts as production). The others queue nothing and teach no token; they are counted in
    `button_sidecar_filtered_batches_total{reason="environment"}`. Default: `"both"`. Example: `"production"`."""


@dataclass(frozen=True, slots=True)
class AttributionConfig:
    """`[attribution]`: the tokens deep links teach, for later purchases of the same user without one."""

    window_secs: float = 7 * 24 * 3600.0
    """Seconds a `btn_ref` learned from a deep link credits later purchases of the same user that carry none,
    from the deep link's event time to the purchase's receipt. Default: `604800` (7 days). Example: `86400`."""
    ledger_retention_secs: float = 180 * 24 * 3600.0
    """Seconds the order ledger keeps an order after its last change (refunds resolve against it). A refund of
    an order forgotten since fetches it from Button instead. Default: `15552000` (180 days). Example: `7776000`."""
    store: StoreBackend = "sqlite"
    """Where the attribution store and the order ledger live: `"sqlite"` (in `state_dir`, this host only) or
    `"redis"` (`redis_url`, shared by a fleet, so a deep link, its purchase and refunds may reach different
    hosts). Default: `"sqlite"`. Example: `"redis"`."""
    redis_url: Secret | None = None
    """With `store = "redis"` (and only then), the Redis to use: `redis://[:password@]host:port/db`,
    `rediss://...` (TLS) or `unix:///path.sock`. May hold a password: never printed or logged.
    Environment: `BUTTON_SIDECAR_REDIS_URL`. Default: unset. Example: `"redis://redis.internal:6379/0"`."""
    redis_key_prefix: str = "button-sidecar:"
    """Prefix of every Redis key the sidecar writes; sidecars that share state use the same one.
    Default: `"button-sidecar:"`. Example: `"shop-eu:"`."""

    def __post_init__(self) -> None:
        _positive(self, "window_secs", "ledger_retention_secs")
        # The messages never quote the URL: it may hold a password.
        if self.store == "redis":
            url = "" if self.redis_url is None else self.redis_url.reveal()
            _check(bool(url), "redis_url", 'is required with store = "redis"')
            _check(
                url.startswith(("redis://", "rediss://", "unix://")),
                "redis_url",
                "must start with redis://, rediss:// or unix://, e.g. redis://localhost:6379/0",
            )
        else:
            _check(self.redis_url is None, "redis_url", 'is only used with store = "redis"; set that or unset this')
        _check(
            bool(self.redis_key_prefix) and self.redis_key_prefix.isprintable(),
            "redis_key_prefix",
            "must be printable and not empty",
        )


@dataclass(frozen=True, slots=True)
class TransformOptions:
    """`[transform]`: how mParticle batches map to Button requests (the Rust core's `TransformConfig`)."""

    default_currency: str = "USD"
    """ISO 4217 code of purchases whose `currency_code` is missing. Default: `"USD"`. Example: `"EUR"`."""
    include_tax_and_shipping: bool = False
    """Keep tax and shipping in an order's total; by default they are subtracted from it. Default: `false`.
    Example: `true`."""
    send_email: bool = True
    """Send `customer.email_sha256` (the SHA-256 of the normalised email; the plaintext never leaves the core).
    Default: `true`. Example: `false`."""
    require_btn_ref: bool = False
    """Drop purchases that carry no Button attribution token instead of reporting them. Default: `false`.
    Example: `true`."""
    forward_activity: bool = False
    """Send product views, add-to-cart and checkout as Button user activity (needs `application_ids`).
    Default: `false`. Example: `true`."""
    forward_app_events: bool = False
    """Send deep-link opens carrying a `btn_ref` as Button app events (needs `application_ids`).
    Default: `false`. Example: `true`."""
    application_ids: dict[str, str] = field(default_factory=dict)
    """Button application id per mParticle platform (`ios`, `android`, `web`, ...), for activity and app events.
    Default: `{}`. Example: `{ ios = "app-1a2b3c4d5e6f7a8b" }`."""
    gdpr_purpose: str | None = None
    """GDPR consent purpose a batch must have consented to, else it is filtered. Default: unset (no check).
    Example: `"marketing"`."""

    def __post_init__(self) -> None:
        try:
            self.core()
        except ValueError as error:  # the core's message already starts with the field name
            raise ConfigError(str(error)) from None

    def core(self) -> TransformConfig:
        return TransformConfig(
            default_currency=self.default_currency,
            include_tax_and_shipping=self.include_tax_and_shipping,
            send_email=self.send_email,
            # The core only sees the batch; the pipeline applies the rule after the attribution store had its say.
            require_btn_ref=False,
            forward_activity=self.forward_activity,
            forward_app_events=self.forward_app_events,
            application_ids=self.application_ids,
            gdpr_purpose=self.gdpr_purpose,
        )


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """The whole configuration: top-level settings and one section per part."""

    state_dir: Path = Path("./var/button-sidecar")
    """Directory of the outbox and, with `attribution.store = "sqlite"`, the order ledger and attribution store
    (SQLite); created if missing; one process at a time.
    Environment: `BUTTON_SIDECAR_STATE_DIR`. Default: `"./var/button-sidecar"`. Example: `"/var/lib/button-sidecar"`."""
    log_level: LogLevel = "info"
    """Least severe log level written to stderr: `"debug"`, `"info"`, `"warning"` or `"error"`.
    Default: `"info"`. Example: `"debug"`."""
    button: ButtonConfig = field(default_factory=ButtonConfig)
    """`[button]`: where and as whom requests go. Default: its fields' defaults.
    Example: `[button]` then `base_url = "https://api.usebutton.com"`."""
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    """`[grpc]`: the gRPC server. Default: its fields' defaults. Example: `[grpc]` then `listen = "0.0.0.0:50051"`."""
    http: HttpConfig = field(default_factory=HttpConfig)
    """`[http]`: the HTTP endpoint. Default: its fields' defaults. Example: `[http]` then `listen = "0.0.0.0:8088"`."""
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    """`[outbox]`: the durable queue. Default: its fields' defaults. Example: `[outbox]` then `when_full = "block"`."""
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    """`[delivery]`: sending to Button. Default: its fields' defaults. Example: `[delivery]` then `concurrency = 32`."""
    transform: TransformOptions = field(default_factory=TransformOptions)
    """`[transform]`: the mapping options. Default: its fields' defaults.
    Example: `[transform]` then `default_currency = "EUR"`."""
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    """`[filters]`: whole batches not forwarded. Default: its fields' defaults.
    Example: `[filters]` then `forward_environments = "production"`."""
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    """`[attribution]`: the attribution window and store. Default: its fields' defaults.
    Example: `[attribution]` then `store = "redis"`."""

    def __post_init__(self) -> None:
        _check(self.log_level in ("debug", "info", "warning", "error"), "log_level", "must be debug|info|warning|error")

    def pipeline_settings(self, api_key: str, button_base_url: str, app_base_url: str) -> PipelineSettings:
        """The pipeline's settings, delivering to `button_base_url` as `api_key` and app signals to
        `app_base_url` (the sandbox's URL and key, when embedded)."""
        attribution = self.attribution
        return PipelineSettings(
            state_dir=self.state_dir,
            api_key=api_key,
            button_base_url=button_base_url,
            app_base_url=app_base_url,
            max_queue_rows=self.outbox.max_requests,
            max_queue_bytes=self.outbox.max_bytes,
            when_full=self.outbox.when_full,
            block_timeout_secs=self.outbox.block_timeout_secs,
            concurrency=self.delivery.concurrency,
            request_timeout_secs=self.delivery.request_timeout_secs,
            ingest_first_max_wait_secs=self.delivery.ingest_first_max_wait_secs,
            retry=self.delivery.retry.policy(),
            dedupe_window_secs=self.outbox.dedupe_window_secs,
            require_btn_ref=self.transform.require_btn_ref,
            forward_environments=self.filters.forward_environments,
            attribution_window_secs=attribution.window_secs,
            ledger_retention_secs=attribution.ledger_retention_secs,
            store_backend=attribution.store,
            redis_url=None if attribution.redis_url is None else attribution.redis_url.reveal(),
            redis_key_prefix=attribution.redis_key_prefix,
        )


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> SidecarConfig:
    """Defaults, then the TOML file at `path`, then `environ` (default `os.environ`, see `ENVIRONMENT`), then
    `overrides` (dotted setting -> value, e.g. from command-line flags; None values are skipped).

    Raises `ConfigError` naming the first setting that is wrong (and where the value came from).
    """
    data: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        try:
            with path.open("rb") as file:
                data = tomllib.load(file)
        except OSError as error:
            raise ConfigError(f"--config: cannot read {path}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"--config: {path} is not valid TOML: {error}") from None
    environ = os.environ if environ is None else environ
    for variable, key in ENVIRONMENT.items():
        value = environ.get(variable)
        if value:  # an empty variable counts as unset
            _assign(data, key, value)
            origins[key] = f"environment variable {variable}"
    for key, override in (overrides or {}).items():
        if override is not None:
            _assign(data, key, override)
            origins[key] = "command line"
    try:
        return _build(SidecarConfig, data, "")
    except ConfigError as error:
        name, _, problem = str(error).partition(": ")
        origin = origins.get(name)
        raise ConfigError(f"{name} (from the {origin}): {problem}" if origin else str(error)) from None


def _assign(data: dict[str, Any], dotted: str, value: object) -> None:
    *sections, name = dotted.split(".")
    for section in sections:
        data = data.setdefault(section, {})
        _check(isinstance(data, dict), section, "must be a table")
    data[name] = value


def _build(model: type[_Model], data: object, prefix: str) -> _Model:
    """An instance of dataclass `model` from a TOML table, every key checked; errors name the dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.')}: must be a table")
    hints = get_type_hints(model)  # the dataclass fields, with their types resolved
    for key in data:
        _check(key in hints, f"{prefix}{key}", f"unknown setting (known here: {', '.join(sorted(hints))})")
    values = {key: _convert(value, hints[key], f"{prefix}{key}") for key, value in data.items()}
    try:
        return model(**values)
    except ConfigError as error:
        raise ConfigError(f"{prefix}{error}") from None


_SCALARS: Final[Mapping[type, tuple[str, Callable[[Any], object]]]] = {
    str: ("a string", str),
    Path: ("a path string", Path),
    Secret: ("a string", Secret),
}


def _convert(value: object, hint: Any, name: str) -> object:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):  # only `X | None` occurs; TOML has no null, so X it is
        (hint,) = (arg for arg in get_args(hint) if arg is not type(None))
        origin = get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{name}.")
    if origin is Literal:
        choices = get_args(hint)
        _check(value in choices, name, "must be one of " + ", ".join(f'"{c}"' for c in choices))
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{name}: must be a table of strings")
        return dict(value)
    if hint is bool:
        _check(isinstance(value, bool), name, "must be true or false")
        return value
    if hint is int:
        _check(isinstance(value, int) and not isinstance(value, bool), name, "must be an integer")
        return value
    if hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{name}: must be a number")
        return float(value)
    what, make = _SCALARS[hint]
    _check(isinstance(value, str), name, f"must be {what}")
    return make(value)
