"""Every golden case through the Rust core."""

from __future__ import annotations

from typing import Any

import pytest
from button_sidecar import TransformConfig, Transformer, TransformResult

from tests.golden import RECEIVED_AT_MS, check_case, golden_cases


def rust_transform(config: dict[str, Any], raw: bytes) -> TransformResult:
    return Transformer(TransformConfig(**config)).transform_json(raw, received_at_ms=RECEIVED_AT_MS)


@pytest.mark.parametrize("case", golden_cases(), ids=lambda c: str(c["name"]))
def test_golden_case(case: dict[str, Any]) -> None:
    check_case(case, rust_transform)


def test_every_golden_file_is_loaded() -> None:
    assert len(golden_cases()) >= 10
