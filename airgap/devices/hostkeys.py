"""SSH host keys pinned in `<home>/known_hosts`, in OpenSSH's known_hosts format.

The first contact with a device is refused unless the caller accepts new keys (the CLI's
`--accept-new-host-keys`); the key is then pinned. A key that differs from the pinned one is
refused with `HostKeyMismatch` (E_HOSTKEY, exit 3), naming host:port and both fingerprints as
`ssh` shows them (`SHA256:<base64>`). Entries are `host key-type base64` for port 22 and
`[host]:port key-type base64` otherwise; hashed (`|1|…`) entries written by OpenSSH are read
too. Lines are added under a process-wide lock and an advisory file lock, by rewriting the whole
file atomically (mode 0600), so threads and processes pinning at once lose no line.

This module knows nothing of SSH itself: transports hand it the key type and key blob they
were offered, before any credential is sent.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from airgap.errors import ConfigError, HostKeyMismatch, HostKeyUnknown
from airgap.fsutil import atomic_write_bytes

__all__ = ["KNOWN_HOSTS", "HostKey", "KnownHosts", "fingerprint", "host_pattern"]

KNOWN_HOSTS = "known_hosts"
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True)
class HostKey:
    """A public host key: its type (`ssh-ed25519`, …) and its wire-format blob."""

    key_type: str
    blob: bytes

    @property
    def fingerprint(self) -> str:
        """`SHA256:<base64 without padding>`, as `ssh` prints it."""
        return fingerprint(self.blob)

    def openssh(self) -> str:
        """`key-type base64`, as a known_hosts line ends."""
        return f"{self.key_type} {base64.b64encode(self.blob).decode('ascii')}"


def fingerprint(blob: bytes) -> str:
    """The SHA-256 fingerprint of a key blob, as OpenSSH shows it."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def host_pattern(host: str, port: int) -> str:
    """How known_hosts names an address: `host` for port 22, `[host]:port` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def _hashed_match(entry: str, name: str) -> bool:
    # |1|base64(salt)|base64(HMAC-SHA1(salt, name))
    parts = entry.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        salt = base64.b64decode(parts[2])
        expected = base64.b64decode(parts[3])
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), expected)


def _names_match(field: str, name: str) -> bool:
    for entry in field.split(","):
        if entry.startswith("|1|"):
            if _hashed_match(entry, name):
                return True
        elif entry.lower() == name.lower():
            return True
    return False


class KnownHosts:
    """The known_hosts file of one airgap home."""

    def __init__(self, path: Path) -> None:
        """Use the file at `path` (created on first pin).

        Args:
            path: usually `<home>/known_hosts`.
        """
        self.path = path
        with _LOCKS_GUARD:
            self._lock = _LOCKS.setdefault(path.resolve(), threading.Lock())

    @classmethod
    def for_home(cls, home: Path) -> KnownHosts:
        """The known_hosts of an airgap home."""
        return cls(home / KNOWN_HOSTS)

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror or exc}") from exc

    def pinned(self, host: str, port: int) -> list[HostKey]:
        """The keys pinned for an address (markers such as @revoked are skipped).

        Raises:
            ConfigError: the file cannot be read.
        """
        return list(self._entries(self._read(), host_pattern(host, port)))

    def _entries(self, data: bytes, name: str) -> Iterator[HostKey]:
        for raw in data.decode("utf-8", errors="replace").splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", "@")):
                continue
            fields = line.split()
            if len(fields) < 3 or not _names_match(fields[0], name):
                continue
            try:
                blob = base64.b64decode(fields[2], validate=True)
            except (binascii.Error, ValueError):
                continue
            yield HostKey(fields[1], blob)

    def check(self, host: str, port: int, key: HostKey, *, accept_new: bool = False) -> bool:
        """Check an offered host key against the pin; pin it on first contact if allowed.

        Args:
            host: the address as the inventory gives it.
            port: the SSH port.
            key: the key the device offered.
            accept_new: pin a key for an address that has none yet.

        Raises:
            HostKeyMismatch: a key is pinned for the address and this one differs.
            HostKeyUnknown: nothing is pinned and `accept_new` is false.
            ConfigError: the file cannot be read or written.

        Returns:
            True if the key was pinned now, False if it was already pinned.
        """
        name = host_pattern(host, port)
        with self._lock, self._file_lock():
            pinned = list(self._entries(self._read(), name))
            if any(p == key for p in pinned):
                return False
            if pinned:
                known = ", ".join(f"{p.key_type} {p.fingerprint}" for p in pinned)
                raise HostKeyMismatch(
                    f"{name}: the SSH host key changed: the device offered {key.key_type} "
                    f"{key.fingerprint} but {self.path} pins {known}",
                    hint=(
                        "This may be an impostor. Check the key on the device's console "
                        "(`show ip ssh` / `show crypto key mypubkey`); if the change is expected, "
                        f"delete the line for {name} from {self.path} and run again with "
                        "--accept-new-host-keys."
                    ),
                )
            if not accept_new:
                raise HostKeyUnknown(
                    f"{name}: no SSH host key is pinned; the device offers {key.key_type} "
                    f"{key.fingerprint}",
                    hint=(
                        "Compare the fingerprint with the device's own, then run again with "
                        "--accept-new-host-keys to pin it."
                    ),
                )
            self._append(f"{name} {key.openssh()}\n".encode("ascii"))
            return True

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        # An advisory lock on a sibling file keeps other airgap processes out while one
        # rewrites known_hosts (the file itself is replaced, so it cannot carry the lock).
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _append(self, line: bytes) -> None:
        data = self._read()
        if data and not data.endswith(b"\n"):
            data += b"\n"
        try:
            atomic_write_bytes(self.path, data + line, mode=0o600)
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
