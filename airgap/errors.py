"""The one exception hierarchy of airgap; every core error carries a stable code and exit code.

Only `airgap.cli` turns these into output and exit codes. Families are split by who is at fault:
`VerificationError` (the bundle was refused, exit 3) versus everything else (exit 1).
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class AirgapError(Exception):
    """Base of every error the core raises; the CLI maps it to output and an exit code."""

    code: ClassVar[str] = "E_INTERNAL"
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InternalError(AirgapError):
    """A bug in airgap (an impossible state, a broken invariant); reported, never expected."""

    code = "E_INTERNAL"


class Interrupted(AirgapError):
    """The operator pressed Ctrl-C (or the process got SIGINT); what was durable stays so."""

    code = "E_INTERRUPTED"
    exit_code = 130


# --- exit 1: the operator's input, configuration or the network --------------------------------


class InputError(AirgapError):
    """A capture, report or other input file could not be read as what it claims to be."""

    code = "E_INPUT"


class PlanError(AirgapError):
    """A plan file is invalid; `problems` lists every bad row with its line number."""

    code = "E_PLAN"

    def __init__(
        self, message: str, *, problems: list[str] | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems or []


class ConfigError(AirgapError):
    """The home, config.toml, an environment override or a key file is missing or invalid."""

    code = "E_CONFIG"


class AuthError(AirgapError):
    """A credential was refused: a vendor login, or the passphrase of a private key."""

    code = "E_AUTH"


class VendorError(AirgapError):
    """A vendor API answered with an error that is not about credentials."""

    code = "E_VENDOR"


class NetworkError(AirgapError):
    """A vendor could not be reached, or did not answer in time."""

    code = "E_NETWORK"


class StateDbError(ConfigError):
    """A home's `state.db` cannot be opened or used (missing home, damaged, newer schema, disk)."""


class Busy(AirgapError):
    """Another process holds what this one needs: a request being processed, or the database."""

    code = "E_BUSY"


class AuditError(AirgapError):
    """The audit log is broken; the message names the first bad line."""

    code = "E_AUDIT"


class KitError(AirgapError):
    """The kit could not be built: no source checkout, or pip could not build or download."""

    code = "E_KIT"


class PortalFileError(AirgapError):
    """A file from (or for) the CSSM portal is not what it claims, or does not fit the request:
    an ACK for a device the request did not report, two different ACKs for one report, an
    authorization code for another device. Nothing is written when one is refused."""

    code = "E_PORTAL"


class InventoryError(AirgapError):
    """A device inventory is invalid; `problems` lists every bad row with its line number."""

    code = "E_INVENTORY"

    def __init__(
        self, message: str, *, problems: list[str] | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems or []


class DeviceUnreachable(AirgapError):
    """A device inside the gap could not be reached: refused, timed out, or dropped the line.

    `reason` says which ("refused", "timeout", "dropped", "tls"); `uncertain` is true when the
    device may have acted on a change before the line failed (an import whose answer was lost):
    the caller must read the device's state again before deciding, never resend blindly.
    """

    code = "E_UNREACHABLE"

    def __init__(
        self,
        message: str,
        *,
        reason: str = "unknown",
        uncertain: bool = False,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason
        self.uncertain = uncertain


class DeviceAuthError(AirgapError):
    """A device refused the credentials named in the inventory."""

    code = "E_DEVICE_AUTH"


class DeviceError(AirgapError):
    """A device answered a command or call with an error; its text is kept verbatim."""

    code = "E_DEVICE"


class DeviceMismatch(AirgapError):
    """A file is for another device (its UDI or MAC differs): refused, nothing was written."""

    code = "E_DEVICE_MISMATCH"


DUPLICATE_BUNDLE = "E_DUPLICATE"
"""Watch mode's reason for a bundle dropped again after it was handled (not an exception:
the bundle is filed under `refused/` with this code)."""


# --- exit 3: a bundle was refused --------------------------------------------------------------


class VerificationError(AirgapError):
    """A bundle was refused; nothing it carries may be used."""

    exit_code = 3


class NotABundle(VerificationError):
    code = "E_NOT_A_BUNDLE"


class UnsafeMember(VerificationError):
    code = "E_UNSAFE_MEMBER"


class UnlistedMember(VerificationError):
    code = "E_UNLISTED_MEMBER"


class MissingMember(VerificationError):
    code = "E_MISSING_MEMBER"


class MissingPart(VerificationError):
    """A bundle split into media-sized parts lacks one (gap in numbering, or ends early)."""

    code = "E_MISSING_PART"


class HashMismatch(VerificationError):
    code = "E_HASH_MISMATCH"

    @classmethod
    def for_member(cls, name: str, expected: str, actual: str) -> HashMismatch:
        return cls(
            f"{name}: sha256 {actual} does not match the manifest ({expected})",
            hint="The bundle changed in transit; ask the sender for a fresh copy.",
        )


class SizeLimit(VerificationError):
    code = "E_SIZE_LIMIT"


class NonCanonical(VerificationError):
    code = "E_NONCANONICAL"


class SchemaError(VerificationError):
    code = "E_SCHEMA"


class SignatureError(VerificationError):
    code = "E_SIGNATURE"


class UntrustedKey(VerificationError):
    code = "E_UNTRUSTED_KEY"


class ThresholdNotMet(VerificationError):
    code = "E_THRESHOLD"


class WrongRole(VerificationError):
    code = "E_WRONG_ROLE"


class Expired(VerificationError):
    code = "E_EXPIRED"


class NotYetValid(VerificationError):
    code = "E_NOT_YET_VALID"


class Replay(VerificationError):
    code = "E_REPLAY"


class UnknownRequest(VerificationError):
    code = "E_UNKNOWN_REQUEST"


class DecryptFailed(VerificationError):
    code = "E_DECRYPT"


class HostKeyMismatch(VerificationError):
    """A device's SSH host key differs from the one pinned in this home: possibly an impostor."""

    code = "E_HOSTKEY"


class HostKeyUnknown(VerificationError):
    """A device's SSH host key is not pinned yet and the caller did not accept new keys."""

    code = "E_HOSTKEY_UNKNOWN"


# --- codes of single items in a response (not exceptions: an item fails, the run goes on) ------


class ItemCode(StrEnum):
    """Codes airgap itself gives a response item's `error`, beside the `E_…` codes of the
    exceptions above and the vendors' own codes, which are kept verbatim."""

    NEEDS_ATTENTION = "NEEDS_ATTENTION"  # the vendor may have acted; an operator must decide
    PENDING = "PENDING"  # still in progress when the run ended; a later run finishes it
    EULA_NOT_ACCEPTED = "EULA_NOT_ACCEPTED"  # BIG-IQ wants F5's EULA and the item did not accept
    MANUAL_ACTIVATION_UNAVAILABLE = "MANUAL_ACTIVATION_UNAVAILABLE"  # no F5 license text source
    POOL_NOT_FOUND = "POOL_NOT_FOUND"  # the BIG-IQ RegKey pool named does not exist
    ACTIVATION_FAILED = "ACTIVATION_FAILED"  # BIG-IQ could not activate the key, twice
