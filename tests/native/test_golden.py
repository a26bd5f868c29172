"""Every golden case through the Rust core."""

from __future__ import annotations

from typing import Any

import pytest
from button_sidecar import TransformConfig, Transformer, TransformResult

from tests.golden import RECEIVED_AT_MS, SHARED_FIXTURES, VENDORED_FIXTURES, check_case, golden_cases


def rust_transform(config: dict[str, Any], raw: bytes) -> TransformResult:
    return Transformer(TransformConfig(**config)).transform_json(raw, received_at_ms=RECEIVED_AT_MS)


@pytest.mark.parametrize("case", golden_cases(), ids=lambda c: str(c["name"]))
def test_golden_case(case: dict[str, Any]) -> None:
    check_case(case, rust_transform)


def test_every_golden_file_is_loaded() -> None:
    assert len(golden_cases()) >= 10


def test_fixture_copy_is_current() -> None:
    if not SHARED_FIXTURES.is_dir():
        pytest.skip("../shared is not next to this checkout: the vendored copy is what we have")
    for shared in SHARED_FIXTURES.rglob("*.json"):
        copy = VENDORED_FIXTURES / shared.relative_to(SHARED_FIXTURES)
        assert copy.is_file() and copy.read_bytes() == shared.read_bytes(), f"refresh tests/fixtures from {shared}"
