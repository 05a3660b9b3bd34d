"""Open and verify a bundle in one streaming pass, refusing anything the format forbids.

Order of work: read `manifest.json` and the signatures, check the signatures over the raw
manifest bytes, and only then parse the manifest; every later member is hashed as it streams
past and compared with the signed listing. `items.json` is parsed only after every member has
been verified. Member data is never written under its own name: kept files land in a private
temporary folder under generated names.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import hashlib
import json
import operator
import os
import re
import tempfile
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

from airgap import schema
from airgap.bundle import itemstream, tarstream
from airgap.bundle.crypt import decrypt_stream, is_age
from airgap.bundle.manifest import (
    ITEMS_NAME,
    MANIFEST_MAX,
    MANIFEST_NAME,
    SUMS_NAME,
    Manifest,
    MemberEntry,
    MemberList,
    signing_role,
    summarize,
    sums_text,
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
    """A bundle that passed verification: its manifest, items and (optionally) member files.

    `items` is the whole list, parsed on first use (and kept); `iter_items()` yields the same
    items one at a time without keeping them, and `item_count` is their number: use those for
    bundles of many items. Both work after the `open_bundle` block has ended.
    """

    manifest: Manifest
    manifest_bytes: bytes
    signatures: list[SignatureCheck]
    raw_signatures: dict[str, bytes]
    item_count: int
    encrypted: bool
    compressed: bool
    total_bytes: int
    checks: list[str] = field(default_factory=list)
    problems: list[VerificationError] = field(default_factory=list)
    _files: dict[str, Path] = field(default_factory=dict)
    _blobs: dict[str, bytes] = field(default_factory=dict)
    _items: list[dict[str, Any]] | None = None
    _items_file: BinaryIO | None = None  # the verified items.json (an unlinked temp file)
    _items_size: int = 0
    _spool: BinaryIO | None = None  # spool_files: every payload member, one after the other
    _spooled: dict[str, tuple[int, int]] = field(default_factory=dict)  # offset, size

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    @property
    def items(self) -> list[dict[str, Any]]:
        """Every item of `items.json`, in order (parsed on first use, then kept)."""
        if self._items is None:
            self._items = list(self.iter_items())
        return self._items

    def iter_items(self) -> Iterator[dict[str, Any]]:
        """The items of `items.json` in order, read a batch at a time (memory stays flat)."""
        if self._items is not None:
            yield from self._items
            return
        assert self._items_file is not None
        try:
            for batch in itemstream.batches(
                self._items_file, self._items_size, max_piece=self._items_size
            ):
                yield from batch
        except itemstream.Unusual:  # cannot happen once verified; read it whole if it does
            yield from self.items_read_whole()

    def items_read_whole(self) -> list[dict[str, Any]]:
        assert self._items_file is not None
        self._items_file.seek(0)
        items: list[dict[str, Any]] = json.loads(self._items_file.read().decode("utf-8"))["items"]
        return items

    def file_path(self, member: str) -> Path:
        """Where the verified bytes of `member` were kept (only with keep_files=True).

        Raises:
            KeyError: the member was not kept.
        """
        return self._files[member]

    def member_bytes(self, member: str) -> bytes:
        """The verified bytes of `member` (kept with keep_files=True or spool_files=True).

        Raises:
            KeyError: the member was not kept.
        """
        if member in self._spooled:
            assert self._spool is not None
            offset, size = self._spooled[member]
            self._spool.flush()  # no-op after the first call
            return os.pread(self._spool.fileno(), size, offset)
        return self._files[member].read_bytes()

    def member_source(self, member: str) -> Path | bytes:
        """The verified content of a payload member: bytes for small metadata, else a path.

        Raises:
            KeyError: the member was not kept.
        """
        if member in self._blobs:
            return self._blobs[member]
        if member == ITEMS_NAME and self._items_file is not None:
            self._items_file.seek(0)
            return self._items_file.read()
        if member == SUMS_NAME and member not in self._files:
            # Verified byte-equal to the listing it was derived from, so it is rebuilt.
            return sums_text([m for m in self.manifest.members if m.path != SUMS_NAME])
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
    spool_files: bool = False,
    temp_root: Path | None = None,
) -> Iterator[OpenedBundle]:
    """Verify the bundle at `path` and yield it; temporary files vanish when the block ends.

    Args:
        path: the bundle file, or the first of its parts (`NAME.001`, see `parts`).
        policy: trust store, signature threshold, expected kind and clock.
        identity: this home's age identity, needed only for an encrypted bundle.
        limits: size limits; defaults to `Limits()`.
        keep_files: keep payload members in a private temp folder for `file_path`.
        spool_files: keep payload members one after the other in one unlinked temp file, for
            `member_bytes` (one file written instead of one per member: for many small ones).
        temp_root: where that temp folder is created (default: the system's).

    Raises:
        VerificationError: every refusal of docs/format.md "Reading rules", each with its code.
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
            reader = _BundleReader(
                stream, policy, limits, Path(tmp) if keep_files else None, Path(tmp)
            )
            if spool_files:
                reader.spool = cast(BinaryIO, tempfile.TemporaryFile(dir=tmp))  # noqa: SIM115 (the OpenedBundle keeps it)
            # A read makes no cycles; collections would only walk its items batches again.
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                opened = reader.read()
            except (OSError, EOFError, zlib.error) as exc:
                _close(reader.items_file)
                _close(reader.spool)
                raise NotABundle(f"{path.name} is not a readable bundle ({exc})") from None
            except BaseException:
                _close(reader.items_file)
                _close(reader.spool)
                raise
            finally:
                if gc_was_enabled:
                    gc.enable()
            opened.encrypted, opened.compressed = encrypted, compressed
        yield opened


def _close(handle: BinaryIO | None) -> None:
    if handle is not None:
        handle.close()


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


class _Listing:
    """Which listed members have arrived, checked the cheap way while they come in order.

    Fast mode (the manifest's member list is a `MemberList`, so its paths are known to be
    distinct even case-folded): the tar members must be exactly the listed ones, in the listed
    order, which is how airgap writes them; a cursor walks the signed bytes and nothing is
    stored per member. The first member that is not the next listed one (another order, a
    duplicate, a directory, anything unlisted) switches to generic mode: a dict of the listing
    and a set of the names seen, exactly the checks made before this existed, in the memory
    they take (bounded by the manifest size limit).
    """

    def __init__(self, manifest: Manifest, seen: set[str]) -> None:
        self.manifest = manifest
        self.seen = seen  # case-folded names of members that are not found listed ones
        members = manifest.members
        self.fast: MemberList | None = members if isinstance(members, MemberList) else None
        self.index = 0  # fast: listed members found so far, in order
        self.offset = self.fast.start if self.fast is not None else 0  # fast: next entry
        self.total = 0  # fast: bytes of the members found
        self.listed: dict[str, MemberEntry] = {}
        self.found: dict[str, str] = {}
        if self.fast is None:
            self.listed = {m.path: m for m in members}

    def next_listed(self, name: str) -> tuple[int, str] | None:
        """Fast mode: the listed size and SHA-256 of `name` if it is the next listed member."""
        if self.fast is None or self.index >= len(self.fast):
            return None
        data = self.fast.data
        prefix = b'{"path":"%s","sha256":"' % name.encode("ascii")
        if not data.startswith(prefix, self.offset):
            return None
        digest_at = self.offset + len(prefix)
        close = data.index(b"}", digest_at)
        return int(data[digest_at + 73 : close]), data[digest_at : digest_at + 64].decode("ascii")

    def advance(self, size: int) -> None:
        assert self.fast is not None
        self.index += 1
        self.total += size
        self.offset = self.fast.data.index(b"}", self.offset) + 2

    def to_generic(self) -> None:
        """Leave fast mode: the listing as a dict, the found members by name."""
        if self.fast is None:
            return
        self.listed = {}
        for n, entry in enumerate(self.fast):
            self.listed[entry.path] = entry
            if n < self.index:
                self.found[entry.path] = entry.sha256
                self.seen.add(entry.path.casefold())
        self.fast = None

    @property
    def paths(self) -> Iterator[str]:
        return (m.path for m in self.manifest.members)

    def missing(self) -> list[str]:
        if self.fast is not None:
            return [m.path for m in self.fast[self.index :]]
        return [path for path in self.listed if path not in self.found]

    def found_count_and_bytes(self) -> tuple[int, int]:
        if self.fast is not None:
            return self.index, self.total
        return len(self.found), sum(m.size for m in self.listed.values())


class _BundleReader:
    def __init__(
        self,
        stream: BinaryIO,
        policy: TrustPolicy,
        limits: Limits,
        keep_dir: Path | None,
        tmp: Path,
    ) -> None:
        self.source = tarstream.CountingReader(stream, limits.max_bytes)
        self.tar = tarstream.TarReader(self.source)
        self.policy = policy
        self.limits = limits
        self.keep_dir = keep_dir
        self.tmp = tmp
        self.problems: list[VerificationError] = []
        self.checks: list[str] = []
        self.items_file: BinaryIO | None = None
        self.items_size = 0
        self.manifest: Manifest | None = None
        self.sums_verified = False  # SHA256SUMS hashed equal to the text its listing implies
        self.spool: BinaryIO | None = None  # spool_files: where payload members are appended
        self.spooled: dict[str, tuple[int, int]] = {}
        self.spool_size = 0  # bytes written to the spool (its tell() costs a flush)

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
        listing: _Listing | None = None
        kept: dict[str, Path] = {}
        small: dict[str, bytes] = {}
        for entry in members:
            check_member_name(entry.name)
            if listing is not None and listing.fast is not None:
                wanted = listing.next_listed(entry.name) if entry.kind == "file" else None
                # A listed name: its case-folded form can only clash with an unlisted member
                # seen before (a directory, a signature), as listed paths are distinct folded.
                if wanted is not None and entry.name.lower() not in seen:
                    size, sha256 = wanted
                    self.check_size(entry.name, entry.size, size)
                    self.stream_member(
                        entry.name, MemberEntry(entry.name, sha256, size), kept, small
                    )
                    listing.advance(size)
                    continue
                listing.to_generic()
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
                self.manifest = authenticated[0]
                seen.discard(folded)  # the fast check below adds nothing to `seen`
                listing = _Listing(authenticated[0], seen)
                if listing.fast is not None:
                    wanted = listing.next_listed(entry.name)
                    if wanted is not None and entry.kind == "file":
                        size, sha256 = wanted
                        self.check_size(entry.name, entry.size, size)
                        self.stream_member(
                            entry.name, MemberEntry(entry.name, sha256, size), kept, small
                        )
                        listing.advance(size)
                        continue
                    listing.to_generic()
                seen.add(folded)
            assert listing is not None
            listed = listing.listed.get(entry.name)
            if listed is None:
                raise UnlistedMember(f"member {entry.name!r} is not listed in the manifest")
            self.check_size(entry.name, entry.size, listed.size)
            listing.found[entry.name] = self.stream_member(entry.name, listed, kept, small)
        if authenticated is None:
            authenticated = self.authenticate(manifest_bytes, raw_signatures)
            listing = _Listing(authenticated[0], seen)
        assert listing is not None
        manifest, signatures = authenticated
        missing = listing.missing()
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise MissingMember(f"listed member(s) missing: {', '.join(missing[:3])}{more}")
        count, total = listing.found_count_and_bytes()
        self.checks.append(
            f"members: {count} listed files present, sizes and SHA-256 match ({format_size(total)})"
        )
        if not self.sums_verified:
            self.check_sums(small.get(SUMS_NAME), manifest)
        else:
            self.checks.append("SHA256SUMS: agrees with the manifest")
        item_count, items = self.parse_items(manifest, listing)
        return OpenedBundle(
            manifest=manifest,
            manifest_bytes=manifest_bytes,
            signatures=signatures,
            raw_signatures=raw_signatures,
            item_count=item_count,
            encrypted=False,
            compressed=False,
            total_bytes=self.source.count,
            checks=self.checks,
            problems=self.problems,
            _files=kept,
            _blobs=small,
            _items=items,
            _items_file=self.items_file,
            _items_size=self.items_size,
            _spool=self.spool,
            _spooled=self.spooled,
        )

    @staticmethod
    def check_size(name: str, size: int, listed: int) -> None:
        if size != listed:
            raise HashMismatch(
                f"{name}: {size} bytes where the manifest lists {listed}",
                hint="The bundle changed in transit; ask the sender for a fresh copy.",
            )

    def stream_member(
        self, name: str, wanted: MemberEntry, kept: dict[str, Path], small: dict[str, bytes]
    ) -> str:
        if name == ITEMS_NAME:
            if wanted.size > self.limits.items_max:
                raise SizeLimit(f"items.json is {wanted.size} bytes, above the limit")
            # Spooled to an unlinked file in the private temp folder: parsed only after every
            # member is verified, a batch at a time, and readable after the block ends.
            self.items_file = cast(BinaryIO, tempfile.TemporaryFile(dir=self.tmp))  # noqa: SIM115 (the OpenedBundle keeps it)
            self.items_size = wanted.size
            digest = self.tar.digest(self.items_file)
        elif name == SUMS_NAME:
            if wanted.size > self.limits.manifest_max:
                raise SizeLimit(f"SHA256SUMS is {wanted.size} bytes, above the limit")
            if wanted.sha256 == self.expected_sums_sha256():
                # Hashed equal to the text its listing implies: nothing to keep.
                digest = self.tar.digest()
                self.sums_verified = digest == wanted.sha256
            else:
                sink = _Sink(True, None)
                self.tar.stream(sink)
                digest = sink.digest.hexdigest()
                if digest == wanted.sha256:
                    assert sink.parts is not None
                    small[name] = b"".join(sink.parts)
        elif self.spool is not None:
            digest = self.tar.digest(self.spool)
            self.spooled[name] = (self.spool_size, wanted.size)
            self.spool_size += wanted.size
        elif self.keep_dir is not None:
            target = self.keep_dir / f"member-{len(kept):06d}"
            with target.open("xb") as handle:
                kept[name] = target
                digest = self.tar.digest(handle)
        else:
            digest = self.tar.digest()
        if digest != wanted.sha256:
            raise HashMismatch.for_member(name, wanted.sha256, digest)
        return digest

    def expected_sums_sha256(self) -> str | None:
        """SHA-256 of the SHA256SUMS airgap writes for this listing (fast mode only)."""
        manifest = self.manifest
        if manifest is None or not isinstance(manifest.members, MemberList):
            return None
        return sums_sha256(manifest.members)

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
        self, manifest: Manifest, listing: _Listing
    ) -> tuple[int, list[dict[str, Any]] | None]:
        """Check items.json; its item count, and the items when they had to be read whole."""
        if self.items_file is None:
            raise MissingMember("items.json is missing")
        try:
            count = self.stream_items(manifest, listing)
        except itemstream.Unusual:
            self.items_file.seek(0)
            items = self.parse_items_whole(self.items_file.read(), manifest, set(listing.paths))
            return len(items), items
        self.checks.append(f"items: {count} schema-valid {manifest.kind} items")
        return count, None

    def stream_items(self, manifest: Manifest, listing: _Listing) -> int:
        """Check items.json a batch at a time: the schema, the summary, unique ids, and that
        every file an item names is a listed member.

        Raises:
            itemstream.Unusual: anything that needs the whole document to decide or word.
            SchemaError, MissingMember: as `parse_items_whole` would, in the same order.
        """
        assert self.items_file is not None
        name = f"{manifest.kind}-items"
        counts: Counter[str] = Counter()
        count = 0
        id_hashes = array("q")
        ordered = True  # ids strictly increasing (by length, then text): then they are unique
        last: tuple[int, str] = (-1, "")
        absent: tuple[str, str] | None = None
        paths = _PathCursor(manifest)
        for batch in itemstream.batches(
            self.items_file, self.items_size, max_piece=self.limits.items_max
        ):
            if not batch:
                continue
            if schema.elements_valid(name, batch) is not True:
                raise itemstream.Unusual("an item the schema refuses")
            count += len(batch)
            counts.update(map(str, map(_ACTION, batch)))
            ids = list(map(_ID, batch))
            if not all(isinstance(i, str) for i in ids):
                raise itemstream.Unusual("an id that is not text")
            id_hashes.extend(map(hash, ids))
            if ordered:
                keys = list(zip(map(len, ids), ids, strict=True))
                ordered = last < keys[0] and all(map(operator.lt, keys, keys[1:]))
                last = keys[-1]
            if absent is None:
                for item in batch:
                    for path in item["files"]:
                        if not paths.listed(path):
                            absent = (item["id"], path)
                            break
                    if absent is not None:
                        break
        if {"items": count, "by_action": dict(sorted(counts.items()))} != dict(manifest.summary):
            raise SchemaError("items.json does not match the manifest's summary")
        if not ordered and len(set(id_hashes)) != count:
            raise itemstream.Unusual("ids to compare in full")
        if absent is not None:
            raise MissingMember(f"item {absent[0]} refers to {absent[1]}, not in the bundle")
        return count

    def parse_items_whole(
        self, data: bytes, manifest: Manifest, members: set[str]
    ) -> list[dict[str, Any]]:
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


_ACTION = operator.itemgetter("action")
_ID = operator.itemgetter("id")


class _PathCursor:
    """Is a path listed? Asked in the listed order (as items name their files) it is one
    comparison; otherwise a set of the listed paths is built once."""

    def __init__(self, manifest: Manifest) -> None:
        self.members = manifest.members
        self.fast = manifest.members if isinstance(manifest.members, MemberList) else None
        self.offset = 0
        if self.fast is not None:
            first = self.fast.data.find(b'{"path":"files/', self.fast.start, self.fast.end)
            self.offset = self.fast.end if first < 0 else first
        self.all: set[str] | None = None

    def listed(self, path: str) -> bool:
        fast = self.fast
        if fast is not None and self.offset < fast.end and path.isascii():
            # Items name their files in the order pack lists them, after SHA256SUMS and
            # items.json: then each answer is one comparison at the cursor.
            data = fast.data
            if data.startswith(b'{"path":"%s","' % path.encode("ascii"), self.offset):
                self.offset = data.index(b"}", self.offset) + 2
                return True
        if self.all is None:
            self.all = {m.path for m in self.members}
        return path in self.all


def sums_sha256(members: MemberList) -> str:
    """SHA-256 of the SHA256SUMS that `sums_text` writes for `members` less SHA256SUMS itself."""
    digest = hashlib.sha256()
    data = members.data
    pos = members.start
    while pos < members.end:
        cut = data.find(b',{"path":"', pos + (1 << 20), members.end)
        cut = members.end if cut < 0 else cut
        pairs = _PATH_AND_SHA256.findall(data, pos, cut)
        digest.update(b"".join([h + b"  " + p + b"\n" for p, h in pairs if p != b"SHA256SUMS"]))
        pos = cut + 1
    return digest.hexdigest()


_PATH_AND_SHA256 = re.compile(rb'\{"path":"([A-Za-z0-9._/-]*)","sha256":"([0-9a-f]{64})"')


def verify_bundle(
    path: Path, policy: TrustPolicy, *, identity: object | None = None, limits: Limits | None = None
) -> OpenedBundle:
    """Verify a bundle without keeping its files.

    Raises:
        VerificationError: every refusal of docs/format.md "Reading rules", each with its code.
    """
    with open_bundle(path, policy, identity=identity, limits=limits) as opened:
        return opened


SinkFn = Callable[[memoryview], None]
