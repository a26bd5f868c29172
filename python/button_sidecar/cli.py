"""The ``button-sidecar`` command line.

Each subcommand is a ``_add_<name>(subparsers)`` that declares its flags and sets ``func`` to a
``cmd_<name>(args) -> int`` that runs it; ``main`` parses and dispatches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import grpc  # type: ignore[import-untyped]
from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import Message  # type: ignore[import-untyped]

from button_sidecar.config import ConfigError, load_config
from button_sidecar.pipeline import OutboxLocked, StorageError
from button_sidecar.sandbox import FaultConfig, SandboxConfig, SandboxServer
from button_sidecar.server import StartupError, serve
from button_sidecar.server.client import SidecarClient, TlsFiles, client_target

_LOG_LEVELS = ("debug", "info", "warning", "error")
_DEFAULT_SANDBOX_API_KEY = "sk-sandbox"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="button-sidecar",
        description="Turns mParticle batches into Button API orders and delivers them reliably.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(subparsers)
    _add_send(subparsers)
    _add_dlq(subparsers)
    _add_status(subparsers)
    _add_sandbox(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except ConfigError as error:
        print(f"button-sidecar: invalid configuration: {error}", file=sys.stderr)
        return 2


def _config_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML configuration file; environment variables override it, flags override both",
    )
    return options


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


# -- serve ----------------------------------------------------------------------------------------------


def _add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        parents=[_config_options()],
        help="run the sidecar: gRPC and mParticle-compatible HTTP ingest, durable outbox, delivery to Button",
        description=(
            "Serve gRPC and the mParticle Events API over HTTP, queue what comes in durably under the state "
            "directory and deliver it to Button. "
            "Without BUTTON_API_KEY it delivers to an embedded Button sandbox instead, and says so. "
            "The first line on stdout is 'Sidecar listening on ADDRESS' (the gRPC address; the HTTP URL is "
            "logged). SIGTERM or SIGINT drains: NOT_SERVING, new calls refused (HTTP 503), in-flight deliveries "
            "finish up to delivery.shutdown_deadline_secs, the rest stays queued for the next start."
        ),
    )
    parser.add_argument("--grpc-listen", metavar="ADDRESS", help="host:port or unix:/path (setting grpc.listen)")
    parser.add_argument("--http-listen", metavar="ADDRESS", help="host:port or unix:/path (setting http.listen)")
    parser.add_argument("--state-dir", metavar="DIR", help="outbox and ledger directory (state_dir)")
    parser.add_argument("--log-level", choices=_LOG_LEVELS, help="log level on stderr (log_level)")
    parser.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(
        args.config,
        overrides={
            "grpc.listen": args.grpc_listen,
            "http.listen": args.http_listen,
            "state_dir": args.state_dir,
            "log_level": args.log_level,
        },
    )
    _logging(config.log_level)
    try:
        asyncio.run(serve(config, lambda address: print(f"Sidecar listening on {address}", flush=True)))
    except (StartupError, OutboxLocked, StorageError) as error:
        print(f"button-sidecar serve: error: {error}", file=sys.stderr)
        return 1
    return 0


# -- client commands ------------------------------------------------------------------------------------


def _client_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False, parents=[_config_options()])
    connection = options.add_argument_group("connection (the token comes from grpc.auth_token)")
    connection.add_argument(
        "--target", metavar="ADDRESS", help="the sidecar's address (default: grpc.listen of the configuration)"
    )
    connection.add_argument("--timeout", type=float, default=10.0, help="seconds per call (default: %(default)s)")
    connection.add_argument("--ca-file", type=Path, metavar="PEM", help="connect with TLS, trusting this CA")
    connection.add_argument("--cert-file", type=Path, metavar="PEM", help="client certificate, for mutual TLS")
    connection.add_argument("--key-file", type=Path, metavar="PEM", help="private key of --cert-file")
    return options


def _client(args: argparse.Namespace) -> SidecarClient:
    config = load_config(args.config)
    if (args.cert_file is None) != (args.key_file is None) or (args.cert_file is not None and args.ca_file is None):
        raise ConfigError("--cert-file: goes with --key-file and --ca-file")
    tls = None if args.ca_file is None else TlsFiles(args.ca_file, args.cert_file, args.key_file)
    try:
        return SidecarClient(
            args.target or client_target(config.grpc.listen),
            token=config.grpc.auth_token,
            tls=tls,
            timeout_secs=args.timeout,
        )
    except OSError as error:
        raise ConfigError(f"{error.filename}: cannot read it: {error.strerror}") from None


def _as_dict(message: Message) -> dict[str, object]:
    as_dict: dict[str, object] = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )
    return as_dict


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _call_failed(command: str, error: grpc.RpcError) -> int:
    print(f"button-sidecar {command}: error: {error.code().name}: {error.details()}", file=sys.stderr)
    return 1


# -- send -----------------------------------------------------------------------------------------------


def _add_send(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "send",
        parents=[_client_options()],
        help="send mParticle JSON batches to a running sidecar",
        description=(
            "Send each FILE (one mParticle Events API batch as JSON) to a running sidecar over gRPC and print "
            "the response as JSON: Ingest for one file, IngestBulk (queued all or none) for several."
        ),
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="a JSON batch")
    parser.set_defaults(func=cmd_send)


def cmd_send(args: argparse.Namespace) -> int:
    try:
        raws = [path.read_bytes() for path in args.files]
    except OSError as error:
        print(f"button-sidecar send: error: cannot read {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    with _client(args) as client:
        try:
            response = client.ingest(raws[0]) if len(raws) == 1 else client.ingest_bulk(raws)
        except grpc.RpcError as error:
            return _call_failed("send", error)
    _print_json(_as_dict(response))
    return 0


# -- dlq ------------------------------------------------------------------------------------------------


def _add_dlq(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dlq",
        help="list or retry dead letters",
        description="Dead letters: requests Button refused for good, or that kept failing past the retry limits.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        parents=[_client_options()],
        help="list dead letters, oldest first",
        description="List dead letters, oldest first: id, order, kind, reason, last HTTP status, attempts, message.",
    )
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default: %(default)s)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_dlq_list)
    retry = actions.add_parser(
        "retry",
        parents=[_client_options()],
        help="queue dead letters for delivery again",
        description="Queue dead letters for delivery again, with their attempts reset.",
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=int, default=[], metavar="ID", help="dead letter ids (see dlq list)")
    which.add_argument("--all", action="store_true", help="every dead letter")
    retry.set_defaults(func=cmd_dlq_retry)


def cmd_dlq_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            dead_letters = client.dead_letters(args.limit)
        except grpc.RpcError as error:
            return _call_failed("dlq list", error)
    if args.json:
        _print_json([_as_dict(dead) for dead in dead_letters])
        return 0
    if not dead_letters:
        print("No dead letters.")
    for dead in dead_letters:
        print(
            f"{dead.id}\t{dead.order_id or '-'}\t{dead.kind}\t{dead.reason}\tHTTP {dead.last_status or '-'}\t"
            f"{dead.attempts} attempt(s)\t{dead.last_response}"
        )
    return 0


def cmd_dlq_retry(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            replayed = client.replay(None if args.all else args.ids)
        except grpc.RpcError as error:
            return _call_failed("dlq retry", error)
    print(f"Queued {replayed} dead letter(s) for delivery again.")
    return 0


# -- status ---------------------------------------------------------------------------------------------


def _add_status(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        parents=[_client_options()],
        help="show queue depth, deliveries, dead letters and Button reachability",
        description="Ask a running sidecar for its queue depth, deliveries, dead letters and Button reachability.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            stats = client.stats()
        except grpc.RpcError as error:
            return _call_failed("status", error)
    if args.json:
        _print_json(_as_dict(stats))
        return 0
    reachable = "reachable" if stats.button_reachable else "NOT reachable"
    print(f"Queue depth:      {stats.queue_depth} (oldest {stats.oldest_age_seconds:.1f} s)")
    print(f"Delivered:        {stats.delivered}")
    print(f"Dead letters:     {stats.dead_letters}")
    print(f"Duplicates:       {stats.duplicates}")
    print(f"Received batches: {stats.received_batches}")
    print(f"Button:           {reachable} at {stats.button_base_url}")
    return 0


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
    _logging(args.log_level)
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
