"""A home's SQLite `state.db`: how it is opened, migrated and written, and how it fails.

Both homes keep their state in one SQLite file and open it here, the same way: the file is
created 0600 before SQLite sees it (so its `-wal` and `-shm` files, which SQLite creates with the
database's mode, are private too), in WAL mode with `synchronous=FULL` (a COMMIT is on disk when
it returns) and foreign keys on. Each home brings its own `Schema`: a list of migrations whose
count is the schema version kept in `PRAGMA user_version`. Writes are `BEGIN IMMEDIATE … COMMIT`
transactions, rolled back on any error. A database another process keeps locked past the busy
timeout is `Busy` (E_BUSY); any other failure is `StateDbError` (E_CONFIG).

This module knows no table: the inside state (`airgap.inside.state`) and the outside journal
(`airgap.outside.journal`) own their rows and their migrations.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Final, Self, TypeAlias, TypeVar

from airgap.errors import AirgapError, Busy, StateDbError

_log = logging.getLogger(__name__)

BUSY_TIMEOUT: Final = 30.0  # seconds another process may hold the write lock before we give up
BLOB_CHUNK: Final = 1 << 20  # bytes per incremental blob read or write

Migration: TypeAlias = Callable[[sqlite3.Connection], None]
"""One schema step, run inside the migration's write transaction."""

_Record = TypeVar("_Record")

# SQLITE_BUSY and SQLITE_LOCKED (primary result codes; extended codes keep them in the low byte).
_LOCK_CODES: Final = frozenset({5, 6})


@dataclass(frozen=True)
class Schema:
    """What one kind of `state.db` looks like, as the steps that build it.

    Entry i of `migrations` takes the schema from version i to i + 1. Append a step for every
    change and never edit one that has shipped: homes in the field are at every version.
    """

    name: str  # what the file is, for messages: "the inside state", "the outside journal"
    migrations: tuple[Migration, ...]

    @property
    def version(self) -> int:
        """The version this airgap writes: the number of migrations."""
        return len(self.migrations)


def is_locked(exc: sqlite3.Error) -> bool:
    """Whether an SQLite error means another connection holds a lock we waited for in vain."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _LOCK_CODES
    text = str(exc)
    return "locked" in text or "busy" in text


def db_error(path: Path, exc: sqlite3.Error) -> AirgapError:
    """The airgap error for an SQLite error on `path`: `Busy` when locked, else `StateDbError`.

    Args:
        path: the database file.
        exc: what SQLite raised.

    Returns:
        The error to raise (chain it: `raise db_error(path, exc) from exc`).
    """
    if is_locked(exc):
        return Busy(
            f"{path} is locked by another airgap process",
            hint="Another airgap command is using this home; wait for it to finish and run "
            "this one again.",
        )
    return StateDbError(
        f"{path}: {exc}",
        hint="Check the home directory (disk space, permissions); restore state.db from a "
        "backup if it is damaged.",
    )


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:  # once per record class; a race only computes it twice
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls) if f.init)
    return names


def row_record(cls: type[_Record], row: sqlite3.Row | Mapping[str, Any], **values: Any) -> _Record:
    """Build a record dataclass from a row: each field from the column of its name.

    Args:
        cls: the dataclass.
        row: the row (`sqlite3.Row` or a mapping of column names).
        values: fields whose stored form needs converting (JSON, an enum), or that no column
            holds, given as they should be.

    Returns:
        The record.
    """
    return cls(
        **{name: values[name] if name in values else row[name] for name in _field_names(cls)}
    )


def _create_private(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists (O_EXCL: never opens another's file)."""
    if not path.parent.is_dir():
        raise StateDbError(
            f"cannot open {path}: directory {path.parent} does not exist",
            hint="Run `airgap init` first, or pass the right --home.",
        )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StateDbError(f"cannot create {path}: {exc.strerror}") from exc
    os.close(fd)


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def write_blob(
    conn: sqlite3.Connection, table: str, column: str, rowid: int, source: bytes | BinaryIO
) -> None:
    """Fill a blob that was inserted as `zeroblob(n)` from `source`, a chunk at a time.

    A large value bound as one parameter is copied by SQLite whole, and again into the row it
    builds; written incrementally it never exists in memory at once. The blob must be the last
    column of its row (otherwise SQLite still builds the whole row to reach the columns after
    it) and `source` must hold exactly its `n` bytes (a file is read from its current position).

    Raises:
        sqlite3.Error: SQLite failed, or `source` is shorter or longer than the blob.
    """
    with conn.blobopen(table, column, rowid) as blob:
        size = len(blob)
        if isinstance(source, bytes):
            view = memoryview(source)
            if len(view) != size:
                raise sqlite3.DataError(
                    f"{table}.{column}: {len(view)} bytes for a {size}-byte blob"
                )
            for start in range(0, size, BLOB_CHUNK):
                blob.write(view[start : start + BLOB_CHUNK])
            return
        written = 0
        while chunk := source.read(min(BLOB_CHUNK, size - written) or 1):
            if written + len(chunk) > size:
                raise sqlite3.DataError(f"{table}.{column}: more bytes than the {size}-byte blob")
            blob.write(chunk)
            written += len(chunk)
        if written != size:
            raise sqlite3.DataError(f"{table}.{column}: {written} bytes for a {size}-byte blob")


def iter_blob(conn: sqlite3.Connection, table: str, column: str, rowid: int) -> Iterator[bytes]:
    """The bytes of one blob, a chunk at a time (read in the caller's transaction).

    Raises:
        sqlite3.Error: SQLite failed.
    """
    with conn.blobopen(table, column, rowid, readonly=True) as blob:
        while chunk := blob.read(BLOB_CHUNK):
            yield chunk


class Closable:
    """`with` for what has a `close()`: the block's end closes it."""

    def close(self) -> None:
        """Release what the object holds."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout: float) -> str:
    """Put the file in WAL mode (it stays so) and return the mode it is in.

    Switching takes an exclusive lock, and SQLite answers "locked" at once, without its busy
    handler, while another process holds the file (migrating it, say). Once in WAL the switch
    is a no-op, so a file another process already switched is only read; a fresh one is retried
    until the busy timeout.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode == "wal":
                return mode
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class StateDb(Closable):
    """One open `state.db`: a connection shared by the threads of a process under a lock.

    SQLite lets one writer in at a time anyway, so a connection per thread would buy nothing for
    the writes that matter and would make threads of one process fight over the file lock. Other
    processes wait on SQLite's lock for up to the busy timeout. Use as a context manager, or call
    `close()`.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        """Wrap an open, migrated connection; use `StateDb.open` instead."""
        self.conn = conn
        self.path = path
        self.lock = threading.RLock()
        self._closed = False

    @classmethod
    def open(cls, path: Path, schema: Schema, *, busy_timeout: float = BUSY_TIMEOUT) -> StateDb:
        """Open `path` (creating it 0600 if needed) and bring it to `schema`'s version.

        Two processes opening an old or fresh file at once migrate it once: the steps run under
        `BEGIN IMMEDIATE`, and the version is read again once the lock is held.

        Args:
            path: the database file; its directory must exist (the home).
            schema: the migrations of this kind of database.
            busy_timeout: seconds to wait for another process's lock.

        Returns:
            The open database.

        Raises:
            StateDbError: (E_CONFIG) the directory is missing, the file cannot be created or is
                not a usable SQLite database, or its schema is newer than this airgap knows.
            Busy: (E_BUSY) another process kept the database locked past `busy_timeout`.
        """
        path = Path(path)
        _create_private(path)
        conn: sqlite3.Connection | None = None
        try:
            # isolation_level=None: no implicit transactions; every write says BEGIN IMMEDIATE.
            conn = sqlite3.connect(
                str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            mode = _switch_to_wal(conn, busy_timeout)
            if mode != "wal":
                raise StateDbError(f"{path}: cannot switch to WAL journal mode (got {mode})")
            # FULL: a COMMIT is on disk before it returns. The outside's SUBMITTING row must
            # survive a power cut that follows the vendor call it guards, and the inside's
            # sequence number must never be handed out twice; NORMAL could lose either in WAL.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            _migrate(conn, path, schema)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise db_error(path, exc) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return cls(conn, path)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self.lock:
            if not self._closed:
                self._closed = True
                self.conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE … COMMIT, durable when the block ends.

        The write lock is taken at BEGIN, so a check-then-update inside the block is atomic
        against other processes too. Any error rolls everything back.

        Yields:
            The connection, for statements inside the transaction.

        Raises:
            Busy: (E_BUSY) another process kept the database locked past the busy timeout.
            StateDbError: (E_CONFIG) SQLite failed (disk full, damaged file, a constraint the
                block did not handle).
        """
        with self.lock, self._transaction("BEGIN IMMEDIATE") as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every statement in the block sees the same snapshot.

        In WAL mode a reader never waits for a writer. Inside a write transaction of the same
        thread, the block simply joins it.

        Yields:
            The connection.

        Raises:
            StateDbError: (E_CONFIG) SQLite failed.
            Busy: (E_BUSY) the database stayed locked (only while it is being recovered).
        """
        with self.lock:
            if not self.conn.in_transaction:
                with self._transaction("BEGIN DEFERRED") as conn:
                    yield conn
                return
            try:
                yield self.conn
            except sqlite3.Error as exc:
                raise db_error(self.path, exc) from exc

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        """`begin` … COMMIT around the block, rolled back on any error (the lock is held)."""
        try:
            self.conn.execute(begin)
        except sqlite3.Error as exc:
            raise db_error(self.path, exc) from exc
        try:
            yield self.conn
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, sqlite3.Error):
                raise db_error(self.path, exc) from exc
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise db_error(self.path, exc) from exc

    def query(self, sql: str, args: Sequence[object] = ()) -> list[sqlite3.Row]:
        """Run one SELECT and return every row.

        Raises:
            StateDbError: (E_CONFIG) SQLite failed.
        """
        with self.read() as conn:
            return conn.execute(sql, args).fetchall()

    def _rollback(self) -> None:
        if not self.conn.in_transaction:
            return
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            _log.warning("rollback failed on %s", self.path, exc_info=True)


class StateStore(Closable):
    """Base of a home's store kept in one `StateDb` (the inside state, the outside journal)."""

    _db: StateDb

    def close(self) -> None:
        """Close the database (idempotent)."""
        self._db.close()


def _refuse_newer(path: Path, schema: Schema, version: int) -> None:
    if version > schema.version:
        raise StateDbError(
            f"{path} has schema version {version} of {schema.name}; this airgap knows up to "
            f"version {schema.version}",
            hint="Upgrade airgap: the file was written by a newer version, and an older one "
            "must not change it.",
        )


def _migrate(conn: sqlite3.Connection, path: Path, schema: Schema) -> None:
    """Apply the migrations `path` lacks, under the write lock; refuse a newer schema."""
    version = _user_version(conn)
    _refuse_newer(path, schema, version)
    if version == schema.version:
        return  # the common case: no write lock is taken just to open the file
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have migrated meanwhile.
        version = _user_version(conn)
        _refuse_newer(path, schema, version)
        for number in range(version, schema.version):
            schema.migrations[number](conn)
            conn.execute(f"PRAGMA user_version = {number + 1}")
            _log.debug("migrated %s to schema %d", path, number + 1)
        conn.execute("COMMIT")
    except BaseException:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


__all__ = [
    "BUSY_TIMEOUT",
    "Closable",
    "Migration",
    "Schema",
    "StateDb",
    "StateStore",
    "db_error",
    "is_locked",
    "iter_blob",
    "row_record",
    "write_blob",
]
