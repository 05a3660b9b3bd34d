"""Tests of airgap.outside.journal: the item state machine, replay rules, resume, leases between
real processes, and durability across SIGKILL."""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airgap.errors import ConfigError, Replay
from airgap.outside.journal import (
    SCHEMA_VERSION,
    Busy,
    IllegalTransition,
    ItemSpec,
    ItemState,
    Journal,
    JournalError,
    StateDbError,
    UnknownItem,
)
from airgap.outside.process import response_items
from airgap.outside.vendor import Outcome

PRODUCER = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
HASH_A = "a" * 64
HASH_B = "b" * 64
POLL_ID = 773126444402795033  # larger than 2**53: must come back exact
DATA = Path(__file__).parent / "data"


def specs(n: int, prefix: str = "item") -> list[ItemSpec]:
    return [(f"{prefix}-{i:04d}", "cisco.reserve", f"C9300-24T:FOC{i:05d}") for i in range(n)]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def journal(db: Path) -> Iterator[Journal]:
    with Journal.open(db) as j:
        yield j


@pytest.fixture
def admitted(journal: Journal) -> Journal:
    journal.admit_request("req-1", PRODUCER, 1, HASH_A, specs(3))
    return journal


# --- opening -----------------------------------------------------------------------------------


def test_open_creates_a_private_wal_database(db: Path, journal: Journal) -> None:
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"requests", "items", "responses", "leases"} <= tables
    assert journal._db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_wal_side_files_are_private_too(db: Path, admitted: Journal) -> None:
    for side in (db.with_name("state.db-wal"), db.with_name("state.db-shm")):
        if side.exists():
            assert stat.S_IMODE(side.stat().st_mode) & 0o077 == 0


def test_reopen_keeps_data_and_schema(db: Path) -> None:
    with Journal.open(db) as j:
        j.admit_request("req-1", PRODUCER, 1, HASH_A, specs(2))
    with Journal.open(db) as j:
        assert len(j.items("req-1")) == 2


def test_open_refuses_a_newer_schema(db: Path) -> None:
    Journal.open(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StateDbError) as info:
        Journal.open(db)
    assert info.value.code == "E_CONFIG"
    assert "upgrade" in (info.value.hint or "").lower()


def test_open_refuses_a_missing_home_and_a_garbage_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Journal.open(tmp_path / "nope" / "state.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StateDbError):
        Journal.open(junk)


# --- admission and replay ----------------------------------------------------------------------


def test_admit_stores_the_request_and_all_items_as_new(journal: Journal) -> None:
    admission = journal.admit_request("req-1", PRODUCER, 5, HASH_A, specs(3), expires="2026-12-01")
    assert admission.new is True
    assert [i.item_id for i in admission.items] == ["item-0000", "item-0001", "item-0002"]
    assert {i.state for i in admission.items} == {ItemState.NEW}
    assert admission.request.sequence == 5 and admission.request.status == "open"
    assert journal.request("req-1") == admission.request


def test_same_request_again_resumes_with_its_state(admitted: Journal) -> None:
    admitted.mark_submitting("req-1", "item-0000")
    admitted.mark_submitted("req-1", "item-0000", {"poll_id": POLL_ID})
    again = admitted.admit_request("req-1", PRODUCER, 1, HASH_A, specs(3))
    assert again.new is False
    assert [i.state for i in again.items] == [ItemState.SUBMITTED, ItemState.NEW, ItemState.NEW]
    assert again.items[0].vendor_ref == {"poll_id": POLL_ID}
    assert len(admitted.items("req-1")) == 3  # nothing inserted twice


def test_same_id_with_a_different_hash_is_a_replay(admitted: Journal) -> None:
    with pytest.raises(Replay) as info:
        admitted.admit_request("req-1", PRODUCER, 1, HASH_B, specs(3))
    assert info.value.code == "E_REPLAY"
    assert HASH_A in info.value.message and HASH_B in info.value.message


@pytest.mark.parametrize("sequence", [1, 0])
def test_new_id_with_an_old_sequence_is_a_replay(admitted: Journal, sequence: int) -> None:
    admitted.admit_request("req-2", PRODUCER, 7, HASH_B, specs(1))
    with pytest.raises(Replay) as info:
        admitted.admit_request("req-3", PRODUCER, sequence, "c" * 64, specs(1))
    assert f"sequence {sequence}" in info.value.message
    assert "sequence 7" in info.value.message
    assert admitted.request("req-3") is None


def test_equal_sequence_is_a_replay_but_other_producers_are_independent(
    admitted: Journal,
) -> None:
    with pytest.raises(Replay):
        admitted.admit_request("req-2", PRODUCER, 1, HASH_B, specs(1))
    assert admitted.admit_request("req-2", OTHER, 1, HASH_B, specs(1)).new
    assert admitted.admit_request("req-3", PRODUCER, 2, "c" * 64, specs(1)).new


def test_admission_is_all_or_nothing(journal: Journal) -> None:
    with pytest.raises(JournalError):
        journal.admit_request("req-1", PRODUCER, 1, HASH_A, [*specs(2), specs(1)[0]])
    assert journal.request("req-1") is None
    assert journal.items("req-1") == []


# --- the state machine -------------------------------------------------------------------------


def test_asynchronous_happy_path(admitted: Journal) -> None:
    item = admitted.mark_submitting("req-1", "item-0000")
    assert item.state is ItemState.SUBMITTING and item.attempts == 1
    item = admitted.mark_submitted("req-1", "item-0000", {"poll_id": POLL_ID, "action": "auth"})
    assert item.state is ItemState.SUBMITTED
    item = admitted.mark_done("req-1", "item-0000", {"files": ["files/x/lic.txt"]})
    assert item.state is ItemState.DONE and item.final
    assert item.vendor_ref == {"poll_id": POLL_ID, "action": "auth"}  # kept beside the result
    assert item.result == {"files": ["files/x/lic.txt"]}


def test_synchronous_calls_go_straight_to_a_final_state(admitted: Journal) -> None:
    admitted.mark_submitting("req-1", "item-0000")
    assert admitted.mark_done("req-1", "item-0000", {"ok": True}).state is ItemState.DONE
    admitted.mark_submitting("req-1", "item-0001")
    failed = admitted.mark_failed("req-1", "item-0001", {"code": "E_VENDOR", "message": "no"})
    assert failed.state is ItemState.FAILED
    assert failed.error == {"code": "E_VENDOR", "message": "no"}


def test_items_refused_before_any_call_fail_from_new(admitted: Journal) -> None:
    item = admitted.mark_failed("req-1", "item-0002", {"code": "E_INPUT", "message": "bad MAC"})
    assert item.state is ItemState.FAILED and item.attempts == 0


def test_needs_attention_only_goes_back_through_resubmit(admitted: Journal) -> None:
    admitted.mark_submitting("req-1", "item-0000")
    held = admitted.mark_needs_attention("req-1", "item-0000", "lookup could not decide")
    assert held.state is ItemState.NEEDS_ATTENTION
    assert held.error == {"code": "NEEDS_ATTENTION", "message": "lookup could not decide"}
    with pytest.raises(IllegalTransition):
        admitted.mark_submitting("req-1", "item-0000")
    again = admitted.resubmit("req-1", "item-0000")
    assert again.state is ItemState.SUBMITTING and again.attempts == 2 and again.error is None
    admitted.mark_submitted("req-1", "item-0000", {"task": "/mgmt/x/1"})
    admitted.mark_needs_attention("req-1", "item-0000", "task vanished")
    # a later reconciliation may still settle it
    assert admitted.mark_done("req-1", "item-0000", {"ok": 1}).state is ItemState.DONE


# --- outcomes, stored in their own places --------------------------------------------------------


def test_an_ok_outcome_keeps_result_files_and_references_apart(admitted: Journal) -> None:
    admitted.mark_submitting("req-1", "item-0000")
    admitted.record_outcome("req-1", "item-0000", Outcome.pending({"poll_id": str(POLL_ID)}))
    lic = bytes(range(256))  # any bytes, not only text
    done = admitted.record_outcome(
        "req-1",
        "item-0000",
        Outcome.ok(
            {"auth_status": "AUTHORIZED"},
            files={"lic.txt": lic, "result.json": b"{}"},
            vendor_ref={"correlation_id": "c-1"},
        ),
    )
    assert done.state is ItemState.DONE
    assert done.result == {"auth_status": "AUTHORIZED"}
    assert done.files == {"lic.txt": lic, "result.json": b"{}"}
    assert done.outcome_refs == {"correlation_id": "c-1"}
    assert done.vendor_ref == {"poll_id": str(POLL_ID)}  # from SUBMITTED, kept
    assert done.error is None
    assert admitted.item("req-1", "item-0000") == done
    stored = admitted._db.conn.execute(
        "SELECT name, data FROM item_files WHERE item_id = 'item-0000' ORDER BY name"
    ).fetchall()
    assert [tuple(row) for row in stored] == [("lic.txt", lic), ("result.json", b"{}")]


def test_a_failed_outcome_keeps_its_result_out_of_the_error(admitted: Journal) -> None:
    admitted.mark_submitting("req-1", "item-0000")
    failed = admitted.record_outcome(
        "req-1", "item-0000", Outcome.failed("E_VENDOR", "taken", result={"status": "FAILED"})
    )
    assert failed.error == {"code": "E_VENDOR", "message": "taken"}
    assert failed.result == {"status": "FAILED"}
    assert failed.files == {} and failed.outcome_refs is None
    admitted.mark_submitting("req-1", "item-0001")
    bare = admitted.record_outcome("req-1", "item-0001", Outcome("failed"))
    assert bare.error == {"code": "E_VENDOR", "message": "failed"} and bare.result is None
    admitted.mark_submitting("req-1", "item-0002")
    held = admitted.record_outcome("req-1", "item-0002", Outcome.needs_attention("cannot tell"))
    assert held.state is ItemState.NEEDS_ATTENTION
    assert held.error == {"code": "NEEDS_ATTENTION", "message": "cannot tell"}
    assert admitted.items("req-1") == [failed, bare, held]


def test_a_pending_outcome_is_only_recorded_once(admitted: Journal) -> None:
    admitted.mark_submitting("req-1", "item-0000")
    pending = Outcome.pending({"poll_id": "7"})
    assert admitted.record_outcome("req-1", "item-0000", pending).state is ItemState.SUBMITTED
    with pytest.raises(IllegalTransition):  # the caller polls: nothing new to record
        admitted.record_outcome("req-1", "item-0000", pending)


@pytest.mark.parametrize(
    "path",
    [
        ["submitting"],
        ["submitting", "submitted"],
        ["submitting", "submitted", "done"],
        ["submitting", "failed"],
        ["failed"],
        ["submitting", "attention"],
        ["submitting", "attention", "resubmit"],
        ["submitting", "release"],
        ["submitting", "ok-outcome"],
    ],
)
def test_every_change_hands_back_the_item_exactly_as_a_read_gives_it(
    admitted: Journal, path: list[str]
) -> None:
    for step in path:
        returned = apply(admitted, step)
        assert returned == admitted.item("req-1", "item-0000"), step


def test_many_items_go_submitting_in_one_commit_or_none_does(db: Path, admitted: Journal) -> None:
    commits: list[str] = []
    admitted._db.conn.set_trace_callback(
        lambda sql: commits.append(sql) if sql.startswith("COMMIT") else None
    )
    marked = admitted.mark_submitting_many("req-1", ["item-0002", "item-0000"])
    admitted._db.conn.set_trace_callback(None)
    assert len(commits) == 1
    assert [(i.item_id, i.state, i.attempts) for i in marked] == [
        ("item-0002", ItemState.SUBMITTING, 1),
        ("item-0000", ItemState.SUBMITTING, 1),
    ]
    with Journal.open(db) as other:  # durable and visible once it returns
        assert other.items("req-1") == [marked[1], admitted.item("req-1", "item-0001"), marked[0]]
    before = admitted.items("req-1")
    with pytest.raises(IllegalTransition):  # item-0000 is no longer NEW
        admitted.mark_submitting_many("req-1", ["item-0001", "item-0000"])
    with pytest.raises(UnknownItem):
        admitted.mark_submitting_many("req-1", ["item-0001", "nope"])
    with pytest.raises(JournalError):
        admitted.mark_submitting_many("req-1", ["item-0001", "item-0001"])
    assert admitted.items("req-1") == before
    assert admitted.mark_submitting_many("req-1", []) == []


def test_outcomes_and_new_submits_are_made_durable_together_in_one_commit_or_none_is(
    db: Path, admitted: Journal
) -> None:
    admitted.mark_submitting_many("req-1", ["item-0000", "item-0001"])
    commits: list[str] = []
    admitted._db.conn.set_trace_callback(
        lambda sql: commits.append(sql) if sql.startswith("COMMIT") else None
    )
    changed = admitted.advance(
        "req-1",
        {
            "item-0001": Outcome.pending({"poll_id": str(POLL_ID)}),
            "item-0000": Outcome.ok({"auth_status": "AUTHORIZED"}),
        },
        ["item-0002"],
    )
    admitted._db.conn.set_trace_callback(None)
    assert len(commits) == 1
    assert [(i.item_id, i.state) for i in changed] == [
        ("item-0001", ItemState.SUBMITTED),
        ("item-0000", ItemState.DONE),
        ("item-0002", ItemState.SUBMITTING),
    ]
    with Journal.open(db) as other:  # durable and visible once it returns
        assert other.items("req-1") == [changed[1], changed[0], changed[2]]
    before = admitted.items("req-1")
    with pytest.raises(IllegalTransition):  # item-0000 is final; item-0001's outcome is not kept
        admitted.advance("req-1", {"item-0001": Outcome.ok({}), "item-0000": Outcome.ok({})}, [])
    with pytest.raises(IllegalTransition):  # item-0002 is not NEW
        admitted.advance("req-1", {"item-0001": Outcome.ok({})}, ["item-0002"])
    with pytest.raises(JournalError):  # one item, two changes
        admitted.advance("req-1", {"item-0002": Outcome.ok({})}, ["item-0002"])
    assert admitted.items("req-1") == before
    assert admitted.advance("req-1", {}, []) == []


def test_the_request_is_complete_once_its_last_item_is_final_whatever_the_order(
    admitted: Journal,
) -> None:
    admitted.mark_submitting_many("req-1", ["item-0000", "item-0001", "item-0002"])
    admitted.advance("req-1", {"item-0002": Outcome.ok({})}, [])
    admitted.advance("req-1", {"item-0000": Outcome.failed("E_VENDOR", "no")}, [])
    assert admitted.request("req-1").status == "open"  # type: ignore[union-attr]
    admitted.advance("req-1", {"item-0001": Outcome.ok({})}, [])
    assert admitted.request("req-1").status == "complete"  # type: ignore[union-attr]


def test_resubmitting_many_is_all_or_nothing(admitted: Journal) -> None:
    for item in ("item-0000", "item-0001"):
        apply(admitted, "submitting", item)
        apply(admitted, "attention", item)
    before = admitted.items("req-1")
    with pytest.raises(IllegalTransition):  # item-0002 is NEW
        admitted.resubmit_many("req-1", ["item-0000", "item-0002"])
    assert admitted.items("req-1") == before
    again = admitted.resubmit_many("req-1", ["item-0000", "item-0001"])
    assert {(i.state, i.attempts, i.error) for i in again} == {(ItemState.SUBMITTING, 2, None)}


def test_exported_items_go_from_new_to_submitted_with_their_own_refs_in_one_commit(
    db: Path, admitted: Journal
) -> None:
    refs = {
        "item-0001": {"via": "cssm-portal", "export": "X", "device_id": "1"},
        "item-0000": {"via": "cssm-portal", "export": "X", "save_as": "codes/a.txt"},
    }
    commits: list[str] = []
    admitted._db.conn.set_trace_callback(
        lambda sql: commits.append(sql) if sql.startswith("COMMIT") else None
    )
    marked = admitted.mark_exported_many("req-1", refs)
    admitted._db.conn.set_trace_callback(None)
    assert len(commits) == 1
    assert [(i.item_id, i.state, i.vendor_ref, i.attempts) for i in marked] == [
        ("item-0001", ItemState.SUBMITTED, refs["item-0001"], 1),
        ("item-0000", ItemState.SUBMITTED, refs["item-0000"], 1),
    ]
    with Journal.open(db) as other:
        assert other.item("req-1", "item-0001") == marked[0]
    before = admitted.items("req-1")
    with pytest.raises(IllegalTransition):  # only a NEW item can be exported
        admitted.mark_exported_many("req-1", {"item-0002": {}, "item-0000": {}})
    with pytest.raises(JournalError):
        admitted.mark_exported_many("req-1", {"item-0002": {"password": "x"}})
    assert admitted.items("req-1") == before


def test_many_outcomes_are_recorded_in_one_commit_or_none_is(admitted: Journal) -> None:
    admitted.mark_exported_many("req-1", {"item-0000": {"via": "p"}, "item-0001": {"via": "p"}})
    before = admitted.items("req-1")
    with pytest.raises(IllegalTransition):  # item-0002 is NEW: it cannot be DONE
        admitted.record_outcomes_many(
            "req-1",
            {"item-0000": Outcome.ok({}, files={"lic.txt": b"a"}), "item-0002": Outcome.ok({})},
        )
    assert admitted.items("req-1") == before
    done = admitted.record_outcomes_many(
        "req-1",
        {
            "item-0000": Outcome.ok({"n": 1}, files={"lic.txt": b"a"}, vendor_ref={"f": "x"}),
            "item-0001": Outcome.ok({"n": 2}, files={"ack.xml": b"b"}),
        },
    )
    assert [(i.state, dict(i.files), i.result) for i in done] == [
        (ItemState.DONE, {"lic.txt": b"a"}, {"n": 1}),
        (ItemState.DONE, {"ack.xml": b"b"}, {"n": 2}),
    ]
    assert admitted.items("req-1")[:2] == done
    assert done[0].vendor_ref == {"via": "p"} and done[0].outcome_refs == {"f": "x"}
    assert admitted.record_outcomes_many("req-1", {}) == []


def test_outcomes_holding_secrets_are_refused(admitted: Journal) -> None:
    admitted.mark_submitting("req-1", "item-0000")
    for outcome in (
        Outcome.ok({"access_token": "abc"}),
        Outcome.ok({}, vendor_ref={"Authorization": "x"}),
        Outcome.ok({}, files={"token": b"abc"}),
        Outcome.failed("E_VENDOR", "no", result={"client_secret": "abc"}),
        Outcome.failed("E_VENDOR", "Bearer abc.def"),
    ):
        with pytest.raises(JournalError):
            admitted.record_outcome("req-1", "item-0000", outcome)
    assert admitted.item("req-1", "item-0000").state is ItemState.SUBMITTING


# --- schema 1 journals --------------------------------------------------------------------------


def _schema_1_journal(path: Path) -> dict[str, object]:
    """The journal written by the schema 1 code (see the header of journal-v1.sql)."""
    conn = sqlite3.connect(path)
    conn.executescript((DATA / "journal-v1.sql").read_text())
    conn.close()
    expected: dict[str, object] = json.loads((DATA / "journal-v1-response.json").read_text())
    return expected


def test_a_schema_1_journal_is_migrated_and_answers_with_identical_response_items(
    db: Path,
) -> None:
    expected = _schema_1_journal(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    with Journal.open(db) as journal:
        items = journal.items("req-v1")
        got, files = response_items(
            items,
            expected["request_items"],  # type: ignore[arg-type]
            expected["transient"],  # type: ignore[arg-type]
        )
    assert json.dumps(got, sort_keys=True) == json.dumps(expected["items"], sort_keys=True)
    assert {f.path: f.source for f in files} == {
        name: base64.b64decode(data)
        for name, data in expected["files"].items()  # type: ignore[attr-defined]
    }
    by_id = {item.item_id: item for item in items}
    assert by_id["item-0001"].result == {"auth_status": "AUTHORIZED", "correlation_id": "c-1"}
    assert by_id["item-0001"].outcome_refs == {
        "correlation_id": "c-1",
        "poll_id": "773126444402795033",
    }
    assert by_id["item-0002"].files["lic.txt"] == bytes(range(256))
    assert by_id["item-0003"].error == {
        "code": "E_VENDOR",
        "message": "Device already reserved elsewhere",
    }
    assert by_id["item-0003"].result == {"correlation_id": "c-3", "status": "FAILED"}
    assert by_id["item-0004"].result is None
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_a_migrated_journal_goes_on_where_it_stood(db: Path) -> None:
    _schema_1_journal(db)
    with Journal.open(db) as journal:
        assert journal.admit_request("req-v1", PRODUCER, 7, HASH_A, []).new is False
        with pytest.raises(Replay):  # the replay rules still know the old request's sequence
            journal.admit_request("req-v2", PRODUCER, 7, HASH_B, specs(1))
        done = journal.record_outcome("req-v1", "item-0006", Outcome.ok({"x": 1}))
        assert done.vendor_ref == {"poll_id": "99"}
        again = journal.resubmit("req-v1", "item-0005")
        assert again.state is ItemState.SUBMITTING and again.attempts == 2
        with pytest.raises(IllegalTransition):  # final stays final
            journal.mark_submitting("req-v1", "item-0001")


ILLEGAL: list[tuple[list[str], str]] = [
    ([], "submitted"),
    ([], "done"),
    ([], "attention"),
    ([], "resubmit"),
    (["submitting"], "submitting"),
    (["submitting"], "resubmit"),
    (["submitting", "submitted"], "submitting"),
    (["submitting", "submitted"], "submitted"),
]


def apply(j: Journal, step: str, item: str = "item-0000") -> object:
    actions: dict[str, Callable[[], object]] = {
        "submitting": lambda: j.mark_submitting("req-1", item),
        "submitted": lambda: j.mark_submitted("req-1", item, {"poll_id": 1}),
        "done": lambda: j.mark_done("req-1", item, {"ok": True}),
        "failed": lambda: j.mark_failed("req-1", item, {"code": "E_VENDOR", "message": "x"}),
        "attention": lambda: j.mark_needs_attention("req-1", item, "why"),
        "resubmit": lambda: j.resubmit("req-1", item),
        "release": lambda: j.release("req-1", item),
        "ok-outcome": lambda: j.record_outcome(
            "req-1", item, Outcome.ok({"a": 1}, files={"lic.txt": b"L"}, vendor_ref={"c": "1"})
        ),
    }
    return actions[step]()


@pytest.mark.parametrize(("path", "step"), ILLEGAL)
def test_illegal_transitions_are_refused_and_change_nothing(
    admitted: Journal, path: list[str], step: str
) -> None:
    for done in path:
        apply(admitted, done)
    before = admitted.item("req-1", "item-0000")
    with pytest.raises(IllegalTransition) as info:
        apply(admitted, step)
    assert info.value.code == "E_INTERNAL"
    assert before.state.value in info.value.message
    assert admitted.item("req-1", "item-0000") == before


@pytest.mark.parametrize("final", ["done", "failed"])
@pytest.mark.parametrize(
    "step", ["submitting", "submitted", "done", "failed", "attention", "resubmit"]
)
def test_a_final_item_never_changes_again(admitted: Journal, final: str, step: str) -> None:
    apply(admitted, "submitting")
    apply(admitted, final)
    before = admitted.item("req-1", "item-0000")
    with pytest.raises(IllegalTransition) as info:
        apply(admitted, step)
    assert "final" in info.value.message
    assert admitted.item("req-1", "item-0000") == before


def test_unknown_items_are_reported(admitted: Journal) -> None:
    with pytest.raises(UnknownItem):
        admitted.mark_submitting("req-1", "nope")
    with pytest.raises(UnknownItem):
        admitted.item("req-9", "item-0000")


def test_secrets_never_enter_the_journal(admitted: Journal) -> None:
    admitted.mark_submitting("req-1", "item-0000")
    with pytest.raises(JournalError):
        admitted.mark_submitted("req-1", "item-0000", {"poll_id": 1, "access_token": "abc"})
    with pytest.raises(JournalError):
        admitted.mark_done("req-1", "item-0000", {"headers": {"X-F5-Auth-Token": "abc"}})
    with pytest.raises(JournalError):
        admitted.mark_failed("req-1", "item-0000", {"message": "Bearer abc.def"})
    assert admitted.item("req-1", "item-0000").state is ItemState.SUBMITTING


def test_request_completes_when_every_item_is_final(admitted: Journal) -> None:
    for item in ("item-0000", "item-0001"):
        apply(admitted, "submitting", item)
        apply(admitted, "done", item)
    assert admitted.request("req-1").status == "open"  # type: ignore[union-attr]
    apply(admitted, "failed", "item-0002")
    assert admitted.request("req-1").status == "complete"  # type: ignore[union-attr]


def test_items_in_filters_by_state(admitted: Journal) -> None:
    apply(admitted, "submitting", "item-0001")
    assert [i.item_id for i in admitted.items_in("req-1", [ItemState.NEW])] == [
        "item-0000",
        "item-0002",
    ]
    assert [i.item_id for i in admitted.items_in("req-1", ["SUBMITTING", "DONE"])] == ["item-0001"]
    assert admitted.items_in("req-1", []) == []


def test_transitions_are_visible_to_another_connection_at_once(db: Path, admitted: Journal) -> None:
    admitted.mark_submitting("req-1", "item-0000")
    with Journal.open(db) as other:
        assert other.item("req-1", "item-0000").state is ItemState.SUBMITTING


# --- responses and status ----------------------------------------------------------------------


def test_responses_are_recorded_per_request(admitted: Journal) -> None:
    first = admitted.record_response("resp-1", "req-1", HASH_B, "d" * 64, path="/o/r1.airgap")
    admitted.record_response("resp-2", "req-1", "e" * 64, "d" * 64, created="2999-01-01T00:00:00Z")
    got = admitted.responses_for("req-1")
    assert [r.bundle_id for r in got] == ["resp-1", "resp-2"]
    assert got[0] == first and first.path == "/o/r1.airgap"
    with pytest.raises(JournalError):
        admitted.record_response("resp-1", "req-1", HASH_B, "d" * 64)
    with pytest.raises(JournalError):
        admitted.record_response("resp-3", "req-404", HASH_B, "d" * 64)


def test_summary_counts_states_and_lists_attention(admitted: Journal) -> None:
    admitted.admit_request("req-2", PRODUCER, 2, HASH_B, specs(1, "other"))
    apply(admitted, "submitting", "item-0000")
    apply(admitted, "attention", "item-0000")
    apply(admitted, "submitting", "item-0001")
    admitted.record_response("resp-1", "req-1", HASH_B, "d" * 64)
    summary = admitted.summary()
    first, second = summary.requests
    assert first.request.bundle_id == "req-1"
    assert dict(first.counts) == {
        "NEW": 1,
        "SUBMITTING": 1,
        "SUBMITTED": 0,
        "DONE": 0,
        "FAILED": 0,
        "NEEDS_ATTENTION": 1,
    }
    assert first.responses == 1 and second.responses == 0
    assert [i.item_id for i in summary.attention] == ["item-0000"]
    assert [i.item_id for i in summary.in_flight] == ["item-0001"]
    as_json = summary.to_dict()
    assert as_json["requests"][0]["items"]["NEEDS_ATTENTION"] == 1
    assert as_json["attention"][0]["state"] == "NEEDS_ATTENTION"


# --- threads -----------------------------------------------------------------------------------


def test_a_thread_pool_runs_items_through_one_journal(journal: Journal) -> None:
    journal.admit_request("req-1", PRODUCER, 1, HASH_A, specs(60))

    def work(item_id: str) -> None:
        journal.mark_submitting("req-1", item_id)
        journal.mark_submitted("req-1", item_id, {"poll_id": POLL_ID})
        journal.mark_done("req-1", item_id, {"ok": True})

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, [s[0] for s in specs(60)]))
    items = journal.items("req-1")
    assert {i.state for i in items} == {ItemState.DONE}
    assert {i.attempts for i in items} == {1}


def test_racing_connections_submit_each_item_once(db: Path, journal: Journal) -> None:
    """Separate connections (as separate processes would have) race for the same items."""
    journal.admit_request("req-1", PRODUCER, 1, HASH_A, specs(20))
    wins: list[str] = []
    lock = threading.Lock()

    def racer() -> None:
        with Journal.open(db) as mine:
            for item_id, _, _ in specs(20):
                try:
                    mine.mark_submitting("req-1", item_id)
                except IllegalTransition:
                    continue
                with lock:
                    wins.append(item_id)

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [s[0] for s in specs(20)]  # each item won exactly once


# --- leases between processes ------------------------------------------------------------------

CLAIMER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from airgap.outside.journal import Busy, Journal

    db, go, hold = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    with Journal.open(db) as j:
        print("ready", flush=True)
        while not go.exists():
            time.sleep(0.005)
        try:
            with j.claim("req-1", "outside process"):
                print("got", flush=True)
                time.sleep(hold)
        except Busy as exc:
            print("busy", exc.code, exc.hint, flush=True)
    """
)


def spawn_claimer(db: Path, go: Path, hold: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CLAIMER, str(db), str(go), str(hold)],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_two_processes_cannot_both_claim_a_request(db: Path, admitted: Journal) -> None:
    go = db.with_name("go")
    children = [spawn_claimer(db, go, hold=1.0) for _ in range(2)]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    go.touch()
    outputs = [child.communicate(timeout=20)[0].strip() for child in children]
    assert sorted(o.split()[0] for o in outputs) == ["busy", "got"]
    loser = next(o for o in outputs if o.startswith("busy"))
    winner_pid = children[[o.startswith("got") for o in outputs].index(True)].pid
    assert "E_BUSY" in loser
    assert f"another airgap outside process is working on this request (pid {winner_pid})" in loser
    with admitted.claim("req-1", "me"):  # released on the winner's exit
        pass


def test_a_held_claim_refuses_this_process_then_is_released(db: Path, admitted: Journal) -> None:
    go = db.with_name("go")
    go.touch()
    child = spawn_claimer(db, go, hold=30.0)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    assert child.stdout.readline().strip() == "got"
    try:
        with pytest.raises(Busy) as info, admitted.claim("req-1", "me"):
            pass
        assert info.value.code == "E_BUSY" and info.value.exit_code == 1
        assert f"(pid {child.pid})" in (info.value.hint or "")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # The holder died without releasing: its lease is stale and is taken over.
    with admitted.claim("req-1", "me") as lease:
        assert lease.pid == os.getpid()
    with admitted.claim("req-1", "me"):  # and released again on exit
        pass


def test_a_claim_is_exclusive_within_a_process_too(admitted: Journal) -> None:
    with admitted.claim("req-1", "first"), pytest.raises(Busy), admitted.claim("req-1", "second"):
        pass
    with admitted.claim("req-1", "third"):
        pass


def test_a_claim_from_another_host_is_respected_until_broken(admitted: Journal) -> None:
    admitted._db.conn.execute(
        "INSERT INTO leases VALUES ('req-1', 'outside process', 1, 'elsewhere', NULL, "
        "'2026-01-01T00:00:00Z', 'tok')"
    )
    with pytest.raises(Busy) as info, admitted.claim("req-1", "me"):
        pass
    assert "elsewhere" in info.value.message
    broken = admitted.break_claim("req-1")
    assert broken is not None and broken.host == "elsewhere"
    with admitted.claim("req-1", "me"):
        pass
    assert admitted.break_claim("req-1") is None


# --- crash safety ------------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from airgap.outside.journal import ItemState, Journal

    db, calls, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    specs = [(f"item-{i:04d}", "cisco.reserve", f"C9300:FOC{i:05d}") for i in range(n)]
    fd = os.open(calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with Journal.open(db) as j:
        admission = j.admit_request("req-1", "sha256:" + "ab" * 32, 1, "a" * 64, specs)
        # Resume: what a crash left SUBMITTING may have reached the vendor. Never resend it.
        for item in admission.items:
            if item.state is ItemState.SUBMITTING:
                j.mark_needs_attention("req-1", item.item_id, "crashed during the call")
        for item in j.items_in("req-1", [ItemState.SUBMITTED]):
            j.mark_done("req-1", item.item_id, {"polled": True})
        for item in j.items_in("req-1", [ItemState.NEW]):
            j.mark_submitting("req-1", item.item_id)
            os.write(fd, (item.item_id + "\\n").encode())  # the vendor call
            j.mark_submitted("req-1", item.item_id, {"poll_id": 10**17 + int(item.item_id[5:])})
            j.mark_done("req-1", item.item_id, {"ok": True})
            print(item.item_id, flush=True)
    print("finished", flush=True)
    """
)


def check_after_crash(db: Path, calls: Path, n: int, reported: list[str]) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    with Journal.open(db) as j:
        items = {i.item_id: i for i in j.items("req-1")}
    assert len(items) == n  # nothing lost, nothing doubled
    for item_id in reported:
        assert items[item_id].state is ItemState.DONE
    called = calls.read_text().split()
    assert len(called) == len(set(called))  # at most one vendor call per item
    for item_id in called:
        # The SUBMITTING row was durable before the call: a called item is never NEW.
        assert items[item_id].state is not ItemState.NEW


@pytest.mark.parametrize("pause", [0.0, 0.0007, 0.0023])
def test_sigkill_mid_run_loses_nothing_and_resubmits_nothing(tmp_path: Path, pause: float) -> None:
    db, calls, n = tmp_path / "state.db", tmp_path / "calls.log", 150
    reported: list[str] = []
    for round_ in range(3):  # kill, resume and kill again: each run starts from a crash
        child = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(db), str(calls), str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        reported += [child.stdout.readline().strip() for _ in range(10)]
        time.sleep(pause * (round_ + 1))  # land somewhere inside a transition
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        check_after_crash(db, calls, n, reported)

    # Run the same command again: it finishes without calling anything twice.
    rerun = subprocess.run(
        [sys.executable, "-c", WORKER, str(db), str(calls), str(n)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert rerun.stdout.strip().endswith("finished")
    check_after_crash(db, calls, n, reported)
    called = set(calls.read_text().split())
    with Journal.open(db) as j:
        final = j.items("req-1")
    for item in final:
        assert item.state in (ItemState.DONE, ItemState.NEEDS_ATTENTION), item
        if item.state is ItemState.NEEDS_ATTENTION:
            assert item.item_id not in reported
        else:
            assert item.item_id in called  # DONE only after its one call
    assert len(final) == n


def test_clock_is_injectable(db: Path) -> None:
    fixed = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    with Journal.open(db, clock=lambda: fixed) as j:
        admission = j.admit_request("req-1", PRODUCER, 1, HASH_A, specs(1))
    assert admission.request.received_at == "2026-11-23T12:00:00.000Z"
    assert admission.items[0].updated_at == "2026-11-23T12:00:00.000Z"


def test_busy_database_is_reported_as_busy(db: Path, journal: Journal) -> None:
    with Journal.open(db, busy_timeout=0.1) as impatient:
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(Busy) as info:
                impatient.admit_request("req-1", PRODUCER, 1, HASH_A, specs(1))
            assert info.value.code == "E_BUSY"
            assert time.monotonic() - started < 5
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert impatient.admit_request("req-1", PRODUCER, 1, HASH_A, specs(1)).new
