"""The CSSM portal path end to end on real sockets: portal-export, the Cisco emulator's portal
endpoints driven as an operator would from the worksheet, portal-import, inside import. Portal
files that do not fit are refused with nothing written, and no item is done by both the portal
and the API."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import CONFORMANCE, run_airgap
from integration.conftest import point_outside_at

from airgap.emulators.cisco import CiscoEmulator, Reservation, build_cisco_server
from airgap.emulators.device import NETWORK_ADVANTAGE_TAG, write_device
from airgap.emulators.server import EmulatorServer
from airgap.errors import PortalFileError
from airgap.home import Home
from airgap.inside.importer import import_response
from airgap.inside.pack import PackResult, pack
from airgap.outside.journal import Journal
from airgap.outside.portal import portal_export, portal_import
from airgap.outside.process import ProcessOptions, process_request

VENDOR_ENV = {"AIRGAP_CISCO_CLIENT_ID": "test-client", "AIRGAP_CISCO_CLIENT_SECRET": "test-secret"}
PIDS = ("C9300-24T", "C9300-48P", "ISR4331/K9", "C9500-32C")
OLD = ("sw-old-001", "C9300-24T", "FDO99999999")  # a device that returns its reservation


@dataclass
class Sites:
    inside: Path
    outside: Path
    work: Path


@pytest.fixture
def cisco() -> Iterator[EmulatorServer]:
    server = build_cisco_server(poll_delay=0).start()
    yield server
    server.stop()


@pytest.fixture
def sites(tmp_path: Path, make_home: Any, exchange_cards: Any) -> Sites:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    return Sites(inside, outside, tmp_path)


def emulator(server: EmulatorServer) -> CiscoEmulator:
    app = server.app
    assert isinstance(app, CiscoEmulator)
    return app


def make_request(
    sites: Sites,
    cisco: EmulatorServer,
    *,
    devices: int,
    returns: bool = True,
    query: bool = False,
    name: str = "req",
) -> PackResult:
    """Pack a request: a reservation and a usage report per device, a return, a query."""
    base = sites.work / name
    captures, rum = base / "captures", base / "rum"
    rum.mkdir(parents=True)
    for n in range(devices):
        pid, sn = PIDS[n % len(PIDS)], f"FDO{n + 1:08d}"
        files = write_device(pid=pid, sn=sn, hostname=f"sw-{n + 1:03d}", out=captures)
        files.rum.rename(rum / files.rum.name)
    rows = []
    if returns:
        hostname, pid, sn = OLD
        old = write_device(pid=pid, sn=sn, hostname=hostname, out=base / "old", return_code=True)
        assert old.return_code is not None
        emulator(cisco).reservations[f"{pid}:{sn}"] = Reservation(
            pid=pid,
            sn=sn,
            hostname=hostname,
            virtual_account="Default",
            entitlements={NETWORK_ADVANTAGE_TAG: 1},
        )
        text = old.return_code.read_text()
        code = next(line for line in text.splitlines() if "Return code:" in line)
        rows.append(
            {
                "action": "cisco.return",
                "hostname": hostname,
                "pid": pid,
                "sn": sn,
                "return_code": code.split(":", 1)[1].strip(),
            }
        )
    if query:
        rows.append({"action": "cisco.usage_summary", "tags": NETWORK_ADVANTAGE_TAG})
    plans = []
    if rows:
        plan = base / "plan.csv"
        with plan.open("w", newline="") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=["action", "hostname", "pid", "sn", "return_code", "tags"]
            )
            writer.writeheader()
            writer.writerows(rows)
        plans.append(plan)
    return pack(
        Home.open(sites.inside),
        plans=plans,
        udi_dir=captures,
        entitlements=[f"{NETWORK_ADVANTAGE_TAG}:1"],
        rum_dir=rum,
        returns_dir=None,
        output=sites.work / f"{name}.airgap",
        expires=timedelta(days=1),
    )


def worksheet_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "worksheet.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def do_portal_work(
    url: str, folder: Path, *, upload: bool = True, codes: bool = True, returns: bool = True
) -> dict[str, bytes]:
    """What the operator does in the portal, from the worksheet: upload the usage file and
    save the ACK download, generate and save each code, enter each return code and tick it.
    Returns the bytes the portal gave, by the name they were saved under."""
    session = requests.Session()
    session.trust_env = False
    got: dict[str, bytes] = {}
    rows = worksheet_rows(folder)
    for upload_name in sorted({r["task"].split()[1] for r in rows if r["device_file"]}):
        if upload:
            answer = session.post(
                f"{url}/portal/usage-upload", data=(folder / upload_name).read_bytes(), timeout=60
            )
            assert answer.status_code == 200 and "X-Portal-Refused" not in answer.headers
            name = "ACK_" + upload_name.removeprefix("UD_SA_")
            (folder / name).write_bytes(answer.content)
            got[name] = answer.content
    for row in rows:
        device = {"udi_pid": row["pid"], "udi_serial_number": row["sn"]}
        if row["action"] == "cisco.reserve" and codes:
            tag, _, count = row["entitlements"].rpartition(" x ")
            answer = session.post(
                f"{url}/portal/authorization",
                json={**device, "entitlements": [{"tag": tag, "count": int(count)}]},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            (folder / row["save_as"]).write_bytes(answer.content)
            got[row["save_as"]] = answer.content
        elif row["action"] == "cisco.return" and returns:
            answer = session.post(
                f"{url}/portal/return", json={**device, "return_code": row["code"]}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            row["done"] = "yes"
    with (folder / "worksheet.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return got


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def acks_in(download: bytes) -> dict[str, bytes]:
    """ACK_dev_<id>_… member → ACK text, read with tarfile (not airgap's reader)."""
    (inner,) = tar_members(download).values()
    return tar_members(inner)


def tar_gz(members: list[tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


def journal_state(outside: Path, request_id: str) -> tuple[Any, ...]:
    with Journal.open(outside / "state.db") as journal:
        return tuple(journal.items(request_id)), tuple(journal.responses_for(request_id))


def assert_conforms(bundle: Path, producer: Path) -> None:
    check = subprocess.run(
        [
            sys.executable,
            str(CONFORMANCE),
            str(bundle),
            "--pubkey",
            str(producer / "keys" / "signing.pub.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


# --- the round trip ------------------------------------------------------------------------------


def test_200_devices_go_out_through_the_portal_and_come_back_as_issued(
    sites: Sites, cisco: EmulatorServer
) -> None:
    request = make_request(sites, cisco, devices=200)
    folder = sites.work / "portal"
    exported = portal_export(Home.open(sites.outside), request.path, folder)
    assert len(exported.items) == 401 and exported.new_items == 401 and exported.left == []
    numbers = {i["id"]: i["device_id"] for i in exported.items if "device_id" in i}
    assert sorted(numbers.values(), key=int) == [str(n) for n in range(1, 201)]

    got = do_portal_work(cisco.url, folder)
    response = sites.work / "resp.airgap"
    result = portal_import(Home.open(sites.outside), request.path, folder, output=response)
    assert result.complete and result.counts == {"ok": 401}, result.counts
    assert len(result.matched) == 401

    out = sites.work / "licences"
    imported = import_response(Home.open(sites.inside), response, out=out)
    (root,) = out.iterdir()
    emu = emulator(cisco)
    for n in range(200):
        pid, sn, host = PIDS[n % len(PIDS)], f"FDO{n + 1:08d}", f"sw-{n + 1:03d}"
        issued = base64.b64decode(emu.reservations[f"{pid}:{sn}"].smart_license or "")
        assert (root / "cisco" / host / "lic.txt").read_bytes() == issued
    (download,) = (v for k, v in got.items() if k.endswith(".tar.gz"))
    acks = acks_in(download)
    by_host = {i["hostname"]: i["device_id"] for i in exported.items if "device_id" in i}
    for host, device_id in by_host.items():
        (ack,) = (v for k, v in acks.items() if k.startswith(f"ACK_dev_{device_id}_"))
        assert (root / "cisco" / host / "ack-1.xml").read_bytes() == ack
    returned = json.loads((root / "cisco" / OLD[0] / "return.json").read_text())
    assert returned["status"] == "RETURNED" and f"{OLD[1]}:{OLD[2]}" not in emu.reservations
    assert {k: n for k, n in imported.counts.items() if n} == {"ok": 401}, imported.counts
    # Only the portal was used, and every device was reserved and reported exactly once.
    stats = emu.stats()
    assert set(stats["calls"]) == {"portal_usage-upload", "portal_authorization", "portal_return"}
    devices = {f"{PIDS[n % 4]}:FDO{n + 1:08d}": {"reserve": 1, "report": 1} for n in range(200)}
    devices[f"{OLD[1]}:{OLD[2]}"] = {"return": 1}
    assert {
        udi: {kind: n for kind, n in counts.items() if n}
        for udi, counts in stats["mutations"].items()
    } == devices
    assert_conforms(response, sites.outside)
    for home in (sites.inside, sites.outside):
        assert Home.open(home).audit().verify().entries > 0


def test_a_second_export_writes_the_same_files_and_says_when(
    sites: Sites, cisco: EmulatorServer
) -> None:
    request = make_request(sites, cisco, devices=3)
    folder = sites.work / "portal"
    home = ["--json", "--home", str(sites.outside), "outside", "portal-export"]
    first = run_airgap(*home, str(request.path), "-o", str(folder))
    assert first.returncode == 0, first.stderr
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert sorted(files) == [
        f"UD_SA_{json.loads(first.stdout)['exports'][0]['export_id']}.tar.gz",
        "portal-export.json",
        "worksheet.csv",
        "worksheet.html",
    ]
    again = run_airgap(*home, str(request.path), "-o", str(folder))
    assert again.returncode == 0, again.stderr
    one, two = json.loads(first.stdout), json.loads(again.stdout)
    assert (one["new_items"], one["repeated"]) == (7, False)
    assert (two["new_items"], two["repeated"]) == (0, True)
    assert two["exports"] == one["exports"]  # the same export, exported at the same time
    assert two["items"] == one["items"]  # the same device numbering and file names
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == files
    human = run_airgap(
        "--home",
        str(sites.outside),
        "outside",
        "portal-export",
        str(request.path),
        "-o",
        str(folder),
    )
    assert human.returncode == 0, human.stderr
    assert f"exported at {one['exports'][0]['exported_at']}" in human.stdout
    assert "Nothing new to export" in human.stdout
    events = [e["event"] for e, _ in Home.open(sites.outside).audit().entries()]
    assert events.count("portal_export") == 3


# --- refusals: nothing written -------------------------------------------------------------------


def _tampered_tar(folder: Path, got: dict[str, bytes]) -> None:
    (name,) = (k for k in got if k.endswith(".tar.gz"))
    data = bytearray(got[name])
    data[len(data) // 2] ^= 0xFF
    (folder / name).write_bytes(bytes(data))


def _first_ack(got: dict[str, bytes]) -> tuple[str, bytes]:
    (download,) = (v for k, v in got.items() if k.endswith(".tar.gz"))
    acks = acks_in(download)
    name = next(k for k in sorted(acks) if k.startswith("ACK_dev_1_"))
    return name, acks[name]


def _unknown_device(folder: Path, got: dict[str, bytes]) -> None:
    _, ack = _first_ack(got)
    inner = tar_gz([("ACK_dev_999_x.txt", ack)])
    (folder / "ACK_more.tar.gz").write_bytes(tar_gz([("ACK_UD_VA_x.tar.gz", inner)]))


def _other_device_in_ack(folder: Path, got: dict[str, bytes]) -> None:
    _, ack = _first_ack(got)
    other = ack.replace(b'"udi_serial_number":"FDO00000001"', b'"udi_serial_number":"FDO0000077"')
    assert other != ack
    inner = tar_gz([("ACK_dev_1_x.txt", other)])
    (folder / "ACK_more.tar.gz").write_bytes(tar_gz([("ACK_UD_VA_x.tar.gz", inner)]))


def _two_acks_for_one_report(folder: Path, got: dict[str, bytes]) -> None:
    name, ack = _first_ack(got)
    changed = ack.replace(b"<signature>", b"<signature>AAAA", 1)
    assert changed != ack
    inner = tar_gz([(name, changed)])
    (folder / "ACK_again.tar.gz").write_bytes(tar_gz([("ACK_UD_VA_y.tar.gz", inner)]))


def _code_for_another_udi(folder: Path, got: dict[str, bytes]) -> None:
    codes = sorted(k for k in got if k.startswith("codes/"))
    (folder / codes[0]).write_bytes(got[codes[1]])


def _path_traversal(folder: Path, got: dict[str, bytes]) -> None:
    _, ack = _first_ack(got)
    inner = tar_gz([("../ACK_dev_1_x.txt", ack)])
    (folder / "ACK_evil.tar.gz").write_bytes(tar_gz([("ACK_UD_VA_z.tar.gz", inner)]))


def _ack_that_is_not_one(folder: Path, got: dict[str, bytes]) -> None:
    code = next(v for k, v in got.items() if k.startswith("codes/"))
    inner = tar_gz([("ACK_dev_1_x.txt", code)])
    (folder / "ACK_fake.tar.gz").write_bytes(tar_gz([("ACK_UD_VA_q.tar.gz", inner)]))


def _code_that_is_an_ack(folder: Path, got: dict[str, bytes]) -> None:
    name = sorted(k for k in got if k.startswith("codes/"))[0]
    (folder / name).write_bytes(_first_ack(got)[1])


def _symlinked_code(folder: Path, got: dict[str, bytes]) -> None:
    name = sorted(k for k in got if k.startswith("codes/"))[0]
    (folder / name).unlink()
    (folder / name).symlink_to("/etc/hostname")


def _unlisted_code(folder: Path, got: dict[str, bytes]) -> None:
    (folder / "codes" / "i99999-X-Y.txt").write_bytes(next(iter(got.values())))


def _edited_return_row(folder: Path, got: dict[str, bytes]) -> None:
    rows = worksheet_rows(folder)
    for row in rows:
        if row["action"] == "cisco.return":
            row["sn"] = "FDO00000002"
    with (folder / "worksheet.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# case -> (what is done to the folder, a phrase of the refusal: it is refused for that reason)
REFUSALS: dict[str, tuple[Callable[[Path, dict[str, bytes]], None], str]] = {
    "tampered-ack-tar": (_tampered_tar, "not a gzip tar file"),
    "ack-for-a-device-not-in-the-request": (_unknown_device, "which no exported item"),
    "ack-naming-a-device-its-file-does-not-report": (
        _other_device_in_ack,
        "acknowledges C9300-24T:FDO0000077, but device file dev_1",
    ),
    "two-different-acks-for-one-report": (_two_acks_for_one_report, "two different ACKs"),
    "code-for-another-udi": (_code_for_another_udi, "the code is for C9300-48P:FDO00000002"),
    "path-traversal-member": (_path_traversal, "unsafe name"),
    "ack-that-is-not-an-ack": (_ack_that_is_not_one, "not an ACK"),
    "code-that-is-an-ack": (_code_that_is_an_ack, "a usage ACK, not an authorization code"),
    "symlinked-code": (_symlinked_code, "is a link"),
    "code-not-on-the-worksheet": (_unlisted_code, "not a file the worksheet asks for"),
    "return-row-edited": (_edited_return_row, "the row's sn do not match"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_portal_files_that_do_not_fit_are_refused_and_nothing_is_written(
    sites: Sites, cisco: EmulatorServer, case: str
) -> None:
    request = make_request(sites, cisco, devices=3)
    folder = sites.work / "portal"
    portal_export(Home.open(sites.outside), request.path, folder)
    got = do_portal_work(cisco.url, folder)
    change, phrase = REFUSALS[case]
    change(folder, got)
    before = journal_state(sites.outside, request.bundle_id)
    response = sites.work / "resp.airgap"
    with pytest.raises(PortalFileError) as info:
        portal_import(Home.open(sites.outside), request.path, folder, output=response)
    assert info.value.code == "E_PORTAL" and info.value.exit_code == 1
    assert phrase in info.value.message
    assert not response.exists()
    assert journal_state(sites.outside, request.bundle_id) == before
    last, _ = list(Home.open(sites.outside).audit().entries())[-1]
    assert (last["event"], last["details"]["code"]) == ("refusal", "E_PORTAL")


def test_a_refusal_on_the_command_line_is_e_portal_with_exit_1(
    sites: Sites, cisco: EmulatorServer
) -> None:
    request = make_request(sites, cisco, devices=2, returns=False)
    folder = sites.work / "portal"
    portal_export(Home.open(sites.outside), request.path, folder)
    _code_for_another_udi(folder, do_portal_work(cisco.url, folder))
    response = sites.work / "resp.airgap"
    args = ["outside", "portal-import", str(request.path), "--from", str(folder)]
    result = run_airgap("--json", "--home", str(sites.outside), *args, "-o", str(response))
    assert result.returncode == 1, result.stdout + result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "E_PORTAL" and "the code is for" in error["message"]
    assert not response.exists()
    human = run_airgap("--home", str(sites.outside), *args, "-o", str(response))
    assert human.returncode == 1 and "E_PORTAL" in human.stderr and "hint" in human.stderr


def test_an_import_for_a_request_never_exported_is_refused_without_recording_it(
    sites: Sites, cisco: EmulatorServer
) -> None:
    request = make_request(sites, cisco, devices=1, returns=False)
    (sites.work / "empty").mkdir()
    with pytest.raises(PortalFileError, match="never exported"):
        portal_import(Home.open(sites.outside), request.path, sites.work / "empty")
    with Journal.open(sites.outside / "state.db") as journal:
        assert journal.request(request.bundle_id) is None


# --- partial imports -----------------------------------------------------------------------------


def test_a_partial_import_exits_4_and_a_later_one_completes(
    sites: Sites, cisco: EmulatorServer
) -> None:
    request = make_request(sites, cisco, devices=3)
    folder = sites.work / "portal"
    portal_export(Home.open(sites.outside), request.path, folder)
    do_portal_work(cisco.url, folder, upload=False, returns=False)  # codes only, so far
    cli = ["--json", "--home", str(sites.outside), "outside", "portal-import", str(request.path)]
    first = run_airgap(*cli, "--from", str(folder), "-o", str(sites.work / "resp-1.airgap"))
    assert first.returncode == 4, first.stdout + first.stderr
    document = json.loads(first.stdout)
    assert document["counts"] == {"ok": 3, "pending": 4}
    pending = [i for i in document["items"] if i["status"] == "pending"]
    assert all(i["error"]["code"] == "PENDING" for i in pending)
    assert any("no ACK for device file dev_1_" in i["error"]["message"] for i in pending)
    assert any("not ticked done in worksheet.csv" in i["error"]["message"] for i in pending)

    do_portal_work(cisco.url, folder, codes=False)  # the upload and the return, later
    second = run_airgap(*cli, "--from", str(folder), "-o", str(sites.work / "resp-2.airgap"))
    assert second.returncode == 0, second.stdout + second.stderr
    assert json.loads(second.stdout)["counts"] == {"ok": 7}
    # The codes of the first import are not matched again, and the folder still holds them.
    assert len(json.loads(second.stdout)["matched"]) == 4

    out = sites.work / "licences"
    import_response(Home.open(sites.inside), sites.work / "resp-1.airgap", out=out)
    done = import_response(Home.open(sites.inside), sites.work / "resp-2.airgap", out=out)
    assert done.counts.get("pending", 0) == 0


# --- at most once across the portal and the API --------------------------------------------------


def test_process_after_an_export_never_sends_the_exported_items_to_the_api(
    sites: Sites, cisco: EmulatorServer
) -> None:
    request = make_request(sites, cisco, devices=3, query=True)
    folder = sites.work / "portal"
    exported = portal_export(Home.open(sites.outside), request.path, folder)
    assert [(i["action"], i["why"]) for i in exported.left] == [
        ("cisco.usage_summary", "a query: it needs the Smart Licensing API")
    ]
    point_outside_at(sites.outside, cisco=cisco.url)
    result = process_request(
        Home.open(sites.outside, VENDOR_ENV),
        request.path,
        ProcessOptions(output=sites.work / "resp-api.airgap", rate=0),
    )
    by_status = {i["action"]: i["status"] for i in result.items}
    assert by_status["cisco.usage_summary"] == "ok"
    portal_items = [i for i in result.items if i["action"] != "cisco.usage_summary"]
    assert {i["status"] for i in portal_items} == {"pending"}
    assert all("exported for the CSSM portal" in i["error"]["message"] for i in portal_items)
    calls = emulator(cisco).stats()["calls"]
    assert "authrequest" not in calls and "reportusage" not in calls and "poll" not in calls
    assert calls["licenses_summary"] == 1
    assert emulator(cisco).stats()["mutations"] == {}
    # The portal finishes them; the response answers everything, the query included.
    do_portal_work(cisco.url, folder)
    response = sites.work / "resp-portal.airgap"
    final = portal_import(Home.open(sites.outside), request.path, folder, output=response)
    assert final.complete, final.counts
    assert_conforms(response, sites.outside)


def test_an_export_after_process_leaves_out_what_the_api_already_has(
    sites: Sites, cisco: EmulatorServer
) -> None:
    request = make_request(sites, cisco, devices=2)
    point_outside_at(sites.outside, cisco=cisco.url)
    processed = process_request(
        Home.open(sites.outside, VENDOR_ENV),
        request.path,
        ProcessOptions(output=sites.work / "resp-api.airgap", rate=0),
    )
    assert processed.complete
    folder = sites.work / "portal"
    exported = portal_export(Home.open(sites.outside), request.path, folder)
    assert exported.items == [] and exported.new_items == 0
    assert {i["why"] for i in exported.left} == {
        "already with `outside process` (the API) when the request was exported"
    }
    assert not list(folder.glob("UD_SA_*"))
    assert worksheet_rows(folder) == []


def test_the_export_folder_can_be_copied_and_imported_elsewhere(
    sites: Sites, cisco: EmulatorServer
) -> None:
    # The operator may carry the folder to the portal machine and back: only names matter.
    request = make_request(sites, cisco, devices=2, returns=False)
    folder = sites.work / "portal"
    portal_export(Home.open(sites.outside), request.path, folder)
    moved = sites.work / "carried"
    shutil.copytree(folder, moved)
    do_portal_work(cisco.url, moved)
    response = sites.work / "resp.airgap"
    result = portal_import(Home.open(sites.outside), request.path, moved, output=response)
    assert result.complete, result.counts
