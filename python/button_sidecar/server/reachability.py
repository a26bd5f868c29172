"""Whether Button answers the sidecar's API key, for `GetStats` / `button-sidecar status` and the startup log."""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry

from button_sidecar.pipeline.button import ButtonClient, ButtonUnreachable, order_path
from button_sidecar.telemetry import SidecarMetrics

logger = logging.getLogger(__name__)

# The same authenticated call refund resolution makes, for an order that does not exist: 404 is the healthy
# answer, 401/403 a bad key, 5xx or no answer an outage. No endpoint delivery never uses is probed.
_PROBE_PATH = order_path("button-sidecar-reachability-probe")
_PROBE_TIMEOUT_SECS = 5.0
# A status check shortly after another reuses its answer instead of probing Button again.
_FRESH_SECS = 15.0
# A status check waits this long for a probe under way, then answers with what was known before.
_WAIT_SECS = 1.0


class ButtonReachability:
    """Probes Button at start and when asked, at most every `_FRESH_SECS`; logs when the answer changes."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        # Probes stay out of the delivery metrics.
        self._client = ButtonClient(
            base_url,
            api_key,
            timeout_secs=_PROBE_TIMEOUT_SECS,
            metrics=SidecarMetrics(CollectorRegistry()),
        )
        self._reachable = False
        self._checked_at: float | None = None
        self._probe_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the connection pool and start the first probe (its result is logged)."""
        await self._client.start()
        self._refresh()

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
        await self._client.close()

    async def reachable(self) -> bool:
        """The latest answer; a stale one is refreshed first, unless Button takes longer than `_WAIT_SECS`."""
        if self._checked_at is None or time.monotonic() - self._checked_at > _FRESH_SECS:
            task = self._refresh()
            # Shielded: a slow probe goes on in the background and serves the next check.
            await asyncio.wait([asyncio.shield(task)], timeout=_WAIT_SECS)
        return self._reachable

    def _refresh(self) -> asyncio.Task[None]:
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.create_task(self._probe(), name="button-reachability")
        return self._probe_task

    async def _probe(self) -> None:
        problem = await self._problem()
        if self._checked_at is None or (problem is None) != self._reachable:
            if problem is None:
                logger.info("Button at %s is reachable and accepts the API key.", self.base_url)
            else:
                logger.warning("Button at %s is not usable (%s); requests wait in the outbox.", self.base_url, problem)
        self._reachable, self._checked_at = problem is None, time.monotonic()

    async def _problem(self) -> str | None:
        """What keeps Button from taking requests now, or None."""
        try:
            response = await self._client.request("GET", _PROBE_PATH)
        except ButtonUnreachable as error:
            return f"no answer: {error}"
        if response.status in (401, 403):
            return f"HTTP {response.status}: the API key is refused"
        if response.status >= 500:
            return f"HTTP {response.status}"
        return None
