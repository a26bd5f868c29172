"""Whole-batch filters (consent, environment) and Button app signals (app events, user activity)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from button_sidecar import TransformConfig
from button_sidecar.pipeline import ForwardEnvironments
from button_sidecar.pipeline.button import ButtonClient, ButtonDeliveryService
from button_sidecar.pipeline.button.client import DEFAULT_APP_BASE_URL, app_base_url_for
from button_sidecar.pipeline.ledger import SqliteOrderLedger
from button_sidecar.pipeline.records import OutboxRow
from button_sidecar.pipeline.retry import Reject
from button_sidecar.pipeline.worker import Request
from button_sidecar.telemetry.metrics import SidecarMetrics
from prometheus_client import CollectorRegistry

from tests.attribution.helpers import (
    APP_ID,
    IDFA,
    MINUTE_MS,
    deep_link,
    now_ms,
    product_view,
    requests_for,
    user_batch,
)
from tests.conftest import Sandbox
from tests.pipeline.helpers import drained, metric, orders_by_id, purchase, request_log, running, settings

FILTERED = "button_sidecar_filtered_batches_total"


@pytest.mark.parametrize(
    ("forward", "environment", "filtered"),
    [
        ("both", "development", False),
        ("production", None, False),  # no environment counts as production
        ("production", "production", False),
        ("production", "development", True),
        ("development", "Development", False),
        ("development", "production", True),
        ("development", None, True),
    ],
)
def test_batches_of_an_environment_not_forwarded_are_filtered_and_counted(
    tmp_path: Path, sandbox: Sandbox, forward: ForwardEnvironments, environment: str | None, filtered: bool
) -> None:
    async def scenario() -> None:
        now = now_ms()
        raw = user_batch(deep_link("srctok-env", now - MINUTE_MS), purchase("env-1"), environment=environment)
        async with running(settings(tmp_path, sandbox, forward_environments=forward)) as pipeline:
            result = await pipeline.ingest(raw, received_at_ms=now)
            await drained(pipeline)
            stored = await pipeline.current_attribution("mpid:8675309")
            assert metric(pipeline.registry, FILTERED, reason="environment") == (1 if filtered else 0)
        if filtered:
            assert (result.filtered, result.accepted, result.attributions, stored) == ("environment", 0, (), None)
            assert await requests_for(sandbox, "env-1") == []
        else:
            assert (result.filtered, result.accepted, [a.btn_ref for a in result.attributions]) == (
                None,
                1,
                ["srctok-env"],
            )
            assert stored is not None and stored.btn_ref == "srctok-env"
            assert (await orders_by_id(sandbox))["env-1"]["btn_ref"] == "srctok-env"

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("consent", "reason"),
    [
        ({"gdpr": {"marketing": {"consented": False}}}, "gdpr_consent"),
        (
            {"gdpr": {"marketing": {"consented": True}}, "ccpa": {"data_sale_opt_out": {"consented": True}}},
            "ccpa_opt_out",
        ),
    ],
)
def test_batches_filtered_by_consent_are_counted_and_teach_no_token(
    tmp_path: Path, sandbox: Sandbox, consent: dict[str, Any], reason: str
) -> None:
    async def scenario() -> None:
        now = now_ms()
        raw = user_batch(deep_link("srctok-consent", now - MINUTE_MS), purchase("consent-1"), consent=consent)
        transform = TransformConfig(gdpr_purpose="marketing")
        async with running(settings(tmp_path, sandbox), transform=transform) as pipeline:
            result = await pipeline.ingest(raw, received_at_ms=now)
            assert (result.filtered, result.accepted, result.attributions) == (reason, 0, ())
            assert await pipeline.current_attribution("mpid:8675309") is None
            assert metric(pipeline.registry, FILTERED, reason=reason) == 1
            assert (await pipeline.stats()).queued == 0

    asyncio.run(scenario())


def test_app_signals_go_to_the_merchant_library_as_the_application_only_when_enabled(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    # The sandbox takes app signals authenticated as the application id (the Merchant Library's credentials)
    # and records which credential each request used: the API key must never go with an app signal.
    on = TransformConfig(forward_app_events=True, forward_activity=True, application_ids={"ios": APP_ID})

    async def scenario() -> None:
        now = now_ms()
        raw = user_batch(
            deep_link("srctok-app", now - 2000), product_view("mug-1", now - 1000), purchase("app-1"), idfa=IDFA
        )
        config = settings(tmp_path / "on", sandbox, app_base_url=sandbox.url)
        async with running(config, transform=on) as pipeline:
            result = await pipeline.ingest(raw, received_at_ms=now)
            assert sorted(q.kind for q in result.queued) == ["activity", "app_event", "create_order"]
            await drained(pipeline)
            assert (await pipeline.stats()).dead == 0
        events = await asyncio.to_thread(sandbox.app_events)
        assert len(events) == 1 and events[0]["application_id"] == APP_ID
        assert [(e["name"], e["source_token"]) for e in _list(events[0]["events"])] == [
            ("btn:deeplink-opened", "srctok-app")
        ]
        activity = await asyncio.to_thread(sandbox.activity)
        assert [(a["btn_ref"], _dict(a["activity_data"])["name"]) for a in activity] == [
            ("srctok-app", "product-viewed")
        ]
        credentials = {(r["path"], r["auth"]) for r in await request_log(sandbox)}
        assert credentials == {
            ("/v1/order", "api_key"),
            ("/v1/app/events", "application_id"),
            ("/v1/app/activity", "application_id"),
        }
        assert (await orders_by_id(sandbox))["app-1"]["btn_ref"] == "srctok-app"

        sandbox.reset()
        async with running(settings(tmp_path / "off", sandbox, app_base_url=sandbox.url)) as pipeline:
            result = await pipeline.ingest(raw, received_at_ms=now)
            assert [q.kind for q in result.queued] == ["create_order"]
            await drained(pipeline)
        assert await requests_for(sandbox, "app-1") == [("POST", "/v1/order")]

    asyncio.run(scenario())


def test_an_app_event_of_a_platform_without_application_id_is_skipped(tmp_path: Path, sandbox: Sandbox) -> None:
    """The core emits it without `application_id`; Button could not authenticate it, so it is not queued."""
    transform = TransformConfig(forward_app_events=True, application_ids={"android": APP_ID})

    async def scenario() -> None:
        now = now_ms()
        async with running(settings(tmp_path, sandbox, app_base_url=sandbox.url), transform=transform) as pipeline:
            result = await pipeline.ingest(user_batch(deep_link("srctok-ios", now), idfa=IDFA), received_at_ms=now)
            assert (result.accepted, result.skipped, [a.btn_ref for a in result.attributions]) == (
                0,
                1,
                ["srctok-ios"],
            )
            assert (await pipeline.stats()).queued == 0
        assert await requests_for(sandbox) == []

    asyncio.run(scenario())


def _list(value: object) -> list[dict[str, object]]:
    assert isinstance(value, list) and all(isinstance(item, dict) for item in value)
    return value


def _dict(value: object) -> dict[str, object]:
    assert isinstance(value, dict)
    return value


def test_an_app_request_without_application_id_is_a_dead_letter_not_sent(tmp_path: Path, sandbox: Sandbox) -> None:
    """Ingest never queues one; should a row hold one all the same, delivery refuses it without a request."""

    async def scenario() -> None:
        metrics = SidecarMetrics(CollectorRegistry())
        client = ButtonClient(sandbox.url, sandbox.api_key, timeout_secs=5.0, metrics=metrics)
        service = ButtonDeliveryService(client, SqliteOrderLedger(tmp_path))
        body = b'{"events":[{"name":"btn:deeplink-opened","time":"2024-05-01T19:45:44.000Z","uuid":"u-1"}]}'
        row = OutboxRow(1, None, "app_event", "POST", "/v1/app/events", body, 0.0, 0.0, 0)
        await client.start()
        try:
            outcome = await service.send(row, Request.of(row))
        finally:
            await client.close()
        assert isinstance(outcome, Reject) and outcome.reason == "invalid_request"
        assert "application_id" in outcome.message
        assert await requests_for(sandbox) == []

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("base", "application_id", "expected"),
    [
        (DEFAULT_APP_BASE_URL, "app-1a2b3c4d5e6f7a8b", "https://app-1a2b3c4d5e6f7a8b.mobileapi.usebutton.com"),
        # Not of the app-… form (nor a safe host label): Button's shared host, as its SDKs do.
        (DEFAULT_APP_BASE_URL, "legacy-id", DEFAULT_APP_BASE_URL),
        (DEFAULT_APP_BASE_URL, "app-x.evil.example/", DEFAULT_APP_BASE_URL),
        # A configured host (the sandbox, a proxy) is used as it is.
        ("http://127.0.0.1:9000", "app-1a2b3c4d5e6f7a8b", "http://127.0.0.1:9000"),
    ],
)
def test_merchant_library_requests_go_to_the_apps_own_host_on_buttons(
    base: str, application_id: str, expected: str
) -> None:
    assert app_base_url_for(base, application_id) == expected
