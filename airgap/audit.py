"""The hash-chained, append-only audit log of a home (`audit.jsonl`).

Each line is one canonical JSON object whose `prev` is the SHA-256 of the previous line's
bytes (64 zeros for the first). `audit.head` keeps the hash of the last line, so an edit to
or removal of the last line is caught as well. No secrets are ever written here.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import getpass
import hashlib
import io
import json
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785

from airgap.errors import AuditError
from airgap.fsutil import atomic_write_bytes
from airgap.units import format_timestamp, utc_now

GENESIS = "0" * 64
EXPORT_FIELDS = (
    "seq",
    "ts",
    "user",
    "host",
    "fingerprint",
    "event",
    "outcome",
    "bundle_id",
    "manifest_sha256",
    "related_bundle_id",
    "related_manifest_sha256",
    "peer_audit_head",
    "details",
    "line_sha256",
)


@dataclass(frozen=True)
class Actor:
    """Who did it: the OS user, the host, and the home's key fingerprint."""

    user: str
    host: str
    fingerprint: str

    @classmethod
    def current(cls, fingerprint: str) -> Actor:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        return cls(user=user, host=socket.gethostname(), fingerprint=fingerprint)


@dataclass(frozen=True)
class AuditReport:
    """The result of a chain check."""

    entries: int
    head: str


def line_hash(line: bytes) -> str:
    """SHA-256 of one line's bytes (without its newline), the value the next `prev` holds."""
    return hashlib.sha256(line).hexdigest()


class AuditLog:
    """Appends to and checks one home's audit log."""

    def __init__(self, path: Path, head_path: Path, actor: Actor) -> None:
        self.path = path
        self.head_path = head_path
        self.actor = actor

    def append(
        self,
        event: str,
        *,
        outcome: str = "ok",
        bundle_id: str | None = None,
        manifest_sha256: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> str:
        """Append one event under an exclusive lock and fsync it; return the new line's hash."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                seq, prev = _last_entry(handle)
                entry: dict[str, Any] = {
                    "seq": seq + 1,
                    "ts": format_timestamp(utc_now()),
                    "actor": {
                        "user": self.actor.user,
                        "host": self.actor.host,
                        "fingerprint": self.actor.fingerprint,
                    },
                    "event": event,
                    "outcome": outcome,
                    "bundle_id": bundle_id,
                    "manifest_sha256": manifest_sha256,
                    "details": dict(details or {}),
                    "prev": prev,
                }
                line = rfc8785.dumps(entry)
                _remove_stale_head_temps(self.head_path)
                handle.seek(0, os.SEEK_END)
                handle.write(line + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
                head = line_hash(line)
                atomic_write_bytes(self.head_path, f"{seq + 1} {head}\n".encode("ascii"))
                return head
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def head(self) -> str:
        """The hash of the last entry (64 zeros for an empty log); what bundles carry."""
        if not self.path.exists():
            return GENESIS
        with self.path.open("rb") as handle:
            return _last_entry(handle)[1]

    def verify(self) -> AuditReport:
        """Check the whole chain and the recorded head.

        Raises:
            AuditError: naming the first broken line and why.
        """
        prev, count, before_last = GENESIS, 0, GENESIS
        for number, line in _lines(self.path):
            where = f"{self.path.name} line {number}"
            try:
                entry = json.loads(line)
            except ValueError:
                raise AuditError(f"{where}: not JSON (the line was edited)") from None
            if not isinstance(entry, dict) or rfc8785.dumps(entry) != line:
                raise AuditError(f"{where}: not in canonical form (the line was edited)")
            if entry.get("prev") != prev:
                raise AuditError(
                    f"{where}: chain broken: prev does not match the line before "
                    "(a line was edited, removed or moved)"
                )
            if entry.get("seq") != count + 1:
                raise AuditError(
                    f"{where}: sequence {entry.get('seq')} where {count + 1} was expected "
                    "(a line was removed or moved)"
                )
            before_last, prev, count = prev, line_hash(line), count + 1
        recorded = _read_head(self.head_path)
        # A process killed between appending (fsynced) and recording the new head leaves the
        # head one entry behind a last line that chains correctly: that is not tampering.
        one_behind = recorded == (count - 1, before_last)
        if recorded is not None and recorded != (count, prev) and not one_behind:
            raise AuditError(
                f"{self.path.name} line {count}: the log ends at entry {count} but audit.head "
                f"records entry {recorded[0]} (the last line was edited or removed)"
            )
        return AuditReport(entries=count, head=prev)

    def entries(self) -> Iterator[tuple[dict[str, Any], str]]:
        """Every entry with its line hash, oldest first (the chain is not checked here)."""
        for _, line in _lines(self.path):
            yield json.loads(line), line_hash(line)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    if not path.exists():
        return
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            yield number, raw.rstrip(b"\n")


def _last_entry(handle: io.BufferedIOBase | Any) -> tuple[int, str]:
    """The seq and hash of the last line, read from the end so appends stay O(1)."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    if size == 0:
        return 0, GENESIS
    block = min(size, 65536)
    while True:
        handle.seek(size - block)
        tail = handle.read(block).rstrip(b"\n")
        cut = tail.rfind(b"\n")
        if cut >= 0 or block == size:
            line = tail[cut + 1 :]
            break
        block = min(size, block * 4)
    try:
        seq = int(json.loads(line)["seq"])
    except (ValueError, KeyError, TypeError):
        raise AuditError(
            "the last line of the audit log is damaged", hint="Run `airgap audit verify`."
        ) from None
    return seq, line_hash(line)


def _remove_stale_head_temps(head_path: Path) -> None:
    """Drop `.audit.head.*.tmp` files a killed append left (callers hold the log's lock)."""
    for stale in head_path.parent.glob(f".{head_path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


def _read_head(path: Path) -> tuple[int, str] | None:
    try:
        seq, digest = path.read_text(encoding="ascii").split()
        return int(seq), digest
    except (OSError, ValueError):
        return None


def export_rows(log: AuditLog) -> list[dict[str, Any]]:
    """Flatten entries for compliance export: who, what, when, where, outcome, bundle ids."""
    rows = []
    for entry, digest in log.entries():
        actor = entry.get("actor") or {}
        details = entry.get("details") or {}
        # The other side's bundle: the request a response answers (process, import).
        request: dict[str, Any] = details.get("request") or {}
        if not isinstance(request, dict):
            request = {}
        rows.append(
            {
                "seq": entry.get("seq"),
                "ts": entry.get("ts"),
                "user": actor.get("user"),
                "host": actor.get("host"),
                "fingerprint": actor.get("fingerprint"),
                "event": entry.get("event"),
                "outcome": entry.get("outcome"),
                "bundle_id": entry.get("bundle_id"),
                "manifest_sha256": entry.get("manifest_sha256"),
                "related_bundle_id": request.get("bundle_id") or details.get("request_id"),
                "related_manifest_sha256": request.get("manifest_sha256")
                or details.get("request_manifest_sha256"),
                "peer_audit_head": request.get("producer_audit_head")
                or details.get("producer_audit_head"),
                "details": details,
                "line_sha256": digest,
            }
        )
    return rows


def export_csv(rows: list[dict[str, Any]]) -> str:
    """Render exported rows as CSV; `details` becomes compact JSON in one cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        cells = dict(row)
        cells["details"] = json.dumps(row["details"], sort_keys=True, separators=(",", ":"))
        writer.writerow({k: "" if v is None else v for k, v in cells.items()})
    return buffer.getvalue()
