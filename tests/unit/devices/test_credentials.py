"""Credentials come from the environment mapping passed in, or a prompt; secrets never show."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from airgap.devices.credentials import CredentialResolver, env_prefix, resolve_login
from airgap.errors import ConfigError


def test_a_credential_resolves_from_its_environment_variables() -> None:
    env = {"AIRGAP_DEVICE_LAB_USERNAME": "admin", "AIRGAP_DEVICE_LAB_PASSWORD": "hunter2"}
    login = resolve_login("lab", env)
    assert (login.username, login.password, login.key_file) == ("admin", "hunter2", None)
    assert "hunter2" not in repr(login)


def test_names_with_dashes_map_to_underscores() -> None:
    assert env_prefix("dc-1") == "AIRGAP_DEVICE_DC_1_"
    with pytest.raises(ConfigError):
        env_prefix("bad name")


def test_a_key_file_stands_in_for_the_password(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("key")
    env = {"AIRGAP_DEVICE_LAB_USERNAME": "admin", "AIRGAP_DEVICE_LAB_KEYFILE": str(key)}
    login = resolve_login("lab", env)
    assert (login.password, login.key_file) == (None, key)
    env["AIRGAP_DEVICE_LAB_KEYFILE"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError) as caught:
        resolve_login("lab", env)
    assert "AIRGAP_DEVICE_LAB_KEYFILE" in caught.value.message


def test_missing_values_name_the_variable_and_never_a_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_login("lab", {})
    assert "AIRGAP_DEVICE_LAB_USERNAME" in caught.value.message
    env = {"AIRGAP_DEVICE_LAB_USERNAME": "admin", "AIRGAP_DEVICE_OTHER_PASSWORD": "topsecret"}
    with pytest.raises(ConfigError) as caught:
        resolve_login("lab", env)
    assert "AIRGAP_DEVICE_LAB_PASSWORD" in caught.value.message
    assert "topsecret" not in caught.value.message + (caught.value.hint or "")


def test_the_prompt_fills_what_the_environment_lacks_and_hides_the_password() -> None:
    asked: list[tuple[str, bool]] = []

    def prompt(question: str, secret: bool) -> str:
        asked.append((question, secret))
        return "pw" if secret else "admin"

    login = resolve_login("lab", {}, prompt)
    assert (login.username, login.password) == ("admin", "pw")
    assert [secret for _, secret in asked] == [False, True]
    with pytest.raises(ConfigError):
        resolve_login("lab", {"AIRGAP_DEVICE_LAB_USERNAME": "admin"}, lambda q, s: "")


def test_the_resolver_asks_once_per_credential_from_many_threads() -> None:
    calls: list[str] = []
    lock = threading.Lock()

    def prompt(question: str, secret: bool) -> str:
        with lock:
            calls.append(question)
        return "pw"

    resolver = CredentialResolver({"AIRGAP_DEVICE_LAB_USERNAME": "admin"}, prompt)
    logins = []
    threads = [
        threading.Thread(target=lambda: logins.append(resolver.login("lab"))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert {login.password for login in logins} == {"pw"}
