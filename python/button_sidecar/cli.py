"""The ``button-sidecar`` command line.

Each subcommand is a ``_add_<name>(subparsers)`` that declares its flags and sets ``func`` to a
``cmd_<name>(args) -> int`` that runs it; ``main`` parses and dispatches.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

from button_sidecar.sandbox import FaultConfig, SandboxConfig, SandboxServer

_LOG_LEVELS = ("debug", "info", "warning", "error")
_DEFAULT_SANDBOX_API_KEY = "sk-sandbox"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="button-sidecar",
        description="Turns mParticle batches into Button API orders and delivers them reliably.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_sandbox(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.func
    return command(args)


# -- sandbox --------------------------------------------------------------------------------------------


def _add_sandbox(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        help="run a local Button-compatible API server",
        description=(
            "A local Button-compatible API server for development, tests and benchmarks: strict validation, "
            "an in-memory order store, fault injection, and admin endpoints under /__admin. "
            "The first line on stdout is 'Button sandbox listening on URL'."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 (the default) picks a free one")
    parser.add_argument(
        "--api-key",
        # The default stays None so that --help never shows the environment's key.
        help=f"the API key clients must send as the Basic-auth user (default: $BUTTON_API_KEY, else "
        f"{_DEFAULT_SANDBOX_API_KEY})",
    )
    parser.add_argument("--seed", type=int, help="seed for fault randomness and Button order ids")
    parser.add_argument(
        "--request-log-limit", type=int, default=100_000, help="/v1 requests kept in the log (default: %(default)s)"
    )
    parser.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        default="info",
        help="log level on stderr; debug logs every /v1 request (default: %(default)s)",
    )

    faults = parser.add_argument_group("fault injection (also settable at runtime: POST /__admin/faults)")
    defaults = FaultConfig()
    faults.add_argument("--error-rate", type=float, default=defaults.error_rate, help="probability (0..1) of an error")
    faults.add_argument(
        "--error-status", type=int, default=defaults.error_status, help="status of those errors (default: %(default)s)"
    )
    faults.add_argument("--latency-ms", type=float, default=defaults.latency_ms, help="delay before every answer")
    faults.add_argument(
        "--rate-limit-every", type=int, default=defaults.rate_limit_every, help="answer every Nth request with 429"
    )
    faults.add_argument(
        "--rate-limit-rate", type=float, default=defaults.rate_limit_rate, help="probability (0..1) of a 429"
    )
    faults.add_argument(
        "--retry-after-s",
        type=int,
        default=defaults.retry_after_s,
        help="Retry-After seconds on a 429 (default: %(default)s)",
    )
    faults.add_argument(
        "--outage-s",
        type=float,
        default=defaults.outage_s,
        help="answer every request with an error for this many seconds from the start",
    )
    faults.add_argument(
        "--outage-status",
        type=int,
        default=defaults.outage_status,
        help="status during an outage (default: %(default)s)",
    )
    faults.add_argument(
        "--drop-connection-rate",
        type=float,
        default=defaults.drop_connection_rate,
        help="probability (0..1) of closing the connection without an answer",
    )
    faults.add_argument(
        "--fail-next",
        type=_status_list,
        default=defaults.fail_next,
        metavar="STATUS[,STATUS...]",
        help="answer the next requests with these statuses, e.g. 500,500,500",
    )
    faults.add_argument(
        "--fail-next-message", default=defaults.fail_next_message, help="error.message of those (default: %(default)s)"
    )
    faults.add_argument("--fail-next-order-id", help="only requests about this order id consume --fail-next")
    parser.set_defaults(func=cmd_sandbox)


def cmd_sandbox(args: argparse.Namespace) -> int:
    try:
        config = SandboxConfig(
            host=args.host,
            port=args.port,
            api_key=args.api_key or os.environ.get("BUTTON_API_KEY") or _DEFAULT_SANDBOX_API_KEY,
            seed=args.seed,
            request_log_limit=args.request_log_limit,
            faults=FaultConfig(
                error_rate=args.error_rate,
                error_status=args.error_status,
                latency_ms=args.latency_ms,
                rate_limit_every=args.rate_limit_every,
                rate_limit_rate=args.rate_limit_rate,
                retry_after_s=args.retry_after_s,
                outage_s=args.outage_s,
                outage_status=args.outage_status,
                drop_connection_rate=args.drop_connection_rate,
                fail_next=args.fail_next,
                fail_next_message=args.fail_next_message,
                fail_next_order_id=args.fail_next_order_id,
            ),
        )
    except ValueError as error:
        print(f"button-sidecar sandbox: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_run_sandbox(config))
    except OSError as error:
        print(f"button-sidecar sandbox: error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


async def _run_sandbox(config: SandboxConfig) -> None:
    server = SandboxServer(config)
    url = await server.start()
    # Whoever started us reads the URL from this first line, so it goes out at once.
    print(f"Button sandbox listening on {url}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await server.stop()


def _status_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of HTTP statuses: {text!r}") from None


if __name__ == "__main__":
    sys.exit(main())
