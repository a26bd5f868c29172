"""The mParticle Events API compatible HTTP endpoint: a real server on real sockets, real SQLite, the sandbox."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from button_sidecar.server.http_api import MAX_BATCH_BYTES, MAX_BULK_BATCHES, MAX_REQUEST_BYTES, split_json_array
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Sandbox
from tests.http_client import basic
from tests.pipeline.helpers import EMAIL, batch, drained, metric, orders_by_id, purchase, wait_until
from tests.server.http_helpers import call, http_sidecar


def unaddressed_purchase() -> dict[str, Any]:
    """A purchase without a transaction id: rejected as `missing_order_id`."""
    event = purchase("x")
    del event["data"]["product_action"]["transaction_id"]
    return event


def padded(size: int) -> bytes:
    """A valid batch (one purchase) of exactly `size` bytes, padded in a field the mapping ignores."""
    body = orjson.loads(batch(purchase("padded-1")))
    body["padding"] = ""
    body["padding"] = "x" * (size - len(orjson.dumps(body)))
    raw = orjson.dumps(body)
    assert len(raw) == size
    return raw


def test_a_batch_is_accepted_with_202_and_delivered(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with http_sidecar(tmp_path, sandbox) as sidecar:
            answer = await call(sidecar.url, "POST", "/v2/events", batch(purchase("http-1")))
            assert (answer.status, answer.body) == (202, b"")
            await drained(sidecar.pipeline)
            assert list(await orders_by_id(sandbox)) == ["http-1"]

    asyncio.run(scenario())


def test_bad_events_do_not_fail_the_request_and_are_counted_and_logged_without_values(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with http_sidecar(tmp_path, sandbox) as sidecar:
            raw = batch(purchase("http-good"), unaddressed_purchase(), email=EMAIL)
            answer = await call(sidecar.url, "POST", "/v2/events", raw)
            assert answer.status == 202
            await drained(sidecar.pipeline)
            assert list(await orders_by_id(sandbox)) == ["http-good"]
            assert metric(sidecar.registry, "button_sidecar_rejected_events_total", code="missing_order_id") == 1

    with caplog.at_level(logging.WARNING, logger="button_sidecar.server.http_api"):
        asyncio.run(scenario())
    [record] = [r for r in caplog.records if r.name == "button_sidecar.server.http_api"]
    message = record.getMessage()
    assert "1 event(s) of batch 0" in message and "first event 1: missing_order_id" in message
    assert "events[1].data.product_action.transaction_id" in message
    assert EMAIL not in message and "cust-1234" not in message


def test_unusable_json_is_400_with_mparticles_errors_body_and_nothing_is_queued(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    too_many = b"[" + b",".join([batch(purchase("many"))] * (MAX_BULK_BATCHES + 1)) + b"]"
    cases = [
        ("/v2/events", b'{"events": [', "invalid_json"),
        ("/v2/events", b"\xff\xfe", "invalid_json"),
        ("/v2/events", b"[]", "invalid_batch"),
        ("/v2/events", b'{"events": {}}', "invalid_batch"),
        ("/v2/bulkevents", batch(purchase("not-in-an-array")), "not an array"),
        ("/v2/bulkevents", b'[{"events": []}, {', "Expecting"),
        ("/v2/bulkevents", too_many, f"{MAX_BULK_BATCHES + 1} batches"),
    ]

    async def scenario() -> None:
        async with http_sidecar(tmp_path, sandbox) as sidecar:
            for path, raw, fragment in cases:
                answer = await call(sidecar.url, "POST", path, raw)
                assert answer.status == 400, (path, raw[:40])
                [error] = answer.errors
                assert error["code"] == "BAD_REQUEST" and fragment in error["message"], error
            stats = await sidecar.pipeline.stats()
            assert (stats.queued, stats.in_flight, stats.delivered) == (0, 0, 0)

    asyncio.run(scenario())


def test_a_bulk_is_accepted_although_some_of_its_batches_are_unusable(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with http_sidecar(tmp_path, sandbox) as sidecar:
            raw = (
                b"[" + b",".join([batch(purchase("bulk-1")), b"42", b'{"events": 3}', batch(purchase("bulk-2"))]) + b"]"
            )
            answer = await call(sidecar.url, "POST", "/v2/bulkevents", raw)
            assert (answer.status, answer.body) == (202, b"")
            await drained(sidecar.pipeline)
            assert sorted(await orders_by_id(sandbox)) == ["bulk-1", "bulk-2"]
            assert metric(sidecar.registry, "button_sidecar_rejected_events_total", code="invalid_batch") == 2
            # An empty bulk is a valid request with nothing in it.
            assert (await call(sidecar.url, "POST", "/v2/bulkevents", b" [ ] ")).status == 202

    asyncio.run(scenario())


def test_size_limits_are_413_and_a_batch_at_the_limit_passes(tmp_path: Path, sandbox: Sandbox) -> None:
    async def chunked(raw: bytes) -> AsyncIterator[bytes]:
        """No Content-Length: the server has to count while it reads."""
        for start in range(0, len(raw), 8192):
            yield raw[start : start + 8192]

    oversized = padded(MAX_BATCH_BYTES + 1)
    # Each batch under the limit, the request over it.
    over_request = b"[" + b",".join([padded(MAX_BATCH_BYTES // 2)] * 5) + b"]"
    assert len(over_request) > MAX_REQUEST_BYTES
    cases: list[tuple[str, Any, str]] = [
        ("/v2/events", oversized, f"exceeds {MAX_BATCH_BYTES} bytes"),
        ("/v2/events", chunked(oversized), f"exceeds {MAX_BATCH_BYTES} bytes"),
        ("/v2/events", chunked(b" " * 8 * 1024 * 1024), f"exceeds {MAX_BATCH_BYTES} bytes"),
        ("/v2/bulkevents", over_request, f"exceeds {MAX_REQUEST_BYTES} bytes"),
        ("/v2/bulkevents", b"[" + oversized + b"]", f"batch 0 exceeds {MAX_BATCH_BYTES} bytes"),
    ]

    async def scenario() -> None:
        async with http_sidecar(tmp_path, sandbox) as sidecar:
            for path, body, fragment in cases:
                answer = await call(sidecar.url, "POST", path, body)
                assert answer.status == 413, path
                [error] = answer.errors
                assert error["code"] == "REQUEST_TOO_LARGE" and fragment in error["message"], error
            assert (await sidecar.pipeline.stats()).queued == 0
            assert (await call(sidecar.url, "POST", "/v2/events", padded(MAX_BATCH_BYTES))).status == 202
            assert (
                await call(sidecar.url, "POST", "/v2/bulkevents", b"[" + padded(MAX_BATCH_BYTES) + b"]")
            ).status == 202

    asyncio.run(scenario())


def test_a_full_outbox_is_429_with_retry_after_and_healthz_says_why(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        sandbox.set_faults(outage_s=60.0)  # nothing drains, so the one queued request keeps the outbox full
        async with http_sidecar(tmp_path, sandbox, max_queue_rows=1) as sidecar:
            assert (await call(sidecar.url, "POST", "/v2/events", batch(purchase("full-1")))).status == 202
            answer = await call(sidecar.url, "POST", "/v2/events", batch(purchase("full-2")))
            assert answer.status == 429
            assert answer.headers["Retry-After"] == "1"
            [error] = answer.errors
            assert error["code"] == "TOO_MANY_REQUESTS" and "outbox is full" in error["message"]

            health = await call(sidecar.url, "GET", "/healthz")
            assert health.status == 503
            assert health.json["status"] == "not_serving" and health.json["reasons"] == ["outbox_full"]
            assert health.json["outbox"]["queued"] + health.json["outbox"]["in_flight"] == 1

            sandbox.clear_faults()
            await drained(sidecar.pipeline)
            health = await call(sidecar.url, "GET", "/healthz")
            assert (health.status, health.json["status"], health.json["reasons"]) == (200, "serving", [])
            assert (await call(sidecar.url, "POST", "/v2/events", batch(purchase("full-2")))).status == 202

    asyncio.run(scenario())


def test_draining_is_503_and_healthz_says_why(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with http_sidecar(tmp_path, sandbox) as sidecar:
            await sidecar.health.drain()
            health = await call(sidecar.url, "GET", "/healthz")
            assert health.status == 503
            assert health.json == {"status": "not_serving", "reasons": ["draining"]}
            for path, raw in (("/v2/events", batch(purchase("late-1"))), ("/v2/bulkevents", b"[]")):
                answer = await call(sidecar.url, "POST", path, raw)
                assert (answer.status, answer.headers["Retry-After"]) == (503, "1")
                assert answer.errors[0]["code"] == "SERVICE_UNAVAILABLE"

    asyncio.run(scenario())


def test_a_stopped_pipeline_is_503(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with http_sidecar(tmp_path, sandbox) as sidecar:
            await sidecar.pipeline.stop()  # before the health state knows: the pipeline's PipelineClosed
            answer = await call(sidecar.url, "POST", "/v2/events", batch(purchase("late-2")))
            assert (answer.status, answer.errors[0]["code"]) == (503, "SERVICE_UNAVAILABLE")

    asyncio.run(scenario())


def test_basic_auth_401_without_credentials_403_with_wrong_ones(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with http_sidecar(tmp_path, sandbox, auth=("mp-key", "mp-secret")) as sidecar:
            missing = await call(sidecar.url, "POST", "/v2/events", batch(purchase("auth-0")))
            assert (missing.status, missing.errors[0]["code"]) == (401, "UNAUTHORIZED")
            assert missing.headers["WWW-Authenticate"].startswith("Basic ")
            for authorization in (
                basic("mp-key", "wrong"),
                basic("wrong", "mp-secret"),
                basic("mp-key", "mp-secret-and-more"),
                "Bearer mp-secret",
                "Basic not-base64!",
            ):
                wrong = await call(sidecar.url, "POST", "/v2/bulkevents", b"[]", authorization=authorization)
                assert (wrong.status, wrong.errors[0]["code"]) == (403, "FORBIDDEN"), authorization
            right = basic("mp-key", "mp-secret")
            assert (
                await call(sidecar.url, "POST", "/v2/events", batch(purchase("auth-1")), authorization=right)
            ).status == 202
            # Probes and scrapers need no credentials.
            assert (await call(sidecar.url, "GET", "/healthz")).status == 200
            assert (await call(sidecar.url, "GET", "/metrics")).status == 200
            await drained(sidecar.pipeline)
            assert list(await orders_by_id(sandbox)) == ["auth-1"]

    asyncio.run(scenario())


def test_metrics_expose_the_pipeline_and_http_counters(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with http_sidecar(tmp_path, sandbox) as sidecar:
            await call(sidecar.url, "POST", "/v2/events", batch(purchase("m-1"), unaddressed_purchase()))
            await call(sidecar.url, "POST", "/events", batch(purchase("m-2")))
            await call(sidecar.url, "POST", "/v2/events", b"not json")
            await call(sidecar.url, "POST", "/v2/bulkevents", b"[" + batch(purchase("m-3")) + b"]")
            await call(sidecar.url, "GET", "/nowhere")
            await drained(sidecar.pipeline)
            answer = await call(sidecar.url, "GET", "/metrics")
            assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
            samples = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(answer.body.decode())
                for sample in family.samples
            }

            def value(name: str, **labels: str) -> float:
                return samples.get((name, tuple(sorted(labels.items()))), 0.0)

            assert value("button_sidecar_http_requests_total", path="/v2/events", status="202") == 1
            assert value("button_sidecar_http_requests_total", path="/v2/events", status="400") == 1
            assert value("button_sidecar_http_requests_total", path="/events", status="202") == 1
            assert value("button_sidecar_http_requests_total", path="/v2/bulkevents", status="202") == 1
            assert value("button_sidecar_http_requests_total", path="other", status="404") == 1
            assert value("button_sidecar_http_request_duration_seconds_count", path="/v2/events") == 2
            assert value("button_sidecar_http_request_duration_seconds_sum", path="/v2/events") > 0
            assert value("button_sidecar_rejected_events_total", code="missing_order_id") == 1
            assert value("button_sidecar_rejected_events_total", code="invalid_json") == 1
            assert value("button_sidecar_received_events_total") == 4
            assert value("button_sidecar_outbox_enqueued_requests_total", kind="create_order") == 3
            assert value("button_sidecar_delivered_requests_total", kind="create_order") == 3
            assert value("button_sidecar_button_requests_total", status="2xx") == 3

    asyncio.run(scenario())


def test_healthz_serving_reports_the_outbox(tmp_path: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with http_sidecar(tmp_path, sandbox) as sidecar:
            await call(sidecar.url, "POST", "/v2/events", batch(purchase("h-1")))
            await drained(sidecar.pipeline)
            answer = await call(sidecar.url, "GET", "/healthz")
            assert answer.status == 200
            assert answer.json == {
                "status": "serving",
                "reasons": [],
                "outbox": {
                    "queued": 0,
                    "in_flight": 0,
                    "dead": 0,
                    "pending_bytes": 0,
                    "oldest_age_secs": 0.0,
                    "delivered": 1,
                },
            }

    asyncio.run(scenario())


def test_it_listens_on_a_unix_socket(tmp_path: Path, socket_dir: Path, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        path = socket_dir / "http.sock"
        async with http_sidecar(tmp_path, sandbox, listen=f"unix:{path}") as sidecar:
            assert sidecar.url == f"unix:{path}"
            answer = await call(
                "http://sidecar",
                "POST",
                "/v2/events",
                batch(purchase("unix-1")),
                connector=aiohttp.UnixConnector(str(path)),
            )
            assert answer.status == 202
            await wait_until(lambda: _has_order(sandbox, "unix-1"), what="the order at the sandbox")

    asyncio.run(scenario())


async def _has_order(sandbox: Sandbox, order_id: str) -> bool:
    return order_id in await orders_by_id(sandbox)


@pytest.mark.parametrize(
    ("raw", "elements"),
    [
        (b"[]", []),
        (b" \n[ ]\t", []),
        (b'[{"a": 1.10}, {"b": "],["} ]', [b'{"a": 1.10}', b'{"b": "],["}']),
        # Numbers stay as sent: no float rounding, no big-integer limit.
        (
            b"[1e2, 0.1000000000000000055511151231257827, " + b"9" * 5000 + b"]",
            [b"1e2", b"0.1000000000000000055511151231257827", b"9" * 5000],
        ),
        ('[{"name": "Zoë"}]'.encode(), ['{"name": "Zoë"}'.encode()]),
    ],
)
def test_a_bulk_body_splits_into_the_batches_as_sent(raw: bytes, elements: list[bytes]) -> None:
    assert split_json_array(raw) == elements


@pytest.mark.parametrize(
    "raw", [b"", b"{}", b"[", b"[1,]", b"[1 2]", b"[1] x", b"\xff", b"[" * 100_000 + b"]" * 100_000]
)
def test_a_bulk_body_that_is_not_one_json_array_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        split_json_array(raw)
