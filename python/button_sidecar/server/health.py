"""Whether the sidecar takes new work, as the standard gRPC health service reports it.

Both the overall status (`""`) and `button_sidecar.v1.Sidecar` are SERVING, except NOT_SERVING while the outbox
is full (until deliveries made room) and, for good, once draining for shutdown began.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc_health.v1 import health, health_pb2  # type: ignore[import-untyped]

from button_sidecar.pipeline import Pipeline

logger = logging.getLogger(__name__)

SIDECAR_SERVICE = "button_sidecar.v1.Sidecar"
# One outbox count (off the event loop) a second: fresh enough for readiness probes, which poll every few seconds.
_CHECK_INTERVAL_SECS = 1.0


class ServingState:
    """Drives the health service from the outbox fill level and the shutdown."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.health = health.aio.HealthServicer()
        self._pipeline = pipeline
        self._draining = False
        self._full = False
        self._monitor: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        return self._draining

    async def start(self) -> None:
        await self._set(health_pb2.HealthCheckResponse.SERVING)
        self._monitor = asyncio.create_task(self._watch_outbox(), name="health-monitor")

    async def drain(self) -> None:
        """Report NOT_SERVING from now on; the servicer refuses new calls while `draining`."""
        self._draining = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await self.health.enter_graceful_shutdown()

    async def _set(self, status: int) -> None:
        for service in ("", SIDECAR_SERVICE):
            await self.health.set(service, status)

    async def _watch_outbox(self) -> None:
        settings = self._pipeline.settings
        while True:
            await asyncio.sleep(_CHECK_INTERVAL_SECS)
            try:
                stats = await self._pipeline.stats()
            except Exception:  # a passing disk error must not end the monitor
                logger.exception("Reading the outbox fill level failed.")
                continue
            full = (
                stats.queued + stats.in_flight >= settings.max_queue_rows
                or stats.pending_bytes >= settings.max_queue_bytes
            )
            if full != self._full:
                self._full = full
                if full:
                    logger.warning("The outbox is full: reporting NOT_SERVING until deliveries make room.")
                else:
                    logger.info("The outbox has room again: reporting SERVING.")
                await self._set(
                    health_pb2.HealthCheckResponse.NOT_SERVING if full else health_pb2.HealthCheckResponse.SERVING
                )
