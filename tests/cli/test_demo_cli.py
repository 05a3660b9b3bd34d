"""`airgap demo` end to end, and `outside status`/`--dry-run` on what it leaves behind."""

from __future__ import annotations

import csv
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFORMANCE, require_tool

from airgap.bundle.crypt import decrypt_stream, is_age
from airgap.home import Home

WIDE = {"COLUMNS": "1000"}  # no wrapping inside a path or a table row


def assert_conforms(bundle: Path, *, producer: Path, receiver: Path, work: Path) -> None:
    """The independent checker passes `bundle`, opened with the receiving home's identity if
    it is age-encrypted, and its signature checks against the producing home's public key."""
    plain = bundle
    if is_age(bundle.read_bytes()[:64]):
        plain = work / f"{bundle.stem}.decrypted"
        with bundle.open("rb") as source, plain.open("wb") as target:
            decrypt_stream(source, target, Home.open(receiver).identity())
    check = subprocess.run(
        [
            sys.executable,
            str(CONFORMANCE),
            str(plain),
            "--pubkey",
            str(producer / "keys" / "signing.pub.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "valid Ed25519 signature" in check.stdout, check.stdout


def device_rows(stdout: str) -> dict[str, str]:
    """The summary's device table: hostname to the whole row."""
    rows = {}
    for line in stdout.splitlines():
        fields = line.split()
        if line.startswith("  ") and fields and re.fullmatch(r"(iosxe|bigip)-\d{4}", fields[0]):
            rows[fields[0]] = line
    return rows


def test_demo_round_trip_prints_its_summary(airgap, tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    result = airgap("demo", "--devices", "4", "--keep", str(keep), env=WIDE, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for phrase in (
        "Round trip complete",
        "What crossed the gap",
        "Outcomes:",
        "2 bigiq.assign, 4 cisco.report_usage, 4 cisco.reserve",
        "All 6 devices are licensed and acknowledged on the device",
        "inside collect devices.csv",
        "inside apply --inventory devices.csv",
        "openssl pkeyutl",
    ):
        assert phrase in result.stdout, phrase
    (out_dir,) = (keep / "out").iterdir()
    assert (out_dir / "INSTRUCTIONS.md").exists()
    assert len(list((out_dir / "cisco").glob("*/lic.txt"))) == 4
    assert len(list((out_dir / "bigiq").glob("*/bigip.license"))) == 2
    inside, outside = keep / "inside-home", keep / "outside-home"
    for home in (inside, outside):
        assert airgap("--home", str(home), "audit", "verify").returncode == 0
    status = airgap("--json", "--home", str(outside), "outside", "status")
    requests = json.loads(status.stdout)["requests"]
    assert len(requests) == 1
    assert requests[0]["items"]["DONE"] == 10
    assert requests[0]["items"].get("FAILED", 0) == 0
    inside_status = airgap("--json", "--home", str(inside), "inside", "status", "--all")
    assert inside_status.returncode == 0, inside_status.stderr
    # What apply pushed is on record too: a dry run finds every file already applied.
    inventory = keep / "devices" / "devices.csv"
    again = airgap(
        "--json",
        "--home",
        str(inside),
        "inside",
        "apply",
        "--inventory",
        str(inventory),
        "--dry-run",
        env={"AIRGAP_DEVICE_LAB_USERNAME": "admin", "AIRGAP_DEVICE_LAB_PASSWORD": "unused"},
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["files"] == {"already": 10}
    # The response verifies at the inside, and both bundles conform to the independent reading
    # of the format, signatures included.
    response = keep / "transfer" / "response.airgap"
    assert airgap("--home", str(inside), "verify", str(response)).returncode == 0
    request = keep / "transfer" / "request.airgap"
    assert is_age(request.read_bytes()[:64])
    assert_conforms(request, producer=inside, receiver=outside, work=tmp_path)
    assert_conforms(response, producer=outside, receiver=inside, work=tmp_path)
    dry = airgap(
        "--json",
        "--home",
        str(outside),
        "outside",
        "process",
        str(keep / "transfer" / "request.airgap"),
        "--dry-run",
    )
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["plan"]["cisco.reserve"] == 4


def test_demo_exits_0_with_every_device_licensed_and_acknowledged_on_the_device(airgap) -> None:
    result = airgap("demo", env=WIDE, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = device_rows(result.stdout)
    assert sorted(rows) == [
        *(f"bigip-{n:04d}" for n in (1, 2)),
        *(f"iosxe-{n:04d}" for n in range(1, 7)),
    ]
    for name, row in rows.items():
        assert "NOT" not in row and "nothing" not in row, row
        if name.startswith("iosxe"):
            assert re.search(
                r"licensed \(code [0-9a-f]{8}\), acknowledged \(\d+ reports?\)", row
            ), row
            assert "1 UDI" in row and "code, ACK" in row, row
        else:
            assert re.search(r"base MAC (?:[0-9A-F]{2}:){5}[0-9A-F]{2}", row), row
            assert "license" in row and "licensed (registration key " in row, row
    assert "All 8 devices are licensed and acknowledged on the device" in result.stdout


def test_demo_without_keep_cleans_up_and_json(airgap) -> None:
    result = airgap("--json", "demo", "--devices", "2", timeout=300)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is True and document["kept"] is False
    assert not Path(document["workdir"]).exists()
    assert document["outcomes"] == {"BIG-IQ": {"ok": 2}, "Cisco": {"ok": 4}}
    assert document["all_licensed"] is True
    devices = {d["hostname"]: d for d in document["devices"]}
    assert sorted(devices) == ["bigip-0001", "bigip-0002", "iosxe-0001", "iosxe-0002"]
    assert {d["transport"] for d in devices.values()} == {"slp-rest", "ssh", "icontrol"}
    for name in ("iosxe-0001", "iosxe-0002"):
        device = devices[name]
        assert device["licensed"] is True and device["acknowledged"] is True
        (udi,) = device["collected"]["udis"]
        pid, sn = udi.split(":")
        # Read from the emulated device: a code installed for its UDI, every report acknowledged,
        # and exactly the two files that came back imported (the code and the ACK).
        assert list(device["on_device"]["confirmation_codes"]) == [f"PID:{pid},SN:{sn}"]
        assert device["on_device"]["reports_waiting_for_ack"] == []
        assert device["on_device"]["imports"] == 2
        assert sorted(f["result"] for f in device["came_back"]) == ["applied", "applied"]
    for name in ("bigip-0001", "bigip-0002"):
        device = devices[name]
        assert device["licensed"] is True and device["acknowledged"] is None
        assert device["on_device"]["installs"] == 1 and device["on_device"]["registration_key"]
        assert device["came_back"][0]["file"].endswith("/bigip.license")


def test_demo_output_and_files_never_contain_a_credential(airgap, tmp_path: Path) -> None:
    from airgap.demo import DEMO_ENV

    secrets = [v for k, v in DEMO_ENV.items() if k.endswith(("_PASSWORD", "_SECRET"))]
    assert len(secrets) == 3
    # The shell's own device credential is not the demo's: the demo must not read it (the
    # emulators require the demo's password, so using this one would fail every device).
    shell = {"AIRGAP_DEVICE_LAB_USERNAME": "nobody", "AIRGAP_DEVICE_LAB_PASSWORD": "from-the-shell"}
    keep = tmp_path / "kept"
    human = airgap(
        "demo", "--devices", "2", "--keep", str(keep), env={**WIDE, **shell}, timeout=300
    )
    assert human.returncode == 0, human.stdout + human.stderr
    as_json = airgap("--json", "demo", "--devices", "2", env=shell, timeout=300)
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    printed = human.stdout + human.stderr + as_json.stdout + as_json.stderr
    for secret in secrets:
        assert secret not in printed
    files = [p for p in keep.rglob("*") if p.is_file()]
    assert any(p.name == "state.db" for p in files) and any(p.name == "known_hosts" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, path


def test_demo_stops_every_emulator_it_started(tmp_path: Path) -> None:
    from airgap.config import HomePaths
    from airgap.demo import run_demo

    report = run_demo(tmp_path / "demo", devices=2)
    assert report.all_licensed
    assert report.inventory is not None
    with report.inventory.open(newline="") as handle:
        ports = {int(row["port"]) for row in csv.DictReader(handle)}
    config = HomePaths(report.outside_home).config.read_text()
    ports |= {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", config)}
    assert len(ports) == 2 + 2 + 2  # two IOS XE devices, two BIG-IPs, Cisco and BIG-IQ
    listening = []
    for port in sorted(ports):
        with socket.socket() as probe:
            probe.settimeout(2)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                listening.append(port)
    assert listening == []


def test_demo_refuses_a_non_empty_folder(airgap, tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mine")
    result = airgap("demo", "--keep", str(tmp_path))
    assert result.returncode == 1
    assert "not empty" in result.stderr
    assert (tmp_path / "x").read_text() == "mine"


def test_audit_exports_tie_both_sides_together(airgap, tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    assert airgap("demo", "--devices", "2", "--keep", str(keep), timeout=300).returncode == 0
    inside = json.loads(
        airgap("--home", str(keep / "inside-home"), "audit", "export", "--format", "json").stdout
    )["entries"]
    outside = json.loads(
        airgap("--home", str(keep / "outside-home"), "audit", "export", "--format", "json").stdout
    )["entries"]
    pack = next(e for e in inside if e["event"] == "pack")
    process = next(e for e in outside if e["event"] == "process")
    imported = next(e for e in inside if e["event"] == "import")
    assert process["related_bundle_id"] == pack["bundle_id"]
    assert process["related_manifest_sha256"] == pack["manifest_sha256"]
    assert imported["bundle_id"] == process["bundle_id"]
    assert imported["manifest_sha256"] == process["manifest_sha256"]
    assert imported["related_manifest_sha256"] == pack["manifest_sha256"]
    # Each side logged the other's audit head: the two logs anchor each other.
    assert process["peer_audit_head"] and imported["peer_audit_head"]
    for entry in (pack, process, imported):
        assert entry["user"] and entry["host"] and entry["ts"] and entry["outcome"]


# --- what the summary points at ------------------------------------------------------------------


def printed_paths(text: str) -> list[Path]:
    """Every absolute path the summary prints."""
    return [Path(p) for p in re.findall(r"(?:^|\s)(/[^\s,()]+)", text, flags=re.M)]


def test_demo_without_keep_prints_no_path_it_has_removed(airgap) -> None:
    result = airgap("demo", "--devices", "2", env=WIDE, timeout=300)
    assert result.returncode == 0, result.stderr
    gone = [p for p in printed_paths(result.stdout) if not p.exists()]
    assert gone == [], result.stdout
    assert "Verify the request by hand" not in result.stdout
    assert "airgap demo --keep ./airgap-demo" in result.stdout
    assert "request.airgap (" in result.stdout


@pytest.mark.interop
def test_demo_with_keep_prints_hand_checks_that_work(airgap, tmp_path: Path) -> None:
    tools = {name: require_tool(name) for name in ("age", "tar", "openssl", "sha256sum")}
    assert all(tools.values())
    # A relative --keep: the commands must still work from another folder, after `cd b`.
    result = airgap("demo", "--devices", "2", "--keep", "kept", env=WIDE, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    paths = printed_paths(result.stdout)
    assert paths and all(p.exists() for p in paths), result.stdout
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Verify the request by hand"))
    commands = [line.strip() for line in lines[start + 1 :] if line.startswith("  ")]
    assert commands[0].startswith("age -d")
    elsewhere = tmp_path / "by-hand"
    elsewhere.mkdir()
    done = subprocess.run(
        ["bash", "-c", " && ".join(["set -e", *commands])],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Signature Verified Successfully" in done.stdout
    assert ": OK" in done.stdout and "FAILED" not in done.stdout


def test_demo_through_the_portal_uses_no_api_and_says_what_it_exchanged(
    airgap, tmp_path: Path
) -> None:
    keep = tmp_path / "demo"
    result = airgap("demo", "--portal", "--devices", "2", "--keep", str(keep), timeout=300)
    assert result.returncode == 0, result.stderr
    for phrase in (
        "Round trip complete",
        "Through the CSSM portal",
        "to the portal    UD_SA_",
        "to the portal    worksheet.html",
        "from the portal  ACK_",
        "from the portal  codes/",
        "ticked done      worksheet.csv",
        "Smart Licensing API calls: 0",
        "Cisco   5 ok",
        "'Without API credentials'",
        "outside portal-export request.airgap",
    ):
        assert phrase in result.stdout, phrase
    # No devices take part in this round trip: no device table, no device verdict.
    assert "Devices (" not in result.stdout and "All 0 devices" not in result.stdout
    (out_dir,) = (keep / "out").iterdir()
    assert len(list((out_dir / "cisco").glob("*/lic.txt"))) == 2
    assert len(list((out_dir / "cisco").glob("*/ack-1.xml"))) == 2
    inside, outside = keep / "inside-home", keep / "outside-home"
    response = keep / "transfer" / "response.airgap"
    assert airgap("--home", str(inside), "verify", str(response)).returncode == 0
    assert_conforms(response, producer=outside, receiver=inside, work=tmp_path)


def test_demo_through_the_portal_with_json(airgap) -> None:
    result = airgap("--json", "demo", "--portal", "--devices", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["outcomes"] == {"Cisco": {"ok": 3}}
    assert document["portal"]["api_calls"] == 0
    assert document["portal"]["portal_calls"] == {
        "portal_authorization": 1,
        "portal_return": 1,
        "portal_usage-upload": 1,
    }
    assert [e["step"] for e in document["portal"]["exchanged"]][:4] == ["to the portal"] * 4
