"""Configuration: defaults < TOML < environment < flags, unknown keys and bad values named, every field documented."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from button_sidecar.config import ENVIRONMENT, ConfigError, Secret, SidecarConfig, load_config
from button_sidecar.pipeline import PipelineSettings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.toml"
    path.write_text(text)
    return path


def models() -> Iterator[tuple[str, type[Any]]]:
    """Every config model with its TOML prefix, walked from `SidecarConfig`."""
    pending: list[tuple[str, type[Any]]] = [("", SidecarConfig)]
    while pending:
        prefix, model = pending.pop()
        yield prefix, model
        for name, hint in get_type_hints(model).items():
            if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                pending.append((f"{prefix}{name}.", hint))


def field_docs(model: type[Any]) -> dict[str, str]:
    """The docstring under each field of `model`, from its source."""
    tree = ast.parse(inspect.getsource(model))
    body = tree.body[0]
    assert isinstance(body, ast.ClassDef)
    docs = {}
    for statement, following in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = following.value.value
    return docs


def test_every_field_is_documented_with_default_and_example() -> None:
    checked = 0
    for prefix, model in models():
        docs = field_docs(model)
        for field in dataclasses.fields(model):
            doc = docs.get(field.name, "")
            assert doc, f"{prefix}{field.name} has no docstring"
            assert "Default:" in doc and "Example:" in doc, f"{prefix}{field.name}: say the default and an example"
            checked += 1
    assert checked > 30


def test_defaults_are_the_documented_ones() -> None:
    config = load_config(environ={})
    assert config == SidecarConfig()
    assert config.grpc.listen == "127.0.0.1:50051"
    assert config.http.listen == "127.0.0.1:8088"
    assert config.state_dir == Path("./var/button-sidecar")
    assert config.button.api_key is None and config.button.base_url == "https://api.usebutton.com"
    assert config.button.app_base_url == "https://mobileapi.usebutton.com"
    assert config.grpc.max_message_bytes == 4 * 1024 * 1024
    assert config.http.credentials() is None
    assert config.filters.forward_environments == "both"
    assert (config.attribution.window_secs, config.attribution.store) == (604800, "sqlite")
    assert (config.attribution.redis_url, config.attribution.redis_key_prefix) == (None, "button-sidecar:")
    # The pipeline's own defaults agree with the documented ones.
    assert config.pipeline_settings("sk-x", "http://b", "http://a") == PipelineSettings(
        state_dir=config.state_dir, api_key="sk-x", button_base_url="http://b", app_base_url="http://a"
    )


def test_environment_variables_name_real_settings() -> None:
    prefixes = {prefix + name for prefix, model in models() for name in get_type_hints(model)}
    assert set(ENVIRONMENT.values()) <= prefixes
    assert {
        "BUTTON_API_KEY",
        "BUTTON_API_BASE_URL",
        "BUTTON_APP_BASE_URL",
        "BUTTON_SIDECAR_GRPC_LISTEN",
        "BUTTON_SIDECAR_HTTP_LISTEN",
        "BUTTON_SIDECAR_HTTP_API_KEY",
        "BUTTON_SIDECAR_HTTP_API_SECRET",
        "BUTTON_SIDECAR_REDIS_URL",
        "BUTTON_SIDECAR_STATE_DIR",
    } <= set(ENVIRONMENT)


def test_precedence_is_defaults_then_toml_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, '[grpc]\nlisten = "127.0.0.1:1001"\n[http]\nlisten = "127.0.0.1:2001"\nlog_level = "debug"')
    with pytest.raises(ConfigError, match=r"^http.log_level: unknown setting"):
        load_config(path, environ={})  # log_level belongs at the top, not in [http]
    path = write(tmp_path, 'log_level = "debug"\n[grpc]\nlisten = "127.0.0.1:1001"\n[http]\nlisten = "127.0.0.1:2001"')
    from_toml = load_config(path, environ={})
    assert (from_toml.grpc.listen, from_toml.http.listen, from_toml.log_level) == (
        "127.0.0.1:1001",
        "127.0.0.1:2001",
        "debug",
    )
    environ = {"BUTTON_SIDECAR_GRPC_LISTEN": "unix:/run/sidecar.sock", "BUTTON_SIDECAR_STATE_DIR": "/var/lib/bs"}
    from_env = load_config(path, environ=environ)
    assert (from_env.grpc.listen, from_env.http.listen, from_env.state_dir) == (
        "unix:/run/sidecar.sock",
        "127.0.0.1:2001",
        Path("/var/lib/bs"),
    )
    from_flags = load_config(path, environ=environ, overrides={"grpc.listen": "0.0.0.0:3001", "state_dir": None})
    assert (from_flags.grpc.listen, from_flags.state_dir) == ("0.0.0.0:3001", Path("/var/lib/bs"))


def test_empty_environment_variable_counts_as_unset() -> None:
    assert load_config(environ={"BUTTON_API_KEY": "", "BUTTON_SIDECAR_GRPC_LISTEN": ""}) == SidecarConfig()


def test_a_full_file_sets_every_section(tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_text("cert")
    (tmp_path / "tls.key").write_text("key")
    path = write(
        tmp_path,
        f"""
state_dir = "/var/lib/button-sidecar"
log_level = "warning"
[button]
api_key = "sk-from-file"
base_url = "https://api.usebutton.com/"
app_base_url = "http://127.0.0.1:8089"
[grpc]
listen = "[::]:50051"
max_message_bytes = 16777216
auth_token = "grpc-token"
tls_cert_file = "{tmp_path / "tls.crt"}"
tls_key_file = "{tmp_path / "tls.key"}"
keepalive_time_secs = 30
keepalive_timeout_secs = 5
keepalive_min_ping_interval_secs = 5
keepalive_permit_without_calls = false
[http]
listen = "unix:/run/button-sidecar/http.sock"
api_key = "mp-key"
api_secret = "mp-secret"
[filters]
forward_environments = "production"
[attribution]
window_secs = 3600
ledger_retention_secs = 86400
store = "redis"
redis_url = "redis://:pw@redis.internal:6379/2"
redis_key_prefix = "shop-eu:"
[outbox]
max_requests = 10
max_bytes = 1000
when_full = "block"
block_timeout_secs = 2.5
dedupe_window_secs = 60
[delivery]
concurrency = 4
request_timeout_secs = 3
shutdown_deadline_secs = 0
ingest_first_max_wait_secs = 0
[delivery.retry]
max_attempts = 5
initial_backoff_secs = 1
max_backoff_secs = 10
max_age_secs = 0
[transform]
default_currency = "eur"
include_tax_and_shipping = true
send_email = false
require_btn_ref = true
forward_activity = true
forward_app_events = true
gdpr_purpose = "marketing"
[transform.application_ids]
ios = "app-1a2b3c4d5e6f7a8b"
""",
    )
    config = load_config(path, environ={})
    assert config.button.api_key is not None and config.button.api_key.reveal() == "sk-from-file"
    assert config.grpc.tls_key_file == tmp_path / "tls.key" and not config.grpc.keepalive_permit_without_calls
    assert config.transform.core().application_ids == {"ios": "app-1a2b3c4d5e6f7a8b"}
    assert config.http.credentials() == ("mp-key", "mp-secret")
    settings = config.pipeline_settings("sk-x", "http://127.0.0.1:1", config.button.app_base_url)
    assert settings.app_base_url == "http://127.0.0.1:8089" and settings.forward_environments == "production"
    assert (settings.attribution_window_secs, settings.store_backend, settings.redis_key_prefix) == (
        3600,
        "redis",
        "shop-eu:",
    )
    assert settings.redis_url == "redis://:pw@redis.internal:6379/2" and settings.ledger_retention_secs == 86400
    assert (settings.max_queue_rows, settings.max_queue_bytes, settings.when_full) == (10, 1000, "block")
    assert (settings.concurrency, settings.request_timeout_secs, settings.retry.max_attempts) == (4, 3.0, 5)
    assert settings.ingest_first_max_wait_secs == 0
    assert settings.state_dir == Path("/var/lib/button-sidecar") and settings.dedupe_window_secs == 60


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[grpc]\nmax_message_bytes = 0", "grpc.max_message_bytes: must be a positive integer"),
        ("[grpc]\nmax_message_bytes = 1.5", "grpc.max_message_bytes: must be an integer"),
        ("[grpc]\nmax_message_bytes = true", "grpc.max_message_bytes: must be an integer"),
        ('[grpc]\nlisten = "nowhere"', "grpc.listen: must be host:port or unix:/path"),
        ('[grpc]\nlisten = "127.0.0.1:70000"', "grpc.listen: the port must be 0..65535"),
        ('[grpc]\nlisten = "unix:"', "grpc.listen: unix: needs a socket path"),
        ('[grpc]\ntls_cert_file = "/nonexistent.crt"', "grpc.tls_key_file: needs tls_cert_file"),
        ('[grpc]\ntls_client_ca_file = "/ca.crt"', "grpc.tls_client_ca_file: needs tls_cert_file"),
        ('[grpc]\nauth_token = ""', "grpc.auth_token: must not be empty"),
        ("[grpc]\nkeepalive_time_secs = 0", "grpc.keepalive_time_secs: must be greater than 0"),
        ("[grpc]\nkeepalive_permit_without_calls = 1", "grpc.keepalive_permit_without_calls: must be true or false"),
        ('[button]\nbase_url = "api.usebutton.com"', "button.base_url: must be an http(s) URL"),
        ('[button]\nbase_url = "https://api.usebutton.com/v1"', "button.base_url: must be an http(s) URL"),
        ('[button]\napi_key = "sk with space"', "button.api_key: an API key must not hold spaces"),
        ('[button]\napp_base_url = "mobileapi.usebutton.com"', "button.app_base_url: must be an http(s) URL"),
        ('[http]\nlisten = "8088"', "http.listen: must be host:port or unix:/path"),
        ('[http]\napi_key = "mp-key"', "http.api_key: needs api_secret (both or neither)"),
        ('[http]\napi_secret = "mp-secret"', "http.api_secret: needs api_key (both or neither)"),
        ('[http]\napi_key = ""\napi_secret = "s"', "http.api_key: must not be empty"),
        ('[http]\napi_key = "k"\napi_secret = "with space"', "http.api_secret: an API secret must not hold spaces"),
        ('[filters]\nforward_environments = "staging"', 'filters.forward_environments: must be one of "production"'),
        ("[attribution]\nwindow_secs = 0", "attribution.window_secs: must be greater than 0"),
        ("[attribution]\nledger_retention_secs = -1", "attribution.ledger_retention_secs: must be greater than 0"),
        ('[attribution]\nstore = "memcached"', 'attribution.store: must be one of "sqlite", "redis"'),
        ('[attribution]\nstore = "redis"', 'attribution.redis_url: is required with store = "redis"'),
        (
            '[attribution]\nstore = "redis"\nredis_url = "http://:pw@redis:6379"',
            "attribution.redis_url: must start with redis://, rediss:// or unix://",
        ),
        ('[attribution]\nredis_url = "redis://:pw@redis:6379"', "attribution.redis_url: is only used with store"),
        ('[attribution]\nredis_key_prefix = ""', "attribution.redis_key_prefix: must be printable and not empty"),
        ("[button]\napi_key = 42", "button.api_key: must be a string"),
        ("[outbox]\nmax_requests = -1", "outbox.max_requests: must be a positive integer"),
        ('[outbox]\nwhen_full = "drop"', 'outbox.when_full: must be one of "reject", "block"'),
        ("[outbox]\nblock_timeout_secs = 0", "outbox.block_timeout_secs: must be greater than 0"),
        ('[delivery]\nconcurrency = "8"', "delivery.concurrency: must be an integer"),
        ("[delivery]\nshutdown_deadline_secs = -1", "delivery.shutdown_deadline_secs: must not be negative"),
        ("[delivery]\ningest_first_max_wait_secs = -1", "delivery.ingest_first_max_wait_secs: must not be negative"),
        ("[delivery.retry]\nmax_attempts = 0", "delivery.retry.max_attempts: must be a positive integer"),
        ("[delivery.retry]\ninitial_backoff_secs = 0", "delivery.retry.initial_backoff_secs: must be greater than 0"),
        (
            "[delivery.retry]\nmax_backoff_secs = 0.1",
            "delivery.retry.max_backoff_secs: must be >= initial_backoff_secs",
        ),
        ("[delivery.retry]\nmax_age_secs = -1", "delivery.retry.max_age_secs: must not be negative"),
        ('[transform]\ndefault_currency = "XXQ"', "transform.default_currency: must be an active ISO 4217"),
        ('[transform.application_ids]\nios = "nope"', 'transform.application_ids["ios"]: must be a Button application'),
        ("[transform]\napplication_ids = 3", "transform.application_ids: must be a table of strings"),
        ('[transform]\ngdpr_purpose = ""', "transform.gdpr_purpose: must be a non-empty purpose name"),
        ('log_level = "verbose"', 'log_level: must be one of "debug", "info", "warning", "error"'),
        ("state_dir = 7", "state_dir: must be a path string"),
        ("grpc = 7", "grpc: must be a table"),
        ("[grpc]\nport = 50051", "grpc.port: unknown setting (known here: auth_token,"),
        ("[delivery.retry]\nattempts = 5", "delivery.retry.attempts: unknown setting"),
        ("[server]\nlisten = 1", "server: unknown setting"),
        ("listen =", "--config: "),
    ],
)
def test_a_bad_value_names_the_setting(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, toml), environ={})
    assert str(raised.value).startswith(message), str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_bad_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={"BUTTON_SIDECAR_GRPC_LISTEN": "bogus"})
    assert str(raised.value).startswith("grpc.listen (from the environment variable BUTTON_SIDECAR_GRPC_LISTEN): ")
    with pytest.raises(ConfigError, match=r"^log_level \(from the command line\): must be one of"):
        load_config(environ={}, overrides={"log_level": "loud"})


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--config: cannot read .*missing\.toml: No such file"):
        load_config(tmp_path / "missing.toml", environ={})


def test_secrets_never_show_in_reprs_or_messages() -> None:
    key, token = "sk-very-secret-key-1234", "grpc-very-secret-token"
    http_key, http_secret, redis_password = "mp-very-secret-key", "mp-very-secret-secret", "redis-very-secret-pw"
    config = load_config(
        environ={
            "BUTTON_API_KEY": key,
            "BUTTON_SIDECAR_GRPC_AUTH_TOKEN": token,
            "BUTTON_SIDECAR_HTTP_API_KEY": http_key,
            "BUTTON_SIDECAR_HTTP_API_SECRET": http_secret,
            "BUTTON_SIDECAR_REDIS_URL": f"redis://:{redis_password}@redis.internal:6379/0",
        },
        overrides={"attribution.store": "redis"},
    )
    assert config.button.api_key is not None and config.button.api_key.reveal() == key
    assert config.http.credentials() == (http_key, http_secret)
    settings = config.pipeline_settings(key, "http://b", "http://a")
    for text in (repr(config), str(config), repr(config.button), f"{config.button.api_key}", repr(settings)):
        for secret in (key, token, http_key, http_secret, redis_password):
            assert secret not in text
    assert repr(Secret("x")) == "Secret('********')"
    with pytest.raises(ConfigError) as raised:
        load_config(environ={"BUTTON_API_KEY": "sk-secret:with-colon"})
    assert "sk-secret" not in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        load_config(
            environ={"BUTTON_SIDECAR_REDIS_URL": f"http://:{redis_password}@redis"},
            overrides={"attribution.store": "redis"},
        )
    assert str(raised.value).startswith(
        "attribution.redis_url (from the environment variable BUTTON_SIDECAR_REDIS_URL)"
    )
    assert redis_password not in str(raised.value)
