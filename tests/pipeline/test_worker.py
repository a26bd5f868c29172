"""The delivery driver on its own: a real outbox (SQLite) and a receiver that answers at once and whose
bookkeeping after an answer can be held."""

from __future__ import annotations

import asyncio
from pathlib import Path

from button_sidecar.pipeline.outbox import Outbox
from button_sidecar.pipeline.records import OutboxItem, OutboxRow
from button_sidecar.pipeline.retry import Delivered, Outcome, RetryPolicy
from button_sidecar.pipeline.worker import DeliveryService, DeliveryWorker, Request
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


async def started_worker(outbox: Outbox, service: DeliveryService, concurrency: int, keys: list[str]) -> DeliveryWorker:
    """Open `outbox`, queue a create for each of `keys`, and start a worker delivering them with `service`."""
    await outbox.open()
    worker = DeliveryWorker(
        outbox, service, RetryPolicy(), concurrency=concurrency, metrics=SidecarMetrics(CollectorRegistry())
    )
    await outbox.enqueue([OutboxItem("create_order", "POST", "/v1/order", b"{}", key, None) for key in keys])
    worker.start()
    return worker


def test_an_answered_request_frees_its_slot_while_its_outcome_is_recorded_and_its_key_still_waits(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        outbox = Outbox(tmp_path, max_rows=100, max_bytes=2**20)
        service = HeldBookkeeping()
        keys = ["a", "b", "a", "c", "d"]
        worker = await started_worker(outbox, service, 1, keys)
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


class CountedLeases(Outbox):
    """An outbox that counts its leases."""

    leases = 0

    async def lease(self, limit: int) -> tuple[list[OutboxRow], float | None]:
        self.leases += 1
        return await super().lease(limit)


class LeaseWitness:
    """A `DeliveryService` answering 200 at once that notes, per request sent, how many leases came before it."""

    def __init__(self, outbox: CountedLeases) -> None:
        self.outbox = outbox
        self.leases_before: dict[str, int] = {}

    async def prepare(self, row: OutboxRow) -> Request | Outcome:
        return Request.of(row)

    async def send(self, row: OutboxRow, request: Request) -> Outcome:
        self.leases_before[row.order_key or ""] = self.outbox.leases
        return Delivered(200)

    async def delivered(self, row: OutboxRow, request: Request, outcome: Delivered) -> None:
        pass


def test_rows_are_leased_ahead_so_a_freed_slot_does_not_wait_for_a_lease(tmp_path: Path) -> None:
    async def scenario() -> None:
        outbox = CountedLeases(tmp_path, max_rows=100, max_bytes=2**20)
        service = LeaseWitness(outbox)
        keys = ["a", "b", "c", "d"]
        worker = await started_worker(outbox, service, 1, keys)
        try:

            async def all_delivered() -> bool:
                return (await outbox.stats()).delivered == len(keys)

            await wait_until(all_delivered, timeout=5.0, what="every request delivered")
        finally:
            await worker.stop(1.0)
            await outbox.close()
        # One slot: the first lease took "a" and "b" (one ahead), so "b" went out as soon as "a" was answered.
        assert service.leases_before["a"] == service.leases_before["b"] == 1
        assert sorted(service.leases_before) == keys

    asyncio.run(scenario())


class HeldAnswers(LeaseWitness):
    """A `DeliveryService` whose requests are never answered."""

    async def send(self, row: OutboxRow, request: Request) -> Outcome:
        await super().send(row, request)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_stop_puts_rows_leased_ahead_back_in_the_queue(tmp_path: Path) -> None:
    async def scenario() -> None:
        outbox = CountedLeases(tmp_path, max_rows=100, max_bytes=2**20)
        service = HeldAnswers(outbox)
        keys = [f"k{i}" for i in range(20)]
        worker = await started_worker(outbox, service, 4, keys)
        try:
            # Four requests wait for their answers; one more row is leased ahead of a free slot.
            await wait_until(lambda: _in_flight_is(outbox, 5), timeout=5.0, what="a row leased ahead")
            assert len(service.leases_before) == 4
        finally:
            abandoned = await worker.stop(0.2)
        stats = await outbox.stats()
        await outbox.close()
        # The four sent were cut off at the deadline and the one leased ahead was never sent: all five queued again.
        assert abandoned == 5
        assert (stats.in_flight, stats.queued) == (0, 20)

    asyncio.run(scenario())


async def _in_flight_is(outbox: Outbox, count: int) -> bool:
    return (await outbox.stats()).in_flight == count
