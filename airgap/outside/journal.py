"""The outside item journal in `state.db`: requests seen, item states and outcomes, responses.

The journal is what makes vendor calls at-most-once across crashes: the processor commits an
item's SUBMITTING row (durably, `synchronous=FULL`) before every non-idempotent vendor call, so
after `kill -9` an item is either still NEW (never sent) or SUBMITTING or later (maybe sent:
reconcile, never resend). It also enforces the replay rules for request bundles and the
one-process-per-request lease. The file is opened, migrated and written through
`airgap.statedb`.

An item's outcome is stored as it came from the vendor client (`Outcome`): the result, the
error, the vendor's references and the files' bytes each in their own column or table, and
every change hands back the item as now stored, so the processor never reads it again.

It does not call vendors, read bundles or build responses; it stores no secrets (fields named
like tokens, secrets or passwords are refused).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import os
import socket
import sqlite3
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TypeAlias

from airgap.errors import (
    AirgapError,
    Busy,
    InternalError,
    ItemCode,
    Replay,
    StateDbError,
    VendorError,
)
from airgap.outside.vendor import Outcome
from airgap.statedb import BUSY_TIMEOUT, Migration, Schema, StateDb, StateStore, row_record

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
_OPEN_STATES: Final = tuple(sorted(s.value for s in ItemState if s not in FINAL_STATES))
_ANY_OPEN: Final = (
    "SELECT EXISTS (SELECT 1 FROM items WHERE bundle_id = ? AND state IN ("
    + ", ".join("?" for _ in _OPEN_STATES)
    + "))"
)

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
    """One request item as journaled.

    `vendor_ref` finds the vendor's work again (kept from SUBMITTED on); `result`, `error`,
    `outcome_refs` and `files` are what the item's final outcome said: the vendor's result, the
    `{"code", "message"}` of a failure or of NEEDS_ATTENTION, the references the outcome carried
    (strings), and the files (name → bytes) a DONE item answers with.
    """

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
    outcome_refs: dict[str, str] | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)

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


@dataclass(frozen=True)
class _Change:
    """One item's move within a journal commit; the JSON texts are already checked for secrets."""

    item_id: str
    target: ItemState
    sources: frozenset[ItemState]
    vendor_ref: str | None = None
    result: str | None = None
    error: str | None = None
    outcome_refs: str | None = None
    files: Mapping[str, bytes] | None = None
    clear: bool = False
    bump: bool = False


# --- schema and migrations ---------------------------------------------------------------------


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


def _v2(conn: sqlite3.Connection) -> None:
    # Outcomes in their own places: `result` holds the vendor's result alone, `outcome_refs` the
    # references the final outcome carried, `item_files` the files' bytes. Version 1 stored a
    # DONE item's outcome as one JSON document `{"result", "files" (base64), "vendor_refs"}` in
    # `result` and folded a failed item's result into its error as `error.result`; those rows
    # are converted as the version 1 response writer read them, so a re-emitted response stays
    # byte-identical.
    conn.execute("ALTER TABLE items ADD COLUMN outcome_refs TEXT")
    conn.execute(
        """CREATE TABLE item_files (
            bundle_id TEXT NOT NULL,
            item_id TEXT NOT NULL,
            name TEXT NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (bundle_id, item_id, name),
            FOREIGN KEY (bundle_id, item_id) REFERENCES items (bundle_id, item_id))"""
    )
    done = conn.execute(
        "SELECT bundle_id, item_id, result FROM items WHERE state = 'DONE' AND result IS NOT NULL"
    ).fetchall()
    for bundle_id, item_id, text in done:
        stored = json.loads(text)
        if not isinstance(stored, dict):
            continue  # not written by the version 1 processor: nothing to take apart
        files = stored.get("files") or {}
        conn.execute(
            "UPDATE items SET result = ?, outcome_refs = ? WHERE bundle_id = ? AND item_id = ?",
            (
                _json(dict(stored.get("result") or {})),
                _json(dict(stored.get("vendor_refs") or {})),
                bundle_id,
                item_id,
            ),
        )
        try:
            conn.executemany(
                "INSERT INTO item_files (bundle_id, item_id, name, data) VALUES (?, ?, ?, ?)",
                [
                    (bundle_id, item_id, name, base64.b64decode(encoded, validate=True))
                    for name, encoded in files.items()
                ],
            )
        except (binascii.Error, TypeError) as exc:
            raise StateDbError(
                f"item {item_id} of request {bundle_id}: a stored file is not base64 ({exc})",
                hint="state.db was changed by hand; restore it from a backup.",
            ) from exc
    failed = conn.execute(
        "SELECT bundle_id, item_id, error FROM items WHERE state = 'FAILED' AND error IS NOT NULL"
    ).fetchall()
    for bundle_id, item_id, text in failed:
        error = json.loads(text)
        if not isinstance(error, dict) or "result" not in error:
            continue
        # Version 1 answered a failed item with `error.result` and nothing else as its result.
        result = error.pop("result")
        conn.execute(
            "UPDATE items SET result = ?, error = ? WHERE bundle_id = ? AND item_id = ?",
            (_json(dict(result)) if result else None, _json(error), bundle_id, item_id),
        )


def _v3(conn: sqlite3.Connection) -> None:
    # Whether a request still has an open item is asked at every commit that makes an item final;
    # with this index it is a seek, not a scan of the request's items (quadratic over a batch).
    conn.execute("CREATE INDEX items_by_request_state ON items (bundle_id, state)")


# Entry i takes the schema from version i to i + 1 (PRAGMA user_version). Append a function for
# every schema change and never edit one that has shipped.
MIGRATIONS: Final[tuple[Migration, ...]] = (_v1, _v2, _v3)
SCHEMA: Final = Schema("the outside journal", MIGRATIONS)
SCHEMA_VERSION: Final = SCHEMA.version


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


@functools.lru_cache(maxsize=4096)
def _names_a_secret(key: str) -> bool:
    """Whether a field name is one of `_SECRET_KEYS` once case and punctuation are dropped.

    Cached: a batch journals the same few field names for every item.
    """
    return "".join(ch for ch in key.lower() if ch.isalnum()) in _SECRET_KEYS


def _refuse_secrets(value: object, where: str, depth: int = 0) -> None:
    """Raise if a value about to be journaled has a field that would hold a secret."""
    if depth > 16:
        return
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if _names_a_secret(str(key)):
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


def _json(value: object) -> str:
    # Sorted and compact so that re-emitting an unchanged state gives identical bytes.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _dump(value: object, where: str) -> str | None:
    if value is None:
        return None
    _refuse_secrets(value, where)
    return _json(value)


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


def _row_item(
    row: sqlite3.Row | Mapping[str, Any], files: Mapping[str, bytes] | None = None
) -> JournalItem:
    return row_record(
        JournalItem,
        row,
        state=ItemState(row["state"]),
        vendor_ref=_load(row["vendor_ref"]),
        result=_load(row["result"]),
        error=_load(row["error"]),
        outcome_refs=_load(row["outcome_refs"]),
        files=dict(files or {}),
    )


def _item_rows(
    conn: sqlite3.Connection, bundle_id: str, where: str = "", args: Sequence[object] = ()
) -> list[JournalItem]:
    """The items of a request (narrowed by `where`) with their files, in request order."""
    rows = conn.execute(
        f"SELECT * FROM items WHERE bundle_id = ? {where} ORDER BY rowid", (bundle_id, *args)
    ).fetchall()
    files: dict[str, dict[str, bytes]] = {}
    if any(row["state"] == ItemState.DONE.value for row in rows):
        for item_id, name, data in conn.execute(
            "SELECT item_id, name, data FROM item_files WHERE bundle_id = ?", (bundle_id,)
        ):
            files.setdefault(item_id, {})[name] = bytes(data)
    return [_row_item(row, files.get(row["item_id"])) for row in rows]


def _row_request(row: sqlite3.Row) -> RequestRecord:
    return row_record(RequestRecord, row)


def _row_response(row: sqlite3.Row) -> ResponseRecord:
    return row_record(ResponseRecord, row)


def _outcome_change(item_id: str, outcome: Outcome) -> _Change:
    """The journal change an outcome makes (see `Journal.record_outcome`)."""
    if outcome.status == "ok":
        if outcome.files:
            _refuse_secrets(dict.fromkeys(outcome.files), f"{item_id} files")
        return _Change(
            item_id,
            ItemState.DONE,
            _SOURCES[ItemState.DONE],
            result=_dump(dict(outcome.result), f"{item_id} result"),
            outcome_refs=_dump(
                {key: str(value) for key, value in outcome.vendor_ref.items()},
                f"{item_id} vendor refs",
            ),
            files=dict(outcome.files) or None,
        )
    if outcome.status == "failed":
        error = dict(outcome.error or {"code": VendorError.code, "message": "failed"})
        result = dict(outcome.result) if outcome.result else None
        return _Change(
            item_id,
            ItemState.FAILED,
            _SOURCES[ItemState.FAILED],
            error=_dump(error, f"{item_id} error"),
            result=_dump(result, f"{item_id} result"),
        )
    if outcome.status == "needs_attention":
        reason = (outcome.error or {}).get("message", "needs an operator's decision")
        return _Change(
            item_id,
            ItemState.NEEDS_ATTENTION,
            _SOURCES[ItemState.NEEDS_ATTENTION],
            error=_dump({"code": ItemCode.NEEDS_ATTENTION, "message": reason}, f"{item_id} error"),
        )
    return _Change(
        item_id,
        ItemState.SUBMITTED,
        _SOURCES[ItemState.SUBMITTED],
        vendor_ref=_dump(dict(outcome.vendor_ref), f"{item_id} vendor_ref"),
    )


# --- the journal -------------------------------------------------------------------------------


class Journal(StateStore):
    """The outside home's `state.db`. Create with `Journal.open(path)`; use as a context manager.

    Threads share one connection (see `airgap.statedb.StateDb`); each change is a
    sub-millisecond transaction plus one fsync, and `advance` puts many items' changes in one
    (the processor's group commit), so the fsyncs stay few beside the vendor calls they guard.
    Processes: every write is `BEGIN IMMEDIATE`, so a check-then-update (the state machine, the
    replay rules, the lease) is atomic against other processes too.
    """

    def __init__(self, db: StateDb, clock: Callable[[], datetime]) -> None:
        """Wrap an open database; use `Journal.open` instead."""
        self._db = db
        self.path = db.path
        self._clock = clock

    # --- lifecycle

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        busy_timeout: float = BUSY_TIMEOUT,
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
        db = StateDb.open(Path(path), SCHEMA, busy_timeout=busy_timeout)
        return cls(db, clock or (lambda: datetime.now(UTC)))

    def _now(self) -> str:
        return _iso(self._clock())

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
        with self._db.write() as conn:
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
                found = _item_rows(conn, bundle_id)
                return Admission(_row_request(row), False, tuple(found))
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
            fresh = _item_rows(conn, bundle_id)
            return Admission(_row_request(request), True, tuple(fresh))

    def request(self, bundle_id: str) -> RequestRecord | None:
        """The journaled request, or None.

        Args:
            bundle_id: the request's bundle id.

        Returns:
            The record or None.

        Raises:
            StateDbError: (E_CONFIG) the database failed.
        """
        with self._db.read() as conn:
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
        with self._db.read() as conn:
            found = _item_rows(conn, bundle_id, "AND item_id = ?", (item_id,))
        if not found:
            raise UnknownItem(f"request {bundle_id} has no item {item_id} in the journal")
        return found[0]

    def items(self, bundle_id: str) -> list[JournalItem]:
        """Every item of a request, in request order.

        Args:
            bundle_id: the request.

        Returns:
            The items (empty for an unknown request).

        Raises:
            StateDbError: (E_CONFIG) the database failed.
        """
        with self._db.read() as conn:
            return _item_rows(conn, bundle_id)

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
        with self._db.read() as conn:
            return _item_rows(conn, bundle_id, f"AND state IN ({marks})", wanted)

    def _transition(
        self,
        bundle_id: str,
        item_ids: Sequence[str],
        target: ItemState,
        sources: frozenset[ItemState],
        *,
        vendor_ref: object = None,
        result: object = None,
        error: object = None,
        outcome_refs: object = None,
        files: Mapping[str, bytes] | None = None,
        clear: bool = False,
        bump: bool = False,
    ) -> list[JournalItem]:
        """Move items to `target` if each one's state is in `sources`, in one commit.

        All or nothing: one item that may not move refuses them all. Durable on return. The
        items handed back are built from the rows read under the write lock and the values
        written, exactly as a read would give them.
        """
        where = ", ".join(item_ids)
        if files:
            _refuse_secrets(dict.fromkeys(files), f"{where} files")
        values = {
            "vendor_ref": _dump(vendor_ref, f"{where} vendor_ref"),
            "result": _dump(result, f"{where} result"),
            "error": _dump(error, f"{where} error"),
            "outcome_refs": _dump(outcome_refs, f"{where} vendor refs"),
        }
        changes = [
            _Change(item_id, target, sources, **values, files=files, clear=clear, bump=bump)
            for item_id in item_ids
        ]
        return self._apply(bundle_id, changes)

    def _apply(self, bundle_id: str, changes: Sequence[_Change]) -> list[JournalItem]:
        """Make every change in one commit, each item moving only from its change's sources.

        All or nothing, durable on return; see `_transition`.
        """
        item_ids = [change.item_id for change in changes]
        if len(set(item_ids)) != len(item_ids):
            raise JournalError(f"request {bundle_id}: an item is named twice in one change")
        now = self._now()
        updated: list[dict[str, Any]] = []
        with self._db.write() as conn:
            for change in changes:
                row = conn.execute(
                    "SELECT * FROM items WHERE bundle_id = ? AND item_id = ?",
                    (bundle_id, change.item_id),
                ).fetchone()
                if row is None:
                    raise UnknownItem(
                        f"request {bundle_id} has no item {change.item_id} in the journal"
                    )
                current = ItemState(row["state"])
                if current not in change.sources:
                    raise IllegalTransition(bundle_id, change.item_id, current, change.target)
                new = dict(zip(row.keys(), row, strict=True))
                # What earlier states recorded stays unless replaced (the vendor_ref of SUBMITTED
                # stays beside DONE's result); `clear` is a fresh start (resubmit, release).
                clear = change.clear
                new.update(
                    state=change.target.value,
                    vendor_ref=change.vendor_ref
                    if clear or change.vendor_ref is not None
                    else row["vendor_ref"],
                    result=change.result if change.result is not None else row["result"],
                    error=change.error if clear or change.error is not None else row["error"],
                    outcome_refs=change.outcome_refs
                    if change.outcome_refs is not None
                    else row["outcome_refs"],
                    attempts=row["attempts"] + (1 if change.bump else 0),
                    updated_at=now,
                )
                updated.append(new)
            conn.executemany(
                "UPDATE items SET state = :state, vendor_ref = :vendor_ref, result = :result, "
                "error = :error, outcome_refs = :outcome_refs, attempts = :attempts, "
                "updated_at = :updated_at WHERE bundle_id = :bundle_id AND item_id = :item_id",
                updated,
            )
            stored = [
                (bundle_id, change.item_id, name, bytes(data))
                for change in changes
                for name, data in sorted((change.files or {}).items())
            ]
            if stored:
                conn.executemany(
                    "INSERT INTO item_files (bundle_id, item_id, name, data) VALUES (?, ?, ?, ?)",
                    stored,
                )
            if any(change.target in FINAL_STATES for change in changes):
                # A seek in items_by_request_state: counting the open items would read every
                # item of the request at every commit, quadratic over a large batch.
                still_open = conn.execute(_ANY_OPEN, (bundle_id, *_OPEN_STATES)).fetchone()[0]
                if not still_open:
                    conn.execute(
                        "UPDATE requests SET status = 'complete' WHERE bundle_id = ?", (bundle_id,)
                    )
        if changes and _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "request %s: %s -> %s",
                bundle_id,
                ", ".join(item_ids),
                ", ".join(sorted({change.target.value for change in changes})),
            )
        # Only a DONE item has files, and a DONE item never changes again.
        return [
            _row_item(row, change.files if change.target is ItemState.DONE else None)
            for row, change in zip(updated, changes, strict=True)
        ]

    def _transition_one(
        self,
        bundle_id: str,
        item_id: str,
        target: ItemState,
        *,
        sources: frozenset[ItemState] | None = None,
        **changes: Any,
    ) -> JournalItem:
        """`_transition` of one item, from the sources the state machine allows by default."""
        allowed = _SOURCES[target] if sources is None else sources
        return self._transition(bundle_id, [item_id], target, allowed, **changes)[0]

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
        return self._transition_one(bundle_id, item_id, ItemState.SUBMITTING, bump=True)

    def mark_submitting_many(self, bundle_id: str, item_ids: Sequence[str]) -> list[JournalItem]:
        """NEW → SUBMITTING for several items in one durable commit (a group commit).

        The items' vendor calls may go out once this returns; one fsync covers them all.

        Args:
            bundle_id: the request.
            item_ids: the items, each named once.

        Returns:
            The updated items, in the order asked.

        Raises:
            IllegalTransition: (E_INTERNAL) an item is not NEW; then none has changed.
            UnknownItem: (E_INTERNAL) no such item; then none has changed.
            JournalError: (E_INTERNAL) an item is named twice.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        if not item_ids:
            return []
        return self._transition(
            bundle_id, item_ids, ItemState.SUBMITTING, _SOURCES[ItemState.SUBMITTING], bump=True
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
        return self._transition_one(
            bundle_id, item_id, ItemState.SUBMITTED, vendor_ref=dict(vendor_ref)
        )

    def mark_exported_many(
        self, bundle_id: str, refs: Mapping[str, Mapping[str, str]]
    ) -> list[JournalItem]:
        """NEW → SUBMITTED for items handed to an operator (the CSSM portal), in one commit.

        The portal path has no vendor call to guard: the operator does the work by hand from
        files written after this returns. So an item goes straight from NEW to SUBMITTED with
        the reference that finds its files again (export id, device id, file name), and is
        never sent by `outside process` after that. The commit is durable before any of those
        files exists.

        Args:
            bundle_id: the request.
            refs: item id → its reference (strings; no secrets).

        Returns:
            The updated items (attempts incremented), in the order given.

        Raises:
            IllegalTransition: (E_INTERNAL) an item is not NEW; none has changed.
            UnknownItem: (E_INTERNAL) no such item; none has changed.
            JournalError: (E_INTERNAL) a reference holds a secret-named field.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        changes = [
            _Change(
                item_id,
                ItemState.SUBMITTED,
                frozenset({ItemState.NEW}),
                vendor_ref=_dump(dict(ref), f"{item_id} vendor_ref"),
                bump=True,
            )
            for item_id, ref in refs.items()
        ]
        return self._apply(bundle_id, changes) if changes else []

    def mark_done(
        self,
        bundle_id: str,
        item_id: str,
        result: Any,
        *,
        files: Mapping[str, bytes] | None = None,
        outcome_refs: Mapping[str, str] | None = None,
    ) -> JournalItem:
        """SUBMITTING | SUBMITTED | NEEDS_ATTENTION → DONE (final).

        Args:
            bundle_id: the request.
            item_id: the item.
            result: JSON-able result (e.g. `{"auth_status": "AUTHORIZED"}`); no secrets.
            files: the files the item answers with, name → bytes.
            outcome_refs: the vendor references the outcome carried (strings); no secrets.

        Returns:
            The updated item.

        Raises:
            IllegalTransition: (E_INTERNAL) the item is NEW or already final.
            UnknownItem: (E_INTERNAL) no such item.
            JournalError: (E_INTERNAL) the result or references hold a secret-named field.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        return self._transition_one(
            bundle_id,
            item_id,
            ItemState.DONE,
            result=result,
            files=files,
            outcome_refs=None if outcome_refs is None else dict(outcome_refs),
        )

    def mark_failed(
        self,
        bundle_id: str,
        item_id: str,
        error: Mapping[str, Any],
        *,
        result: Mapping[str, Any] | None = None,
    ) -> JournalItem:
        """NEW | SUBMITTING | SUBMITTED | NEEDS_ATTENTION → FAILED (final).

        Args:
            bundle_id: the request.
            item_id: the item.
            error: `{"code": "E_…", "message": "…"}` (redacted by the caller's HTTP layer).
            result: what the vendor said beside its refusal, if anything; no secrets.

        Returns:
            The updated item.

        Raises:
            IllegalTransition: (E_INTERNAL) the item is already final.
            UnknownItem: (E_INTERNAL) no such item.
            JournalError: (E_INTERNAL) the error or result holds a secret-named field.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        return self._transition_one(
            bundle_id,
            item_id,
            ItemState.FAILED,
            error=dict(error),
            result=None if result is None else dict(result),
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
        return self._transition_one(
            bundle_id,
            item_id,
            ItemState.NEEDS_ATTENTION,
            error={"code": ItemCode.NEEDS_ATTENTION, "message": reason},
        )

    def record_outcome(self, bundle_id: str, item_id: str, outcome: Outcome) -> JournalItem:
        """Journal what a vendor client said about an item.

        `pending` is SUBMITTING → SUBMITTED with the outcome's vendor_ref; `ok` is DONE with the
        result, files and references; `failed` is FAILED with the error (a generic E_VENDOR one
        if the client gave none) and any result; `needs_attention` is NEEDS_ATTENTION with the
        error's message.

        Args:
            bundle_id: the request.
            item_id: the item.
            outcome: the client's answer.

        Returns:
            The updated item.

        Raises:
            IllegalTransition: (E_INTERNAL) the state machine forbids it (e.g. `pending` for an
                item already SUBMITTED: there is nothing to record).
            UnknownItem: (E_INTERNAL) no such item.
            JournalError: (E_INTERNAL) the outcome holds a secret-named field.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        return self._apply(bundle_id, [_outcome_change(item_id, outcome)])[0]

    def record_outcomes_many(
        self, bundle_id: str, outcomes: Mapping[str, Outcome]
    ) -> list[JournalItem]:
        """`record_outcome` for several items in one durable commit: all of them, or none.

        Args:
            bundle_id: the request.
            outcomes: item id → what became of it (each as `record_outcome` takes it).

        Returns:
            The updated items, in the order given.

        Raises:
            IllegalTransition: (E_INTERNAL) the state machine forbids one; none has changed.
            UnknownItem: (E_INTERNAL) no such item; none has changed.
            JournalError: (E_INTERNAL) an outcome holds a secret-named field.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        changes = [_outcome_change(item_id, outcome) for item_id, outcome in outcomes.items()]
        return self._apply(bundle_id, changes) if changes else []

    def advance(
        self, bundle_id: str, outcomes: Mapping[str, Outcome], submitting: Sequence[str]
    ) -> list[JournalItem]:
        """Record outcomes and mark items SUBMITTING, all in one durable commit (group commit).

        The processor's one write per turn of its loop: what the calls that came back said, and
        NEW → SUBMITTING for the calls about to go out, which may go out once this returns.
        All of it, or none.

        Args:
            bundle_id: the request.
            outcomes: item id → what became of it (each as `record_outcome` takes it).
            submitting: items to move NEW → SUBMITTING (attempts incremented), each named once
                and not among `outcomes`.

        Returns:
            The updated items: those of `outcomes` in the order given, then those of
            `submitting`.

        Raises:
            IllegalTransition: (E_INTERNAL) the state machine forbids one; none has changed.
            UnknownItem: (E_INTERNAL) no such item; none has changed.
            JournalError: (E_INTERNAL) an item is named twice, or an outcome holds a
                secret-named field.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        changes = [_outcome_change(item_id, outcome) for item_id, outcome in outcomes.items()]
        sources = _SOURCES[ItemState.SUBMITTING]
        changes += [
            _Change(item_id, ItemState.SUBMITTING, sources, bump=True) for item_id in submitting
        ]
        return self._apply(bundle_id, changes) if changes else []

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
        return self.resubmit_many(bundle_id, [item_id])[0]

    def resubmit_many(self, bundle_id: str, item_ids: Sequence[str]) -> list[JournalItem]:
        """`resubmit` for several items in one commit: all of them, or none if one may not.

        Args:
            bundle_id: the request.
            item_ids: the items, each named once.

        Returns:
            The updated items, in the order asked.

        Raises:
            IllegalTransition: (E_INTERNAL) an item is not NEEDS_ATTENTION; none has changed.
            UnknownItem: (E_INTERNAL) no such item; none has changed.
            JournalError: (E_INTERNAL) an item is named twice.
            Busy: (E_BUSY) the database stayed locked.
            StateDbError: (E_CONFIG) the database failed.
        """
        if not item_ids:
            return []
        return self._transition(
            bundle_id,
            item_ids,
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
        return self._transition_one(
            bundle_id,
            item_id,
            ItemState.NEW,
            sources=frozenset({ItemState.SUBMITTING}),
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
        with self._db.write() as conn:
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
        with self._db.read() as conn:
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
        with self._db.read() as conn:
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
        with self._db.read() as conn:
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
        with self._db.write() as conn:
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
            with self._db.write() as conn:
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
        with self._db.write() as conn:
            row = conn.execute("SELECT * FROM leases WHERE bundle_id = ?", (bundle_id,)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM leases WHERE bundle_id = ?", (bundle_id,))
        return Lease(
            row["bundle_id"], row["owner"], row["pid"], row["host"], row["started_at"], row["token"]
        )
