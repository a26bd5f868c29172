"""The end-to-end floor: the sidecar's two endpoints served by the same frameworks, doing nothing.

`Sidecar/Ingest` and `Sidecar/IngestBulk` on a `grpc.aio` server answer an empty response without reading the
request; `POST /v2/events` and `/v2/bulkevents` on `aiohttp.web` read the body and answer 202. What the load
generator reaches against this process is what the frameworks and this machine allow at all: the sidecar's
rate as a share of it says how much of a call's cost is ours.

    python -m benches.floor_server --http-port PORT   # first stdout line: "Floor listening on HOST:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc  # type: ignore[import-untyped]
from aiohttp import web

_METHODS = ("Ingest", "IngestBulk")
_SERVICE = "button_sidecar.v1.Sidecar"


def _nothing(request: bytes, context: Any) -> bytes:
    return b""  # an empty IngestResponse / IngestBulkResponse


async def _accepted(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=202)


async def _healthy(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def serve(http_port: int) -> None:
    # No (de)serialisers: the handler sees bytes, as the sidecar's servicer does.
    handlers = {name: grpc.unary_unary_rpc_method_handler(_nothing) for name in _METHODS}
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(_SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/v2/events", _accepted)
    app.router.add_post("/v2/bulkevents", _accepted)
    app.router.add_get("/healthz", _healthy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    print(f"Floor listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    await server.stop(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http-port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().http_port))


if __name__ == "__main__":
    main()
