"""The delivery driver on its own: a real outbox (SQLite) and a receiver that answers at once and whose
bookkeeping after an answer can be held."""

from __future__ import annotations

import asyncio
from pathlib import Path

from button_sidecar.pipeline.outbox import Outbox
from button_sidecar.pipeline.records import OutboxItem, OutboxRow
from button_sidecar.pipeline.retry import Delivered, Outcome, RetryPolicy
from button_sidecar.pipeline.worker import DeliveryWorker, Request
from button_sidecar.telemetry.metrics import SidecarMetrics
from prometheus_client import CollectorRegistry

from tests.pipeline.helpers import wait_until


class HeldBookkeeping:
    """A `DeliveryService`: every request is answered 200 at once; recording a success (`delivered`) waits
    until `release` is set."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.release = asyncio.Event()

    async def prepare(self, row: OutboxRow) -> Request | Outcome:
        return Request.of(row)

    async def send(self, row: OutboxRow, request: Request) -> Outcome:
        self.sent.append(row.order_key or "")
        return Delivered(200)

    async def delivered(self, row: OutboxRow, request: Request, outcome: Delivered) -> None:
        await self.release.wait()


def test_an_answered_request_frees_its_slot_while_its_outcome_is_recorded_and_its_key_still_waits(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        outbox = Outbox(tmp_path, max_rows=100, max_bytes=2**20)
        await outbox.open()
        service = HeldBookkeeping()
        worker = DeliveryWorker(
            outbox, service, RetryPolicy(), concurrency=1, metrics=SidecarMetrics(CollectorRegistry())
        )
        keys = ["a", "b", "a", "c", "d"]
        await outbox.enqueue([OutboxItem("create_order", "POST", "/v1/order", b"{}", key, None) for key in keys])
        worker.start()
        try:
            # One request at a time, but "a" being recorded does not hold up "b" (another order)...
            await wait_until(lambda: _true(len(service.sent) == 2), timeout=5.0, what="a second request")
            await asyncio.sleep(0.2)
            # ... while a's next request waits for a's outcome, and no more than one more row is being recorded.
            assert service.sent == ["a", "b"]
            assert (await outbox.stats()).in_flight == 2
            service.release.set()

            async def all_delivered() -> bool:
                return (await outbox.stats()).delivered == len(keys)

            await wait_until(all_delivered, timeout=5.0, what="every request delivered")
            assert sorted(service.sent) == sorted(keys)
        finally:
            await worker.stop(1.0)
            await outbox.close()

    asyncio.run(scenario())


async def _true(value: bool) -> bool:
    return value
