"""`airgap emulate`: the emulators as separate processes, and emulated device captures."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from conftest import airgap_command

from airgap.formats.rum import parse_rum_file
from airgap.inside.parsers.udi import parse_udi_file


@contextmanager
def emulator(*args: str) -> Iterator[str]:
    command = airgap_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")}
    proc = subprocess.Popen(
        [*command, "emulate", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cisco_emulator_process_serves_tokens_and_stats() -> None:
    with emulator("cisco", "--poll-delay", "0.1") as url:
        session = requests.Session()
        session.trust_env = False
        token = session.post(
            f"{url}/oauth2/default/v1/token",
            data={"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"},
            timeout=5,
        )
        assert token.status_code == 200 and token.json()["token_type"] == "Bearer"
        stats = session.get(f"{url}/_emulator/stats", timeout=5).json()
        assert set(stats) >= {"calls", "mutations"}


def test_bigiq_emulator_process_logs_in() -> None:
    with emulator("bigiq", "--pool", "lab:5") as url:
        session = requests.Session()
        session.trust_env = False
        login = session.post(
            f"{url}/mgmt/shared/authn/login",
            json={"username": "admin", "password": "x", "loginProviderName": "tmos"},
            timeout=5,
        )
        assert login.status_code == 200
        assert login.json()["token"]["token"]


def test_bad_fault_spec_is_a_clear_error(airgap) -> None:
    result = airgap("emulate", "cisco", "--faults", "429=lots")
    assert result.returncode == 1
    assert "E_CONFIG" in result.stderr
    assert "Traceback" not in result.stderr


def test_emulated_device_files_parse(airgap, tmp_path: Path) -> None:
    result = airgap(
        "--json",
        "emulate",
        "device",
        "--pid",
        "C9300-24T",
        "--sn",
        "FOC2437L1ZK",
        "--out",
        str(tmp_path),
        "--return-code",
    )
    assert result.returncode == 0, result.stderr
    files = [Path(p) for p in json.loads(result.stdout)["files"]]
    assert [p.name for p in files] == [
        "dev-foc2437l1zk.udi.txt",
        "dev-foc2437l1zk.rum.xml",
        "dev-foc2437l1zk.return.txt",
    ]
    (record,) = parse_udi_file(files[0])
    assert (record.hostname, record.pid, record.sn) == (
        "dev-foc2437l1zk",
        "C9300-24T",
        "FOC2437L1ZK",
    )
    assert parse_rum_file(files[1]).udi == ("C9300-24T", "FOC2437L1ZK")
    bad = airgap("emulate", "device", "--pid", "bad pid!", "--sn", "X", "--out", str(tmp_path))
    assert bad.returncode == 1 and "E_INPUT" in bad.stderr


@pytest.mark.parametrize("kind", ["ios-xe", "bigip"])
@pytest.mark.parametrize("password", [None, "chosen-by-me-4711"])
def test_device_emulators_name_the_credential_variables_never_a_password(
    tmp_path: Path, kind: str, password: str | None
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")}
    extra = ["--password", password] if password else []
    proc = subprocess.Popen(
        [
            *airgap_command(),
            "emulate",
            kind,
            "--devices",
            "1",
            "--inventory-out",
            str(tmp_path / "inventory.csv"),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    notes: list[str] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        # The URL stays the first line on stdout: scripts and the README read it.
        assert first.startswith("https://127.0.0.1:"), first
        for line in proc.stderr:
            notes.append(line)
            if "_PASSWORD" in line:
                break
    finally:
        proc.terminate()
        rest_out, rest_err = proc.communicate(timeout=10)
    said = "".join(notes) + rest_err
    assert "credential 'lab'" in said
    assert "export AIRGAP_DEVICE_LAB_USERNAME=admin" in said
    chosen = "<the --password you gave>" if password else "<any non-empty password>"
    assert f"export AIRGAP_DEVICE_LAB_PASSWORD='{chosen}'" in said
    if password:
        assert password not in first + rest_out + said
