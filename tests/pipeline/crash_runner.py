"""Runs a pipeline in its own process for the crash test: `crash_runner.py STATE_DIR BUTTON_URL COUNT`.

Ingests COUNT one-order batches, printing `accepted ORDER_ID` after each ingest returned (so the order is
durable), then keeps delivering until killed. The API key comes from `BUTTON_API_KEY`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from button_sidecar import TransformConfig, Transformer
from button_sidecar.pipeline import Pipeline, PipelineSettings

from tests.pipeline.helpers import FAST_RETRY, batch, purchase


async def main(state_dir: Path, url: str, count: int) -> None:
    settings = PipelineSettings(
        state_dir=state_dir, api_key=os.environ["BUTTON_API_KEY"], button_base_url=url, concurrency=4, retry=FAST_RETRY
    )
    pipeline = Pipeline(settings, Transformer(TransformConfig()))
    await pipeline.start()
    for i in range(count):
        order_id = f"crash-{i}"
        await pipeline.ingest(batch(purchase(order_id)))
        print(f"accepted {order_id}", flush=True)
    await asyncio.Event().wait()  # deliver until SIGKILL


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
