"""verify, inspect and approve through the real command, with real homes and bundles."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bundles import make_request
from craft import BundleParts, Entry, write_tar

from airgap.home import Home


@pytest.fixture
def sites(make_home, exchange_cards) -> tuple[Path, Path]:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    return inside, outside


def test_verify_prints_what_was_checked_and_logs_it(airgap, sites, tmp_path: Path) -> None:
    inside, outside = sites
    written = make_request(inside, tmp_path / "req.airgap")
    result = airgap("--home", str(outside), "verify", str(written.path))
    assert result.returncode == 0, result.stderr
    for phrase in (
        "OK",
        "signatures: 1 valid of 1 required: lab (inside)",
        "SHA256SUMS",
        "items: 2",
    ):
        assert phrase in result.stdout
    last = json.loads((outside / "audit.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "verify"
    assert last["bundle_id"] == written.manifest.bundle_id
    assert last["manifest_sha256"] == written.manifest_sha256
    assert last["details"]["producer_audit_head"] == written.manifest.audit_head


def test_verify_json(airgap, sites, tmp_path: Path) -> None:
    inside, outside = sites
    written = make_request(inside, tmp_path / "req.airgap", compress=True)
    result = airgap("--json", "--home", str(outside), "verify", str(written.path))
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert document["compressed"] is True
    assert document["manifest_sha256"] == written.manifest_sha256


REFUSALS = {
    "symlink": (
        lambda parts: [*parts.entries(), Entry("files/x", type=b"2", linkname="/etc/shadow")],
        "E_UNSAFE_MEMBER",
    ),
    "traversal": (lambda parts: [*parts.entries(), Entry("../../x", b"1")], "E_UNSAFE_MEMBER"),
    "unlisted": (lambda parts: [*parts.entries(), Entry("files/extra", b"1")], "E_UNLISTED_MEMBER"),
    "missing": (
        lambda parts: [e for e in parts.entries() if e.name != "files/a.txt"],
        "E_MISSING_MEMBER",
    ),
    "hash": (
        lambda parts: [
            Entry(e.name, b"HELLO\n", mtime=e.mtime) if e.name == "files/a.txt" else e
            for e in parts.entries()
        ],
        "E_HASH_MISMATCH",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_bundle_exits_3_with_its_code_and_writes_nothing(
    airgap, sites, tmp_path: Path, case: str
) -> None:
    inside, outside = sites
    signer = Home.open(inside).signer()
    make, code = REFUSALS[case]
    drop = tmp_path / "drop"
    drop.mkdir()
    path = write_tar(drop / "bad.airgap", make(BundleParts(signer)))
    before = sorted(os.listdir(drop)), sorted(p.name for p in outside.iterdir())
    result = airgap("--json", "--home", str(outside), "verify", str(path))
    assert result.returncode == 3, result.stdout + result.stderr
    assert json.loads(result.stdout)["error"]["code"] == code
    assert (sorted(os.listdir(drop)), sorted(p.name for p in outside.iterdir())) == before
    refusal = json.loads((outside / "audit.jsonl").read_text().splitlines()[-1])
    assert refusal["event"] == "refusal" and refusal["details"]["code"] == code


def test_random_bytes_exit_3_without_traceback(airgap, sites, tmp_path: Path) -> None:
    _, outside = sites
    junk = tmp_path / "junk.airgap"
    junk.write_bytes(os.urandom(2048))
    result = airgap("--home", str(outside), "verify", str(junk))
    assert result.returncode == 3
    assert "E_NOT_A_BUNDLE" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_file_is_refused_cleanly(airgap, sites, tmp_path: Path) -> None:
    _, outside = sites
    result = airgap("--home", str(outside), "verify", str(tmp_path / "absent.airgap"))
    assert result.returncode == 3
    assert "E_NOT_A_BUNDLE" in result.stderr


def test_inspect_without_trust_marks_signatures(airgap, sites, make_home, tmp_path: Path) -> None:
    inside, outside = sites
    written = make_request(inside, tmp_path / "req.airgap")
    stranger = make_home("outside", name="stranger")
    result = airgap("--json", "--home", str(stranger), "inspect", str(written.path))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [s["status"] for s in document["signatures"]] == ["untrusted"]
    assert document["manifest"]["bundle_id"] == written.manifest.bundle_id
    assert [i["id"] for i in document["items"]] == ["item-0001", "item-0002"]
    assert {p["code"] for p in document["problems"]} == {"E_UNTRUSTED_KEY"}
    trusted = json.loads(
        airgap("--json", "--home", str(outside), "inspect", str(written.path)).stdout
    )
    assert [s["status"] for s in trusted["signatures"]] == ["valid"]
    no_home = airgap("--json", "--home", str(tmp_path / "none"), "inspect", str(written.path))
    assert no_home.returncode == 0
    human = airgap("--home", str(outside), "inspect", str(written.path))
    assert "valid" in human.stdout and "item-0002" in human.stdout


def test_inspect_marks_an_invalid_signature(airgap, sites, tmp_path: Path) -> None:
    inside, outside = sites
    signer = Home.open(inside).signer()
    parts = BundleParts(signer)
    entries = [
        Entry(e.name, bytes(64)) if e.name.startswith("signatures/") else e for e in parts.entries()
    ]
    path = write_tar(tmp_path / "forged.airgap", entries)
    document = json.loads(airgap("--json", "--home", str(outside), "inspect", str(path)).stdout)
    assert [s["status"] for s in document["signatures"]] == ["invalid"]
    assert airgap("--home", str(outside), "verify", str(path)).returncode == 3


def test_two_person_rule_threshold_met_after_approve(
    airgap, make_home, exchange_cards, tmp_path: Path
) -> None:
    lab, officer, dmz = (
        make_home("inside", name="lab"),
        make_home("inside", name="officer"),
        make_home("outside", name="dmz"),
    )
    exchange_cards(lab, dmz)
    exchange_cards(officer, dmz)
    exchange_cards(lab, officer)
    assert (
        airgap("--home", str(dmz), "config", "set", "trust.required_signatures", "2").returncode
        == 0
    )
    written = make_request(lab, tmp_path / "req.airgap", encrypt=True)
    manifest_before = written.manifest_bytes

    refused = airgap("--json", "--home", str(dmz), "verify", str(written.path))
    assert refused.returncode == 3
    assert json.loads(refused.stdout)["error"]["code"] == "E_THRESHOLD"

    approved = airgap(
        "--home", str(officer), "approve", str(written.path), "-o", str(tmp_path / "req2.airgap")
    )
    assert approved.returncode == 0, approved.stderr
    assert "2 signature(s)" in approved.stdout
    ok = airgap("--json", "--home", str(dmz), "verify", str(tmp_path / "req2.airgap"))
    assert ok.returncode == 0, ok.stdout
    document = json.loads(ok.stdout)
    assert document["manifest_sha256"] == written.manifest_sha256
    assert sorted(s["name"] for s in document["signatures"]) == ["lab", "officer"]
    assert written.path.read_bytes() != (tmp_path / "req2.airgap").read_bytes()
    assert manifest_before == written.manifest_bytes

    # The outside site cannot approve a request.
    wrong = airgap("--json", "--home", str(dmz), "approve", str(tmp_path / "req2.airgap"))
    assert wrong.returncode == 3
    assert json.loads(wrong.stdout)["error"]["code"] == "E_WRONG_ROLE"


def test_encrypted_key_needs_the_passphrase(airgap, make_home, tmp_path: Path) -> None:
    lab = make_home("inside", name="lab", passphrase="s3cret-pass")
    officer = make_home("inside", name="officer")
    from airgap.home import Home as H

    H.open(officer).trust_store().add(H.open(lab).card())
    H.open(lab).trust_store().add(H.open(officer).card())
    written = make_request(lab, tmp_path / "req.airgap", env={"AIRGAP_PASSPHRASE": "s3cret-pass"})
    missing = airgap("--home", str(lab), "approve", str(written.path))
    assert missing.returncode == 1 and "E_CONFIG" in missing.stderr
    wrong = airgap(
        "--home", str(lab), "approve", str(written.path), env={"AIRGAP_PASSPHRASE": "nope"}
    )
    assert wrong.returncode == 1 and "E_AUTH" in wrong.stderr
    assert "nope" not in wrong.stderr


def test_verify_without_a_home_still_refuses_with_exit_3(airgap, sites, tmp_path: Path) -> None:
    inside, _ = sites
    junk = tmp_path / "junk.airgap"
    junk.write_bytes(os.urandom(2048))
    nowhere = str(tmp_path / "no-home")
    result = airgap("--json", "--home", nowhere, "verify", str(junk))
    assert result.returncode == 3
    assert json.loads(result.stdout)["error"]["code"] == "E_NOT_A_BUNDLE"
    written = make_request(inside, tmp_path / "req.airgap")
    untrusted = airgap("--home", nowhere, "verify", str(written.path))
    assert untrusted.returncode == 3
    assert "E_UNTRUSTED_KEY" in untrusted.stderr and "no airgap home" in untrusted.stderr
    assert not (tmp_path / "no-home").exists()
