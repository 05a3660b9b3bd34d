"""`audit verify` and `audit export` through the real command."""

from __future__ import annotations

import json
from pathlib import Path


def test_audit_verify_and_export(airgap, make_home, tmp_path: Path) -> None:
    home = make_home("inside", name="lab")
    airgap("--home", str(home), "config", "set", "bundle.expiry", "3d")
    ok = airgap("--home", str(home), "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "2 entries" in ok.stdout
    exported = airgap("--home", str(home), "audit", "export", "--format", "json")
    events = [e["event"] for e in json.loads(exported.stdout)["entries"]]
    assert events == ["init", "config_set"]
    as_csv = airgap(
        "--home", str(home), "audit", "export", "--format", "csv", "-o", str(tmp_path / "a.csv")
    )
    assert as_csv.returncode == 0
    assert (tmp_path / "a.csv").read_text().startswith("seq,ts,user,host,fingerprint,event")
    assert airgap("--home", str(home), "audit", "export", "--format", "xml").returncode == 1


def test_audit_verify_names_the_broken_line(airgap, make_home) -> None:
    home = make_home("inside", name="lab")
    for value in ("1d", "2d", "3d"):
        airgap("--home", str(home), "config", "set", "bundle.expiry", value)
    log = home / "audit.jsonl"
    raw = log.read_text().splitlines()
    raw[1] = raw[1].replace('"1d"', '"9d"')
    log.write_text("\n".join(raw) + "\n")
    result = airgap("--json", "--home", str(home), "audit", "verify")
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "E_AUDIT"
    assert "line 3" in error["message"]
    assert airgap("--home", str(home), "audit", "export").returncode == 1
