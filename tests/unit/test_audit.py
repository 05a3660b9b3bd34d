"""The hash-chained audit log: appends, verification naming the broken line, export."""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path

import pytest

from airgap.audit import GENESIS, Actor, AuditError, AuditLog, export_csv, export_rows, line_hash


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog(
        tmp_path / "audit.jsonl",
        tmp_path / "audit.head",
        Actor("ana", "lab-1", "sha256:" + "1" * 64),
    )
    for n in range(5):
        audit.append("verify", bundle_id=f"b{n}", manifest_sha256="2" * 64, details={"n": n})
    return audit


def lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines()


def test_chain_links_every_line(log: AuditLog) -> None:
    raw = lines(log)
    entries = [json.loads(line) for line in raw]
    assert entries[0]["prev"] == GENESIS
    for before, after in zip(raw, entries[1:], strict=False):
        assert after["prev"] == line_hash(before)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0]["actor"] == {
        "user": "ana",
        "host": "lab-1",
        "fingerprint": "sha256:" + "1" * 64,
    }
    report = log.verify()
    assert report.entries == 5 and report.head == line_hash(raw[-1]) == log.head()


def write(log: AuditLog, raw: list[bytes]) -> None:
    log.path.write_bytes(b"".join(line + b"\n" for line in raw))


def test_edited_line_is_named(log: AuditLog) -> None:
    raw = lines(log)
    raw[2] = raw[2].replace(b'"n":2', b'"n":9')
    write(log, raw)
    with pytest.raises(AuditError, match="line 4"):
        log.verify()


def test_deleted_line_is_named(log: AuditLog) -> None:
    raw = lines(log)
    del raw[1]
    write(log, raw)
    with pytest.raises(AuditError, match="line 2"):
        log.verify()


def test_reordered_lines_are_named(log: AuditLog) -> None:
    raw = lines(log)
    raw[1], raw[2] = raw[2], raw[1]
    write(log, raw)
    with pytest.raises(AuditError, match="line 2"):
        log.verify()


def test_edited_or_removed_last_line_is_caught_by_the_head(log: AuditLog) -> None:
    raw = lines(log)
    write(log, raw[:-1])
    with pytest.raises(AuditError, match=r"audit\.head"):
        log.verify()
    edited = json.loads(raw[-1])
    edited["outcome"] = "refused"
    import rfc8785

    write(log, [*raw[:-1], rfc8785.dumps(edited)])
    with pytest.raises(AuditError, match="line 5"):
        log.verify()


def test_non_canonical_line_is_named(log: AuditLog) -> None:
    raw = lines(log)
    raw[0] = json.dumps(json.loads(raw[0]), indent=1).replace("\n", "").encode()
    write(log, raw)
    with pytest.raises(AuditError, match="line 1"):
        log.verify()


def test_concurrent_appends_keep_the_chain(log: AuditLog) -> None:
    threads = [
        threading.Thread(target=lambda: [log.append("pack") for _ in range(20)]) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.verify().entries == 85


def test_export_csv_and_json(log: AuditLog) -> None:
    rows = export_rows(log)
    assert rows[0]["user"] == "ana" and rows[0]["bundle_id"] == "b0"
    parsed = list(csv.DictReader(io.StringIO(export_csv(rows))))
    assert [r["seq"] for r in parsed] == ["1", "2", "3", "4", "5"]
    assert json.loads(parsed[3]["details"]) == {"n": 3}
    assert set(parsed[0]) >= {
        "ts",
        "user",
        "host",
        "event",
        "outcome",
        "bundle_id",
        "manifest_sha256",
    }


def test_head_one_entry_behind_after_a_killed_append_is_accepted(log: AuditLog) -> None:
    raw = lines(log)
    # As if killed after the fifth line was fsynced but before audit.head was replaced.
    log.head_path.write_text(f"4 {line_hash(raw[3])}\n")
    (log.head_path.parent / ".audit.head.abc123.tmp").write_text("5 partial")
    assert log.verify().entries == 5
    log.append("verify")
    assert not list(log.head_path.parent.glob(".audit.head.*.tmp"))
    assert log.verify().entries == 6
    # Two entries behind is not a crash window: it is refused.
    raw = lines(log)
    log.head_path.write_text(f"4 {line_hash(raw[3])}\n")
    with pytest.raises(AuditError, match=r"audit\.head"):
        log.verify()
