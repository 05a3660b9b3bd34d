"""A site's home directory: creating it (`init`) and opening what commands need from it."""

from __future__ import annotations

import re
import socket
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyrage

from airgap.audit import Actor, AuditLog
from airgap.bundle import Limits, TrustPolicy
from airgap.config import ROLES, Config, HomePaths, render_toml
from airgap.errors import ConfigError
from airgap.fsutil import atomic_write_bytes
from airgap.keys import (
    Signer,
    age_recipient,
    generate_keys,
    is_encrypted,
    load_age_identity,
    load_public_key,
    load_signer,
)
from airgap.trust import SiteCard, TrustStore

PassphraseSource = Callable[[], str | None]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def default_site_name(role: str) -> str:
    """`<host>-<role>`, cleaned to the characters a site name may hold."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "site"
    return f"{host[:48]}-{role}"


def init_home(
    root: Path, *, role: str, name: str | None, passphrase: str | None
) -> tuple[Home, str]:
    """Create a new home; return it and its fingerprint. `passphrase=None` stores keys in clear.

    Raises:
        ConfigError: the role or name is invalid, or a home already exists at `root`.
    """
    if role not in ROLES:
        raise ConfigError(f"role must be inside or outside, not {role!r}")
    name = name or default_site_name(role)
    if not _NAME.match(name):
        raise ConfigError(
            f"site name {name!r} is not allowed",
            hint="Use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
        )
    paths = HomePaths(root)
    if paths.exists() or paths.signing_key.exists():
        raise ConfigError(
            f"{root} already holds an airgap home; refusing to overwrite it",
            hint="Choose another --home, or remove the old home yourself if it is unwanted.",
        )
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    fingerprint = generate_keys(paths, passphrase=passphrase)
    with sqlite3.connect(paths.state_db) as db:
        db.execute("PRAGMA journal_mode=WAL")
    paths.state_db.chmod(0o600)
    config_text = render_toml({"site.name": name, "site.role": role})
    atomic_write_bytes(paths.config, config_text.encode("utf-8"), mode=0o600)
    home = Home(Config.load(root))
    home.audit().append(
        "init",
        details={"role": role, "name": name, "encrypted_keys": passphrase is not None},
    )
    return home, fingerprint


@dataclass
class Home:
    """An opened home: its merged config and lazy access to keys, trust and the audit log."""

    config: Config
    passphrase: PassphraseSource = field(default=lambda: None)
    _card: SiteCard | None = None

    @classmethod
    def open(
        cls,
        root: Path,
        env: Mapping[str, str] | None = None,
        *,
        passphrase: PassphraseSource | None = None,
    ) -> Home:
        """Open an existing home.

        Raises:
            ConfigError: there is no home at `root`, or its config is invalid.
        """
        config = Config.load(root, env)
        if config.role not in ROLES:
            raise ConfigError(f"{config.paths.config}: site.role is missing or invalid")
        return cls(config=config, passphrase=passphrase or (lambda: None))

    @property
    def paths(self) -> HomePaths:
        return self.config.paths

    @property
    def role(self) -> str:
        return self.config.role

    @property
    def name(self) -> str:
        return self.config.site_name

    def card(self) -> SiteCard:
        """This site's public card.

        Raises:
            ConfigError: the key files are missing or damaged.
        """
        if self._card is None:
            self._card = SiteCard(
                name=self.name,
                role=self.role,
                public_key=load_public_key(self.paths),
                age_recipient=age_recipient(self.paths),
            )
        return self._card

    @property
    def fingerprint(self) -> str:
        return self.card().fingerprint

    def trust_store(self) -> TrustStore:
        """Trusted peers plus this home's own key."""
        return TrustStore.load(self.paths, own=self.card())

    def policy(self, *, expected_kind: str | None = None, enforce: bool = True) -> TrustPolicy:
        """The verification policy this home applies."""
        return TrustPolicy(
            trust=self.trust_store(),
            required_signatures=self.config.required_signatures,
            enforce=enforce,
            expected_kind=expected_kind,
        )

    def recipients(self) -> list[str]:
        """Who an encrypted bundle from this home is sent to: every trusted site, and itself.

        The trusted peers of the other role read what this home sends. The same-role peers are added
        because they are the co-signers of the two-person rule and must be able to open what
        they approve; this home is added so it can still inspect what it wrote.

        Raises:
            ConfigError: no trusted site of the other role, so nobody across could open it.
        """
        store = self.trust_store()
        other = "outside" if self.role == "inside" else "inside"
        if not store.recipients(other):
            raise ConfigError(
                f"cannot encrypt: this home trusts no {other} site",
                hint="Add the other site's card with `airgap trust add CARD` first.",
            )
        peers = [k.card.age_recipient for k in store.peers()]
        return [*peers, self.card().age_recipient]

    def limits(self) -> Limits:
        return Limits(max_bytes=self.config.max_bytes)

    def signer(self) -> Signer:
        """The private signing key (asks for the passphrase when needed).

        Raises:
            ConfigError: the key is missing, or encrypted and no passphrase is available.
            AuthError: the passphrase is wrong.
        """
        secret = self.passphrase() if is_encrypted(self.paths) else None
        return load_signer(self.paths, name=self.name, role=self.role, passphrase=secret)

    def identity(self) -> pyrage.x25519.Identity:
        """The age identity for decrypting bundles sent to this site."""
        data = self.paths.age_identity.read_bytes()[:32]
        secret = self.passphrase() if data.startswith(b"age-encryption.org/") else None
        return load_age_identity(self.paths, passphrase=secret)

    def audit(self) -> AuditLog:
        return AuditLog(
            self.paths.audit_log,
            self.paths.audit_head,
            Actor.current(self.card().fingerprint),
        )
