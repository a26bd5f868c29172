"""Secrets and privacy: a whole session leaves no plaintext email and no API key or token anywhere (disk, logs at
debug level, the Watch stream, /metrics, answers); listeners are loopback by default; the bearer token and mutual
TLS keep strangers out."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from button_sidecar.config import SidecarConfig, load_config
from button_sidecar.v1 import sidecar_pb2 as pb
from button_sidecar.v1 import sidecar_pb2_grpc

from tests.conftest import SandboxFactory, wait_for
from tests.hardening.support import (
    SERVING,
    deep_link,
    full_refund,
    partial_refund,
    post_events,
    rpc_error,
    running_server,
)
from tests.http_client import http_call
from tests.server.helpers import batch, commerce, health_status, ingest_json, make_certificates, purchase

EMAIL = "  Zelda.Hyrule-Privacy+Sidecar@Example.ORG "
LOCAL_PART = "zelda.hyrule-privacy+sidecar"
API_KEY = "sk-hardening-7f3a9c2e5b1d"
TOKEN = "tok-hardening-4e8b6a0c2d"


def test_listeners_bind_to_loopback_by_default() -> None:
    for config in (SidecarConfig(), load_config(environ={})):
        assert config.grpc.listen.startswith("127.0.0.1:"), config.grpc.listen
        assert config.http.listen.startswith("127.0.0.1:"), config.http.listen
        assert config.grpc.auth_token is None and config.grpc.tls_cert_file is None
    secret = load_config(environ={"BUTTON_API_KEY": API_KEY, "BUTTON_SIDECAR_GRPC_AUTH_TOKEN": TOKEN})
    for text in (repr(secret), str(secret)):
        assert API_KEY not in text and TOKEN not in text


class Watcher:
    """Collects everything the Watch stream sends, as the wire bytes and as text, until the stream ends."""

    def __init__(self, address: str) -> None:
        self.events: list[pb.WatchEvent] = []
        self.raw = bytearray()
        self._channel = grpc.insecure_channel(address)
        self._stream = sidecar_pb2_grpc.SidecarStub(self._channel).Watch(
            pb.WatchRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),)
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._stream:
                self.events.append(event)
                self.raw += event.SerializeToString() + str(event).encode()
        except grpc.RpcError:
            pass  # the server went away

    def close(self) -> None:
        self._stream.cancel()
        self._thread.join(timeout=10)
        self._channel.close()


def _leaks(what: str, data: bytes) -> list[str]:
    lowered = data.lower()
    found = [s for s in (EMAIL.strip().lower(), LOCAL_PART) if s.encode() in lowered]
    found += [s for s in (API_KEY, TOKEN) if s.encode() in data]
    return [f"{what}: {s}" for s in found]


def _files(directory: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            yield str(path), path.read_bytes()


def test_a_whole_session_leaks_no_email_and_no_secret(sandbox_factory: SandboxFactory, tmp_path: Path) -> None:
    sandbox = sandbox_factory(api_key=API_KEY)
    # The create of "privacy-dead" is refused for good by Button: a dead letter.
    sandbox.set_faults(fail_next=[400], fail_next_order_id="privacy-dead", fail_next_message="Invalid order")
    auth = (("authorization", f"Bearer {TOKEN}"),)
    expected_hash = hashlib.sha256(EMAIL.strip().lower().encode()).hexdigest()
    seen: list[tuple[str, bytes]] = []
    with running_server(tmp_path, sandbox, log_level="debug", extra_toml=f'[grpc]\nauth_token = "{TOKEN}"\n') as server:
        watcher = Watcher(server.address)
        with grpc.insecure_channel(server.address) as channel:
            stub = sidecar_pb2_grpc.SidecarStub(channel)
            # The Watch sees what is published once its subscription is in place: probe until it sees something.
            for _ in range(50):
                stub.Ingest(ingest_json(b'{"events": []}'), metadata=auth, timeout=10)
                if watcher.events:
                    break
                threading.Event().wait(0.1)
            assert watcher.events, "the Watch stream saw nothing"

            def ingest(raw: bytes) -> pb.IngestResponse:
                response: pb.IngestResponse = stub.Ingest(ingest_json(raw), metadata=auth, timeout=10)
                seen.append(("Ingest answer", response.SerializeToString() + str(response).encode()))
                return response

            # gRPC: a deep link, a purchase crediting it from the store, refunds, a dead letter, rejections whose
            # offending value is the email.
            ingest(batch(deep_link("srctok-privacy1"), email=EMAIL, source_request_id="privacy-src-1"))
            assert ingest(batch(purchase("privacy-1"), email=EMAIL)).counts.accepted == 1
            ingest(batch(purchase("privacy-2"), email=EMAIL))
            ingest(batch(partial_refund("privacy-2"), email=EMAIL))
            ingest(batch(full_refund("privacy-1"), email=EMAIL))
            ingest(batch(purchase("privacy-dead"), email=EMAIL))
            ingest(batch(full_refund("privacy-never-created"), email=EMAIL))  # unknown_order: a dead letter
            rejected = ingest(batch(commerce("purchase", EMAIL + "\t", products=[{"price": "1"}]), email=EMAIL))
            assert rejected.rejections[0].code == "invalid_order_id"
            rejected = ingest(
                batch(purchase("privacy-3")).replace(b'"currency_code":"USD"', f'"currency_code":"{EMAIL}"'.encode())
            )
            assert rejected.rejections[0].code == "invalid_currency"
            unusable = rpc_error(
                lambda: stub.Ingest(ingest_json(f'{{"email": "{EMAIL}", '.encode()), metadata=auth, timeout=10)
            )
            assert unusable.code() == grpc.StatusCode.INVALID_ARGUMENT
            seen.append(("Ingest error", unusable.details().encode()))
            # HTTP: a batch, a bulk, a rejected one.
            assert post_events(server.http_url, batch(purchase("privacy-http-1"), email=EMAIL)).status == 202
            bulk = (
                b"[" + batch(purchase("privacy-http-2"), email=EMAIL) + b"," + batch(purchase("x"), email=EMAIL) + b"]"
            )
            assert post_events(server.http_url, bulk, bulk=True).status == 202
            bad = batch(commerce("purchase", EMAIL + "\t", products=[{"price": "1"}]), email=EMAIL)
            assert post_events(server.http_url, bad).status == 202
            not_json = post_events(server.http_url, f'{{"email": "{EMAIL}"'.encode())
            assert not_json.status == 400
            seen.append(("HTTP error", not_json.body))

            wait_for(
                lambda: stub.GetStats(pb.GetStatsRequest(), metadata=auth, timeout=10).queue_depth == 0,
                30,
                "the outbox to drain",
            )
            answers: list[tuple[str, Any]] = [
                ("GetStats", stub.GetStats(pb.GetStatsRequest(), metadata=auth, timeout=10)),
                ("ListDeadLetters", stub.ListDeadLetters(pb.ListDeadLettersRequest(), metadata=auth, timeout=10)),
                ("GetOrder", stub.GetOrder(pb.GetOrderRequest(order_id="privacy-dead"), metadata=auth, timeout=10)),
                (
                    "GetAttribution",
                    stub.GetAttribution(
                        pb.GetAttributionRequest(user_key="customer_id:cust-1234"), metadata=auth, timeout=10
                    ),
                ),
            ]
            seen.extend((name, reply.SerializeToString() + str(reply).encode()) for name, reply in answers)
            dead = stub.ListDeadLetters(pb.ListDeadLettersRequest(), metadata=auth, timeout=10).dead_letters
            assert {d.order_id for d in dead} == {"privacy-dead", "privacy-never-created"}, dead

            # The bearer token: every call but health needs it.
            for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", API_KEY),)):
                refused = rpc_error(lambda m=metadata: stub.GetStats(pb.GetStatsRequest(), metadata=m, timeout=5))  # type: ignore[misc]
                assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
            assert health_status(server.address) == SERVING

        for path in ("/metrics", "/healthz"):
            answer = http_call(server.http_url, "GET", path)
            assert answer.status == 200
            seen.append((path, answer.body))
        metrics = next(body for name, body in seen if name == "/metrics")
        assert b"button_sidecar_received_events_total" in metrics
        # While running: the WAL and shared-memory files exist beside the databases.
        running_files = list(_files(server.state_dir))
        assert any(name.endswith("-wal") for name, _ in running_files), [n for n, _ in running_files]
    watcher.close()
    output = server.output()

    # The session did happen: the hash reached Button, debug logging was on, the watch saw it.
    orders: dict[str, Any] = {str(o["order_id"]): o for o in sandbox.orders()}
    assert orders["privacy-1"]["customer"]["email_sha256"] == expected_hash
    assert orders["privacy-1"]["btn_ref"] == "srctok-privacy1" and orders["privacy-1"]["status"] == "deleted"
    assert orders["privacy-http-1"]["customer"]["email_sha256"] == expected_hash
    assert " DEBUG " in output
    assert {"batch_received", "queued", "rejected"} <= {event.type for event in watcher.events}

    # The search finds what it looks for, in any casing (a control, so that an empty result means something).
    assert len(_leaks("control", f"x{EMAIL.upper()}y {API_KEY} {TOKEN}".encode())) == 4
    leaks = [
        *(leak for name, data in running_files for leak in _leaks(f"state file {name} (running)", data)),
        *(leak for name, data in _files(server.state_dir) for leak in _leaks(f"state file {name}", data)),
        *_leaks("stdout and stderr", output.encode()),
        *_leaks("the Watch stream", bytes(watcher.raw)),
        *(leak for name, data in seen for leak in _leaks(name, data)),
    ]
    assert leaks == []


# -- TLS -------------------------------------------------------------------------------------------------------


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Ours (a CA, a server certificate for localhost and 127.0.0.1, a client certificate) and a stranger's."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    return make_certificates(ours), make_certificates(theirs)


def test_mutual_tls_and_the_token_keep_strangers_out(
    sandbox_factory: SandboxFactory, tmp_path: Path, certificates: tuple[dict[str, Path], dict[str, Path]]
) -> None:
    ours, theirs = certificates
    sandbox = sandbox_factory()
    tls = (
        f'[grpc]\nauth_token = "{TOKEN}"\ntls_cert_file = "{ours["server.crt"]}"\n'
        f'tls_key_file = "{ours["server.key"]}"\ntls_client_ca_file = "{ours["ca.crt"]}"\n'
    )
    auth = (("authorization", f"Bearer {TOKEN}"),)

    def credentials(root: Path | None, client: dict[str, Path] | None) -> Any:
        return grpc.ssl_channel_credentials(
            root_certificates=None if root is None else root.read_bytes(),
            private_key=None if client is None else client["client.key"].read_bytes(),
            certificate_chain=None if client is None else client["client.crt"].read_bytes(),
        )

    def stats(target: str, creds: Any, metadata: Any = auth) -> pb.Stats:
        with grpc.secure_channel(target, creds) as channel:
            answer: pb.Stats = sidecar_pb2_grpc.SidecarStub(channel).GetStats(
                pb.GetStatsRequest(), metadata=metadata, timeout=5
            )
            return answer

    with running_server(tmp_path / "mtls", sandbox, extra_toml=tls) as server:
        port = server.address.rpartition(":")[2]
        for target in (server.address, f"localhost:{port}"):  # the certificate names both
            assert stats(target, credentials(ours["ca.crt"], ours)).button_reachable
        # Without a client certificate, with a stranger's, with one the client's CA did not sign the server's.
        for creds in (
            credentials(ours["ca.crt"], None),
            credentials(ours["ca.crt"], theirs),
            credentials(theirs["ca.crt"], ours),
        ):
            refused = rpc_error(lambda c=creds: stats(server.address, c))  # type: ignore[misc]
            assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused.details()
        # In plaintext: no TLS handshake, no call.
        with grpc.insecure_channel(server.address) as channel:
            plain = rpc_error(
                lambda: sidecar_pb2_grpc.SidecarStub(channel).GetStats(pb.GetStatsRequest(), metadata=auth, timeout=5)
            )
        assert plain.code() == grpc.StatusCode.UNAVAILABLE
        # A trusted certificate does not replace the token.
        refused = rpc_error(lambda: stats(server.address, credentials(ours["ca.crt"], ours), metadata=()))
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        with grpc.secure_channel(server.address, credentials(ours["ca.crt"], ours)) as channel:
            stub = sidecar_pb2_grpc.SidecarStub(channel)
            response = stub.Ingest(ingest_json(batch(purchase("tls-1"))), metadata=auth, timeout=10)
            assert response.counts.accepted == 1
