"""Where a Rust mapping call runs: inline for small input, in a worker thread for large input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import Histogram

T = TypeVar("T")

# Mapping a typical batch takes tens of microseconds: less than handing it to a thread and back (measured
# in benches/bench_e2e.py). Past this size it is worth keeping the event loop free; the core releases the
# GIL, so the thread runs in parallel with the loop.
INLINE_MAX_BYTES = 64 * 1024


async def run_mapping(call: Callable[[], T], input_bytes: int, seconds: Histogram) -> T:
    """`call()` inline when `input_bytes` is small, else in a worker thread; its time is observed in `seconds`
    (the hand-over to the thread and back included)."""
    started = time.perf_counter()
    try:
        if input_bytes <= INLINE_MAX_BYTES:
            return call()
        return await asyncio.to_thread(call)
    finally:
        seconds.observe(time.perf_counter() - started)
