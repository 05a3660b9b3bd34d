"""Encrypted bundles received by a home whose keys are protected by a passphrase.

Every other encrypted round trip uses --no-passphrase homes; here the outside home is created
with a passphrase, so its age identity is itself an age (scrypt) file. The right passphrase
(AIRGAP_PASSPHRASE) opens the request; a wrong one is refused with E_AUTH before anything is
written or any vendor called; and the stock `age` CLI, asked for the passphrase on a terminal,
opens the request with the same identity file.
"""

from __future__ import annotations

import json
import os
import pty
import select
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bundles import make_request
from conftest import require_tool, run_airgap
from craft import reserve_item
from integration.conftest import DEMO_SECRETS, RunningEmulator, point_outside_at

from airgap.home import Home

PASSPHRASE = "correct horse battery staple 42"


@pytest.fixture
def locked_outside(
    make_home: Callable[..., Path], exchange_cards: Callable[[Path, Path], None]
) -> tuple[Path, Path]:
    """(inside without a passphrase, outside created with one), trusting each other."""
    inside = make_home("inside", name="lab")
    outside = make_home("outside", name="dmz", passphrase=PASSPHRASE)
    exchange_cards(inside, outside)
    identity = outside / "keys" / "age-identity.txt"
    # The identity is stored encrypted, not as a plain AGE-SECRET-KEY line.
    assert identity.read_bytes().startswith(b"age-encryption.org/v1")
    return inside, outside


def encrypted_request(inside: Path, out: Path) -> Path:
    written = make_request(inside, out, items=[reserve_item(1)], files={}, encrypt=True)
    assert written.path.read_bytes().startswith(b"age-encryption.org/v1\n")
    return written.path


def process(outside: Path, request: Path, response: Path, passphrase: str) -> dict[str, object]:
    result = run_airgap(
        "--json", "--home", str(outside), "outside", "process", str(request),
        "-o", str(response), "--rate", "0",
        env={**DEMO_SECRETS, "AIRGAP_PASSPHRASE": passphrase},
    )  # fmt: skip
    document: dict[str, object] = json.loads(result.stdout)
    document["exit"] = result.returncode
    return document


def verify(outside: Path, request: Path, passphrase: str) -> dict[str, object]:
    """`airgap verify`: decrypts with the home's identity and checks, signing nothing."""
    result = run_airgap(
        "--json", "--home", str(outside), "verify", str(request),
        env={"AIRGAP_PASSPHRASE": passphrase},
    )  # fmt: skip
    document: dict[str, object] = json.loads(result.stdout)
    document["exit"] = result.returncode
    return document


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_right_passphrase_opens_an_encrypted_request(
    locked_outside: tuple[Path, Path],
    start_emulator: Callable[..., RunningEmulator],
    tmp_path: Path,
) -> None:
    inside, outside = locked_outside
    cisco = start_emulator("cisco", "--poll-delay", "0.1")
    point_outside_at(outside, cisco=cisco.url)
    request = encrypted_request(inside, tmp_path / "req.airgap")
    checked = verify(outside, request, PASSPHRASE)
    assert checked["exit"] == 0 and checked["ok"] is True, checked
    response = tmp_path / "resp.airgap"
    done = process(outside, request, response, PASSPHRASE)
    assert done["exit"] == 0, done
    assert response.is_file()
    assert cisco.stats()["mutations"]["C9300-24T:FOC00000001"]["reserve"] == 1


def test_a_wrong_passphrase_is_e_auth_and_writes_nothing(
    locked_outside: tuple[Path, Path],
    start_emulator: Callable[..., RunningEmulator],
    tmp_path: Path,
) -> None:
    inside, outside = locked_outside
    cisco = start_emulator("cisco", "--poll-delay", "0.1")
    point_outside_at(outside, cisco=cisco.url)
    request = encrypted_request(inside, tmp_path / "transfer" / "req.airgap")
    response = tmp_path / "transfer" / "resp.airgap"
    transfer_before, home_before = snapshot(tmp_path / "transfer"), snapshot(outside)
    refused = process(outside, request, response, "not the passphrase")
    assert refused["exit"] == 1, refused
    assert refused["ok"] is False
    assert refused["error"]["code"] == "E_AUTH"  # type: ignore[index]
    assert PASSPHRASE not in json.dumps(refused)
    assert not response.exists()
    assert snapshot(tmp_path / "transfer") == transfer_before
    assert snapshot(outside) == home_before
    assert cisco.stats()["calls"] == {}
    # Decrypting alone (verify signs nothing) is refused the same way, by the age identity.
    checked = verify(outside, request, "not the passphrase")
    assert checked["exit"] == 1, checked
    assert checked["error"]["code"] == "E_AUTH"  # type: ignore[index]
    assert "age identity" in checked["error"]["message"]  # type: ignore[index]
    assert snapshot(tmp_path / "transfer") == transfer_before
    assert snapshot(outside) == home_before


def _age_with_a_terminal(argv: list[str], passphrase: str, timeout: float = 60) -> tuple[int, str]:
    """Run stock age on a pseudo-terminal, type `passphrase` when it asks; (status, screen)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: age, with the pty as its controlling terminal
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    screen = b""
    typed = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
            if not typed and b"passphrase" in screen.lower():
                os.write(fd, passphrase.encode() + b"\n")
                typed = True
        else:
            os.kill(pid, 9)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert typed, f"age never asked for the passphrase: {screen!r}"
    return os.waitstatus_to_exitcode(status), screen.decode(errors="replace")


@pytest.mark.interop
def test_stock_age_opens_the_request_with_the_passphrase_protected_identity(
    locked_outside: tuple[Path, Path], tmp_path: Path
) -> None:
    age = require_tool("age")
    inside, outside = locked_outside
    request = encrypted_request(inside, tmp_path / "req.airgap")
    identity = outside / "keys" / "age-identity.txt"

    wrong = tmp_path / "wrong.tar"
    status, screen = _age_with_a_terminal(
        [age, "-d", "-i", str(identity), "-o", str(wrong), str(request)], "not the passphrase"
    )
    assert status != 0, screen
    assert not wrong.exists() or wrong.stat().st_size == 0

    plain = tmp_path / "req.tar"
    status, screen = _age_with_a_terminal(
        [age, "-d", "-i", str(identity), "-o", str(plain), str(request)], PASSPHRASE
    )
    assert status == 0, screen
    with tarfile.open(plain) as tar:
        assert tar.getnames()[0] == "manifest.json"
    from airgap.bundle import verify_bundle

    verified = verify_bundle(plain, Home.open(outside).policy())
    assert verified.manifest.kind == "request"
