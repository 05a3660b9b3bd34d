"""Directory intake (--udi, --rum, --returns) and duplicate refusal across sources."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airgap.errors import InputError, PlanError
from airgap.inside import intake
from airgap.inside import plan as plan_module
from airgap.inside.intake import (
    Loaded,
    Source,
    Stored,
    items_from_returns_dir,
    items_from_rum_dir,
    items_from_udi_dir,
    load_sources,
    stream_sources,
)
from airgap.inside.plan import (
    PlanItem,
    check_duplicates,
    load_plan,
)

Sample = Callable[[str], Path]
Writer = Callable[..., Path]

CODE = "Cm01IB-cCt9Y6-JQ5Xlv-zS3GTE-L8ORTk-uTkMbV-ns6b1f-XlcTU1-0xZ"


@pytest.fixture
def device_dir(tmp_path: Path, sample: Sample) -> Path:
    """A folder as `airgap emulate device` and an operator fill it: every Cisco capture kind."""
    out = tmp_path / "devices"
    (out / "stack").mkdir(parents=True)
    for src, dst in [
        ("cisco/show-license-udi/with-prompt.txt", "sw-core-01.udi.txt"),
        ("cisco/show-license-udi/ha.txt", "stack/ha.txt"),
        ("cisco/show-license-udi/table.txt", "stack/table.TXT"),
        ("cisco/return-code.txt", "sw-core-01.return.txt"),
        ("cisco/slr-request-code.txt", "sw-core-01.slr.txt"),
        ("cisco/rum/rum-report-c9300.xml", "sw-core-01.rum.xml"),
        ("cisco/rum/rum-report-isr.xml", "rtr-wan-01.rum.xml"),
    ]:
        shutil.copy(sample(src), out / dst)
    (out / ".hidden").mkdir()
    (out / ".hidden" / "junk.txt").write_text("junk")
    (out / "notes.md").write_text("not a capture, wrong suffix")
    return out


def test_udi_dir_gives_one_reserve_per_udi(device_dir: Path) -> None:
    items = items_from_udi_dir(device_dir, [("TAG_A", 1), ("TAG_B", 2)])
    assert {i.action for i in items} == {"cisco.reserve"}
    assert [(i.device, i.origin) for i in items] == [
        (
            {"hostname": None, "udi": {"pid": pid, "sn": sn}},
            f"{device_dir / 'stack' / name}:{line}",
        )
        for pid, sn, name, line in [
            ("C9300-48P", "FOC2501Y0QM", "ha.txt", 4),
            ("C9300-48P", "FOC2501Y0R2", "ha.txt", 5),
            ("C9300-48P", "FOC2504X7TT", "ha.txt", 6),
            ("C9300-48U", "FCW2231G0KD", "table.TXT", 3),
            ("C9300-48U", "FCW2231G0KF", "table.TXT", 4),
            ("C9300-24U", "FCW2245L1PQ", "table.TXT", 5),
        ]
    ] + [
        (
            {"hostname": "sw-core-01", "udi": {"pid": "C9300-24T", "sn": "FOC2437L1ZK"}},
            f"{device_dir / 'sw-core-01.udi.txt'}:4",
        )
    ]
    assert all(
        i.params == {"entitlements": [{"tag": "TAG_A", "count": 1}, {"tag": "TAG_B", "count": 2}]}
        and i.attachments == ()
        for i in items
    )
    check_duplicates(items)


def test_udi_dir_refuses_a_file_that_does_not_parse(device_dir: Path) -> None:
    bad = device_dir / "stack" / "broken.txt"
    bad.write_text("sw9#show license udi\nUDI: PID:C9300-24T\n")
    with pytest.raises(InputError) as info:
        items_from_udi_dir(device_dir, [("T", 1)])
    assert info.value.message.startswith(f"{bad}:2: expected 'UDI: PID:…,SN:…'")


def test_udi_dir_needs_entitlements_and_captures(device_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="--entitlement"):
        items_from_udi_dir(device_dir, [])
    with pytest.raises(PlanError, match="count must be between"):
        items_from_udi_dir(device_dir, [("T", 0)])
    with pytest.raises(PlanError, match="listed twice"):
        items_from_udi_dir(device_dir, [("T", 1), ("T", 2)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no `show license udi` captures"):
        items_from_udi_dir(empty, [("T", 1)])
    with pytest.raises(InputError, match="no such directory"):
        items_from_udi_dir(tmp_path / "absent", [("T", 1)])
    with pytest.raises(InputError, match="not a directory"):
        items_from_udi_dir(device_dir / "notes.md", [("T", 1)])


def test_rum_dir_gives_one_report_usage_per_file(device_dir: Path) -> None:
    items = items_from_rum_dir(device_dir)
    isr, c9300 = device_dir / "rtr-wan-01.rum.xml", device_dir / "sw-core-01.rum.xml"
    assert items == [
        PlanItem(
            "cisco.report_usage",
            {"hostname": "rtr-wan-01", "udi": {"pid": "ISR4331/K9", "sn": "FDO2213A0KX"}},
            {},
            (str(isr),),
            str(isr),
            (hashlib.sha256(isr.read_bytes()).hexdigest(),),
        ),
        PlanItem(
            "cisco.report_usage",
            {"hostname": "sw-core-01", "udi": {"pid": "C9300-24T", "sn": "FOC2437L1ZK"}},
            {},
            (str(c9300),),
            str(c9300),
            (hashlib.sha256(c9300.read_bytes()).hexdigest(),),
        ),
    ]


def test_rum_dir_refuses_an_xml_file_that_is_not_rum(device_dir: Path, sample: Sample) -> None:
    ack = device_dir / "ack.xml"
    shutil.copy(sample("cisco/rum/ack-c9300.xml"), ack)
    with pytest.raises(InputError) as info:
        items_from_rum_dir(device_dir)
    assert info.value.message.startswith(f"{ack}:1: not a RUM report")


def test_rum_dir_without_reports(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no RUM report files \(\*\.xml\)"):
        items_from_rum_dir(tmp_path)


def test_returns_dir_gives_one_return_per_capture(device_dir: Path) -> None:
    items = items_from_returns_dir(device_dir)
    path = device_dir / "sw-core-01.return.txt"
    assert items == [
        PlanItem(
            "cisco.return",
            {"hostname": "sw-core-01", "udi": {"pid": "C9300-24T", "sn": "FOC2437L1ZK"}},
            {"return_code": CODE},
            (),
            f"{path}:4",
        )
    ]


def test_returns_dir_refuses_garbage_and_bad_codes(device_dir: Path, tmp_path: Path) -> None:
    junk = device_dir / "junk.txt"
    junk.write_text("hello\n")
    with pytest.raises(InputError) as info:
        items_from_returns_dir(device_dir)
    assert info.value.message.startswith(f"{junk}:1: not a return-code capture")
    junk.write_text("UDI: PID:C9300-24T,SN:FOC1\n    Return code: C-short\n")
    with pytest.raises(InputError) as info:
        items_from_returns_dir(device_dir)
    assert info.value.message.startswith(f"{junk}:2: 'C-short' is not a return code")
    only_udi = tmp_path / "only-udi"
    only_udi.mkdir()
    shutil.copy(device_dir / "sw-core-01.udi.txt", only_udi)
    with pytest.raises(InputError, match="no return-code captures"):
        items_from_returns_dir(only_udi)


# --- duplicates across sources -------------------------------------------------------------------


def test_same_udi_from_two_captures_is_refused_naming_both(
    device_dir: Path, sample: Sample
) -> None:
    copy = device_dir / "again.txt"
    shutil.copy(sample("cisco/show-license-udi/single.txt"), copy)
    items = items_from_udi_dir(device_dir, [("T", 1)])
    with pytest.raises(PlanError) as info:
        check_duplicates(items)
    assert info.value.code == "E_PLAN"
    assert info.value.problems == [
        f"{device_dir / 'sw-core-01.udi.txt'}:4: cisco.reserve for C9300-24T:FOC2437L1ZK "
        f"repeats {copy}:1"
    ]


def test_same_rum_content_under_two_names_is_refused(device_dir: Path) -> None:
    shutil.copy(device_dir / "sw-core-01.rum.xml", device_dir / "zz-copy.xml")
    items = items_from_rum_dir(device_dir)
    # Without the hashes from parsing, the files are read again to compare.
    bare = [PlanItem(i.action, i.device, i.params, i.attachments, i.origin) for i in items]
    for batch in (items, bare):
        with pytest.raises(PlanError) as info:
            check_duplicates(batch)
        assert info.value.problems == [
            f"{device_dir / 'zz-copy.xml'}: cisco.report_usage with the same RUM file content "
            f"repeats {device_dir / 'sw-core-01.rum.xml'}"
        ]


def test_plan_and_directory_items_are_checked_together(device_dir: Path, write: Writer) -> None:
    plan = write(
        "plan.csv",
        "action,hostname,pid,sn,entitlements,return_code\n"
        "cisco.reserve,sw-core-01,C9300-24T,FOC2437L1ZK,T:1,\n"
        f"cisco.return,sw-core-01,C9300-24T,FOC2437L1ZK,,{CODE}\n",
    )
    planned = load_plan(plan)
    from_dir = items_from_udi_dir(device_dir, [("T", 1)])
    # A reserve and a return for the same device are different requests.
    check_duplicates(planned[1:] + from_dir)
    with pytest.raises(PlanError) as info:
        check_duplicates(planned + from_dir)
    assert info.value.problems == [
        f"{device_dir / 'sw-core-01.udi.txt'}:4: cisco.reserve for C9300-24T:FOC2437L1ZK "
        f"repeats {plan}:2"
    ]


def test_a_hash_collision_is_not_taken_for_a_repeat(
    device_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check holds a hash per item and confirms a repeated hash against the keys it spooled.
    monkeypatch.setattr(plan_module, "hash", lambda value: 0, raising=False)
    items = items_from_udi_dir(device_dir, [("T", 1)])
    assert len({i.device["udi"]["sn"] for i in items if i.device}) == len(items) > 1
    check_duplicates(items)
    with pytest.raises(PlanError) as info:
        check_duplicates([*items, items[2], items[0]])
    assert info.value.problems == [
        f"{items[2].origin}: cisco.reserve for {items[2].device['udi']['pid']}:"
        f"{items[2].device['udi']['sn']} repeats {items[2].origin}",
        f"{items[0].origin}: cisco.reserve for {items[0].device['udi']['pid']}:"
        f"{items[0].device['udi']['sn']} repeats {items[0].origin}",
    ]


def test_queries_and_regkeys_compare_by_parameters() -> None:
    def item(action: str, **params: object) -> PlanItem:
        return PlanItem(action, None, dict(params), (), f"p:{action}:{sorted(params.items())}")

    check_duplicates(
        [
            item("cisco.devices", virtual_accounts=["A"]),
            item("cisco.devices", virtual_accounts=["B"]),
            item("bigiq.assignments"),
            item("bigiq.assignments", pool="p"),
            item("bigiq.regkey_activate", pool="p", regkey="K1", mode="automatic"),
            item("bigiq.regkey_activate", pool="p", regkey="K2", mode="automatic"),
        ]
    )
    with pytest.raises(PlanError, match="2 duplicate items"):
        check_duplicates(
            [
                item("bigiq.assignments"),
                item("bigiq.assignments"),
                item("bigiq.regkey_activate", pool="p", regkey="K1", mode="automatic"),
                item("bigiq.regkey_activate", pool="q", regkey="K1", mode="manual"),
            ]
        )


# --- loading a whole pack on several processes ---------------------------------------------------


@pytest.fixture
def many_devices(device_folders: Callable[[int, int], dict[str, Path]]) -> dict[str, Path]:
    """40 emulated devices: enough files for several chunks per worker."""
    return device_folders(40, 5)


def _sources(folders: dict[str, Path], *plans: Path) -> list[Source]:
    return [Source("plan", p) for p in plans] + [
        Source(kind, folders[kind]) for kind in ("udi", "rum", "returns")
    ]


def _load(sources: list[Source], workers: int, monkeypatch: pytest.MonkeyPatch) -> Loaded:
    monkeypatch.setattr(intake, "_workers", lambda files: workers)
    return load_sources(sources, [("T", 1)])


def test_workers_load_the_same_items_in_the_same_order(
    many_devices: dict[str, Path], write: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = write("plan.csv", f"action,pid,sn,return_code\ncisco.return,ISR4331,FDO1,{CODE}\n")
    sources = _sources(many_devices, plan)
    alone = _load(sources, 0, monkeypatch)
    shared = _load(sources, 3, monkeypatch)
    assert shared == alone
    assert [i.action for i in alone.items] == (
        ["cisco.return"]
        + ["cisco.reserve"] * 40
        + ["cisco.report_usage"] * 40
        + ["cisco.return"] * 5
    )
    rum = alone.items[41]
    assert alone.blobs[41] == [Path(rum.attachments[0]).read_bytes()]
    assert rum.attachment_sha256 == (hashlib.sha256(alone.blobs[41][0]).hexdigest(),)


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_reports_are_left_on_disk_with_their_hash_and_size(
    many_devices: dict[str, Path],
    write: Writer,
    sample: Sample,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    shutil.copy(sample("cisco/rum/rum-report-isr.xml"), write("isr.xml", "").parent / "isr.xml")
    plan = write("plan.csv", "action,rum_file\ncisco.report_usage,isr.xml\n")
    sources = [Source("udi", many_devices["udi"]), Source("plan", plan)]
    sources.append(Source("rum", many_devices["rum"]))
    monkeypatch.setattr(intake, "_CHUNK_MAX", 7)  # many chunks per folder, handed out ahead
    loaded = _load(sources, workers, monkeypatch)
    with contextlib.closing(stream_sources(sources, [("T", 1)])) as stream:
        streamed = list(stream)
    assert [item for item, _ in streamed] == loaded.items
    reports = [(item, stored) for item, stored in streamed if stored]
    assert len(reports) == 41
    for item, (stored,) in reports:
        data = Path(item.attachments[0]).read_bytes()
        assert isinstance(stored, Stored)
        assert stored == Stored(
            str(item.attachments[0]), hashlib.sha256(data).hexdigest(), len(data)
        )


@pytest.mark.parametrize("workers", [0, 2])
def test_a_consumer_that_stops_early_stops_the_workers(
    many_devices: dict[str, Path], monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    monkeypatch.setattr(intake, "_workers", lambda files: workers)
    monkeypatch.setattr(intake, "_CHUNK_MAX", 3)
    sources = [Source("udi", many_devices["udi"]), Source("rum", many_devices["rum"])]
    with contextlib.closing(stream_sources(sources, [("T", 1)])) as stream:
        first = [next(stream) for _ in range(5)]
    assert [item.origin.rsplit("/", 1)[1] for item, _ in first][:2] == [
        "dev-foc00000000.udi.txt:4",
        "dev-foc00000001.udi.txt:4",
    ]
    with pytest.raises(StopIteration):
        next(stream)  # closed: nothing more comes
    assert multiprocessing.active_children() == []  # and no worker is left running


@pytest.mark.parametrize("workers", [0, 3])
def test_a_plan_between_folders_keeps_its_place(
    many_devices: dict[str, Path], write: Writer, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    plan = write("plan.csv", f"action,pid,sn,return_code\ncisco.return,ISR4331,FDO1,{CODE}\n")
    sources = [Source("rum", many_devices["rum"]), Source("plan", plan)]
    sources.append(Source("udi", many_devices["udi"]))
    loaded = _load(sources, workers, monkeypatch)
    actions = [i.action for i in loaded.items]
    assert actions == ["cisco.report_usage"] * 40 + ["cisco.return"] + ["cisco.reserve"] * 40


@pytest.mark.parametrize("workers", [0, 2])
def test_the_first_bad_input_in_input_order_is_reported(
    many_devices: dict[str, Path], monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    bad_udi = many_devices["udi"] / "zz-bad.udi.txt"
    bad_udi.write_text("UDI: PID:C9300-24T\n")
    (many_devices["rum"] / "aa-bad.rum.xml").write_text("<html></html>")
    with pytest.raises(InputError) as caught:
        _load(_sources(many_devices), workers, monkeypatch)
    assert caught.value.message.startswith(f"{bad_udi}:1:")
    bad_udi.unlink()
    with pytest.raises(InputError) as caught:
        _load(_sources(many_devices), workers, monkeypatch)
    # Raised in a worker, it keeps its hint.
    assert "not a RUM report" in caught.value.message
    assert caught.value.hint and "license smart save usage" in caught.value.hint


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_plan_comes_before_every_folder_and_keeps_its_problems(
    many_devices: dict[str, Path], write: Writer, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    (many_devices["rum"] / "aa-bad.rum.xml").write_text("<html></html>")
    plan = write("plan.csv", "action,pid\ncisco.reserve,\nbigiq.revoke,\n")
    with pytest.raises(PlanError) as caught:
        _load(_sources(many_devices, plan), workers, monkeypatch)
    assert len(caught.value.problems) == 5  # every missing field of both rows


@pytest.mark.parametrize("workers", [0, 2])
def test_an_empty_or_missing_folder_is_reported_in_input_order(
    many_devices: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    for path in many_devices["udi"].iterdir():
        path.unlink()
    (many_devices["rum"] / "aa-bad.rum.xml").write_text("<html></html>")
    with pytest.raises(InputError, match="no `show license udi` captures"):
        _load(_sources(many_devices), workers, monkeypatch)
    sources = _sources(many_devices)
    sources[0] = Source("udi", tmp_path / "absent")
    with pytest.raises(InputError, match="absent: no such directory"):
        _load(sources, workers, monkeypatch)
    sources = [Source("rum", many_devices["rum"]), Source("returns", tmp_path / "absent")]
    with pytest.raises(InputError, match="not a RUM report"):
        _load(sources, workers, monkeypatch)


def test_a_udi_folder_needs_entitlements(many_devices: dict[str, Path]) -> None:
    with pytest.raises(PlanError, match="at least one --entitlement"):
        load_sources([Source("udi", many_devices["udi"])], [])


def test_folder_links_are_not_followed_and_fifos_are_passed_over(
    device_dir: Path, tmp_path: Path
) -> None:
    (device_dir / "stack" / "loop").symlink_to(device_dir)  # followed, it would never end
    os.mkfifo(device_dir / "pipe.udi.txt")  # read, it would hang the pack
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(device_dir / "sw-core-01.udi.txt", outside / "linked.udi.txt")
    (device_dir / "linked.udi.txt").symlink_to(outside / "linked.udi.txt")
    items = items_from_udi_dir(device_dir, [("T", 1)])
    origins = [i.origin.removeprefix(f"{device_dir}/") for i in items]
    assert origins == [
        "linked.udi.txt:4",
        "stack/ha.txt:4",
        "stack/ha.txt:5",
        "stack/ha.txt:6",
        "stack/table.TXT:3",
        "stack/table.TXT:4",
        "stack/table.TXT:5",
        "sw-core-01.udi.txt:4",
    ]


def test_an_unreadable_subfolder_is_an_error_not_a_silent_gap(
    device_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.scandir

    def scandir(path: str) -> Any:
        if path.endswith("stack"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(intake.os, "scandir", scandir)
    with pytest.raises(InputError, match=r"stack: cannot read the folder \(Permission denied\)"):
        items_from_udi_dir(device_dir, [("T", 1)])
