"""Open and verify a bundle in one streaming pass, refusing anything DESIGN §4 forbids.

Order of work: read `manifest.json` and the signatures, check the signatures over the raw
manifest bytes, and only then parse the manifest; every later member is hashed as it streams
past and compared with the signed listing. `items.json` is parsed only after every member has
been verified. Member data is never written under its own name: kept files land in a private
temporary folder under generated names.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

from airgap.bundle import tarstream
from airgap.bundle.crypt import decrypt_stream, is_age
from airgap.bundle.manifest import (
    ITEMS_NAME,
    MANIFEST_MAX,
    MANIFEST_NAME,
    SUMS_NAME,
    Manifest,
    MemberEntry,
    signing_role,
    summarize,
)
from airgap.bundle.names import SIGNATURE_NAME, check_member_name
from airgap.bundle.parts import (
    bundle_parts,
    ended_early_is_missing_part,
    open_parts,
    stream_size,
)
from airgap.errors import (
    Expired,
    HashMismatch,
    MissingMember,
    NotABundle,
    NotYetValid,
    SchemaError,
    SignatureError,
    SizeLimit,
    ThresholdNotMet,
    UnlistedMember,
    UnsafeMember,
    UntrustedKey,
    VerificationError,
    WrongRole,
)
from airgap.keys import SIGNATURE_SIZE, verify_signature
from airgap.schema import validate
from airgap.trust import TrustStore
from airgap.units import format_size, utc_now

GZIP_MAGIC = b"\x1f\x8b"
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Limits:
    """Size limits applied while reading. Units are bytes."""

    max_bytes: int = 4 * 1024**3  # whole decompressed, decrypted tar stream
    manifest_max: int = MANIFEST_MAX
    items_max: int = 512 * 1024**2  # items.json is parsed in memory


@dataclass(frozen=True)
class TrustPolicy:
    """What a reader demands of signatures and validity times."""

    trust: TrustStore
    required_signatures: int = 1
    enforce: bool = True  # False (inspect): report trust and time problems instead of refusing
    require_threshold: bool = True  # False (approve): the producer's signature is enough
    expected_kind: str | None = None
    now: datetime | None = None


@dataclass(frozen=True)
class SignatureCheck:
    """One signature and what became of it: valid, untrusted (unknown key) or invalid."""

    fp16: str
    status: str
    fingerprint: str | None = None
    name: str | None = None
    role: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint or f"sha256:{self.fp16}…",
            "status": self.status,
            "name": self.name,
            "role": self.role,
        }


@dataclass
class OpenedBundle:
    """A bundle that passed verification: its manifest, items and (optionally) member files."""

    manifest: Manifest
    manifest_bytes: bytes
    signatures: list[SignatureCheck]
    raw_signatures: dict[str, bytes]
    items: list[dict[str, Any]]
    encrypted: bool
    compressed: bool
    total_bytes: int
    checks: list[str] = field(default_factory=list)
    problems: list[VerificationError] = field(default_factory=list)
    _files: dict[str, Path] = field(default_factory=dict)
    _blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    def file_path(self, member: str) -> Path:
        """Where the verified bytes of `member` were kept (only with keep_files=True).

        Raises:
            KeyError: the member was not kept.
        """
        return self._files[member]

    def member_source(self, member: str) -> Path | bytes:
        """The verified content of a payload member: bytes for small metadata, else a path.

        Raises:
            KeyError: the member was not kept.
        """
        if member in self._blobs:
            return self._blobs[member]
        return self._files[member]


class _Sink:
    """Hashes a member's data and, optionally, keeps a copy or the bytes."""

    def __init__(self, keep_bytes: bool, handle: BinaryIO | None) -> None:
        self.digest = hashlib.sha256()
        self.parts: list[bytes] | None = [] if keep_bytes else None
        self.handle = handle

    def __call__(self, chunk: memoryview) -> None:
        self.digest.update(chunk)
        if self.parts is not None:
            self.parts.append(bytes(chunk))
        if self.handle is not None:
            self.handle.write(chunk)


@contextlib.contextmanager
def open_bundle(
    path: Path,
    policy: TrustPolicy,
    *,
    identity: object | None = None,
    limits: Limits | None = None,
    keep_files: bool = False,
    temp_root: Path | None = None,
) -> Iterator[OpenedBundle]:
    """Verify the bundle at `path` and yield it; temporary files vanish when the block ends.

    Args:
        path: the bundle file, or the first of its parts (`NAME.001`, see `parts`).
        policy: trust store, signature threshold, expected kind and clock.
        identity: this home's age identity, needed only for an encrypted bundle.
        limits: size limits; defaults to `Limits()`.
        keep_files: keep payload members in a private temp folder for `file_path`.
        temp_root: where that temp folder is created (default: the system's).

    Raises:
        VerificationError: every refusal of DESIGN §4, each with its stable code.
        MissingPart: a part of a split bundle is missing, or the parts end early.
    """
    limits = limits or Limits()
    with tempfile.TemporaryDirectory(prefix="airgap-", dir=temp_root) as tmp:
        with contextlib.ExitStack() as stack:
            parts = bundle_parts(path)  # media-sized parts are read as one stream
            try:
                raw: BinaryIO = stack.enter_context(open_parts(parts))
            except OSError as exc:
                raise NotABundle(f"cannot open {path}: {exc.strerror}") from None
            stack.enter_context(ended_early_is_missing_part(raw, path))
            head = raw.read(64)
            raw.seek(0)
            encrypted = is_age(head)
            if encrypted:
                raw = stack.enter_context(_decrypt(raw, path, Path(tmp), identity, limits))
                head = raw.read(64)
                raw.seek(0)
            if not head:
                raise NotABundle(f"{path.name} is empty")
            compressed = head.startswith(GZIP_MAGIC)
            stream: BinaryIO = raw
            if compressed:
                zipped = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
                stream = cast(BinaryIO, zipped)
            reader = _BundleReader(stream, policy, limits, Path(tmp) if keep_files else None)
            try:
                opened = reader.read()
            except (OSError, EOFError, zlib.error) as exc:
                raise NotABundle(f"{path.name} is not a readable bundle ({exc})") from None
            opened.encrypted, opened.compressed = encrypted, compressed
        yield opened


@contextlib.contextmanager
def _decrypt(
    raw: BinaryIO, path: Path, tmp: Path, identity: object | None, limits: Limits
) -> Iterator[BinaryIO]:
    size = stream_size(raw)
    # age adds 16 bytes per 64 KiB chunk plus a small header; anything beyond that is too big.
    if size > limits.max_bytes + limits.max_bytes // 4096 + 65536:
        raise SizeLimit(f"{path.name} is larger than the limit of {limits.max_bytes} bytes")
    plain_path = tmp / "decrypted.tar"
    with plain_path.open("wb") as plain:
        decrypt_stream(raw, plain, identity)
    with plain_path.open("rb") as plain_in:
        yield plain_in


class _BundleReader:
    def __init__(
        self, stream: BinaryIO, policy: TrustPolicy, limits: Limits, keep_dir: Path | None
    ) -> None:
        self.source = tarstream.CountingReader(stream, limits.max_bytes)
        self.tar = tarstream.TarReader(self.source)
        self.policy = policy
        self.limits = limits
        self.keep_dir = keep_dir
        self.problems: list[VerificationError] = []
        self.checks: list[str] = []

    def fail(self, error: VerificationError) -> None:
        """Refuse, or in report-only mode remember the problem and go on."""
        if self.policy.enforce:
            raise error
        self.problems.append(error)

    def read(self) -> OpenedBundle:
        members = iter(self.tar)
        first = next(members, None)
        if first is None or first.kind != "file" or first.name != MANIFEST_NAME:
            raise NotABundle("this is not an airgap bundle: manifest.json is not its first member")
        if first.size > self.limits.manifest_max:
            raise SizeLimit(f"manifest.json is {first.size} bytes, above the 16 MiB limit")
        manifest_bytes = self.tar.read_all(first.size)
        seen = {MANIFEST_NAME.casefold()}
        raw_signatures: dict[str, bytes] = {}
        authenticated: tuple[Manifest, list[SignatureCheck]] | None = None
        listed: dict[str, MemberEntry] = {}
        found: dict[str, str] = {}
        kept: dict[str, Path] = {}
        small: dict[str, bytes] = {}
        for entry in members:
            check_member_name(entry.name)
            folded = entry.name.casefold()
            if folded in seen:
                raise UnsafeMember(f"member {entry.name!r} appears twice (names are case-folded)")
            seen.add(folded)
            if entry.kind == "dir":
                continue
            signature = SIGNATURE_NAME.match(entry.name)
            if signature and authenticated is None:
                if entry.size != SIGNATURE_SIZE:
                    raise SignatureError(f"{entry.name} is {entry.size} bytes, not a signature")
                raw_signatures[signature.group(1)] = self.tar.read_all(entry.size)
                continue
            if authenticated is None:
                authenticated = self.authenticate(manifest_bytes, raw_signatures)
                listed = {m.path: m for m in authenticated[0].members}
            wanted = listed.get(entry.name)
            if wanted is None:
                raise UnlistedMember(f"member {entry.name!r} is not listed in the manifest")
            if entry.size != wanted.size:
                raise HashMismatch(
                    f"{entry.name}: {entry.size} bytes where the manifest lists {wanted.size}",
                    hint="The bundle changed in transit; ask the sender for a fresh copy.",
                )
            found[entry.name] = self.stream_member(entry.name, wanted, kept, small)
        if authenticated is None:
            authenticated = self.authenticate(manifest_bytes, raw_signatures)
            listed = {m.path: m for m in authenticated[0].members}
        manifest, signatures = authenticated
        missing = [path for path in listed if path not in found]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise MissingMember(f"listed member(s) missing: {', '.join(missing[:3])}{more}")
        self.checks.append(
            f"members: {len(found)} listed files present, sizes and SHA-256 match "
            f"({format_size(sum(m.size for m in listed.values()))})"
        )
        self.check_sums(small.get(SUMS_NAME), manifest)
        items = self.parse_items(small.get(ITEMS_NAME), manifest, set(listed))
        return OpenedBundle(
            manifest=manifest,
            manifest_bytes=manifest_bytes,
            signatures=signatures,
            raw_signatures=raw_signatures,
            items=items,
            encrypted=False,
            compressed=False,
            total_bytes=self.source.count,
            checks=self.checks,
            problems=self.problems,
            _files=kept,
            _blobs=small,
        )

    def stream_member(
        self, name: str, wanted: MemberEntry, kept: dict[str, Path], small: dict[str, bytes]
    ) -> str:
        keep_bytes = name in (SUMS_NAME, ITEMS_NAME)
        if name == ITEMS_NAME and wanted.size > self.limits.items_max:
            raise SizeLimit(f"items.json is {wanted.size} bytes, above the limit")
        if name == SUMS_NAME and wanted.size > self.limits.manifest_max:
            raise SizeLimit(f"SHA256SUMS is {wanted.size} bytes, above the limit")
        handle: BinaryIO | None = None
        if self.keep_dir is not None and not keep_bytes:
            target = self.keep_dir / f"member-{len(kept):06d}"
            handle = target.open("xb")
            kept[name] = target
        try:
            sink = _Sink(keep_bytes, handle)
            self.tar.stream(sink)
        finally:
            if handle is not None:
                handle.close()
        digest = sink.digest.hexdigest()
        if digest != wanted.sha256:
            raise HashMismatch.for_member(name, wanted.sha256, digest)
        if sink.parts is not None:
            small[name] = b"".join(sink.parts)
        return digest

    def authenticate(
        self, manifest_bytes: bytes, raw_signatures: dict[str, bytes]
    ) -> tuple[Manifest, list[SignatureCheck]]:
        """Check signatures over the raw bytes, then parse and apply trust, role and time rules."""
        policy = self.policy
        checks: list[SignatureCheck] = []
        valid = []
        for prefix, signature in sorted(raw_signatures.items()):
            key = policy.trust.by_fp16(prefix)
            if key is None:
                checks.append(SignatureCheck(prefix, "untrusted"))
                continue
            ok = verify_signature(key.public_key, signature, manifest_bytes)
            checks.append(
                SignatureCheck(
                    prefix, "valid" if ok else "invalid", key.fingerprint, key.name, key.role
                )
            )
            if ok:
                valid.append(key)
        invalid = [c for c in checks if c.status == "invalid"]
        if invalid:
            self.fail(
                SignatureError(
                    f"the signature by {invalid[0].name} ({invalid[0].fingerprint}) does not "
                    "match manifest.json",
                    hint="The manifest or the signature was altered; refuse this bundle.",
                )
            )
        if not raw_signatures:
            self.fail(SignatureError("the bundle carries no signature"))
        elif not valid and not invalid:
            self.fail(
                UntrustedKey(
                    "no signature is by a key this home trusts "
                    f"(signers: {', '.join(c.fp16 for c in checks)})",
                    hint="Compare the sender's fingerprint out of band, then `airgap trust add`.",
                )
            )
        manifest = Manifest.from_bytes(manifest_bytes)
        self.checks.append("manifest: airgap-bundle/1, RFC 8785 canonical, schema-valid")
        self.check_signers(manifest, checks, valid_fingerprints={k.fingerprint for k in valid})
        self.check_times(manifest)
        return manifest, checks

    def check_signers(
        self, manifest: Manifest, checks: list[SignatureCheck], valid_fingerprints: set[str]
    ) -> None:
        policy = self.policy
        role = signing_role(manifest.kind, manifest.producer["role"])
        if policy.expected_kind and manifest.kind != policy.expected_kind:
            self.fail(
                WrongRole(
                    f"this is a {manifest.kind} bundle where a {policy.expected_kind} is expected"
                )
            )
        producer = manifest.producer
        if producer["role"] != role:
            self.fail(WrongRole(f"a {manifest.kind} produced by an {producer['role']} site"))
        if producer["fingerprint"] not in valid_fingerprints and valid_fingerprints:
            self.fail(
                SignatureError(
                    f"the producer {producer['name']} ({producer['fingerprint']}) has no valid "
                    "signature on this bundle"
                )
            )
        good = [c for c in checks if c.status == "valid"]
        wrong = [c for c in good if c.role != role]
        if wrong:
            self.fail(
                WrongRole(
                    f"{wrong[0].name} is trusted as an {wrong[0].role} site, but a "
                    f"{manifest.kind} must be signed by {role} sites"
                )
            )
        need = policy.required_signatures if policy.require_threshold else 1
        count = len({c.fingerprint for c in good if c.role == role})
        if good and count < need:
            self.fail(
                ThresholdNotMet(
                    f"{count} valid {role} signature(s) where {need} are required",
                    hint="Have another trusted person run `airgap approve` on the bundle.",
                )
            )
        names = ", ".join(f"{c.name} ({c.role})" for c in good) or "none"
        self.checks.append(f"signatures: {count} valid of {need} required: {names}")

    def check_times(self, manifest: Manifest) -> None:
        now = self.policy.now or utc_now()
        if manifest.created > now + CLOCK_SKEW:
            self.fail(
                NotYetValid(f"created {manifest.created:%Y-%m-%d %H:%M:%SZ} is in the future")
            )
        if now >= manifest.expires:
            self.fail(
                Expired(
                    f"the bundle expired at {manifest.expires:%Y-%m-%d %H:%M:%SZ}",
                    hint="Ask the sender for a fresh bundle.",
                )
            )
        self.checks.append(
            f"validity: created {manifest.created:%Y-%m-%dT%H:%M:%SZ}, "
            f"expires {manifest.expires:%Y-%m-%dT%H:%M:%SZ}"
        )

    def check_sums(self, sums: bytes | None, manifest: Manifest) -> None:
        expected = {m.path: m.sha256 for m in manifest.members if m.path != SUMS_NAME}
        if sums is None:
            raise MissingMember("SHA256SUMS is missing")
        listed: dict[str, str] = {}
        for line in sums.decode("utf-8", "replace").splitlines():
            digest, sep, name = line.partition("  ")
            if not sep or name in listed:
                raise HashMismatch("SHA256SUMS is malformed")
            listed[name] = digest
        if listed != expected:
            raise HashMismatch("SHA256SUMS does not agree with the manifest")
        self.checks.append("SHA256SUMS: agrees with the manifest")

    def parse_items(
        self, data: bytes | None, manifest: Manifest, members: set[str]
    ) -> list[dict[str, Any]]:
        if data is None:
            raise MissingMember("items.json is missing")
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # Recursion: nested too deep
            raise SchemaError("items.json is not UTF-8 JSON") from None
        validate(f"{manifest.kind}-items", document, what=ITEMS_NAME)
        items: list[dict[str, Any]] = document["items"]
        if summarize(items) != dict(manifest.summary):
            raise SchemaError("items.json does not match the manifest's summary")
        ids = [item["id"] for item in items]
        if len(set(ids)) != len(ids):
            raise SchemaError("items.json: two items share an id")
        for item in items:
            absent = [f for f in item["files"] if f not in members]
            if absent:
                raise MissingMember(f"item {item['id']} refers to {absent[0]}, not in the bundle")
        self.checks.append(f"items: {len(items)} schema-valid {manifest.kind} items")
        return items


def verify_bundle(
    path: Path, policy: TrustPolicy, *, identity: object | None = None, limits: Limits | None = None
) -> OpenedBundle:
    """Verify a bundle without keeping its files.

    Raises:
        VerificationError: every refusal of DESIGN §4, each with its stable code.
    """
    with open_bundle(path, policy, identity=identity, limits=limits) as opened:
        return opened


SinkFn = Callable[[memoryview], None]
