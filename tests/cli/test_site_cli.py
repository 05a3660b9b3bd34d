"""init, key export, trust, config and the global CLI behaviour, through the real command."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from airgap import __version__


def test_version(airgap) -> None:
    result = airgap("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"airgap {__version__}"


def test_help_lists_the_commands(airgap) -> None:
    result = airgap("--help")
    assert result.returncode == 0
    for command in ("init", "key", "trust", "config", "verify", "inspect", "approve", "audit"):
        assert command in result.stdout


def test_init_creates_a_private_home_and_refuses_to_overwrite(airgap, tmp_path: Path) -> None:
    home = tmp_path / "inside"
    env = {"AIRGAP_PASSPHRASE": "correct horse battery staple"}
    result = airgap("--home", str(home), "init", "--role", "inside", "--name", "lab", env=env)
    assert result.returncode == 0, result.stderr
    assert "fingerprint sha256:" in result.stdout
    for secret in ("keys/signing.key.pem", "keys/age-identity.txt", "config.toml"):
        assert stat.S_IMODE((home / secret).stat().st_mode) == 0o600, secret
    assert b"ENCRYPTED PRIVATE KEY" in (home / "keys/signing.key.pem").read_bytes()
    assert (home / "keys/age-identity.txt").read_bytes().startswith(b"age-encryption.org/v1")
    assert (home / "state.db").exists()
    assert "correct horse" not in (home / "audit.jsonl").read_text()
    again = airgap("--home", str(home), "init", "--role", "inside", env=env)
    assert again.returncode == 1
    assert "E_CONFIG" in again.stderr
    assert "Traceback" not in again.stderr


def test_init_without_passphrase_needs_the_flag(airgap, tmp_path: Path) -> None:
    result = airgap("--home", str(tmp_path / "h"), "init", "--role", "outside")
    assert result.returncode == 1
    assert "AIRGAP_PASSPHRASE" in result.stderr
    assert not (tmp_path / "h" / "config.toml").exists()


def test_bad_role_is_refused(airgap, tmp_path: Path) -> None:
    result = airgap("--home", str(tmp_path / "h"), "init", "--role", "middle", "--no-passphrase")
    assert result.returncode == 1
    assert "E_CONFIG" in result.stderr


def test_missing_home_is_a_clear_error_and_json_shape(airgap, tmp_path: Path) -> None:
    result = airgap("--json", "--home", str(tmp_path / "nowhere"), "trust", "list")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert document["error"]["code"] == "E_CONFIG"
    assert "no airgap home" in document["error"]["message"]


def test_global_options_after_the_command_and_home_from_env(airgap, tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert (
        airgap("init", "--role", "inside", "--no-passphrase", "--home", str(home)).returncode == 0
    )
    result = airgap("trust", "list", "--json", env={"AIRGAP_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    sites = json.loads(result.stdout)["sites"]
    assert [s["self"] for s in sites] == [True]


def test_usage_error_exits_2(airgap) -> None:
    assert airgap("init", "--bogus").returncode == 2
    assert airgap("no-such-command").returncode == 2


def test_card_exchange_and_trust_lifecycle(airgap, tmp_path: Path) -> None:
    inside, outside = tmp_path / "in", tmp_path / "out"
    airgap("--home", str(inside), "init", "--role", "inside", "--name", "lab", "--no-passphrase")
    airgap("--home", str(outside), "init", "--role", "outside", "--name", "dmz", "--no-passphrase")
    card = tmp_path / "dmz.card"
    exported = airgap("--home", str(outside), "key", "export", "-o", str(card))
    assert exported.returncode == 0, exported.stderr
    data = json.loads(card.read_text())
    assert data["role"] == "outside" and data["age_recipient"].startswith("age1")
    assert "PRIVATE" not in card.read_text()
    fingerprint = data["fingerprint"]
    assert fingerprint in exported.stdout

    # Without a terminal and without --yes nothing is trusted.
    refused = airgap("--home", str(inside), "trust", "add", str(card))
    assert refused.returncode == 1
    added = airgap("--home", str(inside), "trust", "add", str(card), "--yes")
    assert added.returncode == 0, added.stderr
    listed = json.loads(airgap("--home", str(inside), "--json", "trust", "list").stdout)
    assert [s["fingerprint"] for s in listed["sites"] if not s["self"]] == [fingerprint]

    removed = airgap("--home", str(inside), "trust", "remove", fingerprint[7:20])
    assert removed.returncode == 0, removed.stderr
    listed = json.loads(airgap("--home", str(inside), "--json", "trust", "list").stdout)
    assert len(listed["sites"]) == 1
    events = [
        json.loads(line)["event"] for line in (inside / "audit.jsonl").read_text().splitlines()
    ]
    assert events == ["init", "trust_add", "trust_remove"]


def test_altered_card_is_refused(airgap, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    airgap("--home", str(a), "init", "--role", "inside", "--no-passphrase")
    airgap("--home", str(b), "init", "--role", "outside", "--no-passphrase")
    card = tmp_path / "b.card"
    airgap("--home", str(b), "key", "export", "-o", str(card))
    data = json.loads(card.read_text())
    data["fingerprint"] = "sha256:" + "0" * 64
    card.write_text(json.dumps(data))
    result = airgap("--home", str(a), "trust", "add", str(card), "--yes")
    assert result.returncode == 1
    assert "not that of its key" in result.stderr


def test_config_get_set_and_env_override(airgap, tmp_path: Path) -> None:
    home = tmp_path / "h"
    airgap("--home", str(home), "init", "--role", "outside", "--no-passphrase")
    got = airgap("--home", str(home), "config", "get", "cisco.virtual_account")
    assert got.stdout.strip() == "Default"
    assert (
        airgap("--home", str(home), "config", "set", "bigiq.url", "https://bq.example").returncode
        == 0
    )
    assert (
        airgap("--home", str(home), "config", "get", "bigiq.url").stdout.strip()
        == "https://bq.example"
    )
    env = {"AIRGAP_BIGIQ_URL": "https://override.example"}
    overridden = airgap("--home", str(home), "--json", "config", "get", "bigiq.url", env=env)
    assert json.loads(overridden.stdout)["value"] == "https://override.example"
    assert json.loads(overridden.stdout)["source"] == "AIRGAP_BIGIQ_URL"


def test_config_refuses_secrets_unknown_keys_and_bad_values(airgap, tmp_path: Path) -> None:
    home = tmp_path / "h"
    airgap("--home", str(home), "init", "--role", "outside", "--no-passphrase")
    secret = airgap("--home", str(home), "config", "set", "cisco.client_secret", "hunter2")
    assert secret.returncode == 1
    assert "AIRGAP_CISCO_CLIENT_SECRET" in secret.stderr
    assert "hunter2" not in (home / "config.toml").read_text()
    assert "hunter2" not in (home / "audit.jsonl").read_text()
    assert airgap("--home", str(home), "config", "set", "cisco.nope", "1").returncode == 1
    bad = airgap("--home", str(home), "config", "set", "limits.concurrency", "many")
    assert bad.returncode == 1 and "E_CONFIG" in bad.stderr
    assert airgap("--home", str(home), "config", "set", "bundle.expiry", "3d").returncode == 0
    assert airgap("--home", str(home), "config", "set", "bundle.expiry", "soon").returncode == 1
