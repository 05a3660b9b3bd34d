"""Site cards, the local trust store, and the rules that decide whether signatures suffice.

Trust is only what this store holds: a key inside a bundle is never trusted for being there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from airgap.config import ROLES, HomePaths
from airgap.errors import ConfigError
from airgap.fsutil import atomic_write_bytes
from airgap.keys import (
    FINGERPRINT_PREFIX,
    fingerprint_of,
    fp16,
    load_public_pem,
    public_key_pem,
)

CARD_FORMAT = "airgap-site-card/1"


@dataclass(frozen=True)
class SiteCard:
    """The public identity of a site: what `key export` writes and `trust add` reads."""

    name: str
    role: str
    public_key: Ed25519PublicKey
    age_recipient: str

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.public_key)

    @property
    def fp16(self) -> str:
        return fp16(self.fingerprint)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CARD_FORMAT,
            "name": self.name,
            "role": self.role,
            "ed25519_public_key": public_key_pem(self.public_key),
            "age_recipient": self.age_recipient,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: Any, *, source: str) -> SiteCard:
        """Read a card, checking that its fingerprint is really that of its key.

        Raises:
            ConfigError: the card is malformed or its fingerprint does not match its key.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a site card is a JSON object")
        missing = [
            k for k in ("name", "role", "ed25519_public_key", "age_recipient") if k not in data
        ]
        if missing:
            raise ConfigError(f"{source}: the site card lacks {', '.join(missing)}")
        if data.get("format", CARD_FORMAT) != CARD_FORMAT:
            raise ConfigError(f"{source}: unknown card format {data.get('format')!r}")
        if data["role"] not in ROLES:
            raise ConfigError(f"{source}: role must be inside or outside, not {data['role']!r}")
        recipient = str(data["age_recipient"])
        if not recipient.startswith("age1"):
            raise ConfigError(f"{source}: age_recipient is not an age X25519 recipient")
        card = cls(
            name=str(data["name"]),
            role=str(data["role"]),
            public_key=load_public_pem(str(data["ed25519_public_key"]), source=source),
            age_recipient=recipient,
        )
        claimed = data.get("fingerprint")
        if claimed is not None and claimed != card.fingerprint:
            raise ConfigError(
                f"{source}: the card's fingerprint {claimed} is not that of its key "
                f"({card.fingerprint})",
                hint="The card was altered; ask the other site for a fresh copy.",
            )
        return card

    @classmethod
    def load(cls, path: Path) -> SiteCard:
        """Read a card file.

        Raises:
            ConfigError: the file cannot be read or is not a valid card.
        """
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"{path}: not a readable site card ({exc})") from exc
        return cls.from_json(data, source=str(path))


@dataclass(frozen=True)
class TrustedKey:
    """A key this home accepts signatures from, with the role it may sign for."""

    card: SiteCard
    own: bool = False

    @property
    def fingerprint(self) -> str:
        return self.card.fingerprint

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def role(self) -> str:
        return self.card.role

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.card.public_key


class TrustStore:
    """The trusted peer sites of one home, plus the home's own key."""

    def __init__(self, keys: Iterable[TrustedKey], *, path: Path | None = None) -> None:
        self._keys = list(keys)
        self._path = path

    @classmethod
    def load(cls, paths: HomePaths, *, own: SiteCard | None = None) -> TrustStore:
        """Read `trust.json`; `own`, when given, is trusted as this home's own key.

        Raises:
            ConfigError: the file is damaged.
        """
        keys: list[TrustedKey] = [TrustedKey(own, own=True)] if own else []
        if paths.trust.exists():
            try:
                data = json.loads(paths.trust.read_text(encoding="utf-8"))
                entries = data["sites"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{paths.trust}: damaged trust store ({exc})") from exc
            keys += [TrustedKey(SiteCard.from_json(e, source=str(paths.trust))) for e in entries]
        return cls(keys, path=paths.trust)

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter(self._keys)

    def peers(self) -> list[TrustedKey]:
        """Trusted keys other than this home's own."""
        return [k for k in self._keys if not k.own]

    def by_fp16(self, prefix: str) -> TrustedKey | None:
        """The trusted key whose fingerprint starts with these 16 hex digits, if any."""
        for key in self._keys:
            if fp16(key.fingerprint) == prefix:
                return key
        return None

    def find(self, fingerprint: str) -> TrustedKey | None:
        """A peer by full fingerprint or by a unique prefix (with or without `sha256:`)."""
        wanted = fingerprint.removeprefix(FINGERPRINT_PREFIX).lower()
        if len(wanted) < 8:
            return None
        hits = [
            k
            for k in self.peers()
            if k.fingerprint.removeprefix(FINGERPRINT_PREFIX).startswith(wanted)
        ]
        return hits[0] if len(hits) == 1 else None

    def recipients(self, role: str) -> list[str]:
        """age recipients of every trusted peer of `role`."""
        return [k.card.age_recipient for k in self.peers() if k.role == role]

    def add(self, card: SiteCard) -> bool:
        """Trust a card; False when it was trusted already.

        Raises:
            ConfigError: the card is this home's own key.
        """
        if any(k.own and k.fingerprint == card.fingerprint for k in self._keys):
            raise ConfigError("that card is this home's own key; there is nothing to trust")
        if any(k.fingerprint == card.fingerprint for k in self.peers()):
            return False
        self._keys.append(TrustedKey(card))
        self._save()
        return True

    def remove(self, fingerprint: str) -> TrustedKey:
        """Stop trusting a peer, named by fingerprint or unique prefix.

        Raises:
            ConfigError: no single trusted peer matches.
        """
        key = self.find(fingerprint)
        if key is None:
            raise ConfigError(
                f"no single trusted site matches {fingerprint!r}",
                hint="`airgap trust list` shows the fingerprints.",
            )
        self._keys.remove(key)
        self._save()
        return key

    def _save(self) -> None:
        if self._path is None:
            raise ConfigError("this trust store is not backed by a file")
        document = {"sites": [k.card.to_json() for k in self.peers()]}
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(self._path, text.encode("utf-8"))
