"""The vendor registry, clients building themselves from config, and ProcessOptions.from_config."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airgap.config import DEFAULTS, Config, HomePaths
from airgap.errors import ConfigError
from airgap.outside import registry
from airgap.outside.bigiq import BigIqClient
from airgap.outside.bigiq.regkey import LicenseDirectory
from airgap.outside.cisco import CiscoClient
from airgap.outside.http import RateLimiter, RetryPolicy, TlsSettings
from airgap.outside.process import ProcessOptions
from airgap.outside.vendor import ClientOptions

SECRETS = {
    "cisco.client_id": "client-id-value",
    "cisco.client_secret": "client-secret-value",
    "bigiq.username": "admin",
    "bigiq.password": "password-value",
}


def config(tmp_path: Path, **values: Any) -> Config:
    merged = {k: v for k, v in DEFAULTS.items() if v is not None}
    merged["bigiq.url"] = "https://bigiq.example.net"
    merged.update({key.replace("__", "."): value for key, value in values.items()})
    return Config(paths=HomePaths(tmp_path), values=merged, secrets=SECRETS)


# --- registry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", registry.vendors())
def test_each_registered_class_serves_its_vendor_and_actions(vendor: str) -> None:
    cls = registry.client_class(vendor)
    assert cls.vendor == vendor
    assert all(action.startswith(f"{vendor}.") for action in cls.actions)  # type: ignore[attr-defined]


def test_registry_lists_the_two_vendors() -> None:
    assert registry.vendors() == ["bigiq", "cisco"]


def test_an_unknown_vendor_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        registry.client_class("juniper")
    assert "bigiq, cisco" in (caught.value.hint or "")


def test_importing_the_registry_imports_no_client_and_no_requests() -> None:
    code = (
        "import sys, airgap.outside.registry\n"
        "loaded = [m for m in ('requests', 'airgap.outside.cisco', 'airgap.outside.bigiq',"
        " 'airgap.outside.http') if m in sys.modules]\n"
        "print(loaded)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_build_client_makes_cisco_from_config(tmp_path: Path) -> None:
    limiter = RateLimiter(3)
    client = registry.build_client(
        "cisco", config(tmp_path), ClientOptions(retry=RetryPolicy(attempts=2), limiter=limiter)
    )
    try:
        assert isinstance(client, CiscoClient)
        assert client._http.retry == RetryPolicy(attempts=2)
        assert client._http.limiter is limiter
        assert "client-secret-value" not in repr(client)
    finally:
        client.finish()


def test_build_client_makes_bigiq_with_the_license_folder(tmp_path: Path) -> None:
    options = ClientOptions(retry=RetryPolicy(), license_dir=tmp_path / "licenses")
    client = registry.build_client("bigiq", config(tmp_path, bigiq__verify_tls=False), options)
    try:
        assert isinstance(client, BigIqClient)
        source = client._regkeys._license_source
        assert isinstance(source, LicenseDirectory)
        assert source.directory == tmp_path / "licenses"
        assert client._session.http.tls == TlsSettings(False)
    finally:
        client.finish()


def test_build_client_refuses_missing_secrets(tmp_path: Path) -> None:
    bare = Config(paths=HomePaths(tmp_path), values=dict(config(tmp_path).values), secrets={})
    for vendor in registry.vendors():
        with pytest.raises(ConfigError):
            registry.build_client(vendor, bare, ClientOptions(retry=RetryPolicy()))


# --- TLS settings from config --------------------------------------------------------------------


def test_tls_settings_from_config(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    assert TlsSettings.from_config(config(tmp_path), "cisco") == TlsSettings(True)
    assert TlsSettings.from_config(config(tmp_path, cisco__ca_bundle=str(ca)), "cisco") == (
        TlsSettings(str(ca))
    )
    off = config(tmp_path, bigiq__verify_tls=False, bigiq__ca_bundle=str(ca))
    assert TlsSettings.from_config(off, "bigiq") == TlsSettings(False)  # false wins
    home = config(tmp_path, bigiq__ca_bundle="~/ca.pem")
    assert TlsSettings.from_config(home, "bigiq") == TlsSettings(str(Path.home() / "ca.pem"))


def test_tls_settings_refuse_a_missing_bundle_before_sending(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        TlsSettings(str(tmp_path / "missing.pem")).check()
    TlsSettings(True).check()
    TlsSettings(False).check()


# --- ProcessOptions.from_config ----------------------------------------------------------------


def test_process_options_come_from_the_limits_in_config(tmp_path: Path) -> None:
    limits = config(tmp_path, limits__concurrency=3, limits__rate=2.5, limits__max_wait="30m")
    options = ProcessOptions.from_config(limits)
    assert options == ProcessOptions(max_wait=timedelta(minutes=30), concurrency=3, rate=2.5)


def test_process_options_given_on_the_command_line_win(tmp_path: Path) -> None:
    options = ProcessOptions.from_config(
        config(tmp_path, limits__rate=9),
        max_wait="90s",
        concurrency=16,
        rate=0.0,
        dry_run=True,
        resubmit=frozenset({"item-1"}),
        license_dir=tmp_path,
        split=1024,
        output=None,  # not given: the default
    )
    assert options.max_wait == timedelta(seconds=90)
    assert (options.concurrency, options.rate, options.dry_run) == (16, 0.0, True)
    assert (options.resubmit, options.license_dir, options.split) == (
        frozenset({"item-1"}),
        tmp_path,
        1024,
    )
    assert options.output is None


def test_process_options_refuse_a_bad_duration(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ProcessOptions.from_config(config(tmp_path), max_wait="soon")
