"""The inside state.db: schema version, the sequence counter, requests, imports."""

from __future__ import annotations

import json
import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from airgap.errors import Busy
from airgap.inside import state as state_module
from airgap.inside.state import (
    SCHEMA_VERSION,
    InsideState,
    ItemRecord,
    RequestRecord,
    ResponseRecord,
    StateError,
    now_text,
)
from airgap.model import device_key


def _items(n: int) -> list[dict[str, object]]:
    return [
        {
            "id": f"i{k:05d}",
            "action": "cisco.reserve",
            "device": {"hostname": f"sw-{k}", "udi": {"pid": "C9300-24T", "sn": f"FOC{k:08d}"}},
            "params": {"entitlements": [{"tag": "regid.x", "count": 1}]},
            "files": [],
        }
        for k in range(1, n + 1)
    ]


def _request(bundle_id: str, sequence: int, n: int = 2) -> RequestRecord:
    return RequestRecord(
        bundle_id=bundle_id,
        manifest_sha256="a" * 64,
        sequence=sequence,
        created="2026-01-01T00:00:00Z",
        expires="2026-01-08T00:00:00Z",
        path="/tmp/req.airgap",
        items=_items(n),
    )


def _record(state: InsideState, bundle_id: str, n: int = 2) -> int:
    with state.reserve_sequence() as reservation:
        request = _request(bundle_id, reservation.sequence, n)
        reservation.record(request, [device_key(i) for i in request.items])
        return reservation.sequence


@pytest.fixture
def inside_db(make_home: Callable[..., Path]) -> Path:
    return make_home("inside") / "state.db"


def test_opening_the_home_db_migrates_it_and_keeps_it_private(inside_db: Path) -> None:
    with InsideState(inside_db) as state:
        assert state.last_sequence() == 0
    with sqlite3.connect(inside_db) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert stat.S_IMODE(inside_db.stat().st_mode) == 0o600


def test_a_new_db_file_is_created_0600(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with InsideState(path) as state:
        assert state.requests() == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_db_from_a_newer_airgap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StateError, match="schema version"):
        InsideState(path)


def test_a_locked_db_is_busy_and_nothing_is_recorded(inside_db: Path) -> None:
    with InsideState(inside_db, busy_timeout=0.1) as state:
        blocker = sqlite3.connect(inside_db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # as another pack holding the sequence would
        try:
            with pytest.raises(Busy) as info:
                _record(state, "req-1")
            assert info.value.code == "E_BUSY" and info.value.exit_code == 1
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert state.last_sequence() == 0
        assert _record(state, "req-1") == 1


def test_sequence_is_used_only_when_the_request_is_recorded(inside_db: Path) -> None:
    with InsideState(inside_db) as state:
        assert _record(state, "req-1") == 1
        with pytest.raises(RuntimeError), state.reserve_sequence() as reservation:
            assert reservation.sequence == 2
            raise RuntimeError("the bundle could not be built")
        assert state.last_sequence() == 1
        assert _record(state, "req-2") == 2
    with InsideState(inside_db) as state:  # survives closing: it was committed
        assert state.last_sequence() == 2
        assert [r.bundle_id for r in state.requests()] == ["req-2", "req-1"]


def test_a_reservation_left_unrecorded_rolls_back(inside_db: Path) -> None:
    with InsideState(inside_db) as state:
        with pytest.raises(StateError, match="not recorded"), state.reserve_sequence():
            pass
        assert state.last_sequence() == 0


def test_recording_the_same_bundle_id_twice_is_refused_and_rolls_back(inside_db: Path) -> None:
    with InsideState(inside_db) as state:
        _record(state, "req-1")
        with pytest.raises(StateError, match="cannot record"):
            _record(state, "req-1")
        assert state.last_sequence() == 1


def test_item_rows_may_go_in_ahead_of_their_request_on_another_thread(inside_db: Path) -> None:
    with InsideState(inside_db) as state:
        with state.reserve_sequence() as reservation:
            request = _request("req-1", reservation.sequence, n=3)
            keys = [device_key(i) for i in request.items]
            worker = threading.Thread(
                target=reservation.record_items, args=("req-1", request.items, keys)
            )
            worker.start()
            worker.join()
            reservation.record(request, keys)
        assert [r.item_id for r in state.items("req-1")] == ["i00001", "i00002", "i00003"]
        # Rows without their request never commit: the deferred foreign key refuses them.
        with pytest.raises(StateError), state.reserve_sequence() as reservation:
            reservation.record_items("req-2", _items(2), [None, None])
            reservation.recorded = True  # as if record() had run, without the request row
        assert state.items("req-2") == [] and state.last_sequence() == 1
        with pytest.raises(StateError, match="another request"), state.reserve_sequence() as r:
            r.record_items("req-3", _items(1), [None])
            r.record(_request("req-4", r.sequence, n=1), [None])
        assert state.items("req-3") == [] and state.last_sequence() == 1


@pytest.mark.parametrize("json_functions", [True, False])
def test_item_rows_keep_their_order_with_or_without_sqlite_json_functions(
    inside_db: Path, monkeypatch: pytest.MonkeyPatch, json_functions: bool
) -> None:
    if not json_functions:  # as an SQLite built without JSON1 answers
        broken = "INSERT INTO inside_items SELECT * FROM json_each_missing(?1, ?2, ?3)"
        monkeypatch.setattr(state_module, "_INSERT_ITEMS_FROM_JSON", broken)
    with InsideState(inside_db) as state:
        _record(state, "req-1", n=12)
        records = state.items("req-1")
    assert [r.item_id for r in records] == [f"i{k:05d}" for k in range(1, 13)]
    assert [r.device_key for r in records] == [f"C9300-24T:FOC{k:08d}" for k in range(1, 13)]
    assert {(r.action, r.status) for r in records} == {("cisco.reserve", "outstanding")}


def test_items_start_outstanding_with_their_device_keys(inside_db: Path) -> None:
    with InsideState(inside_db) as state:
        _record(state, "req-1", n=3)
        records = state.items("req-1")
        assert [r.item_id for r in records] == ["i00001", "i00002", "i00003"]
        assert {r.status for r in records} == {"outstanding"}
        assert records[0].device_key == "C9300-24T:FOC00000001"
        assert state.item_counts("req-1")["outstanding"] == 3
        assert state.request("req-1") is not None
        assert state.request("nope") is None


def test_record_import_updates_items_and_completes_the_request(inside_db: Path) -> None:
    with InsideState(inside_db) as state:
        _record(state, "req-1", n=2)
        stamp = now_text()

        def update(item_id: str, status: str) -> ItemRecord:
            return ItemRecord(
                "req-1", item_id, "cisco.reserve", None, status, {"result": {}}, None,
                ["cisco/x/lic.txt"], "/out", "resp-1", stamp,
            )  # fmt: skip

        response = ResponseRecord("resp-1", "b" * 64, "req-1", stamp, "/out", {"ok": 1})
        state.record_import(
            response, [update("i00001", "ok"), update("i00002", "pending")], {Path("/o/x"): "c"}
        )
        assert state.request("req-1").status == "outstanding"  # type: ignore[union-attr]
        assert state.output_sha256(Path("/o/x")) == "c"
        assert state.response("resp-1") == response
        response2 = ResponseRecord("resp-2", "d" * 64, "req-1", now_text(), "/out", {"ok": 2})
        state.record_import(response2, [update("i00002", "failed")], {Path("/o/x"): "e"})
        assert state.request("req-1").status == "complete"  # type: ignore[union-attr]
        assert state.requests() == []
        assert len(state.requests(include_complete=True)) == 1
        assert state.output_sha256(Path("/o/x")) == "e"
        assert [r.bundle_id for r in state.responses("req-1")] == ["resp-1", "resp-2"]
        assert state.item_counts("req-1") == {
            "outstanding": 0,
            "ok": 1,
            "failed": 1,
            "pending": 0,
            "needs_attention": 0,
        }


def test_one_state_object_is_usable_from_several_threads(inside_db: Path) -> None:
    errors: list[BaseException] = []
    with InsideState(inside_db) as state:

        def work(n: int) -> None:
            try:
                _record(state, f"req-{n}", n=1)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert state.last_sequence() == 8
        assert sorted(r.sequence for r in state.requests()) == list(range(1, 9))


def test_items_json_is_stored_as_given_in_a_table_of_its_own(inside_db: Path) -> None:
    signed = b'{"items":[{"action":"cisco.reserve","id":"i1"}],"note":"as signed"}'
    with InsideState(inside_db) as state:
        with state.reserve_sequence() as reservation:
            reservation.record(
                RequestRecord("req-1", "a" * 64, reservation.sequence, "c", "e", "/p", []),
                [],
                items_json=signed,
            )
        assert state.request("req-1") is not None
        assert state.request("req-1").items == [{"action": "cisco.reserve", "id": "i1"}]  # type: ignore[union-attr]
    with sqlite3.connect(inside_db) as db:
        assert db.execute("SELECT items FROM inside_request_items").fetchall() == [(signed,)]
        assert db.execute("SELECT items FROM inside_requests").fetchall() == [("",)]


def test_items_json_is_copied_from_a_file_in_chunks(
    inside_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("airgap.statedb.BLOB_CHUNK", 7)  # many chunks, and a short last one
    items = _items(5)
    source = tmp_path / "items.json"
    source.write_bytes(b"prefix" + json.dumps({"items": items}).encode())
    with InsideState(inside_db) as state, source.open("rb") as handle:
        handle.seek(len(b"prefix"))  # read from the current position to the end
        with state.reserve_sequence() as reservation:
            request = RequestRecord("req-1", "a" * 64, reservation.sequence, "c", "e", "/p", [])
            reservation.record(request, [], items_json=handle)
        assert state.request("req-1").items == items  # type: ignore[union-attr]
        assert [r.bundle_id for r in state.requests()] == ["req-1"]


def test_a_version_3_db_is_migrated_with_its_stored_items(inside_db: Path) -> None:
    # A home written before items.json had a table of its own: the document in the request row.
    with sqlite3.connect(inside_db, isolation_level=None) as db:
        for step in state_module.MIGRATIONS[:3]:
            step(db)
        db.execute("PRAGMA user_version = 3")
        db.execute(
            "INSERT INTO inside_requests VALUES ('old', ?, 1, 'c', 'e', '/p', ?, 'outstanding')",
            ("b" * 64, json.dumps({"items": _items(3)})),
        )
        db.execute(  # an early row: the list itself
            "INSERT INTO inside_requests VALUES ('older', ?, 2, 'c', 'e', '/p', ?, 'complete')",
            ("c" * 64, json.dumps(_items(1))),
        )
        db.execute("UPDATE inside_sequence SET value = 2")
    with InsideState(inside_db) as state:
        assert state.request("old").items == _items(3)  # type: ignore[union-attr]
        assert state.request("older").items == _items(1)  # type: ignore[union-attr]
        assert [r.bundle_id for r in state.requests(include_complete=True)] == ["older", "old"]
        assert _record(state, "new") == 3
        assert state.request("new").items == _items(2)  # type: ignore[union-attr]
    with sqlite3.connect(inside_db) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT DISTINCT items FROM inside_requests").fetchall() == [("",)]
