"""The typed protobuf batch maps exactly like its JSON form."""

from __future__ import annotations

import json
from typing import Any

import pytest
from button_sidecar import Transformer, TransformResult
from button_sidecar.v1 import sidecar_pb2

from tests.golden import MPARTICLE_DIR, RECEIVED_AT_MS, case_input, golden_cases
from tests.typed_batch import batch_from_json


def summary(result: TransformResult) -> dict[str, Any]:
    return {
        "requests": [
            (r.kind, r.method, r.path, r.order_id, r.event_index, None if r.body is None else json.loads(r.body))
            for r in result.requests
        ],
        "rejections": sorted((r.event_index, r.code, r.field) for r in result.rejections),
        "attributions": [(a.btn_ref, a.timestamp_ms, a.user_keys) for a in result.attributions],
        "skipped": [(s.event_index, s.reason) for s in result.skipped],
        "user_keys": result.user_keys,
        "filtered": result.filtered,
    }


TYPED_CASES = [c for c in golden_cases() if "input" in c]
SAMPLES = sorted(MPARTICLE_DIR.glob("*.json"))


@pytest.mark.parametrize("case", TYPED_CASES, ids=lambda c: str(c["name"]))
def test_golden_batch_gives_identical_output_typed(case: dict[str, Any]) -> None:
    raw = case_input(case)
    t = Transformer()
    typed = batch_from_json(raw).SerializeToString()
    expected = summary(t.transform_json(raw, received_at_ms=RECEIVED_AT_MS))
    assert summary(t.transform_batch_proto(typed, received_at_ms=RECEIVED_AT_MS)) == expected
    request = sidecar_pb2.IngestRequest(batch=batch_from_json(raw)).SerializeToString()
    assert summary(t.transform_ingest_request(request, received_at_ms=RECEIVED_AT_MS)) == expected


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_batches_give_identical_output_typed(path: Any) -> None:
    raw = path.read_bytes()
    t = Transformer()
    typed = batch_from_json(raw).SerializeToString()
    assert summary(t.transform_batch_proto(typed, received_at_ms=RECEIVED_AT_MS)) == summary(
        t.transform_json(raw, received_at_ms=RECEIVED_AT_MS)
    )


def test_ingest_request_json_payload_and_bulk() -> None:
    t = Transformer()
    raws = [case_input(c) for c in golden_cases()]
    bulk = sidecar_pb2.IngestBulkRequest(batches=[sidecar_pb2.IngestRequest(mparticle_json=r) for r in raws])
    results = t.transform_ingest_bulk(bulk.SerializeToString(), received_at_ms=RECEIVED_AT_MS)
    assert [summary(r) for r in results] == [summary(r) for r in t.transform_many(raws, RECEIVED_AT_MS)]


def test_unusable_protobuf_is_a_batch_rejection() -> None:
    t = Transformer()
    for raw in (b"\xff\xff\xff", b"\x12\x05abc"):
        (rejection,) = t.transform_batch_proto(raw).rejections
        assert (rejection.event_index, rejection.code) == (-1, "invalid_protobuf")
    (rejection,) = t.transform_ingest_request(b"").rejections
    assert (rejection.code, rejection.field) == ("invalid_batch", "payload")
    with pytest.raises(ValueError, match="IngestBulkRequest"):
        t.transform_ingest_bulk(b"\x0a\xff")
