"""A site's own key material: the Ed25519 signing key and the age X25519 identity.

Private halves are written 0600: the signing key as PKCS8 PEM (encrypted with the passphrase
unless the operator chose none), the age identity as an age file (passphrase-encrypted the same
way, so the stock `age -d -i` can use it) or plain `AGE-SECRET-KEY-1…` text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyrage
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from airgap.config import HomePaths
from airgap.errors import AuthError, ConfigError
from airgap.fsutil import atomic_write_bytes, write_private

FINGERPRINT_PREFIX = "sha256:"
SIGNATURE_SIZE = 64


def fingerprint_of(public_key: Ed25519PublicKey) -> str:
    """`sha256:` + hex SHA-256 of the raw 32-byte Ed25519 public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return FINGERPRINT_PREFIX + hashlib.sha256(raw).hexdigest()


def fp16(fingerprint: str) -> str:
    """The first 16 hex digits of a fingerprint, as used in `signatures/<fp16>.sig`."""
    return fingerprint.removeprefix(FINGERPRINT_PREFIX)[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """The SubjectPublicKeyInfo PEM of a key (what `openssl pkeyutl -pubin` reads)."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_pem(pem: str, *, source: str) -> Ed25519PublicKey:
    """Load an Ed25519 public key from PEM text.

    Raises:
        ConfigError: the text is not an Ed25519 public key.
    """
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ConfigError(f"{source}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{source}: the key is not Ed25519")
    return key


def verify_signature(public_key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `data` by `public_key`."""
    if len(signature) != SIGNATURE_SIZE:
        return False
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Signer:
    """One site's ability to sign: its private key and who it is."""

    name: str
    role: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.public_key)

    def sign(self, data: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature of `data`."""
        return self.private_key.sign(data)


def generate_keys(paths: HomePaths, *, passphrase: str | None) -> str:
    """Create the signing key and age identity of a new home; return the fingerprint.

    Raises:
        ConfigError: key files already exist.
    """
    if paths.signing_key.exists() or paths.age_identity.exists():
        raise ConfigError(f"{paths.keys} already holds keys; refusing to overwrite them")
    paths.keys.mkdir(parents=True, exist_ok=True)
    paths.keys.chmod(0o700)
    private = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    write_private(paths.signing_key, pem)
    atomic_write_bytes(paths.signing_pub, public_key_pem(private.public_key()).encode("ascii"))
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    text = f"# public key: {recipient}\n{identity}\n".encode("ascii")
    if passphrase:
        text = pyrage.passphrase.encrypt(text, passphrase)
    write_private(paths.age_identity, text)
    atomic_write_bytes(paths.age_recipient, (recipient + "\n").encode("ascii"))
    return fingerprint_of(private.public_key())


def load_public_key(paths: HomePaths) -> Ed25519PublicKey:
    """This home's own public signing key.

    Raises:
        ConfigError: the key file is missing or damaged.
    """
    try:
        pem = paths.signing_pub.read_text(encoding="ascii")
    except OSError as exc:
        raise ConfigError(f"cannot read {paths.signing_pub}: {exc.strerror}") from exc
    return load_public_pem(pem, source=str(paths.signing_pub))


def is_encrypted(paths: HomePaths) -> bool:
    """Whether the private signing key needs a passphrase."""
    try:
        return b"ENCRYPTED" in paths.signing_key.read_bytes()[:64]
    except OSError as exc:
        raise ConfigError(f"cannot read {paths.signing_key}: {exc.strerror}") from exc


def load_signer(paths: HomePaths, *, name: str, role: str, passphrase: str | None) -> Signer:
    """Load this home's private signing key.

    Raises:
        ConfigError: the key file is missing or damaged, or a passphrase is needed and absent.
        AuthError: the passphrase is wrong.
    """
    try:
        pem = paths.signing_key.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {paths.signing_key}: {exc.strerror}") from exc
    encrypted = b"ENCRYPTED" in pem[:64]
    if encrypted and not passphrase:
        raise ConfigError(
            "the signing key is encrypted and no passphrase was given",
            hint="Set AIRGAP_PASSPHRASE or run the command on a terminal to be asked for it.",
        )
    try:
        key = serialization.load_pem_private_key(
            pem, password=passphrase.encode("utf-8") if encrypted and passphrase else None
        )
    except (ValueError, TypeError) as exc:
        if encrypted:
            raise AuthError(
                "the passphrase does not unlock this home's signing key",
                hint="Check AIRGAP_PASSPHRASE.",
            ) from None
        raise ConfigError(f"{paths.signing_key}: not a valid private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{paths.signing_key}: the key is not Ed25519")
    return Signer(name=name, role=role, private_key=key)


def load_age_identity(paths: HomePaths, *, passphrase: str | None) -> pyrage.x25519.Identity:
    """This home's age identity, for decrypting bundles sent to it.

    Raises:
        ConfigError: the file is missing or damaged, or a passphrase is needed and absent.
        AuthError: the passphrase is wrong.
    """
    try:
        data = paths.age_identity.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {paths.age_identity}: {exc.strerror}") from exc
    if data.startswith(b"age-encryption.org/"):
        if not passphrase:
            raise ConfigError(
                "the age identity is encrypted and no passphrase was given",
                hint="Set AIRGAP_PASSPHRASE or run the command on a terminal to be asked for it.",
            )
        try:
            data = pyrage.passphrase.decrypt(data, passphrase)
        except pyrage.DecryptError:
            raise AuthError(
                "the passphrase does not unlock this home's age identity",
                hint="Check AIRGAP_PASSPHRASE.",
            ) from None
    for line in data.decode("ascii", "replace").splitlines():
        if line.startswith("AGE-SECRET-KEY-1"):
            try:
                return pyrage.x25519.Identity.from_str(line.strip())
            except pyrage.IdentityError:
                break
    raise ConfigError(f"{paths.age_identity}: no valid age identity in the file")


def age_recipient(paths: HomePaths) -> str:
    """This home's age recipient (`age1…`), the public half of its identity.

    Raises:
        ConfigError: the recipient file is missing.
    """
    try:
        return paths.age_recipient.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {paths.age_recipient}: {exc.strerror}") from exc
