"""Config merging, key rules and the units operators type."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from airgap.config import Config, env_name, set_value
from airgap.errors import ConfigError
from airgap.units import parse_duration, parse_size


def test_env_names() -> None:
    assert env_name("cisco.api_base") == "AIRGAP_CISCO_API_BASE"
    assert env_name("trust.required_signatures") == "AIRGAP_TRUST_REQUIRED_SIGNATURES"


def test_defaults_file_and_env_merge(make_home) -> None:
    home: Path = make_home("outside")
    config = Config.load(home, {})
    assert config.get("limits.concurrency") == 8
    assert config.max_bytes == 4 * 1024**3
    assert config.expiry == timedelta(days=7)
    set_value(config.paths, "limits.concurrency", "16")
    assert Config.load(home, {}).get("limits.concurrency") == 16
    env = {"AIRGAP_LIMITS_CONCURRENCY": "3", "AIRGAP_CISCO_CLIENT_SECRET": "s"}
    merged = Config.load(home, env)
    assert merged.get("limits.concurrency") == 3
    assert merged.sources["limits.concurrency"] == "AIRGAP_LIMITS_CONCURRENCY"
    assert merged.secret("cisco.client_secret") == "s"
    assert "s" not in (home / "config.toml").read_text().split("=")[-1]
    with pytest.raises(ConfigError):
        Config.load(home, {"AIRGAP_LIMITS_RATE": "fast"})


def test_unknown_key_in_file_is_refused(make_home) -> None:
    home: Path = make_home("outside")
    with (home / "config.toml").open("a") as handle:
        handle.write('\n[cisco]\nclient_secret = "oops"\n')
    with pytest.raises(ConfigError):
        Config.load(home, {})


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("4GiB", 4 * 1024**3), ("650MiB", 650 * 1024**2), ("100MB", 10**8), ("512", 512)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "soon", "-1d", "5y"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)
