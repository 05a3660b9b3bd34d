"""`airgap demo` end to end, and `outside status`/`--dry-run` on what it leaves behind."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFORMANCE, require_tool

from airgap.bundle.crypt import decrypt_stream, is_age
from airgap.home import Home


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


def test_demo_round_trip_prints_its_summary(airgap, tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    result = airgap("demo", "--devices", "4", "--keep", str(keep), timeout=300)
    assert result.returncode == 0, result.stderr
    for phrase in (
        "Round trip complete",
        "What crossed the gap",
        "Outcomes:",
        "Cisco",
        "BIG-IQ",
        "License pool 'no-such-pool' not found",
        "openssl pkeyutl",
    ):
        assert phrase in result.stdout, phrase
    (out_dir,) = (keep / "out").iterdir()
    assert (out_dir / "INSTRUCTIONS.md").exists()
    assert len(list((out_dir / "cisco").glob("*/lic.txt"))) == 4
    inside, outside = keep / "inside-home", keep / "outside-home"
    for home in (inside, outside):
        assert airgap("--home", str(home), "audit", "verify").returncode == 0
    status = airgap("--json", "--home", str(outside), "outside", "status")
    requests = json.loads(status.stdout)["requests"]
    assert len(requests) == 1
    assert (requests[0]["items"]["DONE"], requests[0]["items"]["FAILED"]) == (11, 1)
    inside_status = airgap("--json", "--home", str(inside), "inside", "status", "--all")
    assert inside_status.returncode == 0, inside_status.stderr
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


def test_demo_without_keep_cleans_up_and_json(airgap) -> None:
    result = airgap("--json", "demo", "--devices", "2", timeout=300)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is True and document["kept"] is False
    assert not Path(document["workdir"]).exists()
    assert document["outcomes"]["Cisco"] == {"ok": 5}


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

WIDE = {"COLUMNS": "1000"}  # no wrapping inside a path


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
    ):
        assert phrase in result.stdout, phrase
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
