"""airgap.statedb: how both homes' state.db is created, migrated, written and how it fails."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from airgap.errors import Busy, StateDbError
from airgap.statedb import BUSY_TIMEOUT, Schema, StateDb


def _things(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE things (name TEXT PRIMARY KEY, size INTEGER NOT NULL)")


def _parts(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE parts (thing TEXT NOT NULL REFERENCES things (name), part TEXT NOT NULL)"
    )


V1 = Schema("the test state", (_things,))
V2 = Schema("the test state", (_things, _parts))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDb]:
    with StateDb.open(tmp_path / "state.db", V2) as opened:
        yield opened


def _rows(db: StateDb, sql: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in db.query(sql)]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_and_its_wal_files_are_born_private(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateDb.open(path, V2) as db, db.write() as conn:
        conn.execute("INSERT INTO things VALUES ('a', 1)")
        wal, shm = path.with_name("state.db-wal"), path.with_name("state.db-shm")
        assert wal.exists() and shm.exists()  # open while the connection is
        assert {_mode(path), _mode(wal), _mode(shm)} == {0o600}


def test_an_open_database_is_wal_full_sync_with_foreign_keys_and_one_busy_timeout(
    db: StateDb,
) -> None:
    conn = db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == int(BUSY_TIMEOUT * 1000)
    with pytest.raises(StateDbError), db.write() as write:  # the foreign key is enforced
        write.execute("INSERT INTO parts VALUES ('nothing', 'x')")


def test_migrations_run_once_in_order_and_new_steps_are_appended(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateDb.open(path, V1) as db, db.write() as conn:
        conn.execute("INSERT INTO things VALUES ('a', 1)")
    with StateDb.open(path, V2) as db:
        assert db.conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert _rows(db, "SELECT name FROM things") == [("a",)]  # v1's rows kept
        assert _rows(db, "SELECT COUNT(*) FROM parts") == [(0,)]
    StateDb.open(path, V2).close()  # already current: nothing runs again (no "table exists")


def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateDb.open(path, V2).close()
    with pytest.raises(StateDbError) as info:
        StateDb.open(path, V1)
    assert info.value.code == "E_CONFIG"
    assert "schema version 2 of the test state" in info.value.message
    assert "knows up to version 1" in info.value.message
    assert (info.value.hint or "").startswith("Upgrade airgap")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2


MIGRATOR = textwrap.dedent(
    """
    import os, sqlite3, sys, time
    from pathlib import Path
    from airgap.statedb import Schema, StateDb

    path, log, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

    def step(conn: sqlite3.Connection) -> None:
        with log.open("a") as out:
            out.write(f"{os.getpid()}\\n")
        time.sleep(0.3)  # long enough for the other process to arrive meanwhile
        conn.execute("CREATE TABLE things (name TEXT)")

    while not go.exists():
        time.sleep(0.005)
    StateDb.open(path, Schema("race", (step,))).close()
    print("opened", flush=True)
    """
)


def test_two_processes_opening_a_fresh_file_migrate_it_once(tmp_path: Path) -> None:
    path, log, go = tmp_path / "state.db", tmp_path / "steps.log", tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATOR, str(path), str(log), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    go.touch()
    for child in children:
        stdout, stderr = child.communicate(timeout=60)
        assert child.returncode == 0, stderr
        assert stdout.strip() == "opened"
    assert len(log.read_text().split()) == 1
    assert _mode(path) == 0o600


def test_a_write_is_rolled_back_on_any_error(db: StateDb) -> None:
    with pytest.raises(RuntimeError), db.write() as conn:
        conn.execute("INSERT INTO things VALUES ('a', 1)")
        raise RuntimeError("the caller gave up")
    with pytest.raises(StateDbError) as info, db.write() as conn:
        conn.execute("INSERT INTO things VALUES ('b', 1)")
        conn.execute("INSERT INTO things VALUES ('b', 2)")  # primary key
    assert info.value.code == "E_CONFIG" and isinstance(info.value.__cause__, sqlite3.Error)
    assert _rows(db, "SELECT COUNT(*) FROM things") == [(0,)]
    assert not db.conn.in_transaction
    with db.write() as conn:  # and the connection is usable afterwards
        conn.execute("INSERT INTO things VALUES ('c', 3)")
    assert _rows(db, "SELECT name FROM things") == [("c",)]


def test_a_read_inside_a_write_of_the_same_thread_sees_the_write(db: StateDb) -> None:
    with db.write() as conn:
        conn.execute("INSERT INTO things VALUES ('a', 1)")
        assert _rows(db, "SELECT name FROM things") == [("a",)]
    assert not db.conn.in_transaction


def test_a_database_locked_by_another_process_is_busy(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateDb.open(path, V2).close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with StateDb.open(path, V2, busy_timeout=0.1) as impatient:
            with pytest.raises(Busy) as info, impatient.write():
                pass
            assert info.value.code == "E_BUSY"
            assert "locked by another airgap process" in info.value.message
            assert _rows(impatient, "SELECT COUNT(*) FROM things") == [(0,)]  # reading still works
        # A file that must still be migrated cannot be while the lock is held.
        fresh = tmp_path / "fresh.db"
        StateDb.open(fresh, V1).close()
        other = sqlite3.connect(fresh, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(Busy):
                StateDb.open(fresh, V2, busy_timeout=0.1)
        finally:
            other.execute("ROLLBACK")
            other.close()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_a_missing_home_or_a_file_that_is_not_sqlite_is_a_state_db_error(tmp_path: Path) -> None:
    with pytest.raises(StateDbError) as missing:
        StateDb.open(tmp_path / "nowhere" / "state.db", V2)
    assert "does not exist" in missing.value.message
    assert not (tmp_path / "nowhere").exists()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StateDbError) as info:
        StateDb.open(junk, V2)
    assert info.value.code == "E_CONFIG"
