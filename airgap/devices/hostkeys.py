"""SSH host keys pinned in `<home>/known_hosts`, in OpenSSH's known_hosts format.

The first contact with a device is refused unless the caller accepts new keys (the CLI's
`--accept-new-host-keys`); the key is then pinned. A key that differs from the pinned one is
refused with `HostKeyMismatch` (E_HOSTKEY, exit 3), naming host:port and both fingerprints as
`ssh` shows them (`SHA256:<base64>`). Entries are `host key-type base64` for port 22 and
`[host]:port key-type base64` otherwise; hashed (`|1|…`) entries written by OpenSSH are read
too. A line is added by one append (mode 0600) under a process-wide lock and an advisory file
lock, so threads and processes pinning at once lose no line. The parsed file is kept and only
what was appended since is parsed again: a first contact with a large estate pins a key per
device, from the event loop every SSH transport shares.

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


@dataclass(frozen=True)
class _Index:
    """A parsed known_hosts: plain names → keys, and the hashed entries (matched one by one)."""

    plain: dict[str, list[HostKey]]
    hashed: list[tuple[str, HostKey]]

    @classmethod
    def parse(cls, data: bytes, base: _Index | None = None) -> _Index:
        """The entries of `data`, added to those of `base` (which is left as it is)."""
        plain: dict[str, list[HostKey]] = dict(base.plain) if base else {}
        hashed: list[tuple[str, HostKey]] = list(base.hashed) if base else []
        for raw in data.decode("utf-8", errors="replace").splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", "@")):
                continue
            fields = line.split()
            if len(fields) < 3:
                continue
            try:
                blob = base64.b64decode(fields[2], validate=True)
            except (binascii.Error, ValueError):
                continue
            key = HostKey(fields[1], blob)
            for entry in fields[0].split(","):
                if entry.startswith("|1|"):
                    hashed.append((entry, key))
                else:
                    # A new list, never an append to one `base` shares.
                    plain[entry.lower()] = [*plain.get(entry.lower(), []), key]
        return cls(plain, hashed)

    def lookup(self, name: str) -> list[HostKey]:
        found = list(self.plain.get(name.lower(), []))
        found += [key for entry, key in self.hashed if _hashed_match(entry, name)]
        return found


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
        # The file parsed once per version of it: a collect over a thousand devices would
        # otherwise read and parse the whole file for each device. With it, the bytes it was
        # parsed from: a file that only grew since (keys pinned) is parsed from there on.
        self._cache_lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], bytes, _Index] | None = None

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
        return self._index().lookup(host_pattern(host, port))

    def _index(self) -> _Index:
        try:
            stat = self.path.stat()
            version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            version = (0, 0, 0)
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        with self._cache_lock:
            cache = self._cache
        if cache is not None and cache[0] == version:
            return cache[2]
        data = self._read()
        if cache is not None and cache[1].endswith(b"\n") and data.startswith(cache[1]):
            index = _Index.parse(data[len(cache[1]) :], cache[2])  # lines appended since
        else:
            index = _Index.parse(data)
        with self._cache_lock:
            # `version` may be older than `data` (the file grew in between): the next call
            # then sees another version and parses what is past `data`, nothing twice.
            self._cache = (version, data, index)
        return index

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
        if key in self._index().lookup(name):
            return False  # the common case: a device seen before, offering its pinned key
        with self._lock, self._file_lock():
            index = self._index()  # as the file is now, under the lock
            pinned = index.lookup(name)
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
            line = f"{name} {key.openssh()}\n".encode("ascii")
            version, written = self._append(line)
            with self._cache_lock:
                cache = self._cache
                # Nobody else wrote in between (the size says so): the file is what was parsed
                # plus this line, so the next device's check need not read it again.
                if (
                    cache is not None
                    and cache[2] is index
                    and version[1] == len(cache[1]) + len(written)
                ):
                    self._cache = (version, cache[1] + written, _Index.parse(written, index))
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

    def _append(self, line: bytes) -> tuple[tuple[int, int, int], bytes]:
        """Append one line; the file's version after it and the bytes written."""
        # One append of one line (under the file lock): rewriting the whole file for each new
        # device made a first contact with a large estate quadratic. A line lost to a crash
        # only means the device is unknown again, which asks for --accept-new-host-keys.
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line
                os.write(fd, line)
                stat = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns), line
