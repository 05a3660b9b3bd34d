"""What an operator changes about a home itself, each change logged in its audit log.

Exporting the site card, trusting and no longer trusting a peer, and changing a setting are
facts an auditor must see, so the functions that do them also write the audit entry; the CLI
only asks and prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airgap.config import set_value
from airgap.fsutil import atomic_write_bytes
from airgap.home import Home
from airgap.trust import SiteCard, TrustedKey

__all__ = ["card_text", "export_card", "set_setting", "trust_site", "untrust_site"]


def card_text(home: Home) -> str:
    """This site's card as the JSON text `key export` writes (public keys only)."""
    return json.dumps(home.card().to_json(), indent=2, sort_keys=True) + "\n"


def export_card(home: Home, output: Path) -> dict[str, Any]:
    """Write this site's card to `output` (atomically) and log the export.

    Raises:
        OSError: the file cannot be written.

    Returns:
        The card as JSON.
    """
    atomic_write_bytes(output, card_text(home).encode("utf-8"))
    home.audit().append("key_export", details={"file": output.name})
    card: dict[str, Any] = home.card().to_json()
    return card


def trust_site(home: Home, card: SiteCard) -> bool:
    """Trust a peer site's keys; logged when it was not trusted already.

    Raises:
        ConfigError: the trust store cannot be written, or the card clashes with a trusted one.

    Returns:
        True when the site was added, False when it was trusted already.
    """
    added = home.trust_store().add(card)
    if added:
        home.audit().append(
            "trust_add",
            details={"name": card.name, "role": card.role, "fingerprint": card.fingerprint},
        )
    return added


def untrust_site(home: Home, fingerprint: str) -> TrustedKey:
    """Stop trusting a site (by fingerprint or a unique prefix of it) and log it.

    Raises:
        ConfigError: no trusted site matches, or the prefix is ambiguous.

    Returns:
        The site removed.
    """
    removed = home.trust_store().remove(fingerprint)
    home.audit().append(
        "trust_remove",
        details={"name": removed.name, "role": removed.role, "fingerprint": removed.fingerprint},
    )
    return removed


def set_setting(home: Home, key: str, value: str) -> Any:
    """Change one setting in config.toml and log it (secrets are refused by `set_value`).

    Raises:
        ConfigError: unknown key, secret key, or invalid value.

    Returns:
        The stored, validated value.
    """
    stored = set_value(home.paths, key, value)
    home.audit().append("config_set", details={"key": key, "value": stored})
    return stored
