"""The golden mapping contract (`../shared/fixtures/golden/`), shared by the Rust core and the reference."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

# The contract lives in ../shared/fixtures (read-only, shared with the other teams); tests/fixtures is
# a copy for machines that check out this repository alone, kept equal by test_fixture_copy_is_current.
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
VENDORED_FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURES = SHARED_FIXTURES if SHARED_FIXTURES.is_dir() else VENDORED_FIXTURES
GOLDEN_DIR = FIXTURES / "golden"
MPARTICLE_DIR = FIXTURES / "mparticle"
RECEIVED_AT_MS = 1_700_000_000_000


class RequestLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def method(self) -> str | None: ...
    @property
    def path(self) -> str | None: ...
    @property
    def body(self) -> bytes | None: ...
    @property
    def order_id(self) -> str: ...
    @property
    def event_index(self) -> int: ...


class RejectionLike(Protocol):
    @property
    def event_index(self) -> int: ...
    @property
    def code(self) -> str: ...
    @property
    def field(self) -> str: ...


class AttributionLike(Protocol):
    @property
    def btn_ref(self) -> str: ...


class ResultLike(Protocol):
    @property
    def requests(self) -> Sequence[RequestLike]: ...
    @property
    def rejections(self) -> Sequence[RejectionLike]: ...
    @property
    def attributions(self) -> Sequence[AttributionLike]: ...


def golden_cases() -> list[dict[str, Any]]:
    cases = [json.loads(p.read_text()) for p in sorted(GOLDEN_DIR.glob("*.json"))]
    assert cases, f"no golden files in {GOLDEN_DIR}"
    return cases


def case_input(case: dict[str, Any]) -> bytes:
    if "input_text" in case:
        return str(case["input_text"]).encode()
    return json.dumps(case["input"]).encode()


def check_case(case: dict[str, Any], transform: Callable[[dict[str, Any], bytes], ResultLike]) -> None:
    """Asserts one golden case as `../shared/fixtures/README.md` defines the comparison."""
    result = transform(case.get("config", {}), case_input(case))
    expect = case["expect"]
    got = result.requests
    assert len(got) == len(expect["requests"]), [(r.kind, r.order_id) for r in got]
    for request, want in zip(got, expect["requests"], strict=True):
        for key in ("kind", "method", "path", "order_id", "event_index"):
            if key in want:
                assert getattr(request, key) == want[key], (key, request)
        body = None if request.body is None else json.loads(request.body)
        if "body" in want:
            assert body == want["body"]
        for key, value in want.get("body_contains", {}).items():
            assert body is not None and body[key] == value, key
    rejections = sorted((r.event_index, r.code, r.field) for r in result.rejections)
    assert len(rejections) == len(expect["rejections"]), rejections
    for want in expect["rejections"]:
        codes = want.get("code_in", [want.get("code")])
        matches = [
            r for r in rejections if r[0] == want["event_index"] and r[1] in codes and r[2] == want.get("field", r[2])
        ]
        assert matches, (want, rejections)
    learned = {a.btn_ref for a in result.attributions}
    for want in expect.get("attributions", []):
        assert want["btn_ref"] in learned
