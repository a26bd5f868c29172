"""Where a Rust mapping call runs: inline for small input, in a worker thread for large input."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Mapping a typical batch takes tens of microseconds: less than handing it to a thread and back (measured
# in benches/bench_e2e.py). Past this size it is worth keeping the event loop free; the core releases the
# GIL, so the thread runs in parallel with the loop.
INLINE_MAX_BYTES = 64 * 1024


async def run_mapping(call: Callable[[], T], input_bytes: int) -> T:
    """`call()` inline when `input_bytes` is small, else in a worker thread."""
    if input_bytes <= INLINE_MAX_BYTES:
        return call()
    return await asyncio.to_thread(call)
