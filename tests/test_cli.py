"""The command line against a real `button-sidecar serve` subprocess and the real sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from button_sidecar.cli import main

from tests.conftest import Sandbox, wait_for
from tests.golden import MPARTICLE_DIR
from tests.server.helpers import (
    SidecarProcess,
    full_refund_batch,
    make_certificates,
    orders_arrive,
    running_process,
    start_sidecar,
)

HELP_COMMANDS = [
    [],
    ["serve"],
    ["send"],
    ["dlq"],
    ["dlq", "list"],
    ["dlq", "retry"],
    ["status"],
    ["sandbox"],
]


@pytest.fixture(scope="module")
def sidecar(_shared_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    with running_process(tmp_path_factory.mktemp("sidecar"), _shared_sandbox) as process:
        yield process
    assert _shared_sandbox.api_key not in process.output()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_every_command_has_help(
    command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUTTON_API_KEY", "sk-help-must-not-show-this")
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: button-sidecar {' '.join(command)}".rstrip())
    assert "sk-help-must-not-show-this" not in out


def test_send_prints_the_response_and_the_order_arrives(
    sidecar: SidecarProcess, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "send", "--target", sidecar.address, str(MPARTICLE_DIR / "web_purchase.json"))
    assert (code, err) == (0, "")
    response = json.loads(out)
    assert response["counts"] == {"accepted": 1, "skipped": 2, "filtered": 0, "duplicate": 0, "rejected": 0}
    assert response["queued"] == [{"kind": "create_order", "order_id": "W-100045", "event_index": 2}]
    orders_arrive(sandbox, ["W-100045"])


def test_send_of_several_files_is_one_bulk_call(
    sidecar: SidecarProcess, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [
        str(MPARTICLE_DIR / name) for name in ("android_install_from_link.json", "purchase_and_partial_refund.json")
    ]
    code, out, _ = run(capsys, "send", "--target", sidecar.address, *files)
    assert code == 0
    response = json.loads(out)
    assert len(response["results"]) == 2
    assert response["totals"]["accepted"] == sum(r["counts"]["accepted"] for r in response["results"]) > 0


def test_send_reports_what_went_wrong(
    sidecar: SidecarProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, out, err = run(capsys, "send", "--target", sidecar.address, str(bad))
    assert (code, out) == (1, "")
    assert err.startswith("button-sidecar send: error: INVALID_ARGUMENT: the payload is unusable (invalid_json)")
    code, _, err = run(capsys, "send", "--target", sidecar.address, str(tmp_path / "missing.json"))
    assert code == 1 and "cannot read" in err and "missing.json" in err


def test_dlq_list_and_retry(
    sidecar: SidecarProcess, sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = tmp_path / "cancel.json"
    batch.write_bytes(full_refund_batch("cli-unknown-order"))
    assert run(capsys, "send", "--target", sidecar.address, str(batch))[0] == 0

    def listed() -> list[dict[str, object]]:
        code, out, _ = run(capsys, "dlq", "list", "--json", "--target", sidecar.address)
        assert code == 0
        return [d for d in json.loads(out) if d["order_id"] == "cli-unknown-order"]

    wait_for(lambda: bool(listed()), what="the dead letter")
    (letter,) = listed()
    assert (letter["reason"], letter["last_status"], letter["kind"]) == ("unknown_order", 404, "cancel_order")
    code, out, _ = run(capsys, "dlq", "list", "--target", sidecar.address)
    assert code == 0
    assert f"{letter['id']}\tcli-unknown-order\tcancel_order\tunknown_order\tHTTP 404\t1 attempt(s)\t" in out

    code, out, _ = run(capsys, "dlq", "retry", "--target", sidecar.address, str(letter["id"]))
    assert (code, out) == (0, "Queued 1 dead letter(s) for delivery again.\n")
    wait_for(lambda: bool(listed()), what="the replayed request to fail again")
    code, out, _ = run(capsys, "dlq", "retry", "--all", "--target", sidecar.address)
    assert code == 0 and out.startswith("Queued ")
    with pytest.raises(SystemExit) as exited:
        main(["dlq", "retry", "--target", sidecar.address])
    assert exited.value.code == 2  # neither ids nor --all


def test_status_shows_queue_deliveries_dead_letters_and_button(
    sidecar: SidecarProcess, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "status", "--target", sidecar.address)
    assert code == 0
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "Queue depth",
        "Delivered",
        "Dead letters",
        "Duplicates",
        "Received batches",
        "Button",
    ]
    assert lines[-1] == f"Button:           reachable at {sandbox.url}"
    code, out, _ = run(capsys, "status", "--json", "--target", sidecar.address)
    stats = json.loads(out)
    assert code == 0 and stats["button_reachable"] is True and isinstance(stats["queue_depth"], int)


def test_client_commands_say_when_no_sidecar_answers(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "status", "--target", "127.0.0.1:1", "--timeout", "2")
    assert (code, out) == (1, "")
    assert err.startswith("button-sidecar status: error: UNAVAILABLE: ")


def test_client_commands_send_the_configured_token(
    sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_process(tmp_path, sandbox, extra_toml='[grpc]\nauth_token = "cli-token-123"\n') as process:
        code, _, err = run(capsys, "status", "--target", process.address)
        assert code == 1
        assert err == (
            "button-sidecar status: error: UNAUTHENTICATED: missing 'authorization: Bearer <token>' metadata\n"
        )
        code, out, _ = run(capsys, "status", "--config", str(tmp_path / "sidecar.toml"), "--target", process.address)
        assert code == 0 and "reachable" in out
    assert "cli-token-123" not in process.output()


def test_client_commands_speak_mutual_tls(sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    certs = make_certificates(tmp_path)
    tls = (
        f'[grpc]\ntls_cert_file = "{certs["server.crt"]}"\ntls_key_file = "{certs["server.key"]}"\n'
        f'tls_client_ca_file = "{certs["ca.crt"]}"\n'
    )
    with running_process(tmp_path / "sidecar", sandbox, extra_toml=tls) as process:
        target = ("--target", process.address, "--timeout", "5", "--ca-file", str(certs["ca.crt"]))
        client = ("--cert-file", str(certs["client.crt"]), "--key-file", str(certs["client.key"]))
        code, out, _ = run(capsys, "status", *target, *client)
        assert code == 0 and "reachable" in out
        code, _, err = run(capsys, "status", *target)
        assert code == 1 and err.startswith("button-sidecar status: error: UNAVAILABLE: ")
        code, _, err = run(capsys, "status", *target, "--cert-file", str(certs["client.crt"]))
        assert (code, err) == (
            2,
            "button-sidecar: invalid configuration: --cert-file: goes with --key-file and --ca-file\n",
        )


def test_invalid_configuration_stops_with_one_message_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUTTON_API_KEY", "sk-config-error-must-not-show")
    bad = tmp_path / "bad.toml"
    bad.write_text("[grpc]\nmax_message_bytes = 0\n")
    for command in ("serve", "status"):
        code, out, err = run(capsys, command, "--config", str(bad))
        assert (code, out) == (2, "")
        assert err == "button-sidecar: invalid configuration: grpc.max_message_bytes: must be a positive integer\n"
    monkeypatch.setenv("BUTTON_SIDECAR_GRPC_LISTEN", "nowhere")
    code, _, err = run(capsys, "serve")
    assert code == 2
    assert err.startswith(
        "button-sidecar: invalid configuration: grpc.listen (from the environment variable "
        "BUTTON_SIDECAR_GRPC_LISTEN): must be host:port or unix:/path"
    )
    # The real entry point, as a process: the exit code and the single line.
    process = subprocess.run(
        [sys.executable, "-m", "button_sidecar.cli", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        env={**os.environ, "BUTTON_SIDECAR_GRPC_LISTEN": ""},
        timeout=30,
    )
    assert (process.returncode, process.stdout) == (2, "")
    assert process.stderr.splitlines() == [
        "button-sidecar: invalid configuration: grpc.max_message_bytes: must be a positive integer"
    ]
    assert "sk-config-error-must-not-show" not in err + process.stderr


def test_serve_says_why_it_cannot_start(sidecar: SidecarProcess, tmp_path: Path) -> None:
    def serve(*flags: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "button_sidecar.cli", "serve", *flags]
        env = {**os.environ, "BUTTON_API_KEY": "", "BUTTON_SIDECAR_GRPC_LISTEN": "", "BUTTON_SIDECAR_STATE_DIR": ""}
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=30)

    grpc_taken = serve("--grpc-listen", sidecar.address, "--state-dir", str(tmp_path / "state"))
    assert grpc_taken.returncode == 1
    assert f"button-sidecar serve: error: cannot listen on {sidecar.address}: " in grpc_taken.stderr
    locked = serve("--grpc-listen", "127.0.0.1:0", "--state-dir", str(sidecar.state_dir))
    assert locked.returncode == 1
    assert (
        f"button-sidecar serve: error: the outbox in {sidecar.state_dir} is in use by another process" in locked.stderr
    )
    http_taken = sidecar.http_url.removeprefix("http://")
    taken = serve("--grpc-listen", "127.0.0.1:0", "--http-listen", http_taken, "--state-dir", str(tmp_path / "http"))
    assert taken.returncode == 1
    assert f"button-sidecar serve: error: cannot listen on {http_taken} (http.listen): " in taken.stderr


def test_serve_without_an_api_key_delivers_to_an_embedded_sandbox(
    sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's first run: `serve` with no key, `send` a fixture, `status` shows it delivered."""
    process = start_sidecar(tmp_path, sandbox, embedded_sandbox=True)
    try:
        code, out, _ = run(capsys, "send", "--target", process.address, str(MPARTICLE_DIR / "web_purchase.json"))
        assert code == 0 and json.loads(out)["counts"]["accepted"] == 1

        def delivered() -> bool:
            code, out, _ = run(capsys, "status", "--json", "--target", process.address)
            return code == 0 and json.loads(out)["delivered"] == 1

        wait_for(delivered, what="the order delivered to the embedded sandbox")
        code, out, _ = run(capsys, "status", "--json", "--target", process.address)
        embedded_url = json.loads(out)["button_base_url"]
        assert embedded_url != sandbox.url and embedded_url.startswith("http://127.0.0.1:")
    finally:
        assert process.stop() == 0
    log = process.output()
    assert log.count("No BUTTON_API_KEY set: delivering to an embedded Button sandbox at ") == 1
    assert f"{embedded_url}/__admin/orders" in log
    assert sandbox.orders() == []
