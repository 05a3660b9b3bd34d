"""The outside item journal in `state.db` (DESIGN §7): requests seen, item states, responses.

The journal is what makes vendor calls at-most-once across crashes: the processor commits an
item's SUBMITTING row (durably, `synchronous=FULL`) before every non-idempotent vendor call, so
after `kill -9` an item is either still NEW (never sent) or SUBMITTING or later (maybe sent:
reconcile, never resend). It also enforces the replay rules for request bundles and the
one-process-per-request lease.

It does not call vendors, read bundles or build responses; it stores no secrets (fields named
like tokens, secrets or passwords are refused).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeAlias

from airgap.errors import AirgapError, Busy, InternalError, ItemCode, Replay, StateDbError

_log = logging.getLogger(__name__)


class ItemState(StrEnum):
    """Where an item stands. DONE and FAILED are final: a final item never changes again."""

    NEW = "NEW"  # admitted, nothing sent
    SUBMITTING = "SUBMITTING"  # committed before the vendor call: the call may have happened
    SUBMITTED = "SUBMITTED"  # the vendor accepted it; `vendor_ref` says how to find it again
    DONE = "DONE"
    FAILED = "FAILED"
    NEEDS_ATTENTION = "NEEDS_ATTENTION"  # could not be decided; only an operator resubmits it


FINAL_STATES: Final = frozenset({ItemState.DONE, ItemState.FAILED})

# target state -> states it may be reached from (the operator-only path NEEDS_ATTENTION ->
# SUBMITTING is `Journal.resubmit`, not in this table). NEEDS_ATTENTION may still be settled to
# DONE or FAILED when a later reconciliation finds out what the vendor did.
_SOURCES: Final[Mapping[ItemState, frozenset[ItemState]]] = {
    ItemState.SUBMITTING: frozenset({ItemState.NEW}),
    ItemState.SUBMITTED: frozenset({ItemState.SUBMITTING}),
    ItemState.DONE: frozenset(
        {ItemState.SUBMITTING, ItemState.SUBMITTED, ItemState.NEEDS_ATTENTION}
    ),
    ItemState.FAILED: frozenset(
        {ItemState.NEW, ItemState.SUBMITTING, ItemState.SUBMITTED, ItemState.NEEDS_ATTENTION}
    ),
    ItemState.NEEDS_ATTENTION: frozenset({ItemState.SUBMITTING, ItemState.SUBMITTED}),
}

ItemSpec: TypeAlias = tuple[str, str, str | None]
"""(item_id, action, device_key) of one request item; device_key is None for queries."""


# --- errors ------------------------------------------------------------------------------------


class JournalError(InternalError):
    """The processor asked the journal for something impossible (a bug, not an operator error)."""


class IllegalTransition(JournalError):
    """An item state change that the state machine forbids (e.g. a final item changing)."""

    def __init__(self, bundle_id: str, item_id: str, current: ItemState, wanted: ItemState) -> None:
        final = " (final: it never changes again)" if current in FINAL_STATES else ""
        super().__init__(
            f"item {item_id} of request {bundle_id}: illegal transition "
            f"{current.value} -> {wanted.value}{final}",
            hint="This is a bug in airgap; please report it with `airgap outside status`.",
        )
        self.bundle_id, self.item_id = bundle_id, item_id
        self.current, self.wanted = current, wanted


class UnknownItem(JournalError):
    """No such request item in the journal."""


# --- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JournalItem:
    """One request item as journaled."""

    bundle_id: str
    item_id: str
    action: str
    device_key: str | None
    state: ItemState
    vendor_ref: dict[str, Any] | None
    result: Any
    error: dict[str, Any] | None
    attempts: int  # times it went to SUBMITTING
    updated_at: str

    @property
    def final(self) -> bool:
        """True for DONE and FAILED."""
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class RequestRecord:
    """One request bundle seen by this home."""

    bundle_id: str
    producer_fingerprint: str
    sequence: int
    manifest_sha256: str
    kind: str
    received_at: str
    expires: str | None
    status: str  # "open" until every item is final, then "complete"


@dataclass(frozen=True)
class Admission:
    """What `admit_request` found: a new request, or one to resume."""

    request: RequestRecord
    new: bool
    items: tuple[JournalItem, ...]


@dataclass(frozen=True)
class ResponseRecord:
    """One response bundle emitted for a request."""

    bundle_id: str
    request_bundle_id: str
    manifest_sha256: str
    created: str
    path: str | None
    items_digest: str  # sha256 of the response's items.json: equal digests, identical items


@dataclass(frozen=True)
class Lease:
    """A claim on a request held by one process (see `Journal.claim`)."""

    bundle_id: str
    owner: str
    pid: int
    host: str
    started_at: str
    token: str


@dataclass(frozen=True)
class RequestSummary:
    """A request's line in `outside status`."""

    request: RequestRecord
    counts: Mapping[str, int]  # every ItemState value, 0 included
    responses: int


@dataclass(frozen=True)
class JournalSummary:
    """Everything `outside status` shows."""

    requests: tuple[RequestSummary, ...]
    attention: tuple[JournalItem, ...]  # NEEDS_ATTENTION items, oldest request first
    in_flight: tuple[JournalItem, ...] = field(default=())  # SUBMITTING: reconcile on resume

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for `--json`.

        Returns:
            `{"requests": [...], "attention": [...], "in_flight": [...]}`.
        """

        def item(it: JournalItem) -> dict[str, Any]:
            return {
                "bundle_id": it.bundle_id,
                "item_id": it.item_id,
                "action": it.action,
                "device": it.device_key,
                "state": it.state.value,
                "error": it.error,
                "updated_at": it.updated_at,
            }

        return {
            "requests": [
                {
                    "bundle_id": r.request.bundle_id,
                    "producer": r.request.producer_fingerprint,
                    "sequence": r.request.sequence,
                    "received_at": r.request.received_at,
                    "expires": r.request.expires,
                    "status": r.request.status,
                    "items": dict(r.counts),
                    "responses": r.responses,
                }
                for r in self.requests
            ],
            "attention": [item(i) for i in self.attention],
            "in_flight": [item(i) for i in self.in_flight],
        }


# --- schema and migrations ---------------------------------------------------------------------

Migration: TypeAlias = Callable[[sqlite3.Connection], None]


def _v1(conn: sqlite3.Connection) -> None:
    states = ", ".join(f"'{s.value}'" for s in ItemState)
    for statement in (
        """CREATE TABLE requests (
            bundle_id TEXT PRIMARY KEY,
            producer_fingerprint TEXT NOT NULL,
            sequence INTEGER NOT NULL,
            manifest_sha256 TEXT NOT NULL,
            kind TEXT NOT NULL,
            received_at TEXT NOT NULL,
            expires TEXT,
            status TEXT NOT NULL DEFAULT 'open')""",
        "CREATE INDEX requests_by_producer ON requests (producer_fingerprint, kind, sequence)",
        f"""CREATE TABLE items (
            bundle_id TEXT NOT NULL REFERENCES requests (bundle_id),
            item_id TEXT NOT NULL,
            action TEXT NOT NULL,
            device_key TEXT,
            state TEXT NOT NULL CHECK (state IN ({states})),
            vendor_ref TEXT,
            result TEXT,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (bundle_id, item_id))""",
        "CREATE INDEX items_by_state ON items (state)",
        """CREATE TABLE responses (
            bundle_id TEXT PRIMARY KEY,
            request_bundle_id TEXT NOT NULL REFERENCES requests (bundle_id),
            manifest_sha256 TEXT NOT NULL,
            created TEXT NOT NULL,
            path TEXT,
            items_digest TEXT NOT NULL)""",
        "CREATE INDEX responses_by_request ON responses (request_bundle_id, created)",
        """CREATE TABLE leases (
            bundle_id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            proc_start TEXT,
            started_at TEXT NOT NULL,
            token TEXT NOT NULL)""",
    ):
        conn.execute(statement)


# Migration hook: entry i takes the schema from version i to i + 1 (PRAGMA user_version). Append
# a function for every schema change and never edit one that has shipped.
MIGRATIONS: Final[tuple[Migration, ...]] = (_v1,)
SCHEMA_VERSION: Final = len(MIGRATIONS)


# --- helpers -----------------------------------------------------------------------------------

_SECRET_KEYS: Final = frozenset(
    {
        "accesstoken",
        "refreshtoken",
        "token",
        "idtoken",
        "clientsecret",
        "secret",
        "password",
        "passphrase",
        "authorization",
        "xf5authtoken",
        "apikey",
    }
)


def _refuse_secrets(value: object, where: str, depth: int = 0) -> None:
    """Raise if a value about to be journaled has a field that would hold a secret."""
    if depth > 16:
        return
    if isinstance(value, Mapping):
        for key, inner in value.items():
            normal = "".join(ch for ch in str(key).lower() if ch.isalnum())
            if normal in _SECRET_KEYS:
                raise JournalError(
                    f"refusing to store field {key!r} in the journal ({where}): secrets never "
                    "enter state.db"
                )
            _refuse_secrets(inner, where, depth + 1)
    elif isinstance(value, list | tuple):
        for inner in value:
            _refuse_secrets(inner, where, depth + 1)
    elif isinstance(value, str) and value.lstrip().lower().startswith(("bearer ", "basic ")):
        raise JournalError(f"refusing to store a credential in the journal ({where})")


def _dump(value: object, where: str) -> str | None:
    if value is None:
        return None
    _refuse_secrets(value, where)
    # Sorted and compact so that re-emitting an unchanged state gives identical bytes.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of a process from /proc, or None off Linux."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) S ppid ...": comm may hold spaces and parentheses, so split at the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return fields[0], fields[19]  # field 3 (state) and field 22 (starttime)


def _pid_alive(pid: int, proc_start: str | None) -> bool:
    """Whether `pid` on this host is still the process that took a lease."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    stat = _proc_stat(pid)
    if stat is not None:
        state, start = stat
        if state in ("Z", "X"):  # killed, not yet reaped by its parent
            return False
        if proc_start is not None and start != proc_start:  # the pid was reused
            return False
    return True


def _row_item(row: sqlite3.Row) -> JournalItem:
    return JournalItem(
        bundle_id=row["bundle_id"],
        item_id=row["item_id"],
        action=row["action"],
        device_key=row["device_key"],
        state=ItemState(row["state"]),
        vendor_ref=_load(row["vendor_ref"]),
        result=_load(row["result"]),
        error=_load(row["error"]),
        attempts=row["attempts"],
        updated_at=row["updated_at"],
    )


def _row_request(row: sqlite3.Row) -> RequestRecord:
    return RequestRecord(
        bundle_id=row["bundle_id"],
        producer_fingerprint=row["producer_fingerprint"],
        sequence=row["sequence"],
        manifest_sha256=row["manifest_sha256"],
        kind=row["kind"],
        received_at=row["received_at"],
        expires=row["expires"],
        status=row["status"],
    )


def _row_response(row: sqlite3.Row) -> ResponseRecord:
    return ResponseRecord(
        bundle_id=row["bundle_id"],
        request_bundle_id=row["request_bundle_id"],
        manifest_sha256=row["manifest_sha256"],
        created=row["created"],
        path=row["path"],
        items_digest=row["items_digest"],
    )


def _db_error(path: Path, exc: sqlite3.Error) -> AirgapError:
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return Busy(
            f"{path} is locked by another process",
            hint="Another airgap process is using this home; wait for it and try again.",
        )
    return StateDbError(
        f"{path}: {text}",
        hint="Check the home directory (disk space, permissions); restore state.db from a "
        "backup if it is damaged.",
    )


# --- the journal -------------------------------------------------------------------------------


class Journal:
    """The outside home's `state.db`. Create with `Journal.open(path)`; use as a context manager.

    Threads: one sqlite3 connection guarded by a lock. SQLite lets only one writer in at a time
    anyway, so per-thread connections would buy nothing for the writes that matter and would
    make threads of one process fight over the file lock through `busy_timeout`; each
    transition is a sub-millisecond transaction plus one fsync, small beside the vendor call it
    guards. Processes: every write is `BEGIN IMMEDIATE`, so a check-then-update (the state
    machine, the replay rules, the lease) is atomic against other processes too.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        clock: Callable[[], datetime],
    ) -> None:
        """Wrap an open connection; use `Journal.open` instead."""
        self._conn = conn
        self.path = path
        self._clock = clock
        self._lock = threading.RLock()
        self._closed = False

    # --- lifecycle

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        busy_timeout: float = 10.0,
        clock: Callable[[], datetime] | None = None,
    ) -> Journal:
        """Open (creating with mode 0600 if needed) and migrate `state.db`.

        Args:
            path: the database file; its directory must exist (the home).
            busy_timeout: seconds to wait for another process's write lock.
            clock: the current time (injectable for tests; default UTC now).

        Returns:
            The open journal.

        Raises:
            StateDbError: (E_CONFIG) the directory is missing, the file is not a usable SQLite
                database, or its schema is newer than this airgap understands.
            Busy: (E_BUSY) another process kept the database locked past `busy_timeout`.
        """
        path = Path(path)
        if not path.parent.is_dir():
            raise StateDbError(
                f"cannot open {path}: directory {path.parent} does not exist",
                hint="Run `airgap init --role outside` first, or pass the right --home.",
            )
        try:
            # Create the file ourselves so that it is born 0600; SQLite gives the -wal and
            # -shm files the same mode as the database.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise StateDbError(f"cannot create {path}: {exc.strerror}") from exc
        conn: sqlite3.Connection | None = None
        try:
            # isolation_level=None: no implicit transactions; every write says BEGIN IMMEDIATE.
            conn = sqlite3.connect(
                str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateDbError(f"{path}: cannot switch to WAL journal mode (got {mode})")
            # FULL: a COMMIT is on disk before it returns. The SUBMITTING row must survive a
            # power cut that follows the vendor call it guards; NORMAL could lose it in WAL mode.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            cls._migrate(conn, path)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise _db_error(path, exc) from exc
        except AirgapError:
            if conn is not None:
                conn.close()
            raise
        return cls(conn, path, clock or (lambda: datetime.now(UTC)))

    @staticmethod
    def _migrate(conn: sqlite3.Connection, path: Path) -> None:
        conn.execute("BEGIN IMMEDIATE")  # two processes opening a fresh file migrate once
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateDbError(
                    f"{path} has schema version {version}; this airgap understands up to "
                    f"{SCHEMA_VERSION}",
                    hint="Upgrade airgap; the state was written by a newer version.",
                )
            for number in range(version, SCHEMA_VERSION):
                MIGRATIONS[number](conn)
                conn.execute(f"PRAGMA user_version = {number + 1}")
                _log.debug("migrated %s to schema %d", path, number + 1)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- plumbing

    def _now(self) -> str:
        return _iso(self._clock())

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE ... COMMIT, durable when it returns."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _db_error(self.path, exc) from exc
            try:
                yield self._conn
            except BaseException as exc:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    _log.warning("rollback failed on %s", self.path, exc_info=True)
                if isinstance(exc, sqlite3.Error):
                    raise _db_error(self.path, exc) from exc
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise _db_error(self.path, exc) from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise _db_error(self.path, exc) from exc

    # --- requests

    def admit_request(
        self,
        bundle_id: str,
        producer_fp: str,
        sequence: int,
        manifest_sha256: str,
        items: Sequence[ItemSpec],
        *,
        kind: str = "request",
        expires: str | None = None,
    ) -> Admission:
        """Record a verified request bundle and its items, or find it again to resume.

        All in one transaction: either the request and every item (state NEW) are stored, or
        nothing is.

        Args:
            bundle_id: the manifest's bundle_id.
            producer_fp: the producer's fingerprint (`sha256:…`).
            sequence: the manifest's sequence.
            manifest_sha256: SHA-256 of the exact manifest.json bytes (the bundle's identity).
            items: (item_id, action, device_key) per request item, in request order.
            kind: the bundle kind.
            expires: the manifest's expiry, kept for `outside status`.

        Returns:
            `new=True` with fresh NEW items, or `new=False` with the journaled state to resume.

        Raises:
            Replay: (E_REPLAY) the id was seen with a different manifest hash, or the sequence is
                not above the highest already seen from this producer.
            JournalError: (E_INTERNAL) duplicate item ids.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        ids = [spec[0] for spec in items]
        if len(set(ids)) != len(ids):
            raise JournalError(f"request {bundle_id} lists an item id more than once")
        with self._write() as conn:
            row = conn.execute(
                "SELECT * FROM requests WHERE bundle_id = ?", (bundle_id,)
            ).fetchone()
            if row is not None:
                if row["manifest_sha256"] != manifest_sha256:
                    raise Replay(
                        f"request {bundle_id} was already received with manifest sha256 "
                        f"{row['manifest_sha256']}; this copy has {manifest_sha256}",
                        hint="A bundle id was reused for different content; ask the inside site "
                        "for a fresh request.",
                    )
                found = conn.execute(
                    "SELECT * FROM items WHERE bundle_id = ? ORDER BY rowid", (bundle_id,)
                ).fetchall()
                return Admission(_row_request(row), False, tuple(_row_item(r) for r in found))
            highest = conn.execute(
                "SELECT MAX(sequence) FROM requests WHERE producer_fingerprint = ? AND kind = ?",
                (producer_fp, kind),
            ).fetchone()[0]
            if highest is not None and sequence <= highest:
                raise Replay(
                    f"request {bundle_id} carries sequence {sequence}, but sequence {highest} "
                    f"was already received from {producer_fp}",
                    hint="This is an old or replayed request; ask the inside site for a fresh one.",
                )
            now = self._now()
            conn.execute(
                "INSERT INTO requests (bundle_id, producer_fingerprint, sequence, "
                "manifest_sha256, kind, received_at, expires, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    bundle_id,
                    producer_fp,
                    sequence,
                    manifest_sha256,
                    kind,
                    now,
                    expires,
                    "complete" if not items else "open",
                ),
            )
            conn.executemany(
                "INSERT INTO items (bundle_id, item_id, action, device_key, state, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(bundle_id, i, a, d, ItemState.NEW.value, now) for i, a, d in items],
            )
            request = conn.execute(
                "SELECT * FROM requests WHERE bundle_id = ?", (bundle_id,)
            ).fetchone()
            fresh = conn.execute(
                "SELECT * FROM items WHERE bundle_id = ? ORDER BY rowid", (bundle_id,)
            ).fetchall()
            return Admission(_row_request(request), True, tuple(_row_item(r) for r in fresh))

    def request(self, bundle_id: str) -> RequestRecord | None:
        """The journaled request, or None.

        Args:
            bundle_id: the request's bundle id.

        Returns:
            The record or None.

        Raises:
            StateDbError: (E_CONFIG) the database failed.
        """
        with self._read() as conn:
            row = conn.execute(
                "SELECT * FROM requests WHERE bundle_id = ?", (bundle_id,)
            ).fetchone()
        return None if row is None else _row_request(row)

    # --- items

    def item(self, bundle_id: str, item_id: str) -> JournalItem:
        """One item.

        Args:
            bundle_id: the request.
            item_id: the item.

        Returns:
            The item.

        Raises:
            UnknownItem: (E_INTERNAL) no such item.
            StateDbError: (E_CONFIG) the database failed.
        """
        with self._read() as conn:
            row = conn.execute(
                "SELECT * FROM items WHERE bundle_id = ? AND item_id = ?", (bundle_id, item_id)
            ).fetchone()
        if row is None:
            raise UnknownItem(f"request {bundle_id} has no item {item_id} in the journal")
        return _row_item(row)

    def items(self, bundle_id: str) -> list[JournalItem]:
        """Every item of a request, in request order.

        Args:
            bundle_id: the request.

        Returns:
            The items (empty for an unknown request).

        Raises:
            StateDbError: (E_CONFIG) the database failed.
        """
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM items WHERE bundle_id = ? ORDER BY rowid", (bundle_id,)
            ).fetchall()
        return [_row_item(r) for r in rows]

    def items_in(self, bundle_id: str, states: Collection[ItemState | str]) -> list[JournalItem]:
        """The items of a request in any of `states`, in request order.

        Args:
            bundle_id: the request.
            states: the states wanted.

        Returns:
            The items.

        Raises:
            ValueError: a state name is not an `ItemState`.
            StateDbError: (E_CONFIG) the database failed.
        """
        wanted = sorted({ItemState(s).value for s in states})
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT * FROM items WHERE bundle_id = ? AND state IN ({marks}) ORDER BY rowid",
                (bundle_id, *wanted),
            ).fetchall()
        return [_row_item(r) for r in rows]

    def _transition(
        self,
        bundle_id: str,
        item_id: str,
        target: ItemState,
        sources: frozenset[ItemState],
        *,
        vendor_ref: object = None,
        result: object = None,
        error: object = None,
        clear: bool = False,
        bump: bool = False,
    ) -> JournalItem:
        """Move one item to `target` if its current state is in `sources`; durable on return."""
        ref_text = _dump(vendor_ref, f"{item_id} vendor_ref")
        result_text = _dump(result, f"{item_id} result")
        error_text = _dump(error, f"{item_id} error")
        with self._write() as conn:
            row = conn.execute(
                "SELECT state FROM items WHERE bundle_id = ? AND item_id = ?",
                (bundle_id, item_id),
            ).fetchone()
            if row is None:
                raise UnknownItem(f"request {bundle_id} has no item {item_id} in the journal")
            current = ItemState(row["state"])
            if current not in sources:
                raise IllegalTransition(bundle_id, item_id, current, target)
            # COALESCE keeps what earlier states recorded (e.g. the vendor_ref of SUBMITTED
            # stays beside DONE's result); `clear` is the operator's fresh start.
            conn.execute(
                "UPDATE items SET state = ?, "
                "vendor_ref = CASE WHEN ? THEN ? ELSE COALESCE(?, vendor_ref) END, "
                "result = COALESCE(?, result), "
                "error = CASE WHEN ? THEN ? ELSE COALESCE(?, error) END, "
                "attempts = attempts + ?, updated_at = ? "
                "WHERE bundle_id = ? AND item_id = ?",
                (
                    target.value,
                    clear,
                    ref_text,
                    ref_text,
                    result_text,
                    clear,
                    error_text,
                    error_text,
                    1 if bump else 0,
                    self._now(),
                    bundle_id,
                    item_id,
                ),
            )
            if target in FINAL_STATES:
                open_left = conn.execute(
                    "SELECT COUNT(*) FROM items WHERE bundle_id = ? AND state NOT IN (?, ?)",
                    (bundle_id, ItemState.DONE.value, ItemState.FAILED.value),
                ).fetchone()[0]
                if open_left == 0:
                    conn.execute(
                        "UPDATE requests SET status = 'complete' WHERE bundle_id = ?", (bundle_id,)
                    )
            updated = conn.execute(
                "SELECT * FROM items WHERE bundle_id = ? AND item_id = ?", (bundle_id, item_id)
            ).fetchone()
        _log.debug("item %s/%s: %s -> %s", bundle_id, item_id, current.value, target.value)
        return _row_item(updated)

    def mark_submitting(self, bundle_id: str, item_id: str) -> JournalItem:
        """NEW → SUBMITTING. Commit this before every non-idempotent vendor call.

        Args:
            bundle_id: the request.
            item_id: the item.

        Returns:
            The updated item (attempts incremented).

        Raises:
            IllegalTransition: (E_INTERNAL) the item is not NEW (e.g. left SUBMITTING by a crash:
                reconcile it instead).
            UnknownItem: (E_INTERNAL) no such item.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        return self._transition(
            bundle_id, item_id, ItemState.SUBMITTING, _SOURCES[ItemState.SUBMITTING], bump=True
        )

    def mark_submitted(
        self, bundle_id: str, item_id: str, vendor_ref: Mapping[str, Any]
    ) -> JournalItem:
        """SUBMITTING → SUBMITTED, with what finds the vendor's work again (poll id, task link).

        Args:
            bundle_id: the request.
            item_id: the item.
            vendor_ref: JSON-able reference, e.g. `{"poll_id": 773126444402795033}`; no secrets.

        Returns:
            The updated item.

        Raises:
            IllegalTransition: (E_INTERNAL) the item is not SUBMITTING.
            UnknownItem: (E_INTERNAL) no such item.
            JournalError: (E_INTERNAL) the reference holds a secret-named field.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        return self._transition(
            bundle_id,
            item_id,
            ItemState.SUBMITTED,
            _SOURCES[ItemState.SUBMITTED],
            vendor_ref=dict(vendor_ref),
        )

    def mark_done(self, bundle_id: str, item_id: str, result: Any) -> JournalItem:
        """SUBMITTING | SUBMITTED | NEEDS_ATTENTION → DONE (final).

        Args:
            bundle_id: the request.
            item_id: the item.
            result: JSON-able result (e.g. `{"files": [...]}`); no secrets.

        Returns:
            The updated item.

        Raises:
            IllegalTransition: (E_INTERNAL) the item is NEW or already final.
            UnknownItem: (E_INTERNAL) no such item.
            JournalError: (E_INTERNAL) the result holds a secret-named field.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        return self._transition(
            bundle_id, item_id, ItemState.DONE, _SOURCES[ItemState.DONE], result=result
        )

    def mark_failed(self, bundle_id: str, item_id: str, error: Mapping[str, Any]) -> JournalItem:
        """NEW | SUBMITTING | SUBMITTED | NEEDS_ATTENTION → FAILED (final).

        Args:
            bundle_id: the request.
            item_id: the item.
            error: `{"code": "E_…", "message": "…"}` (redacted by the caller's HTTP layer).

        Returns:
            The updated item.

        Raises:
            IllegalTransition: (E_INTERNAL) the item is already final.
            UnknownItem: (E_INTERNAL) no such item.
            JournalError: (E_INTERNAL) the error holds a secret-named field.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        return self._transition(
            bundle_id, item_id, ItemState.FAILED, _SOURCES[ItemState.FAILED], error=dict(error)
        )

    def mark_needs_attention(self, bundle_id: str, item_id: str, reason: str) -> JournalItem:
        """SUBMITTING | SUBMITTED → NEEDS_ATTENTION: reconciliation could not decide.

        Args:
            bundle_id: the request.
            item_id: the item.
            reason: what the operator should know; stored as the item's error
                `{"code": "NEEDS_ATTENTION", "message": reason}`.

        Returns:
            The updated item.

        Raises:
            IllegalTransition: (E_INTERNAL) the item is NEW, final or already NEEDS_ATTENTION.
            UnknownItem: (E_INTERNAL) no such item.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        return self._transition(
            bundle_id,
            item_id,
            ItemState.NEEDS_ATTENTION,
            _SOURCES[ItemState.NEEDS_ATTENTION],
            error={"code": ItemCode.NEEDS_ATTENTION, "message": reason},
        )

    def resubmit(self, bundle_id: str, item_id: str) -> JournalItem:
        """NEEDS_ATTENTION → SUBMITTING: the operator's `--resubmit ITEM`, and the only way back.

        Clears the old vendor_ref and error; the caller then makes the vendor call.

        Args:
            bundle_id: the request.
            item_id: the item.

        Returns:
            The updated item (attempts incremented).

        Raises:
            IllegalTransition: (E_INTERNAL) the item is not NEEDS_ATTENTION.
            UnknownItem: (E_INTERNAL) no such item.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        return self._transition(
            bundle_id,
            item_id,
            ItemState.SUBMITTING,
            frozenset({ItemState.NEEDS_ATTENTION}),
            clear=True,
            bump=True,
        )

    def release(self, bundle_id: str, item_id: str) -> JournalItem:
        """SUBMITTING → NEW: the vendor certainly did not act (nothing reached it, or a lookup
        found no trace), so the item may be submitted again.

        Args:
            bundle_id: the request.
            item_id: the item.

        Returns:
            The updated item.

        Raises:
            IllegalTransition: (E_INTERNAL) the item is not SUBMITTING.
            UnknownItem: (E_INTERNAL) no such item.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        return self._transition(
            bundle_id,
            item_id,
            ItemState.NEW,
            frozenset({ItemState.SUBMITTING}),
            clear=True,
        )

    # --- responses

    def record_response(
        self,
        response_bundle_id: str,
        request_bundle_id: str,
        manifest_sha256: str,
        items_digest: str,
        *,
        path: Path | str | None = None,
        created: str | None = None,
    ) -> ResponseRecord:
        """Remember a response bundle emitted for a request.

        Args:
            response_bundle_id: the response's bundle id.
            request_bundle_id: the request it answers.
            manifest_sha256: SHA-256 of the response's manifest.json.
            items_digest: SHA-256 of its items.json (to spot an unchanged re-emit).
            path: where it was written.
            created: the manifest's `created` (default: now).

        Returns:
            The record.

        Raises:
            JournalError: (E_INTERNAL) the request is unknown or the response id is taken.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        with self._write() as conn:
            known = conn.execute(
                "SELECT 1 FROM requests WHERE bundle_id = ?", (request_bundle_id,)
            ).fetchone()
            if known is None:
                raise JournalError(f"response for unknown request {request_bundle_id}")
            try:
                conn.execute(
                    "INSERT INTO responses (bundle_id, request_bundle_id, manifest_sha256, "
                    "created, path, items_digest) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        response_bundle_id,
                        request_bundle_id,
                        manifest_sha256,
                        created or self._now(),
                        None if path is None else str(path),
                        items_digest,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise JournalError(f"response {response_bundle_id} is already recorded") from exc
            row = conn.execute(
                "SELECT * FROM responses WHERE bundle_id = ?", (response_bundle_id,)
            ).fetchone()
        return _row_response(row)

    def responses_for(self, request_bundle_id: str) -> list[ResponseRecord]:
        """Responses emitted for a request, oldest first.

        Args:
            request_bundle_id: the request.

        Returns:
            The records.

        Raises:
            StateDbError: (E_CONFIG) the database failed.
        """
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM responses WHERE request_bundle_id = ? ORDER BY created, rowid",
                (request_bundle_id,),
            ).fetchall()
        return [_row_response(r) for r in rows]

    def next_response_sequence(self) -> int:
        """The sequence for the next response this home emits: one above every one so far.

        Raises:
            StateDbError: (E_CONFIG) the database failed.
        """
        with self._read() as conn:
            row = conn.execute("SELECT COUNT(*) FROM responses").fetchone()
        return int(row[0]) + 1

    # --- status

    def summary(self) -> JournalSummary:
        """Everything `airgap outside status` shows.

        Returns:
            Requests (oldest first) with item counts per state and response counts, the items
            needing attention, and the items left SUBMITTING.

        Raises:
            StateDbError: (E_CONFIG) the database failed.
        """
        with self._read() as conn:
            requests = conn.execute("SELECT * FROM requests ORDER BY received_at, rowid").fetchall()
            counts = conn.execute(
                "SELECT bundle_id, state, COUNT(*) AS n FROM items GROUP BY bundle_id, state"
            ).fetchall()
            responses = conn.execute(
                "SELECT request_bundle_id, COUNT(*) AS n FROM responses GROUP BY request_bundle_id"
            ).fetchall()
            stuck = conn.execute(
                "SELECT items.* FROM items JOIN requests USING (bundle_id) "
                "WHERE items.state IN (?, ?) ORDER BY requests.received_at, items.rowid",
                (ItemState.NEEDS_ATTENTION.value, ItemState.SUBMITTING.value),
            ).fetchall()
        per: dict[str, dict[str, int]] = {}
        for row in counts:
            per.setdefault(row["bundle_id"], {})[row["state"]] = row["n"]
        answered = {row["request_bundle_id"]: row["n"] for row in responses}
        out = []
        for row in requests:
            got = per.get(row["bundle_id"], {})
            out.append(
                RequestSummary(
                    request=_row_request(row),
                    counts={s.value: got.get(s.value, 0) for s in ItemState},
                    responses=answered.get(row["bundle_id"], 0),
                )
            )
        items = [_row_item(r) for r in stuck]
        return JournalSummary(
            requests=tuple(out),
            attention=tuple(i for i in items if i.state is ItemState.NEEDS_ATTENTION),
            in_flight=tuple(i for i in items if i.state is ItemState.SUBMITTING),
        )

    # --- leases

    @contextmanager
    def claim(self, bundle_id: str, owner: str) -> Iterator[Lease]:
        """Hold a request for this process while it works on it; released on exit.

        The lease is a row in `leases` taken with BEGIN IMMEDIATE, naming pid, host, process
        start time and time taken. A second claimant is refused while the holder lives; a lease
        whose holder is dead on this host (gone, a zombie, or its pid reused) is taken over.

        Args:
            bundle_id: the request.
            owner: who is working (e.g. "outside process"), shown to a refused claimant.

        Yields:
            The lease.

        Raises:
            Busy: (E_BUSY) another live process (or another host) holds the request.
            StateDbError: (E_CONFIG) the database failed.
        """
        lease = self._take_lease(bundle_id, owner)
        try:
            yield lease
        finally:
            self._release_lease(lease)

    def _take_lease(self, bundle_id: str, owner: str) -> Lease:
        pid, host = os.getpid(), socket.gethostname()
        stat = _proc_stat(pid)
        with self._write() as conn:
            row = conn.execute("SELECT * FROM leases WHERE bundle_id = ?", (bundle_id,)).fetchone()
            if row is not None:
                if row["host"] == host and not _pid_alive(row["pid"], row["proc_start"]):
                    _log.warning(
                        "taking over the claim on %s left by dead pid %d (%s, since %s)",
                        bundle_id,
                        row["pid"],
                        row["owner"],
                        row["started_at"],
                    )
                    conn.execute("DELETE FROM leases WHERE bundle_id = ?", (bundle_id,))
                else:
                    where = "" if row["host"] == host else f" on host {row['host']}"
                    raise Busy(
                        f"request {bundle_id} is claimed by {row['owner']} (pid {row['pid']}"
                        f"{where}, since {row['started_at']})",
                        hint="another airgap outside process is working on this request "
                        f"(pid {row['pid']}{where}); wait for it to finish"
                        + (
                            ""
                            if row["host"] == host
                            else ", or release a stale claim with break_claim"
                        ),
                    )
            lease = Lease(bundle_id, owner, pid, host, self._now(), uuid.uuid4().hex)
            conn.execute(
                "INSERT INTO leases (bundle_id, owner, pid, host, proc_start, started_at, token) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    bundle_id,
                    owner,
                    pid,
                    host,
                    None if stat is None else stat[1],
                    lease.started_at,
                    lease.token,
                ),
            )
        return lease

    def _release_lease(self, lease: Lease) -> None:
        try:
            with self._write() as conn:
                # The token makes sure we never delete a lease someone else took over.
                conn.execute(
                    "DELETE FROM leases WHERE bundle_id = ? AND token = ?",
                    (lease.bundle_id, lease.token),
                )
        except AirgapError:
            # Not fatal: once this process ends, the next claimant sees the holder dead.
            _log.warning("could not release the claim on %s", lease.bundle_id, exc_info=True)

    def break_claim(self, bundle_id: str) -> Lease | None:
        """Remove a claim whatever its holder (operator path, e.g. after the host was renamed).

        Args:
            bundle_id: the request.

        Returns:
            The lease removed, or None if there was none.

        Raises:
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        with self._write() as conn:
            row = conn.execute("SELECT * FROM leases WHERE bundle_id = ?", (bundle_id,)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM leases WHERE bundle_id = ?", (bundle_id,))
        return Lease(
            row["bundle_id"], row["owner"], row["pid"], row["host"], row["started_at"], row["token"]
        )
