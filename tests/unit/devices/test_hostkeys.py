"""Pinned SSH host keys: first use refused, accepting pins, a changed key is E_HOSTKEY."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import threading
from pathlib import Path

import pytest

from airgap.devices.hostkeys import HostKey, KnownHosts, fingerprint, host_pattern
from airgap.errors import HostKeyMismatch, HostKeyUnknown


def key(seed: int) -> HostKey:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes([seed]) * 32
    return HostKey("ssh-ed25519", blob)


def test_fingerprints_read_as_ssh_shows_them() -> None:
    blob = key(1).blob
    expected = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert fingerprint(blob) == f"SHA256:{expected}"
    assert host_pattern("10.0.0.1", 22) == "10.0.0.1"
    assert host_pattern("10.0.0.1", 2222) == "[10.0.0.1]:2222"


def test_first_contact_is_refused_unless_accepted_then_pinned(tmp_path: Path) -> None:
    known = KnownHosts.for_home(tmp_path)
    with pytest.raises(HostKeyUnknown) as caught:
        known.check("10.0.0.1", 2222, key(1))
    assert key(1).fingerprint in caught.value.message
    assert "--accept-new-host-keys" in (caught.value.hint or "")
    assert not known.path.exists()
    assert known.check("10.0.0.1", 2222, key(1), accept_new=True) is True
    assert known.check("10.0.0.1", 2222, key(1)) is False
    assert known.path.read_text() == f"[10.0.0.1]:2222 {key(1).openssh()}\n"
    assert stat.S_IMODE(os.stat(known.path).st_mode) == 0o600


def test_a_changed_key_is_refused_naming_both_fingerprints(tmp_path: Path) -> None:
    known = KnownHosts(tmp_path / "known_hosts")
    known.check("sw-1", 22, key(1), accept_new=True)
    with pytest.raises(HostKeyMismatch) as caught:
        known.check("sw-1", 22, key(2), accept_new=True)
    error = caught.value
    assert (error.code, error.exit_code) == ("E_HOSTKEY", 3)
    assert "sw-1" in error.message
    assert key(1).fingerprint in error.message and key(2).fingerprint in error.message
    assert "delete the line" in (error.hint or "")
    assert known.pinned("sw-1", 22) == [key(1)]


def test_openssh_hashed_entries_and_other_lines_are_read(tmp_path: Path) -> None:
    salt = b"0123456789abcdef0123"
    digest = hmac.new(salt, b"[10.0.0.9]:830", hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    path = tmp_path / "known_hosts"
    path.write_text(
        "# comment\n"
        f"@cert-authority * {key(5).openssh()}\n"
        f"{hashed} {key(3).openssh()}\n"
        f"other,10.0.0.8 {key(4).openssh()}"
    )
    known = KnownHosts(path)
    assert known.pinned("10.0.0.9", 830) == [key(3)]
    assert known.pinned("10.0.0.8", 22) == [key(4)]
    known.check("10.0.0.7", 22, key(6), accept_new=True)
    assert path.read_text().endswith(f"{key(4).openssh()}\n10.0.0.7 {key(6).openssh()}\n")


def test_pinning_from_many_threads_loses_no_line(tmp_path: Path) -> None:
    known = KnownHosts(tmp_path / "known_hosts")
    errors: list[BaseException] = []

    def pin(port: int) -> None:
        try:
            # Each thread uses its own KnownHosts on the same file, as transports do.
            KnownHosts(known.path).check("127.0.0.1", port, key(port % 256), accept_new=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pin, args=(10000 + n,)) for n in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    lines = known.path.read_text().splitlines()
    assert sorted(lines) == sorted(
        f"[127.0.0.1]:{10000 + n} {key((10000 + n) % 256).openssh()}" for n in range(64)
    )


def test_keys_pinned_by_another_process_are_seen_and_an_edit_is_read_anew(
    tmp_path: Path,
) -> None:
    known = KnownHosts(tmp_path / "known_hosts")
    known.check("sw-1", 22, key(1), accept_new=True)
    assert known.pinned("sw-2", 22) == []
    other = KnownHosts(known.path)  # another process: its own cache of the same file
    other.check("sw-2", 22, key(2), accept_new=True)
    assert known.pinned("sw-2", 22) == [key(2)]  # read from the appended line only
    with pytest.raises(HostKeyMismatch):
        known.check("sw-2", 22, key(3), accept_new=True)
    # An operator deletes sw-1's line (as the mismatch hint says): not a mere append.
    known.path.write_text(f"sw-2 {key(2).openssh()}\n")
    assert known.pinned("sw-1", 22) == []
    assert known.check("sw-1", 22, key(4), accept_new=True) is True
    assert known.pinned("sw-1", 22) == [key(4)]
    assert known.pinned("sw-2", 22) == [key(2)]
