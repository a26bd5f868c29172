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
    """The vendored copy holds the golden files; where ../shared is next to the checkout, exactly its files."""
    vendored = sorted(p.relative_to(VENDORED_FIXTURES) for p in VENDORED_FIXTURES.rglob("*.json"))
    assert any(p.parts[0] == "golden" for p in vendored), f"no golden files in {VENDORED_FIXTURES}"
    if SHARED_FIXTURES.is_dir():
        shared = sorted(p.relative_to(SHARED_FIXTURES) for p in SHARED_FIXTURES.rglob("*.json"))
        assert vendored == shared, f"refresh tests/fixtures from {SHARED_FIXTURES}"
        for relative in shared:
            copy, original = VENDORED_FIXTURES / relative, SHARED_FIXTURES / relative
            assert copy.read_bytes() == original.read_bytes(), f"refresh tests/fixtures from {original}"
