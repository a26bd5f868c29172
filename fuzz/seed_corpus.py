"""Seeds the fuzz corpora from the golden fixtures: JSON inputs as they are, and their typed form."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.golden import MPARTICLE_DIR, case_input, golden_cases  # noqa: E402
from tests.typed_batch import batch_from_json  # noqa: E402


def write(target: str, data: bytes) -> None:
    directory = ROOT / "fuzz" / "corpus" / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def main() -> None:
    inputs = [case_input(c) for c in golden_cases()] + [p.read_bytes() for p in sorted(MPARTICLE_DIR.glob("*.json"))]
    for raw in inputs:
        write("transform_json", raw)
        try:
            write("transform_proto", batch_from_json(raw).SerializeToString())
        except (AttributeError, TypeError, ValueError):
            pass  # not a batch (the invalid-JSON case): the JSON seed covers it


if __name__ == "__main__":
    main()
