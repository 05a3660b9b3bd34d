"""`pack`: plans and capture folders into a signed request that the outside verifies."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import CONFORMANCE

from airgap import spool
from airgap.bundle import BundleBuilder, TrustPolicy, open_bundle
from airgap.bundle import writer as writer_module
from airgap.emulators.device import render_rum_report, render_udi_capture
from airgap.errors import ConfigError, DecryptFailed, InputError, PlanError
from airgap.home import Home
from airgap.inside import intake
from airgap.inside import pack as pack_module
from airgap.inside.pack import PackResult, pack
from airgap.inside.state import InsideState, SequenceReservation, StateError
from airgap.review import verify
from airgap.schema import validate

MakePlan = Callable[..., Path]
Sample = Callable[[str], Path]

TAG = "regid.2017-03.com.cisco.advantagek9,1.0_bd1da96e-ec1d-412b-a50e-53846b347d53"
CODE = "Cm01IB-cCt9Y6-JQ5Xlv-zS3GTE-L8ORTk-uTkMbV-ns6b1f-XlcTU1-0xZ"


@pytest.fixture
def sites(make_home: Callable[..., Path], exchange_cards: Callable[[Path, Path], None]) -> Any:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    return Home.open(inside), Home.open(outside)


@pytest.fixture
def devices(device_folders: Callable[[int, int], dict[str, Path]]) -> dict[str, Path]:
    """Three emulated devices: UDI captures, RUM reports, and two return-code captures."""
    return device_folders(3, 2)


def run(home: Home, output: Path, **kwargs: Any) -> PackResult:
    options: dict[str, Any] = {
        "plans": [],
        "udi_dir": None,
        "entitlements": [],
        "rum_dir": None,
        "returns_dir": None,
    }
    options.update(kwargs)
    return pack(home, output=output, **options)


def opened_items(home: Home, path: Path) -> tuple[Any, list[dict[str, Any]], dict[str, bytes]]:
    """Verify at `home` (the outside) and return the manifest, items and member bytes."""
    with open_bundle(
        path, home.policy(expected_kind="request"), identity=home.identity(), keep_files=True
    ) as opened:
        files = {
            m.path: opened.file_path(m.path).read_bytes()
            for m in opened.manifest.members
            if m.path.startswith("files/")
        }
        return opened.manifest, opened.items, files


def assert_nothing_written(home: Home, tmp_path: Path, output: Path, sequence: int = 0) -> None:
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}")]
    with InsideState(home.paths.state_db) as state:
        assert state.last_sequence() == sequence
        assert len(state.requests(include_complete=True)) == sequence


def test_pack_csv_plan_numbers_items_and_records_the_request(
    sites: Any, make_plan: MakePlan, sample: Sample, tmp_path: Path
) -> None:
    inside, outside = sites
    shutil.copy(sample("cisco/rum/rum-report-c9300.xml"), tmp_path / "rum report (1).xml")
    plan = make_plan(
        [
            {"action": "cisco.reserve", "hostname": "sw-1", "pid": "C9300-24T", "sn": "FOC1",
             "entitlements": f"{TAG}:2"},
            {"action": "cisco.report_usage", "rum_file": "rum report (1).xml"},
            {"action": "cisco.return", "pid": "C9300-24T", "sn": "FOC2", "return_code": CODE},
            {"action": "bigiq.assign", "mac": "0050.569a.3ce1", "pool": "pool-1",
             "hypervisor": "vmware"},
            {"action": "bigiq.assignments"},
        ]
    )  # fmt: skip
    output = tmp_path / "req.airgap"
    result = run(inside, output, plans=[plan])
    assert result.items == 5
    assert result.by_action == {
        "bigiq.assign": 1,
        "bigiq.assignments": 1,
        "cisco.reserve": 1,
        "cisco.report_usage": 1,
        "cisco.return": 1,
    }
    assert result.by_vendor == {"bigiq": 2, "cisco": 3}
    assert result.size == output.stat().st_size
    assert result.sequence == 1
    manifest, items, files = opened_items(outside, output)
    assert manifest.bundle_id == result.bundle_id
    assert manifest.sequence == 1
    assert [i["id"] for i in items] == ["i00001", "i00002", "i00003", "i00004", "i00005"]
    validate("request-items", {"items": items}, what="items.json")
    assert items[0]["device"] == {"hostname": "sw-1", "udi": {"pid": "C9300-24T", "sn": "FOC1"}}
    assert items[0]["params"] == {"entitlements": [{"tag": TAG, "count": 2}]}
    # The RUM report travels exactly as saved, under a sanitized name.
    assert items[1]["files"] == ["files/i00002/rum_report__1_.xml"]
    assert (
        files["files/i00002/rum_report__1_.xml"]
        == sample("cisco/rum/rum-report-c9300.xml").read_bytes()
    )
    assert items[3]["device"] == {"mac": "00:50:56:9A:3C:E1"}
    with InsideState(inside.paths.state_db) as state:
        request = state.request(result.bundle_id)
        assert request is not None
        assert request.manifest_sha256 == result.manifest_sha256
        assert request.items == items
        assert request.status == "outstanding"
        assert [r.status for r in state.items(result.bundle_id)] == ["outstanding"] * 5
    entry = json.loads(inside.paths.audit_log.read_text().splitlines()[-1])
    assert entry["event"] == "pack"
    assert entry["bundle_id"] == result.bundle_id
    assert entry["manifest_sha256"] == result.manifest_sha256
    assert entry["details"]["by_vendor"] == {"bigiq": 2, "cisco": 3}
    assert entry["details"]["file"] == "req.airgap"


def test_pack_json_plan(sites: Any, tmp_path: Path) -> None:
    inside, outside = sites
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "items": [
                    {"action": "bigiq.revoke", "mac": "52:54:00:aa:bb:cc", "pool": "p"},
                    {"action": "cisco.usage_summary", "tags": [TAG]},
                ]
            }
        )
    )
    result = run(inside, tmp_path / "req.airgap", plans=[plan])
    _, items, _ = opened_items(outside, result.path)
    assert [(i["id"], i["action"]) for i in items] == [
        ("i00001", "bigiq.revoke"),
        ("i00002", "cisco.usage_summary"),
    ]
    assert items[1]["params"] == {"tags": [TAG]}


def test_pack_capture_folders_in_input_order(
    sites: Any, devices: dict[str, Path], tmp_path: Path
) -> None:
    inside, outside = sites
    result = run(
        inside,
        tmp_path / "out" / "req.airgap",
        udi_dir=devices["udi"],
        entitlements=[f"{TAG}:1", "DNA_ADV"],
        rum_dir=devices["rum"],
        returns_dir=devices["returns"],
    )
    assert result.by_action == {"cisco.report_usage": 3, "cisco.reserve": 3, "cisco.return": 2}
    _, items, files = opened_items(outside, result.path)
    assert [i["action"] for i in items] == ["cisco.reserve"] * 3 + ["cisco.report_usage"] * 3 + [
        "cisco.return"
    ] * 2
    assert items[0]["params"]["entitlements"] == [
        {"tag": TAG, "count": 1},
        {"tag": "DNA_ADV", "count": 1},
    ]
    rum_names = sorted(p.name for p in devices["rum"].iterdir())
    for offset, name in enumerate(rum_names):
        member = f"files/i{4 + offset:05d}/{name}"
        assert items[3 + offset]["files"] == [member]
        assert files[member] == (devices["rum"] / name).read_bytes()
    assert items[6]["params"]["return_code"].startswith("C")


def test_pack_the_shared_samples(sites: Any, sample: Sample, tmp_path: Path) -> None:
    inside, outside = sites
    udi = tmp_path / "udi"
    udi.mkdir()
    for name in ("ha.txt", "with-prompt.txt"):  # single.txt repeats with-prompt.txt's UDI
        shutil.copy(sample(f"cisco/show-license-udi/{name}"), udi / name)
    rum = tmp_path / "rum"
    rum.mkdir()
    for name in ("rum-report-c9300.xml", "rum-report-isr.xml"):
        shutil.copy(sample(f"cisco/rum/{name}"), rum / name)
    result = run(inside, tmp_path / "req.airgap", udi_dir=udi, entitlements=[TAG], rum_dir=rum)
    assert result.by_action["cisco.report_usage"] == 2
    assert result.by_action["cisco.reserve"] == 4  # the HA capture gives one per UDI
    _, items, _ = opened_items(outside, result.path)
    validate("request-items", {"items": items}, what="items.json")


def test_duplicates_across_sources_are_refused_naming_both(
    sites: Any, devices: dict[str, Path], make_plan: MakePlan, tmp_path: Path
) -> None:
    inside, _ = sites
    capture = sorted(devices["udi"].iterdir())[0]
    plan = make_plan(
        [{"action": "cisco.reserve", "pid": "C9300-24T", "sn": "FOC00000000", "entitlements": TAG}]
    )
    output = tmp_path / "req.airgap"
    with pytest.raises(PlanError) as caught:
        run(inside, output, plans=[plan], udi_dir=devices["udi"], entitlements=[TAG])
    assert caught.value.code == "E_PLAN"
    problem = caught.value.problems[0]
    assert str(capture) in problem and f"{plan}:2" in problem
    assert_nothing_written(inside, tmp_path, output)


def test_bad_plan_writes_nothing(sites: Any, make_plan: MakePlan, tmp_path: Path) -> None:
    inside, _ = sites
    good = make_plan([{"action": "bigiq.assignments"}], name="good.csv")
    output = tmp_path / "req.airgap"
    run(inside, tmp_path / "first.airgap", plans=[good])
    bad = make_plan(
        [{"action": "cisco.reserve", "pid": "C9300-24T"}, {"action": "nope"}], name="bad.csv"
    )
    with pytest.raises(PlanError) as caught:
        run(inside, output, plans=[good, bad])
    assert len(caught.value.problems) >= 2
    assert all(p.startswith(f"{bad}:") for p in caught.value.problems)
    assert_nothing_written(inside, tmp_path, output, sequence=1)


def test_an_unreadable_capture_folder_writes_nothing(sites: Any, tmp_path: Path) -> None:
    inside, _ = sites
    output = tmp_path / "req.airgap"
    with pytest.raises(InputError):
        run(inside, output, rum_dir=tmp_path / "missing", returns_dir=tmp_path / "missing2")
    assert_nothing_written(inside, tmp_path, output)


def test_nothing_to_pack(sites: Any, tmp_path: Path) -> None:
    inside, _ = sites
    with pytest.raises(PlanError, match="nothing to pack"):
        run(inside, tmp_path / "req.airgap")
    with pytest.raises(PlanError, match="--udi"):
        run(inside, tmp_path / "req.airgap", entitlements=[TAG], rum_dir=tmp_path)
    assert_nothing_written(inside, tmp_path, tmp_path / "req.airgap")


def test_an_existing_output_is_never_overwritten(
    sites: Any, make_plan: MakePlan, tmp_path: Path
) -> None:
    inside, _ = sites
    output = tmp_path / "req.airgap"
    output.write_bytes(b"precious")
    plan = make_plan([{"action": "bigiq.assignments"}])
    with pytest.raises(ConfigError, match="already exists") as caught:
        run(inside, output, plans=[plan])
    assert caught.value.code == "E_CONFIG"
    assert "-o" in (caught.value.hint or "")
    assert output.read_bytes() == b"precious"
    with InsideState(inside.paths.state_db) as state:
        assert state.last_sequence() == 0


def test_a_failure_while_recording_removes_the_output(
    sites: Any, make_plan: MakePlan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, _ = sites
    plan = make_plan([{"action": "bigiq.assignments"}])

    def broken(self: SequenceReservation, *args: Any, **kwargs: Any) -> None:
        raise ConfigError("disk full")

    monkeypatch.setattr(SequenceReservation, "record", broken)
    output = tmp_path / "req.airgap"
    with pytest.raises(ConfigError, match="disk full"):
        run(inside, output, plans=[plan])
    assert_nothing_written(inside, tmp_path, output)


def test_a_bundle_that_fails_while_item_rows_go_in_leaves_no_rows(
    sites: Any, devices: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, _ = sites
    started = threading.Event()
    real = SequenceReservation.record_items

    def slow_rows(self: SequenceReservation, *args: Any) -> None:
        started.set()
        real(self, *args)

    def broken_build(*args: Any, **kwargs: Any) -> None:
        assert started.wait(5)  # the rows are on their way when the build fails
        raise InputError("a report vanished")

    monkeypatch.setattr(SequenceReservation, "record_items", slow_rows)
    monkeypatch.setattr(BundleBuilder, "write", broken_build)
    output = tmp_path / "req.airgap"
    with pytest.raises(InputError, match="vanished"):
        run(inside, output, udi_dir=devices["udi"], entitlements=[TAG])
    assert_nothing_written(inside, tmp_path, output)
    with sqlite3.connect(inside.paths.state_db) as db:
        assert db.execute("SELECT COUNT(*) FROM inside_items").fetchone()[0] == 0


def test_a_failed_commit_takes_the_published_file_back(
    sites: Any, make_plan: MakePlan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, _ = sites
    plan = make_plan([{"action": "bigiq.assignments"}])
    real = InsideState.reserve_sequence
    seen: list[bool] = []

    @contextlib.contextmanager
    def failing_commit(self: InsideState) -> Iterator[SequenceReservation]:
        with real(self) as reservation:
            yield reservation
            seen.append((tmp_path / "req.airgap").exists())
            raise StateError("database or disk is full")  # rolls back instead of committing

    monkeypatch.setattr(InsideState, "reserve_sequence", failing_commit)
    output = tmp_path / "req.airgap"
    with pytest.raises(StateError):
        run(inside, output, plans=[plan])
    assert seen == [True]
    assert_nothing_written(inside, tmp_path, output)


def test_sequence_increments_per_pack(sites: Any, make_plan: MakePlan, tmp_path: Path) -> None:
    inside, outside = sites
    plan = make_plan([{"action": "bigiq.assignments"}])
    first = run(inside, tmp_path / "a.airgap", plans=[plan])
    second = run(inside, tmp_path / "b.airgap", plans=[plan], expires=timedelta(hours=2))
    assert (first.sequence, second.sequence) == (1, 2)
    assert second.expires - second.created == timedelta(hours=2)
    assert first.expires - first.created == timedelta(days=7)  # bundle.expiry's default
    assert opened_items(outside, second.path)[0].sequence == 2


def test_encrypted_compressed_pack_verifies_at_the_outside(
    sites: Any, devices: dict[str, Path], tmp_path: Path
) -> None:
    inside, outside = sites
    output = tmp_path / "req.airgap"
    result = run(
        inside, output, rum_dir=devices["rum"], encrypt=True, compress=True, expires=timedelta(1)
    )
    assert output.read_bytes().startswith(b"age-encryption.org/v1")
    assert result.encrypted and result.compressed
    opened = verify(outside, output, expected_kind="request")
    assert opened.encrypted and opened.compressed
    assert opened.manifest_sha256 == result.manifest_sha256
    with (
        pytest.raises(DecryptFailed, match="no identity"),
        open_bundle(output, TrustPolicy(trust=outside.trust_store())),
    ):
        pass


def test_encrypt_needs_a_trusted_outside_site(
    make_home: Callable[..., Path], make_plan: MakePlan, tmp_path: Path
) -> None:
    inside = Home.open(make_home("inside"))
    plan = make_plan([{"action": "bigiq.assignments"}])
    output = tmp_path / "req.airgap"
    with pytest.raises(ConfigError, match="trusts no outside"):
        run(inside, output, plans=[plan], encrypt=True)
    assert_nothing_written(inside, tmp_path, output)


def test_pack_refuses_an_outside_home(sites: Any, make_plan: MakePlan, tmp_path: Path) -> None:
    _, outside = sites
    plan = make_plan([{"action": "bigiq.assignments"}])
    with pytest.raises(ConfigError, match="needs an inside home"):
        run(outside, tmp_path / "req.airgap", plans=[plan])


@pytest.mark.parametrize("compress", [False, True])
def test_packed_bundle_passes_the_conformance_check(
    sites: Any, devices: dict[str, Path], tmp_path: Path, compress: bool
) -> None:
    inside, _ = sites
    # The checker sits in ../shared beside the repository, as CI lays it out: missing is a
    # broken checkout, not a reason to skip.
    assert CONFORMANCE.is_file(), f"{CONFORMANCE} is missing"
    result = run(
        inside,
        tmp_path / "req.airgap",
        udi_dir=devices["udi"],
        entitlements=[TAG],
        rum_dir=devices["rum"],
        compress=compress,
    )
    check = subprocess.run(
        [
            sys.executable,
            str(CONFORMANCE),
            str(result.path),
            "--pubkey",
            str(inside.paths.signing_pub),
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout
    assert "valid Ed25519 signature" in check.stdout


def test_sequential_loading_gives_the_same_items(
    sites: Any, devices: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, outside = sites
    options = {"udi_dir": devices["udi"], "entitlements": [TAG], "rum_dir": devices["rum"]}
    parallel = run(inside, tmp_path / "a.airgap", **options)
    monkeypatch.setattr(intake, "_workers", lambda files: 0)
    sequential = run(inside, tmp_path / "b.airgap", **options)
    assert opened_items(outside, parallel.path)[1:] == opened_items(outside, sequential.path)[1:]


def test_errors_from_worker_processes_keep_their_problems(
    sites: Any, devices: dict[str, Path], make_plan: MakePlan, tmp_path: Path
) -> None:
    inside, _ = sites
    bad = make_plan([{"action": "cisco.reserve"}, {"action": "bigiq.revoke"}])
    with pytest.raises(PlanError) as caught:
        run(inside, tmp_path / "req.airgap", plans=[bad], rum_dir=devices["rum"])
    assert len(caught.value.problems) >= 2
    assert caught.value.hint


# --- streaming: what is held, what is read again ------------------------------------------------


def many_devices(root: Path, count: int) -> tuple[Path, Path]:
    """`count` devices' UDI captures and RUM reports, written fast (the emulator's renderers)."""
    udi, rum = root / "udi", root / "rum"
    udi.mkdir(parents=True)
    rum.mkdir()
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    for n in range(count):
        pid, sn, host = "C9300-24T", f"FOC{n:08d}", f"dev-{n}"
        (udi / f"{host}.udi.txt").write_text(render_udi_capture(pid=pid, sn=sn, hostname=host))
        (rum / f"{host}.rum.xml").write_text(
            render_rum_report(pid=pid, sn=sn, hostname=host, now=now)
        )
    return udi, rum


def test_item_rows_go_in_by_batches_in_item_order(
    sites: Any, devices: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, outside = sites
    monkeypatch.setattr(pack_module, "_ROWS_BATCH", 2)
    result = run(
        inside,
        tmp_path / "req.airgap",
        udi_dir=devices["udi"],
        entitlements=[TAG],
        rum_dir=devices["rum"],
        returns_dir=devices["returns"],
    )
    _, items, _ = opened_items(outside, result.path)
    with InsideState(inside.paths.state_db) as state:
        rows = state.items(result.bundle_id)
        request = state.request(result.bundle_id)
    assert [(r.item_id, r.action, r.device_key) for r in rows] == [
        (i["id"], i["action"], f"{i['device']['udi']['pid']}:{i['device']['udi']['sn']}")
        for i in items
    ]
    assert request is not None and request.items == items


def test_a_report_that_vanishes_before_it_is_copied_leaves_nothing(
    sites: Any, devices: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, _ = sites
    real = pack_module._gather
    victim = sorted(devices["rum"].iterdir())[1]

    def gather_then_remove(*args: Any) -> None:
        real(*args)
        victim.unlink()  # parsed and hashed already; the writer reads it again to copy it

    monkeypatch.setattr(pack_module, "_gather", gather_then_remove)
    output = tmp_path / "req.airgap"
    with pytest.raises(InputError, match="cannot read") as caught:
        run(inside, output, rum_dir=devices["rum"])
    assert str(victim) in caught.value.message
    assert_nothing_written(inside, tmp_path, output)


def test_a_report_that_changes_size_before_it_is_copied_leaves_nothing(
    sites: Any, devices: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, _ = sites
    real = pack_module._gather
    victim = sorted(devices["rum"].iterdir())[0]

    def gather_then_append(*args: Any) -> None:
        real(*args)
        with victim.open("ab") as report:
            report.write(b"\n")

    monkeypatch.setattr(pack_module, "_gather", gather_then_append)
    output = tmp_path / "req.airgap"
    with pytest.raises(InputError, match="changed while it was being packed"):
        run(inside, output, udi_dir=devices["udi"], entitlements=[TAG], rum_dir=devices["rum"])
    assert_nothing_written(inside, tmp_path, output)
    with sqlite3.connect(inside.paths.state_db) as db:
        assert db.execute("SELECT COUNT(*) FROM inside_items").fetchone()[0] == 0


def test_a_bad_input_is_reported_before_duplicates_found_earlier(
    sites: Any, devices: dict[str, Path], make_plan: MakePlan, tmp_path: Path
) -> None:
    inside, _ = sites
    plan = make_plan(
        [{"action": "cisco.reserve", "pid": "C9300-24T", "sn": "FOC00000000", "entitlements": TAG}]
    )
    (devices["rum"] / "zz-bad.rum.xml").write_text("<html></html>")
    output = tmp_path / "req.airgap"
    # The plan's device repeats the first UDI capture's, and a later report does not parse:
    # the bad input comes first, as when every input was loaded before the duplicate check.
    with pytest.raises(InputError, match=r"zz-bad\.rum\.xml"):
        run(
            inside,
            output,
            plans=[plan],
            udi_dir=devices["udi"],
            entitlements=[TAG],
            rum_dir=devices["rum"],
        )
    assert_nothing_written(inside, tmp_path, output)


def test_pack_memory_does_not_grow_with_the_items(
    sites: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regression test for holding every item or report (about 10 KB a device before)."""
    inside, _ = sites
    # Everything in this process, where tracemalloc sees it, in buffers far smaller than the
    # requests, so that what grows is what is held per item.
    monkeypatch.setattr(intake, "_workers", lambda files: 0)
    monkeypatch.setattr(intake, "_CHUNK_MAX", 32)
    monkeypatch.setattr(writer_module, "_COPY_CHUNK", 1 << 14)
    monkeypatch.setattr(pack_module, "_ROWS_BATCH", 64)
    monkeypatch.setattr(spool, "_BATCH", 64)
    peaks: list[int] = []
    for count in (100, 700):
        udi, rum = many_devices(tmp_path / str(count), count)
        tracemalloc.start()
        try:
            run(inside, tmp_path / f"{count}.airgap", udi_dir=udi, entitlements=[TAG], rum_dir=rum)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    per_device = (peaks[1] - peaks[0]) / 600
    # What is left per device: state.db takes items.json as one value (the bytes and their
    # decoded text, ~900 bytes a device) and a hash per item and attachment.
    assert per_device < 1500, f"{per_device:.0f} bytes a device"
