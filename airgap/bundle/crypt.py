"""Whole-bundle age encryption (X25519 recipients), compatible with the stock `age` tool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

import pyrage

from airgap.errors import ConfigError, DecryptFailed

AGE_MAGIC = b"age-encryption.org/v1\n"
AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"


def is_age(head: bytes) -> bool:
    """Whether the first bytes of a file are an age header (binary or armored)."""
    return head.startswith(AGE_MAGIC) or head.startswith(AGE_ARMOR)


def encrypt_stream(source: BinaryIO, target: BinaryIO, recipients: Sequence[str]) -> None:
    """Encrypt `source` to every recipient (`age1…`), writing the age file to `target`.

    Raises:
        ConfigError: no recipients, or one is not a valid age X25519 recipient.
    """
    if not recipients:
        raise ConfigError(
            "nothing to encrypt to: no trusted site of the other role",
            hint="Add the other site's card with `airgap trust add CARD` first.",
        )
    try:
        parsed = [pyrage.x25519.Recipient.from_str(r) for r in recipients]
    except pyrage.RecipientError as exc:
        raise ConfigError(f"invalid age recipient in the trust store: {exc}") from None
    pyrage.encrypt_io(source, target, parsed)


def decrypt_stream(source: BinaryIO, target: BinaryIO, identity: object | None) -> None:
    """Decrypt an age file with this home's identity.

    Raises:
        DecryptFailed: no identity is available, or the file was not encrypted to it.
    """
    if identity is None:
        raise DecryptFailed(
            "the bundle is age-encrypted and no identity is available to open it",
            hint="Run the command in the home the bundle was encrypted to (--home).",
        )
    try:
        pyrage.decrypt_io(source, target, [identity])
    except pyrage.DecryptError as exc:
        raise DecryptFailed(
            f"cannot decrypt the bundle with this home's identity ({exc})",
            hint="It was encrypted to another site, or it is damaged.",
        ) from None
    except OSError as exc:  # pyrage reports a payload that fails authentication this way
        raise DecryptFailed(
            f"the encrypted bundle is damaged or truncated ({exc})",
            hint="Ask the sender for a fresh copy.",
        ) from None
