"""The inside `state.db`: own sequence, outstanding requests, item states, imports.

The file is opened, migrated and written through `airgap.statedb` (WAL, `synchronous=FULL`,
one lock per process), so after a crash a sequence number is either used and recorded or was
never handed out. This module owns the inside schema and its rows only: it does not read
bundles, verify anything or write output files.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final

from airgap import fastjson
from airgap.errors import StateDbError
from airgap.fastjson import dumps_sorted
from airgap.statedb import (
    BUSY_TIMEOUT,
    Migration,
    Schema,
    StateDb,
    StateStore,
    iter_blob,
    row_record,
    write_blob,
)

ITEM_STATUSES: Final = ("outstanding", "ok", "failed", "pending", "needs_attention")
FINAL_STATUSES: Final = frozenset({"ok", "failed"})
REQUEST_STATUSES: Final = ("outstanding", "complete")
APPLY_STATES: Final = ("APPLYING", "APPLIED", "FAILED")

StateError = StateDbError  # the name callers of this module (and their tests) know it by


# --- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One request bundle this home packed."""

    bundle_id: str
    manifest_sha256: str
    sequence: int
    created: str
    expires: str
    path: str
    items: list[dict[str, Any]]
    status: str = "outstanding"


@dataclass(frozen=True)
class ItemRecord:
    """The state of one request item.

    `result` holds what the final (or latest) response said: `{"result", "files", "vendor_refs"}`
    with `files` mapping names to SHA-256; `outputs` the files import wrote for it (paths
    relative to the output folder of that import, which `out_dir` names).
    """

    request_id: str
    item_id: str
    action: str
    device_key: str | None
    status: str = "outstanding"
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    outputs: list[str] | None = None
    out_dir: str | None = None
    response_id: str | None = None
    updated: str = ""


@dataclass(frozen=True)
class ApplyRecord:
    """What `inside apply` did with one output file of one item on one device."""

    request_id: str
    item_id: str
    file: str  # the output's path relative to the request's output folder
    sha256: str
    device_key: str
    hostname: str
    state: str  # APPLYING (pushed or about to be; confirm before pushing again), APPLIED, FAILED
    detail: dict[str, Any] | None
    attempts: int
    updated: str


@dataclass(frozen=True)
class ResponseRecord:
    """One response bundle this home imported."""

    bundle_id: str
    manifest_sha256: str
    request_id: str
    imported_at: str
    out_dir: str
    counts: dict[str, int]


# --- schema --------------------------------------------------------------------------------------


def _v1(conn: sqlite3.Connection) -> None:
    statuses = ", ".join(f"'{s}'" for s in ITEM_STATUSES)
    requests = ", ".join(f"'{s}'" for s in REQUEST_STATUSES)
    for statement in (
        # One row: the last sequence number used. Never decreases (see allocate below).
        """CREATE TABLE inside_sequence (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            value INTEGER NOT NULL CHECK (value >= 0))""",
        "INSERT INTO inside_sequence (id, value) VALUES (1, 0)",
        f"""CREATE TABLE inside_requests (
            bundle_id TEXT PRIMARY KEY,
            manifest_sha256 TEXT NOT NULL,
            sequence INTEGER NOT NULL UNIQUE,
            created TEXT NOT NULL,
            expires TEXT NOT NULL,
            path TEXT NOT NULL,
            items TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ({requests})))""",
        f"""CREATE TABLE inside_items (
            request_id TEXT NOT NULL REFERENCES inside_requests (bundle_id),
            item_id TEXT NOT NULL,
            action TEXT NOT NULL,
            device_key TEXT,
            status TEXT NOT NULL CHECK (status IN ({statuses})),
            result TEXT,
            error TEXT,
            outputs TEXT,
            out_dir TEXT,
            response_id TEXT,
            updated TEXT NOT NULL,
            PRIMARY KEY (request_id, item_id))""",
        """CREATE TABLE inside_responses (
            bundle_id TEXT PRIMARY KEY,
            manifest_sha256 TEXT NOT NULL,
            request_id TEXT NOT NULL REFERENCES inside_requests (bundle_id),
            imported_at TEXT NOT NULL,
            out_dir TEXT NOT NULL,
            counts TEXT NOT NULL)""",
        "CREATE INDEX inside_responses_by_request ON inside_responses (request_id)",
        # Every output file import wrote, so a file it wrote itself (INSTRUCTIONS.md) may be
        # refreshed while a file someone else changed is never overwritten.
        """CREATE TABLE inside_outputs (
            path TEXT PRIMARY KEY,
            sha256 TEXT NOT NULL,
            request_id TEXT NOT NULL,
            response_id TEXT NOT NULL,
            written TEXT NOT NULL)""",
    ):
        conn.execute(statement)


def _v2(conn: sqlite3.Connection) -> None:
    # What an import is about to write to INSTRUCTIONS.md and summary.json, noted before it
    # writes them: an import killed between writing and recording leaves files that match none
    # of `inside_outputs`, and the next import must know them for its own work (and replace
    # them) rather than refuse to overwrite them forever. Cleared when an import is recorded.
    conn.execute(
        """CREATE TABLE inside_pending_outputs (
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            response_id TEXT NOT NULL,
            noted TEXT NOT NULL,
            PRIMARY KEY (path, sha256))"""
    )


def _v3(conn: sqlite3.Connection) -> None:
    # What `inside collect` read from each device, and what `inside apply` put on each. An
    # APPLYING row is committed before a file is pushed, so a killed apply is confirmed on the
    # device, never pushed blindly a second time.
    for statement in (
        """CREATE TABLE inside_collects (
            run_id TEXT NOT NULL,
            hostname TEXT NOT NULL,
            host TEXT NOT NULL,
            port INTEGER NOT NULL,
            transport TEXT NOT NULL,
            kind TEXT NOT NULL,
            path TEXT,
            sha256 TEXT,
            detail TEXT,
            collected TEXT NOT NULL)""",
        "CREATE INDEX inside_collects_by_host ON inside_collects (hostname, collected)",
        f"""CREATE TABLE inside_applies (
            request_id TEXT NOT NULL,
            item_id TEXT NOT NULL,
            file TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            device_key TEXT NOT NULL,
            hostname TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ({", ".join(f"'{x}'" for x in APPLY_STATES)})),
            detail TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            updated TEXT NOT NULL,
            PRIMARY KEY (request_id, item_id, file))""",
    ):
        conn.execute(statement)


def _v4(conn: sqlite3.Connection) -> None:
    # A request's signed items.json (45 MB at 100,000 devices) moves out of its request row into
    # a table of its own, as the last column of a row, so that it is written and read by
    # incremental blob I/O (`write_blob`, `iter_blob`) a chunk at a time. As a value of
    # `inside_requests.items` (followed by `status`), SQLite copied the bound text and built
    # the whole row from it. `inside_requests.items` stays, empty: dropping a column needs
    # SQLite 3.35, and an empty text costs nothing.
    conn.execute(
        """CREATE TABLE inside_request_items (
            bundle_id TEXT PRIMARY KEY REFERENCES inside_requests (bundle_id),
            items BLOB NOT NULL)"""
    )
    conn.execute(
        "INSERT INTO inside_request_items (bundle_id, items) "
        "SELECT bundle_id, CAST(items AS BLOB) FROM inside_requests"
    )
    conn.execute("UPDATE inside_requests SET items = ''")


# Entry i takes the schema from version i to i + 1. Append for every change; never edit one
# that has shipped.
MIGRATIONS: Final[tuple[Migration, ...]] = (_v1, _v2, _v3, _v4)
SCHEMA: Final = Schema("the inside state", MIGRATIONS)
SCHEMA_VERSION: Final = SCHEMA.version


_INSERT_ITEMS_FROM_JSON = (
    "INSERT INTO inside_items (request_id, item_id, action, device_key, status, updated) "
    "SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), 'outstanding', ?2 FROM json_each(?3) ORDER BY key"
)


def now_text() -> str:
    """The current UTC time as stored in state.db (`YYYY-MM-DDTHH:MM:SS.mmmZ`)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dump(value: object) -> str | None:
    if value is None:
        return None
    return dumps_sorted(value).decode()


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _stored_items(data: bytes) -> list[dict[str, Any]]:
    # Requests are stored as their signed items.json document; early versions stored the list.
    value = json.loads(data)
    items: list[dict[str, Any]] = value["items"] if isinstance(value, dict) else value
    return items


# A request row with the rowid of its stored items.json, read by `_row_request`.
_SELECT_REQUESTS = (
    "SELECT r.*, i.rowid AS items_rowid FROM inside_requests AS r "
    "LEFT JOIN inside_request_items AS i USING (bundle_id)"
)


def _row_request(conn: sqlite3.Connection, row: sqlite3.Row) -> RequestRecord:
    rowid = row["items_rowid"]
    data = b"".join(iter_blob(conn, "inside_request_items", "items", rowid)) if rowid else b"[]"
    return row_record(RequestRecord, row, items=_stored_items(data))


_ITEM_COLUMNS_BUT_RESULT: Final = (
    "request_id",
    "item_id",
    "action",
    "device_key",
    "status",
    "NULL AS result",
    "error",
    "outputs",
    "out_dir",
    "response_id",
    "updated",
)


def _load_paths(text: str | None) -> Any:
    # orjson: a list of strings (output paths) reads the same through either.
    return None if text is None else fastjson.loads(text)


def _row_item(row: sqlite3.Row) -> ItemRecord:
    return row_record(
        ItemRecord,
        row,
        result=_load(row["result"]),
        error=_load(row["error"]),
        outputs=_load_paths(row["outputs"]),
    )


def _row_response(row: sqlite3.Row) -> ResponseRecord:
    return row_record(ResponseRecord, row, counts=json.loads(row["counts"]))


# --- the store -----------------------------------------------------------------------------------


class InsideState(StateStore):
    """The inside home's state.db. Use as a context manager, or call `close()`.

    One `InsideState` may be shared by the threads of one process (a lock serializes its use);
    other processes wait on SQLite's own lock.
    """

    def __init__(self, path: Path, *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        """Open (creating or migrating if needed) the database at `path`.

        Args:
            path: the database file; its directory must exist (the home).
            busy_timeout: seconds to wait for another process's write lock.

        Raises:
            StateError: (E_CONFIG) the file cannot be opened, is damaged, or has a newer schema.
            Busy: (E_BUSY) another process kept it locked while it had to be migrated.
        """
        self.path = path
        self._db = StateDb.open(path, SCHEMA, busy_timeout=busy_timeout)

    # --- sequence and requests -----------------------------------------------------------------

    def last_sequence(self) -> int:
        """The last sequence number used by a recorded request (0 before the first)."""
        return int(self._db.query("SELECT value FROM inside_sequence WHERE id = 1")[0][0])

    @contextlib.contextmanager
    def reserve_sequence(self) -> Iterator[SequenceReservation]:
        """Hold the write lock, offer the next sequence number, and commit what is recorded.

        The number is only used if `record()` is called and the block ends without an error;
        otherwise everything rolls back and the next pack gets the same number. Holding the
        lock while the bundle is built keeps two concurrent packs from sharing a number.

        Raises:
            Busy: (E_BUSY) another process kept the database locked.
            StateError: (E_CONFIG) the database is broken.
        """
        with self._db.write() as conn:
            row = conn.execute("SELECT value FROM inside_sequence WHERE id = 1").fetchone()
            value = int(row[0])
            reservation = SequenceReservation(conn, value + 1)
            yield reservation
            if not reservation.recorded:
                raise StateError("internal: a reserved sequence was not recorded")

    def request(self, bundle_id: str) -> RequestRecord | None:
        """The recorded request with this bundle id, or None."""
        with self._db.read() as conn:
            row = conn.execute(f"{_SELECT_REQUESTS} WHERE bundle_id = ?", (bundle_id,)).fetchone()
            return _row_request(conn, row) if row else None

    def requests(self, *, include_complete: bool = False) -> list[RequestRecord]:
        """Recorded requests, newest (highest sequence) first."""
        where = "" if include_complete else "WHERE r.status = 'outstanding'"
        with self._db.read() as conn:
            rows = conn.execute(f"{_SELECT_REQUESTS} {where} ORDER BY sequence DESC").fetchall()
            return [_row_request(conn, row) for row in rows]

    def items(self, request_id: str, *, results: bool = True) -> list[ItemRecord]:
        """The item states of a request, in item order.

        Args:
            request_id: the request.
            results: False leaves each record's `result` None (not read nor parsed): for a
                caller that only shows states, such as a repeated import.
        """
        columns = "*" if results else ", ".join(_ITEM_COLUMNS_BUT_RESULT)
        rows = self._db.query(
            f"SELECT {columns} FROM inside_items WHERE request_id = ? ORDER BY rowid",
            (request_id,),
        )
        return [_row_item(row) for row in rows]

    def item_counts(self, request_id: str) -> dict[str, int]:
        """How many items of a request are in each status (every status, zeros included)."""
        counts = dict.fromkeys(ITEM_STATUSES, 0)
        for row in self._db.query(
            "SELECT status, COUNT(*) FROM inside_items WHERE request_id = ? GROUP BY status",
            (request_id,),
        ):
            counts[row[0]] = int(row[1])
        return counts

    # --- responses -----------------------------------------------------------------------------

    def response(self, bundle_id: str) -> ResponseRecord | None:
        """The imported response with this bundle id, or None."""
        rows = self._db.query("SELECT * FROM inside_responses WHERE bundle_id = ?", (bundle_id,))
        return _row_response(rows[0]) if rows else None

    def responses(self, request_id: str) -> list[ResponseRecord]:
        """The responses imported for a request, oldest first."""
        rows = self._db.query(
            "SELECT * FROM inside_responses WHERE request_id = ? ORDER BY imported_at, rowid",
            (request_id,),
        )
        return [_row_response(row) for row in rows]

    def output_sha256(self, path: Path) -> str | None:
        """The SHA-256 of what import last wrote at `path` (absolute), or None."""
        rows = self._db.query("SELECT sha256 FROM inside_outputs WHERE path = ?", (str(path),))
        return str(rows[0][0]) if rows else None

    def pending_output_sha256(self, path: Path) -> set[str]:
        """SHA-256 of what imports not yet recorded were about to write at `path` (absolute)."""
        rows = self._db.query(
            "SELECT sha256 FROM inside_pending_outputs WHERE path = ?", (str(path),)
        )
        return {str(row[0]) for row in rows}

    def note_pending_outputs(self, response_id: str, outputs: Mapping[Path, str]) -> None:
        """Note, durably and before writing them, the files an import is about to write.

        Raises:
            Busy: (E_BUSY) another process kept the database locked.
            StateError: (E_CONFIG) the database is broken.
        """
        stamp = now_text()
        with self._db.write() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO inside_pending_outputs (path, sha256, response_id, noted) "
                "VALUES (?, ?, ?, ?)",
                [(str(p), digest, response_id, stamp) for p, digest in outputs.items()],
            )

    def record_import(
        self,
        response: ResponseRecord,
        items: Sequence[ItemRecord],
        outputs: Mapping[Path, str],
    ) -> None:
        """Record an imported response, its item updates and the files written, atomically.

        The request becomes `complete` when none of its items is left outside ok/failed.

        Raises:
            Busy: (E_BUSY) another process kept the database locked.
            StateError: (E_CONFIG) the database is broken, or the response is already recorded.
        """
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO inside_responses (bundle_id, manifest_sha256, request_id, "
                "imported_at, out_dir, counts) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    response.bundle_id,
                    response.manifest_sha256,
                    response.request_id,
                    response.imported_at,
                    response.out_dir,
                    _dump(response.counts),
                ),
            )
            conn.executemany(
                "UPDATE inside_items SET status = ?, result = ?, error = ?, outputs = ?, "
                "out_dir = ?, response_id = ?, updated = ? WHERE request_id = ? AND item_id = ?",
                [
                    (
                        item.status,
                        _dump(item.result),
                        _dump(item.error),
                        _dump(item.outputs),
                        item.out_dir,
                        item.response_id,
                        item.updated,
                        item.request_id,
                        item.item_id,
                    )
                    for item in items
                ],
            )
            conn.executemany(
                "INSERT INTO inside_outputs (path, sha256, request_id, response_id, written) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET sha256 = excluded.sha256, "
                "request_id = excluded.request_id, response_id = excluded.response_id, "
                "written = excluded.written",
                [
                    (str(p), digest, response.request_id, response.bundle_id, response.imported_at)
                    for p, digest in outputs.items()
                ],
            )
            conn.executemany(
                "DELETE FROM inside_pending_outputs WHERE path = ?",
                [(str(p),) for p in outputs],
            )
            conn.execute(
                "DELETE FROM inside_pending_outputs WHERE response_id = ?", (response.bundle_id,)
            )
            left = conn.execute(
                "SELECT COUNT(*) FROM inside_items WHERE request_id = ? "
                "AND status NOT IN ('ok', 'failed')",
                (response.request_id,),
            ).fetchone()[0]
            conn.execute(
                "UPDATE inside_requests SET status = ? WHERE bundle_id = ?",
                ("complete" if left == 0 else "outstanding", response.request_id),
            )

    def record_outputs(self, response: ResponseRecord, outputs: Mapping[Path, str]) -> None:
        """Record files an import wrote again (the reports refreshed after an apply).

        Raises:
            StateError: the database is locked or broken.
        """
        stamp = now_text()
        with self._db.write() as conn:
            conn.executemany(
                "INSERT INTO inside_outputs (path, sha256, request_id, response_id, written) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET sha256 = excluded.sha256, "
                "written = excluded.written",
                [
                    (str(p), d, response.request_id, response.bundle_id, stamp)
                    for p, d in outputs.items()
                ],
            )
            conn.executemany(
                "DELETE FROM inside_pending_outputs WHERE path = ?", [(str(p),) for p in outputs]
            )

    # --- devices: collect and apply -----------------------------------------------------------

    def record_collect(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Record one collect run: (run_id, hostname, host, port, transport, kind, path,
        sha256, detail, collected) per file or failure.

        Raises:
            StateError: the database is locked or broken.
        """
        with self._db.write() as conn:
            conn.executemany(
                "INSERT INTO inside_collects (run_id, hostname, host, port, transport, kind, "
                "path, sha256, detail, collected) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*row[:8], _dump(row[8]), row[9]) for row in rows],
            )

    def last_collects(self, hostname: str) -> list[dict[str, Any]]:
        """The records of the latest collect run that reached a device, newest first."""
        rows = self._db.query(
            "SELECT * FROM inside_collects WHERE hostname = ? AND run_id = (SELECT run_id FROM "
            "inside_collects WHERE hostname = ? ORDER BY collected DESC, rowid DESC LIMIT 1)",
            (hostname, hostname),
        )
        return [{**dict(row), "detail": _load(row["detail"])} for row in rows]

    def collected_udis(self) -> dict[str, str]:
        """`PID:SN` → hostname of every device unit a collect has read (the latest read wins)."""
        rows = self._db.query(
            "SELECT hostname, detail FROM inside_collects WHERE kind = 'udi' "
            "ORDER BY collected, rowid"
        )
        found: dict[str, str] = {}
        for row in rows:
            for udi in (_load(row["detail"]) or {}).get("udis", []):
                found[str(udi)] = row["hostname"]
        return found

    def collected_macs(self) -> dict[str, str]:
        """Base MAC → hostname of every BIG-IP a collect has read (the latest read wins)."""
        rows = self._db.query(
            "SELECT hostname, detail FROM inside_collects WHERE kind = 'mac' "
            "ORDER BY collected, rowid"
        )
        found: dict[str, str] = {}
        for row in rows:
            mac = (_load(row["detail"]) or {}).get("mac")
            if isinstance(mac, str):
                found = {m: h for m, h in found.items() if h != row["hostname"]}
                found[mac] = row["hostname"]
        return found

    def applies(self, request_id: str, item_ids: Sequence[str] | None = None) -> list[ApplyRecord]:
        """The apply records of a request (of some of its items only, if given)."""
        if item_ids is None:
            rows = self._db.query(
                "SELECT * FROM inside_applies WHERE request_id = ? ORDER BY rowid", (request_id,)
            )
        else:
            rows = self._db.query(
                "SELECT * FROM inside_applies WHERE request_id = ? AND item_id IN "
                "(SELECT value FROM json_each(?)) ORDER BY rowid",
                (request_id, json.dumps(list(item_ids))),
            )
        return [_row_apply(row) for row in rows]

    def mark_applying(
        self, request_id: str, item_id: str, file: str, sha256: str, device_key: str, hostname: str
    ) -> ApplyRecord:
        """Note, durably and before the push, that a file is going onto a device.

        Raises:
            StateError: the database is locked or broken.
        """
        return self._set_apply(
            request_id, item_id, file, sha256, device_key, hostname, "APPLYING", None, bump=True
        )

    def mark_applied(
        self,
        request_id: str,
        item_id: str,
        file: str,
        sha256: str,
        device_key: str,
        hostname: str,
        detail: Mapping[str, Any],
    ) -> ApplyRecord:
        """The device confirmed it holds the file."""
        return self._set_apply(
            request_id, item_id, file, sha256, device_key, hostname, "APPLIED", detail
        )

    def mark_apply_failed(
        self,
        request_id: str,
        item_id: str,
        file: str,
        sha256: str,
        device_key: str,
        hostname: str,
        detail: Mapping[str, Any],
    ) -> ApplyRecord:
        """The device refused the file (its words in `detail`); a later apply may try again."""
        return self._set_apply(
            request_id, item_id, file, sha256, device_key, hostname, "FAILED", detail
        )

    def _set_apply(
        self,
        request_id: str,
        item_id: str,
        file: str,
        sha256: str,
        device_key: str,
        hostname: str,
        state: str,
        detail: Mapping[str, Any] | None,
        *,
        bump: bool = False,
    ) -> ApplyRecord:
        stamp = now_text()
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO inside_applies (request_id, item_id, file, sha256, device_key, "
                "hostname, state, detail, attempts, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (request_id, item_id, file) DO UPDATE SET sha256 = excluded.sha256, "
                "device_key = excluded.device_key, hostname = excluded.hostname, "
                "state = excluded.state, detail = excluded.detail, "
                "attempts = inside_applies.attempts + excluded.attempts, "
                "updated = excluded.updated",
                (
                    request_id,
                    item_id,
                    file,
                    sha256,
                    device_key,
                    hostname,
                    state,
                    _dump(dict(detail) if detail is not None else None),
                    1 if bump else 0,
                    stamp,
                ),
            )
            row = conn.execute(
                "SELECT * FROM inside_applies WHERE request_id = ? AND item_id = ? AND file = ?",
                (request_id, item_id, file),
            ).fetchone()
        return _row_apply(row)


def _row_apply(row: sqlite3.Row) -> ApplyRecord:
    return row_record(ApplyRecord, row, detail=_load(row["detail"]))


class SequenceReservation:
    """The next sequence number, held under the write lock until the request is recorded."""

    def __init__(self, conn: sqlite3.Connection, sequence: int) -> None:
        self._conn = conn
        self.sequence = sequence
        self.recorded = False
        self._items_of: str | None = None  # the request whose item rows are in already

    def record_items(
        self, request_id: str, items: Sequence[Mapping[str, Any]], device_keys: Sequence[str | None]
    ) -> None:
        """Insert the item rows of the request `record()` will record, ahead of it.

        For a large request this is most of the recording, and it may run on another thread
        while the bundle is written (SQLite works without the GIL); `record()` must follow in
        the same transaction, and nothing else may use the database meanwhile.

        Raises:
            StateError: one device key per item is needed, or the rows clash with recorded ones.
        """
        if len(device_keys) != len(items):
            raise StateError("internal: one device key per item is needed")
        stamp = now_text()
        rows = [
            (item["id"], item["action"], key) for item, key in zip(items, device_keys, strict=True)
        ]
        try:
            # The request row comes later; its foreign key is checked when the block commits.
            self._conn.execute("PRAGMA defer_foreign_keys = ON")
            try:
                # One statement over a JSON array: SQLite loops in C without the GIL, where
                # executemany binds every row in Python (and waits for the GIL between rows).
                self._conn.execute(
                    _INSERT_ITEMS_FROM_JSON, (request_id, stamp, dumps_sorted(rows).decode())
                )
            except sqlite3.OperationalError as exc:
                if "json_each" not in str(exc) and "json_extract" not in str(exc):
                    raise
                # An SQLite built without its JSON functions: the same rows, one at a time.
                self._conn.executemany(
                    "INSERT INTO inside_items (request_id, item_id, action, device_key, status, "
                    "updated) VALUES (?, ?, ?, ?, 'outstanding', ?)",
                    [(request_id, item_id, action, key, stamp) for item_id, action, key in rows],
                )
        except sqlite3.IntegrityError as exc:
            raise StateError(f"cannot record request {request_id}: {exc}") from exc
        self._items_of = request_id

    def record(
        self,
        request: RequestRecord,
        device_keys: Sequence[str | None],
        items_json: bytes | BinaryIO | None = None,
    ) -> None:
        """Record the request (status outstanding) and its items, and use the sequence number.

        Args:
            request: the request; its `sequence` must be the reserved one.
            device_keys: per item of `request.items`, `PID:SN`, a MAC or None (not used when
                `record_items` inserted the rows already).
            items_json: the bundle's `items.json`, holding `request.items`: stored as it is,
                which spares serializing a large request a second time. A file is read from
                its current position to its end a chunk at a time, so a large request is
                never in memory whole.

        Raises:
            StateError: the sequence differs, or the bundle id is already recorded.
        """
        if request.sequence != self.sequence:
            raise StateError(
                f"internal: request uses sequence {request.sequence}, reserved {self.sequence}"
            )
        if self._items_of not in (None, request.bundle_id):
            raise StateError("internal: the item rows recorded belong to another request")
        if self._items_of is None:
            self.record_items(request.bundle_id, request.items, device_keys)
        try:
            self._conn.execute(
                "UPDATE inside_sequence SET value = ? WHERE id = 1 AND value < ?",
                (self.sequence, self.sequence),
            )
            self._conn.execute(
                "INSERT INTO inside_requests (bundle_id, manifest_sha256, sequence, created, "
                "expires, path, items, status) VALUES (?, ?, ?, ?, ?, ?, '', 'outstanding')",
                (
                    request.bundle_id,
                    request.manifest_sha256,
                    request.sequence,
                    request.created,
                    request.expires,
                    request.path,
                ),
            )
            source: bytes | BinaryIO = (
                dumps_sorted({"items": request.items}) if items_json is None else items_json
            )
            if isinstance(source, bytes):
                size = len(source)
            else:
                start = source.tell()
                size = source.seek(0, os.SEEK_END) - start
                source.seek(start)
            rowid = self._conn.execute(
                "INSERT INTO inside_request_items (bundle_id, items) VALUES (?, zeroblob(?))",
                (request.bundle_id, size),
            ).lastrowid
            assert rowid is not None
            write_blob(self._conn, "inside_request_items", "items", rowid, source)
        except sqlite3.IntegrityError as exc:
            raise StateError(f"cannot record request {request.bundle_id}: {exc}") from exc
        self.recorded = True


def open_state(state_db: Path) -> InsideState:
    """Open the inside state database of a home (its `state.db`).

    Raises:
        StateError: as `InsideState`.
    """
    return InsideState(state_db)


__all__ = [
    "APPLY_STATES",
    "FINAL_STATUSES",
    "ITEM_STATUSES",
    "ApplyRecord",
    "InsideState",
    "ItemRecord",
    "RequestRecord",
    "ResponseRecord",
    "SequenceReservation",
    "StateError",
    "now_text",
    "open_state",
]
