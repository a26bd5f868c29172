"""Broken storage: a full disk refuses ingest with a retryable error, acknowledges nothing it did not store and
recovers by itself; a damaged database stops startup naming the file and is left as it was."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from button_sidecar.pipeline.outbox import Outbox, StorageCorrupt, StorageUnavailable
from button_sidecar.pipeline.records import OutboxItem
from button_sidecar.pipeline.sqlite import SqliteDatabase
from button_sidecar.v1 import sidecar_pb2 as pb

from tests.conftest import Sandbox, wait_for
from tests.hardening.disk import small_disk
from tests.hardening.support import (
    MAX_AGE_SECS,
    ROOT,
    SERVING,
    SHUTDOWN_TOML,
    drained,
    post_events,
    start_server,
    successful_creates,
)
from tests.server.helpers import batch, health_status, ingest_json, purchase, stub_for, write_config

PRE = [f"disk-pre-{i}" for i in range(4)]


def test_a_full_disk_refuses_ingest_retryably_stores_nothing_half_and_recovers_by_itself(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # Slow answers: the deliveries of PRE are in flight when the disk fills, so their outcomes cannot be written.
    sandbox.set_faults(latency_ms=1500)
    with small_disk() as disk:
        server = start_server(tmp_path, sandbox, state_dir=disk.root / "state")
        try:
            with stub_for(server.address) as stub:
                for order_id in PRE:
                    assert stub.Ingest(ingest_json(batch(purchase(order_id))), timeout=10).counts.accepted == 1

                def all_in_flight() -> bool:
                    states = [stub.GetOrder(pb.GetOrderRequest(order_id=o), timeout=5).state for o in PRE]
                    return all(state == pb.OrderStatus.IN_FLIGHT for state in states)

                wait_for(all_in_flight, 10, "the first orders to be in flight")
                disk.fill(server.process.pid)

                accepted: list[str] = []
                grpc_refusals: list[grpc.RpcError] = []
                http_refusals: list[tuple[int, dict[str, str], str]] = []
                for i in range(6):
                    order_id = f"disk-full-{i}"
                    raw = batch(purchase(order_id))
                    if i % 2 == 0:
                        try:
                            stub.Ingest(ingest_json(raw), timeout=10)
                            accepted.append(order_id)
                        except grpc.RpcError as error:
                            grpc_refusals.append(error)
                    else:
                        answer = post_events(server.http_url, raw)
                        if answer.status == 202:
                            accepted.append(order_id)
                        else:
                            http_refusals.append((answer.status, dict(answer.headers), answer.body.decode()))
                refused = {f"disk-full-{i}" for i in range(6)} - set(accepted)
                assert refused, "no ingest failed although the disk is full"

                # The first deliveries got their answers meanwhile; recording them failed (the disk is full).
                wait_for(lambda: len(sandbox.requests()) >= len(PRE), 10, "the first deliveries to be answered")
                time.sleep(0.5)
                assert stub.GetStats(pb.GetStatsRequest(), timeout=5).queue_depth >= len(PRE)

                disk.free(server.process.pid)
                # Recovers by itself: the same process takes ingest again and delivers everything.
                deadline = time.monotonic() + 15
                while True:
                    try:
                        stub.Ingest(ingest_json(batch(purchase("disk-after-0"))), timeout=5)
                        break
                    except grpc.RpcError:
                        assert time.monotonic() < deadline, "ingest did not recover after space returned"
                        time.sleep(0.2)
                assert post_events(server.http_url, batch(purchase("disk-after-1"))).status == 202
            sandbox.clear_faults()
            drained(server.address, timeout=30)
            assert server.process.poll() is None and health_status(server.address) == SERVING
        finally:
            server.stop()

    output = server.output()
    requests = sandbox.requests()
    creates = [str(r["order_id"]) for r in requests if r["path"] == "/v1/order"]
    delivered = {str(o["order_id"]) for o in sandbox.orders()}
    expected = {*PRE, *accepted, "disk-after-0", "disk-after-1"}
    assert delivered == expected, "every acknowledged order, and nothing refused, reached Button"
    assert not refused & set(creates)
    # Created exactly once each. The outcomes the full disk refused were kept and written once it had room (the
    # log line), not left in flight until a restart; an order whose ledger entry could not be written is sent
    # again, and Button's 409 then confirms it.
    assert successful_creates(requests) == dict.fromkeys(expected, 1)
    assert set(creates) == expected
    assert {r["status"] for r in requests if r["path"] == "/v1/order"} <= {200, 409}
    assert "Wrote the outcome of 4 request(s) that the storage had refused before." in output, output[-3000:]
    assert sandbox.api_key not in output

    # The refusals were retryable and said why (checked last: the recovery above holds regardless of the mapping).
    for refusal in grpc_refusals:
        assert refusal.code() == grpc.StatusCode.UNAVAILABLE, (refusal.code(), refusal.details())
        assert "storage is unavailable" in refusal.details() and "outbox.sqlite3" in refusal.details()
    for status, headers, body in http_refusals:
        assert status == 503 and "Retry-After" in headers, (status, body)
        assert "storage is unavailable" in body, body


# -- damaged databases ---------------------------------------------------------------------------------------------


def _outbox_with_rows(state_dir: Path) -> None:
    async def fill() -> None:
        outbox = Outbox(state_dir, max_rows=1000, max_bytes=10**8)
        await outbox.open()
        for i in range(40):
            body = os.urandom(2000)
            await outbox.enqueue([OutboxItem("create_order", "POST", "/v1/order", body, f"o-{i}", f"o-{i}")])
        await outbox.close()

    asyncio.run(fill())


def _garbage(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(8192))


def _damage_pages(path: Path) -> None:
    """Random bytes over pages 2 to 4 (b-tree pages); page 1 with the header and the schema stays valid, so the
    file opens and only a check of the pages finds the damage."""
    data = bytearray(path.read_bytes())
    assert len(data) >= 5 * 4096
    data[4096 : 4 * 4096] = os.urandom(3 * 4096)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("outbox.sqlite3", "garbage"),
        ("outbox.sqlite3", "pages"),
        ("ledger.sqlite3", "garbage"),
        ("attribution.sqlite3", "garbage"),
    ],
)
def test_a_damaged_database_stops_startup_naming_the_file_and_is_left_as_it_is(
    sandbox: Sandbox, tmp_path: Path, name: str, damage: str
) -> None:
    state = tmp_path / "state"
    if damage == "pages":
        _outbox_with_rows(state)
        _damage_pages(state / name)
    else:
        _garbage(state / name)
    before = hashlib.sha256((state / name).read_bytes()).hexdigest()
    config = write_config(tmp_path, sandbox.url, delivery_toml=SHUTDOWN_TOML, max_age_secs=MAX_AGE_SECS)
    env = {
        **os.environ,
        "BUTTON_API_KEY": sandbox.api_key,
        "BUTTON_SIDECAR_STATE_DIR": str(state),
        "BUTTON_SIDECAR_GRPC_LISTEN": "127.0.0.1:0",
        "BUTTON_SIDECAR_HTTP_LISTEN": "127.0.0.1:0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "button_sidecar.cli", "serve", "--config", str(config)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0 and "Sidecar listening" not in done.stdout
    assert str(state / name) in done.stderr and "it was left as it is" in done.stderr, done.stderr
    assert hashlib.sha256((state / name).read_bytes()).hexdigest() == before, "the damaged file was changed"
    assert sandbox.api_key not in done.stderr
    # Reported as one clear line, as other startup errors are, not as a crash.
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("button-sidecar serve: error: "), done.stderr


def test_a_damaged_outbox_releases_the_state_directory(tmp_path: Path) -> None:
    """Opening fails with `StorageCorrupt` naming the file, and the directory lock is released, so a corrected
    start in the same process does not find the outbox "in use by another process"."""
    _garbage(tmp_path / "outbox.sqlite3")

    async def scenario() -> None:
        with pytest.raises(StorageCorrupt) as raised:
            await Outbox(tmp_path, max_rows=10, max_bytes=10**6).open()
        assert raised.value.path == tmp_path / "outbox.sqlite3"
        assert "not a SQLite database or is damaged" in str(raised.value)
        (tmp_path / "outbox.sqlite3").unlink()  # the operator moves it aside
        outbox = Outbox(tmp_path, max_rows=10, max_bytes=10**6)
        assert await outbox.open() == 0
        await outbox.close()

    asyncio.run(scenario())


def test_a_failed_commit_rolls_back_and_leaves_the_connection_usable(tmp_path: Path) -> None:
    """A COMMIT that fails without SQLite rolling back by itself (here a deferred foreign key) must not leave the
    connection inside the transaction, where every later BEGIN would fail."""
    schema = """
    PRAGMA foreign_keys = ON;
    CREATE TABLE parent (id INTEGER PRIMARY KEY);
    CREATE TABLE child (id INTEGER PRIMARY KEY,
        parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
    """

    async def scenario() -> None:
        db = SqliteDatabase(tmp_path / "db.sqlite3", schema)
        await db.open()
        try:
            with pytest.raises(sqlite3.IntegrityError):
                await db.write(lambda conn: conn.execute("INSERT INTO child (parent) VALUES (42)"))
            assert not await db.read(lambda conn: conn.in_transaction)
            await db.write(lambda conn: conn.execute("INSERT INTO parent (id) VALUES (1)"))
            rows = await db.read(lambda conn: conn.execute("SELECT COUNT(*) FROM child").fetchone()[0])
            assert rows == 0
        finally:
            await db.close()

    asyncio.run(scenario())


def test_storage_errors_name_the_file_and_say_whether_to_retry(tmp_path: Path) -> None:
    async def scenario() -> None:
        directory = tmp_path / "not-a-directory"
        directory.write_text("a file where the state directory should be")
        db = SqliteDatabase(directory / "outbox.sqlite3", "CREATE TABLE t (x)")
        with pytest.raises(StorageUnavailable) as raised:
            await db.open()
        assert raised.value.path == directory / "outbox.sqlite3"
        await db.close()

    asyncio.run(scenario())
