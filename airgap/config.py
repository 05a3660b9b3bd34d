"""The home directory and its config.toml, merged once with environment overrides.

The core never reads `os.environ`: the CLI passes the environment in, so tests and library
users decide what it holds.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from airgap.errors import ConfigError
from airgap.fsutil import atomic_write_bytes
from airgap.units import parse_duration, parse_size

ROLES = ("inside", "outside")

# Every settable key, with its default (None: no default). Order is the order config.toml uses.
DEFAULTS: dict[str, str | int | bool | None] = {
    "site.name": None,
    "site.role": None,
    "cisco.token_url": "https://id.cisco.com/oauth2/default/v1/token",
    "cisco.api_base": "https://swapi.cisco.com/services/api/smart-accounts-and-licensing/",
    "cisco.smart_account": None,
    "cisco.virtual_account": "Default",
    "cisco.verify_tls": True,
    "cisco.ca_bundle": None,
    "bigiq.url": None,
    "bigiq.login_provider": "tmos",
    "bigiq.verify_tls": True,
    "bigiq.ca_bundle": None,
    "limits.concurrency": 8,
    "limits.rate": 5,
    "limits.max_wait": "2h",
    "bundle.expiry": "7d",
    "bundle.max_bytes": "4GiB",
    "trust.required_signatures": 1,
}

# Secrets come from the environment or a prompt only; they never touch config.toml.
SECRET_KEYS = frozenset(
    {
        "cisco.client_id",
        "cisco.client_secret",
        "bigiq.username",
        "bigiq.password",
        "site.passphrase",
    }
)
_INT_KEYS = frozenset({"limits.concurrency", "trust.required_signatures"})
_FLOAT_KEYS = frozenset({"limits.rate"})
_BOOL_KEYS = frozenset({"cisco.verify_tls", "bigiq.verify_tls"})
_KEY_SHAPE = re.compile(r"^[a-z]+\.[a-z_]+$")


def env_name(key: str) -> str:
    """The environment variable that overrides `key`: `cisco.api_base` → `AIRGAP_CISCO_API_BASE`."""
    return "AIRGAP_" + key.replace(".", "_").upper()


@dataclass(frozen=True)
class HomePaths:
    """Where each file of a home lives."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def signing_key(self) -> Path:
        return self.keys / "signing.key.pem"

    @property
    def signing_pub(self) -> Path:
        return self.keys / "signing.pub.pem"

    @property
    def age_identity(self) -> Path:
        return self.keys / "age-identity.txt"

    @property
    def age_recipient(self) -> Path:
        return self.keys / "age-recipient.txt"

    @property
    def trust(self) -> Path:
        return self.root / "trust.json"

    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def audit_head(self) -> Path:
        return self.root / "audit.head"

    def exists(self) -> bool:
        return self.config.exists()


def _coerce(key: str, value: Any, *, source: str) -> str | int | bool | float:
    try:
        if key in _BOOL_KEYS:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if key in _INT_KEYS:
            number = int(value)
            if number < 1:
                raise ValueError(value)
            return number
        if key in _FLOAT_KEYS:
            rate = float(value)
            if rate < 0:
                raise ValueError(value)
            return rate
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} = {value!r} is not a valid value") from None
    if key in ("limits.max_wait", "bundle.expiry"):
        parse_duration(str(value), what=f"{source}: {key}")
    if key == "bundle.max_bytes":
        parse_size(value if isinstance(value, int) else str(value), what=f"{source}: {key}")
    if key == "site.role" and value not in ROLES:
        raise ConfigError(f"{source}: site.role must be inside or outside, not {value!r}")
    return value if isinstance(value, int) else str(value)


@dataclass(frozen=True)
class Config:
    """config.toml merged with `AIRGAP_<SECTION>_<KEY>` overrides: read once, passed around."""

    paths: HomePaths
    values: Mapping[str, Any] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, home: Path, env: Mapping[str, str] | None = None) -> Config:
        """Read `home/config.toml` and apply environment overrides.

        Raises:
            ConfigError: the home does not exist, or a file or override is invalid.
        """
        paths = HomePaths(home)
        if not paths.exists():
            raise ConfigError(
                f"no airgap home at {home}",
                hint="Run `airgap init --role inside` (or outside), or point --home/AIRGAP_HOME "
                "at an existing home.",
            )
        try:
            data = tomllib.loads(paths.config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{paths.config}: cannot read: {exc}") from exc
        values: dict[str, Any] = {k: v for k, v in DEFAULTS.items() if v is not None}
        sources: dict[str, str] = dict.fromkeys(values, "default")
        for section, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{paths.config}: [{section}] must be a table")
            for name, value in table.items():
                key = f"{section}.{name}"
                if key not in DEFAULTS:
                    raise ConfigError(f"{paths.config}: unknown key {key}")
                values[key] = _coerce(key, value, source=str(paths.config))
                sources[key] = "config.toml"
        env = env or {}
        for key in DEFAULTS:
            name = env_name(key)
            if name in env and env[name] != "":
                values[key] = _coerce(key, env[name], source=name)
                sources[key] = name
        secrets = {k: env[env_name(k)] for k in SECRET_KEYS if env.get(env_name(k))}
        return cls(paths=paths, values=values, sources=sources, secrets=secrets)

    def get(self, key: str) -> Any:
        """The value of a dotted key, or None when unset.

        Raises:
            ConfigError: the key is unknown (or a secret, which config never holds).
        """
        check_key(key, for_write=False)
        return self.values.get(key)

    @property
    def site_name(self) -> str:
        return str(self.values.get("site.name", ""))

    @property
    def role(self) -> str:
        return str(self.values.get("site.role", ""))

    @property
    def required_signatures(self) -> int:
        return int(self.values["trust.required_signatures"])

    @property
    def max_bytes(self) -> int:
        return parse_size(self.values["bundle.max_bytes"])

    @property
    def expiry(self) -> timedelta:
        return parse_duration(str(self.values["bundle.expiry"]))

    def secret(self, key: str) -> str | None:
        """A secret from the environment (e.g. `cisco.client_secret`), or None."""
        return self.secrets.get(key)


def check_key(key: str, *, for_write: bool) -> None:
    """Refuse unknown keys, and secrets for any write.

    Raises:
        ConfigError: the key is unknown or names a secret.
    """
    if key in SECRET_KEYS:
        raise ConfigError(
            f"{key} is a secret and is never stored in config.toml",
            hint=f"Set it in the environment as {env_name(key)} (or answer the prompt).",
        )
    if not _KEY_SHAPE.match(key) or key not in DEFAULTS:
        known = ", ".join(sorted(DEFAULTS))
        raise ConfigError(f"unknown config key {key!r}", hint=f"Known keys: {known}.")
    if for_write and key in ("site.role",):
        raise ConfigError(
            "site.role is fixed when the home is created",
            hint="Create a new home with `airgap init --role ...` instead.",
        )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def render_toml(values: Mapping[str, Any]) -> str:
    """Render flat dotted keys as a small TOML document, one table per section."""
    sections: dict[str, list[str]] = {}
    for key in DEFAULTS:
        if key in values and values[key] is not None:
            section, name = key.split(".", 1)
            sections.setdefault(section, []).append(f"{name} = {_toml_value(values[key])}")
    blocks = [f"[{section}]\n" + "\n".join(lines) for section, lines in sections.items()]
    return "\n\n".join(blocks) + "\n"


def read_file_values(paths: HomePaths) -> dict[str, Any]:
    """The keys set in config.toml itself (no defaults, no environment)."""
    data = tomllib.loads(paths.config.read_text(encoding="utf-8"))
    return {
        f"{section}.{name}": value
        for section, table in data.items()
        if isinstance(table, dict)
        for name, value in table.items()
    }


def set_value(paths: HomePaths, key: str, value: str) -> Any:
    """Set one key in config.toml (atomically) and return the stored, validated value.

    Raises:
        ConfigError: unknown key, secret key, or invalid value.
    """
    check_key(key, for_write=True)
    stored = _coerce(key, value, source="value")
    values = read_file_values(paths)
    values[key] = stored
    atomic_write_bytes(paths.config, render_toml(values).encode("utf-8"))
    return stored
