"""A blocking client of a running sidecar, for the command line (`send`, `dlq`, `status`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc  # type: ignore[import-untyped]

from button_sidecar.config import Secret
from button_sidecar.v1 import sidecar_pb2 as pb
from button_sidecar.v1 import sidecar_pb2_grpc


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a TLS connection: the CA that signed the server, and the client's own pair for mutual TLS."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None


def client_target(listen: str) -> str:
    """Where to connect for a server listening on `listen`: a wildcard host means this machine."""
    host, _, port = listen.rpartition(":")
    if host == "0.0.0.0":
        return f"127.0.0.1:{port}"
    if host == "[::]":
        return f"[::1]:{port}"
    return listen


class SidecarClient:
    """The Sidecar service's calls, each bounded by `timeout_secs`; raises `grpc.RpcError` on a failed call."""

    def __init__(
        self, target: str, *, token: Secret | None, tls: TlsFiles | None = None, timeout_secs: float = 10.0
    ) -> None:
        if tls is None:
            self._channel = grpc.insecure_channel(target)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls.ca_file.read_bytes(),
                private_key=None if tls.key_file is None else tls.key_file.read_bytes(),
                certificate_chain=None if tls.cert_file is None else tls.cert_file.read_bytes(),
            )
            self._channel = grpc.secure_channel(target, credentials)
        self._stub = sidecar_pb2_grpc.SidecarStub(self._channel)
        self._metadata = () if token is None else (("authorization", f"Bearer {token.reveal()}"),)
        self._timeout = timeout_secs

    def __enter__(self) -> SidecarClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._channel.close()

    def ingest(self, raw_json: bytes) -> pb.IngestResponse:
        response: pb.IngestResponse = self._stub.Ingest(
            pb.IngestRequest(mparticle_json=raw_json), timeout=self._timeout, metadata=self._metadata
        )
        return response

    def ingest_bulk(self, raw_jsons: Sequence[bytes]) -> pb.IngestBulkResponse:
        request = pb.IngestBulkRequest(batches=[pb.IngestRequest(mparticle_json=raw) for raw in raw_jsons])
        response: pb.IngestBulkResponse = self._stub.IngestBulk(request, timeout=self._timeout, metadata=self._metadata)
        return response

    def dead_letters(self, limit: int) -> list[pb.DeadLetter]:
        response: pb.ListDeadLettersResponse = self._stub.ListDeadLetters(
            pb.ListDeadLettersRequest(limit=limit), timeout=self._timeout, metadata=self._metadata
        )
        return list(response.dead_letters)

    def replay(self, ids: Sequence[int] | None) -> int:
        """Queue the dead letters `ids` again (every one when None); returns how many."""
        request = pb.ReplayDeadLettersRequest(all=True) if ids is None else pb.ReplayDeadLettersRequest(ids=ids)
        response: pb.ReplayDeadLettersResponse = self._stub.ReplayDeadLetters(
            request, timeout=self._timeout, metadata=self._metadata
        )
        return response.replayed

    def stats(self) -> pb.Stats:
        response: pb.Stats = self._stub.GetStats(pb.GetStatsRequest(), timeout=self._timeout, metadata=self._metadata)
        return response
