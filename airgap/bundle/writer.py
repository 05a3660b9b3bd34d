"""Deterministic bundle writer: same items, files, keys and clock give the same bytes."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from airgap.bundle import tarstream
from airgap.bundle.crypt import encrypt_stream
from airgap.bundle.manifest import (
    ITEMS_NAME,
    KINDS,
    MANIFEST_MAX,
    MANIFEST_NAME,
    ROLE_FOR_KIND,
    SUMS_NAME,
    Manifest,
    MemberEntry,
    member_json,
    sums_text,
)
from airgap.bundle.names import check_member_name
from airgap.bundle.parts import part_paths, split_output
from airgap.errors import ConfigError, InputError
from airgap.fastjson import dumps_sorted
from airgap.fsutil import atomic_output
from airgap.keys import Signer, fp16
from airgap.schema import item_validator
from airgap.spool import RecordSpool

Progress = Callable[[int, int], None]  # (bytes done, bytes total)
_COPY_CHUNK = 1 << 20
_SAFE_SIZE = 2**53  # sizes beyond are not plain JSON numbers (RFC 8785)
_LINES_BATCH = 4096  # spool records formatted per join
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


@dataclass(frozen=True)
class PayloadFile:
    """A file to attach: its member path (`files/…`) and its bytes or a path to read.

    `sha256` may give the hex SHA-256 of `source` when it is bytes the caller has hashed already
    (pack hashes every report while parsing it); it is used as given. A path is always hashed
    here, as the file is read.
    """

    path: str
    source: Path | bytes
    sha256: str | None = None


@dataclass(frozen=True)
class WrittenBundle:
    """What was written: where, the manifest and its identity hash."""

    path: Path
    manifest: Manifest
    manifest_bytes: bytes
    manifest_sha256: str
    size: int
    parts: tuple[Path, ...] = ()  # the part files when written with `split`, else empty
    items_json: bytes = b""  # the exact `items.json` it holds


@dataclass(frozen=True)
class StreamedBundle:
    """What `BundleBuilder.write` wrote: `WrittenBundle` without the member list, the manifest
    bytes or `items.json`, none of which it holds (`BundleBuilder.items_json` reads the last)."""

    path: Path
    bundle_id: str
    sequence: int
    manifest_sha256: str
    size: int
    members: int  # payload members listed in the manifest, SHA256SUMS and items.json included
    parts: tuple[Path, ...] = ()  # the part files when written with `split`, else empty


@dataclass(frozen=True)
class _Signed:
    """What `BundleBuilder._write` made: the result, the manifest (its `members` left empty),
    its signed bytes, and the entries of SHA256SUMS and items.json that head its member list."""

    streamed: StreamedBundle
    manifest: Manifest
    manifest_bytes: bytes
    heading: tuple[MemberEntry, MemberEntry]


# A member's content as the tar writer takes it: bytes, a file to read by path (`str` or
# `Path`), or an open temporary file read from its start.
_Source = Path | str | bytes | BinaryIO


def _check_listing_size(name: str, size: int, members: int) -> None:
    """Refuse to write a bundle whose member listing no reader would accept.

    Raises:
        InputError: `name` (manifest.json or SHA256SUMS) is larger than MANIFEST_MAX.
    """
    if size > MANIFEST_MAX:
        raise InputError(
            f"a bundle of {members} members would need a {name} of {size / 2**20:.1f} MiB; "
            f"readers accept at most {MANIFEST_MAX / 2**20:.0f} MiB",
            hint="Pack the inputs in several bundles (fewer folders or plans in each).",
        )


def _append(target: BinaryIO, digest: Any, data: bytes) -> None:
    digest.update(data)
    target.write(data)


def _hash_source(source: Path | str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        with open(source, "rb") as handle:
            while chunk := handle.read(_COPY_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror}") from exc
    return digest.hexdigest(), size


def items_bytes(items: Sequence[Mapping[str, Any]]) -> bytes:
    """`items.json` bytes: sorted keys, no whitespace, so the same items give the same bytes."""
    return dumps_sorted({"items": list(items)})


def _check_signers(kind: str, signers: Sequence[Signer]) -> None:
    if not signers:
        raise ConfigError("a bundle needs at least one signer")
    producer = signers[0]
    if producer.role != ROLE_FOR_KIND[kind]:
        raise ConfigError(
            f"a {kind} is produced by the {ROLE_FOR_KIND[kind]} site, not {producer.role}"
        )


class BundleBuilder:
    """A bundle gathered one item and one attachment at a time, then signed and written.

    Memory stays flat whatever the number of items:

    - each item is schema-checked as it is added (the item schema of `<kind>-items`; an error
      names `items/<n>`) and appended to `items.json` in an unlinked temporary file, hashed as
      it is written;
    - an attachment is listed as its member entry (path, SHA-256, size) and its source in a
      `RecordSpool`; a file is read again only when it is copied into the tar. Bytes given in
      memory are held, by reference, until then.

    What does exist whole is the manifest, in `write`: it lists every member, and Ed25519 signs
    it in one piece (about 140 bytes a member). The bytes are those a plain in-memory writer
    gives for the same items, files, keys and clock (tests/unit/bundle/test_builder.py).

    Use as a context manager, or call `close()`: that drops the temporary files.
    """

    def __init__(self, kind: str, *, tempdir: Path | None = None) -> None:
        """Start an empty bundle of `kind` (`request` or `response`).

        Args:
            kind: the bundle kind; its items are checked against `<kind>-items`.
            tempdir: where the unlinked temporary files go (default: the system's).

        Raises:
            ConfigError: an unknown kind.
        """
        if kind not in KINDS:
            raise ConfigError(f"unknown bundle kind {kind!r}")
        self.kind = kind
        self._check_item = item_validator(f"{kind}-items", what=ITEMS_NAME)
        self._tempdir = tempdir
        self._items = tempfile.TemporaryFile(dir=tempdir)  # noqa: SIM115 (closed by close())
        self._items_digest = hashlib.sha256()
        self._items_size = 0
        self._pending = bytearray(b'{"items":[')  # items.json not yet in the file
        self._items_entry: MemberEntry | None = None  # set once items.json is complete
        self._actions: Counter[str] = Counter()
        self._files = RecordSpool(tempdir)  # (member, sha256, size, source path or inline no.)
        self._inline: list[bytes] = []
        self._files_size = 0
        # Hashes of the case-folded names taken, not the names: a hit is confirmed against the
        # spool before it counts, so a hash collision costs a scan, never a wrong refusal.
        self._taken = {hash(n.casefold()) for n in (ITEMS_NAME, SUMS_NAME, MANIFEST_NAME)}
        self._sealed = False  # written: nothing more may be added
        self.items = 0

    # --- gathering ---------------------------------------------------------------------------

    def add_item(self, item: Mapping[str, Any]) -> None:
        """Check one item against the schema and append it to `items.json`.

        Raises:
            SchemaError: the item does not fit the item schema of its kind.
        """
        if self._items_entry is not None:
            raise RuntimeError("items.json is complete; no item may be added")
        self._check_item(item, self.items)
        if self.items:
            self._pending += b","
        self._pending += dumps_sorted(item)
        self.items += 1
        self._actions[str(item["action"])] += 1
        if len(self._pending) >= _COPY_CHUNK:
            self._spill_items()

    def add_file(
        self,
        member: str,
        source: Path | str | bytes,
        *,
        sha256: str | None = None,
        size: int | None = None,
    ) -> None:
        """List one attachment: the member `files/…` and where its content comes from.

        Args:
            member: the member path, under `files/`.
            source: the content, or the path of a file holding it.
            sha256: the hex SHA-256 of the content when the caller has it already: used as
                given for bytes; for a path, only together with `size` (pack hashes every
                report while parsing it), else the file is hashed here.
            size: the file's size in bytes when it was hashed; it must still have that size
                when it is copied into the tar.

        Raises:
            UnsafeMember: the path breaks the member-name rules.
            InputError: not under `files/`, given twice, or a file that cannot be read.
        """
        if self._sealed:
            raise RuntimeError("the bundle is written; no file may be added")
        check_member_name(member)
        if not member.startswith("files/"):
            raise InputError(f"attachment {member!r} must live under files/")
        key = hash(member.casefold())
        if key in self._taken and self._is_listed(member):
            raise InputError(f"attachment {member!r} is given twice")
        self._taken.add(key)
        ref: str | int
        if isinstance(source, bytes):
            digest = sha256 if sha256 is not None else hashlib.sha256(source).hexdigest()
            length, ref = len(source), len(self._inline)
            self._inline.append(source)
        else:
            ref = os.fspath(source)
            if sha256 is not None and size is not None:
                digest, length = sha256, size
            else:
                digest, length = _hash_source(source)
        self._files.append((member, digest, length, ref))
        self._files_size += length

    def _is_listed(self, member: str) -> bool:
        folded = member.casefold()
        if folded in (ITEMS_NAME.casefold(), SUMS_NAME.casefold(), MANIFEST_NAME.casefold()):
            return True
        return any(listed.casefold() == folded for listed, *_ in self._files)

    def _spill_items(self) -> None:
        self._items_digest.update(self._pending)
        self._items.write(self._pending)
        self._items_size += len(self._pending)
        self._pending = bytearray()

    def _complete_items(self) -> MemberEntry:
        if self._items_entry is None:
            self._pending += b"]}"
            self._spill_items()
            self._items.flush()
            self._items_entry = MemberEntry(
                ITEMS_NAME, self._items_digest.hexdigest(), self._items_size
            )
        return self._items_entry

    def summary(self) -> dict[str, Any]:
        """The manifest's `summary` of the items so far: their count and count per action."""
        return {"items": self.items, "by_action": dict(sorted(self._actions.items()))}

    def items_json(self) -> bytes:
        """The exact `items.json` the bundle holds, read back whole: memory in proportion to
        the items, for a caller that must store it (state.db does)."""
        return self.items_json_file().read()

    def items_json_file(self) -> BinaryIO:
        """The exact `items.json` the bundle holds, as the builder's own file positioned at
        its start, for a caller that stores it a chunk at a time. Valid until `close()`."""
        self._complete_items()
        self._items.seek(0)
        return self._items

    # --- writing -----------------------------------------------------------------------------

    def write(
        self,
        output: Path,
        *,
        signers: Sequence[Signer],
        sequence: int,
        created: datetime,
        expires: datetime,
        audit_head: str,
        bundle_id: str | None = None,
        in_reply_to: Mapping[str, str] | None = None,
        compress: bool = False,
        encrypt_to: Sequence[str] = (),
        progress: Progress | None = None,
        split: int | None = None,
    ) -> StreamedBundle:
        """Sign the manifest and write the bundle to `output` atomically, as `build_bundle`
        does; no item may be added afterwards.

        Raises:
            ConfigError: no signer, a signer's role does not fit the kind, no usable
                recipient to encrypt to, or more than 999 parts.
            InputError: an attached file cannot be read, or changed size since it was hashed;
                or the manifest or SHA256SUMS would be larger than readers accept.
        """
        return self._write(
            output,
            signers=signers,
            sequence=sequence,
            created=created,
            expires=expires,
            audit_head=audit_head,
            bundle_id=bundle_id,
            in_reply_to=in_reply_to,
            compress=compress,
            encrypt_to=encrypt_to,
            progress=progress,
            split=split,
        ).streamed

    def _write(
        self,
        output: Path,
        *,
        signers: Sequence[Signer],
        sequence: int,
        created: datetime,
        expires: datetime,
        audit_head: str,
        bundle_id: str | None,
        in_reply_to: Mapping[str, str] | None,
        compress: bool,
        encrypt_to: Sequence[str],
        progress: Progress | None,
        split: int | None,
    ) -> _Signed:
        _check_signers(self.kind, signers)
        producer = signers[0]
        items_entry = self._complete_items()
        self._sealed = True
        self._taken = set()  # nothing more is added: the names' hashes are of no more use
        with self._sums(items_entry) as (sums, sums_entry):
            manifest = Manifest(
                bundle_id=bundle_id or str(uuid.uuid4()),
                kind=self.kind,
                created=created,
                expires=expires,
                producer={
                    "name": producer.name,
                    "role": producer.role,
                    "fingerprint": producer.fingerprint,
                },
                sequence=sequence,
                in_reply_to=in_reply_to,
                audit_head=audit_head,
                summary=self.summary(),
                members=(),  # listed by `_manifest_bytes` from the spool, never held as entries
            )
            manifest_bytes = self._manifest_bytes(manifest, sums_entry, items_entry)
            signatures = {fp16(s.fingerprint): s.sign(manifest_bytes) for s in signers}
            size = _write_output(
                output,
                manifest_bytes=manifest_bytes,
                signatures=signatures,
                payload=self._payload(sums, sums_entry, items_entry),
                total=sums_entry.size + items_entry.size + self._files_size,
                mtime=int(created.timestamp()),
                compress=compress,
                encrypt_to=encrypt_to,
                progress=progress,
                split=split,
            )
        streamed = StreamedBundle(
            path=output,
            bundle_id=manifest.bundle_id,
            sequence=sequence,
            manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
            size=size,
            members=self._files.count + 2,
            parts=tuple(part_paths(output, size, split)) if split else (),
        )
        return _Signed(streamed, manifest, manifest_bytes, (sums_entry, items_entry))

    @contextlib.contextmanager
    def _sums(self, items_entry: MemberEntry) -> Iterator[tuple[BinaryIO, MemberEntry]]:
        """SHA256SUMS written to a temporary file in one pass over the spool, and its entry."""
        with tempfile.TemporaryFile(dir=self._tempdir) as sums:
            digest = hashlib.sha256()
            lines = [sums_text([items_entry]).decode("utf-8")]
            for member, sha256, _, _ in self._files:
                lines.append(f"{sha256}  {member}\n")
                if len(lines) >= _LINES_BATCH:
                    _append(sums, digest, "".join(lines).encode("utf-8"))
                    lines.clear()
            _append(sums, digest, "".join(lines).encode("utf-8"))
            sums.flush()
            _check_listing_size(SUMS_NAME, sums.tell(), self._files.count + 2)
            yield sums, MemberEntry(SUMS_NAME, digest.hexdigest(), sums.tell())

    def _manifest_bytes(
        self, manifest: Manifest, sums_entry: MemberEntry, items_entry: MemberEntry
    ) -> bytes:
        """`manifest.json`, its member list written entry by entry from the spool.

        It is put together in a temporary file and read back in one piece, so the only copy
        in memory is the finished one (the manifest is the one thing a bundle must hold whole:
        Ed25519 signs it in one call).
        """
        before, after = manifest.canonical_around_members()
        with tempfile.TemporaryFile(dir=self._tempdir) as assembled:
            assembled.write(before)
            assembled.write(b"[%s,%s" % (member_json(sums_entry), member_json(items_entry)))
            entries: list[str] = []
            for member, sha256, length, _ in self._files:
                # Member names hold only [A-Za-z0-9._/-] (check_member_name): with a plain hash
                # and a safe size the entry needs no escaping, as for every entry pack writes.
                if sha256.isascii() and sha256.isalnum() and length < _SAFE_SIZE:
                    entries.append(f'{{"path":"{member}","sha256":"{sha256}","size":{length}}}')
                else:
                    entries.append(member_json(MemberEntry(member, sha256, length)).decode())
                if len(entries) >= _LINES_BATCH:
                    assembled.write(("," + ",".join(entries)).encode("utf-8"))
                    entries.clear()
            if entries:
                assembled.write(("," + ",".join(entries)).encode("utf-8"))
            assembled.write(b"]")
            assembled.write(after)
            _check_listing_size(MANIFEST_NAME, assembled.tell(), self._files.count + 2)
            assembled.seek(0)
            return assembled.read()

    def _payload(
        self, sums: BinaryIO, sums_entry: MemberEntry, items_entry: MemberEntry
    ) -> Iterator[tuple[str, int, _Source]]:
        yield SUMS_NAME, sums_entry.size, sums
        yield ITEMS_NAME, items_entry.size, self._items
        for member, _, length, ref in self._files:
            yield member, length, self._inline[ref] if isinstance(ref, int) else ref

    def entries(self) -> Iterator[MemberEntry]:
        """The attachments' member entries, in the order they were added."""
        for member, sha256, length, _ in self._files:
            yield MemberEntry(member, sha256, length)

    def close(self) -> None:
        """Drop the temporary files and the bytes held."""
        self._items.close()
        self._files.close()
        self._inline = []

    def __enter__(self) -> BundleBuilder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def build_bundle(
    output: Path,
    *,
    kind: str,
    items: Iterable[Mapping[str, Any]],
    files: Iterable[PayloadFile],
    signers: Sequence[Signer],
    sequence: int,
    created: datetime,
    expires: datetime,
    audit_head: str,
    bundle_id: str | None = None,
    in_reply_to: Mapping[str, str] | None = None,
    compress: bool = False,
    encrypt_to: Sequence[str] = (),
    progress: Progress | None = None,
    split: int | None = None,
) -> WrittenBundle:
    """Write a signed bundle to `output` atomically.

    The first signer is the producer. Files are read twice (hash, then copy) so memory stays
    flat whatever their size. With `split`, the bundle is written as `output.001`, `.002`, …
    of `split` bytes each (see `write_bundle_file`). This is `BundleBuilder` fed from
    iterables; the result holds the whole manifest and `items.json`, so it suits bundles that
    fit in memory anyway (a caller with a hundred thousand items uses `BundleBuilder`).

    Raises:
        ConfigError: no signer, a signer's role does not fit the kind, or more than 999 parts.
        InputError: an attached file cannot be read or changed while being packed, an
            attachment path is given twice, or the manifest or SHA256SUMS would be larger
            than readers accept.
        SchemaError: an item does not fit the item schema of its kind (the first such item).
        UnsafeMember: an attachment path breaks the member-name rules.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown bundle kind {kind!r}")
    _check_signers(kind, signers)
    with BundleBuilder(kind) as built:
        for item in items:
            built.add_item(item)
        for attachment in files:
            built.add_file(attachment.path, attachment.source, sha256=attachment.sha256)
        signed = built._write(
            output,
            signers=signers,
            sequence=sequence,
            created=created,
            expires=expires,
            audit_head=audit_head,
            bundle_id=bundle_id,
            in_reply_to=in_reply_to,
            compress=compress,
            encrypt_to=encrypt_to,
            progress=progress,
            split=split,
        )
        streamed = signed.streamed
        return WrittenBundle(
            path=output,
            manifest=dataclasses.replace(
                signed.manifest, members=(*signed.heading, *built.entries())
            ),
            manifest_bytes=signed.manifest_bytes,
            manifest_sha256=streamed.manifest_sha256,
            size=streamed.size,
            parts=streamed.parts,
            items_json=built.items_json(),
        )


def write_bundle_file(
    output: Path,
    *,
    manifest_bytes: bytes,
    signatures: Mapping[str, bytes],
    payload: Sequence[tuple[MemberEntry, Path | bytes]],
    mtime: int,
    compress: bool,
    encrypt_to: Sequence[str],
    progress: Progress | None = None,
    split: int | None = None,
) -> int:
    """Write the tar (optionally gzip, optionally age) of an already-signed manifest.

    `airgap approve` uses this to add a signature without touching `manifest.json`. With
    `split` (bytes), the file is cut into media-sized parts `output.001`, `output.002`, … that
    `cat` joins back; every part is written to a temporary file and renamed at the end.

    Raises:
        InputError: a payload file changed size since it was hashed.
        ConfigError: encryption was asked for with no usable recipient, or `split` would make
            more than 999 parts.

    Returns:
        The size of the whole bundle in bytes.
    """
    return _write_output(
        output,
        manifest_bytes=manifest_bytes,
        signatures=signatures,
        payload=[(entry.path, entry.size, source) for entry, source in payload],
        total=sum(entry.size for entry, _ in payload),
        mtime=mtime,
        compress=compress,
        encrypt_to=encrypt_to,
        progress=progress,
        split=split,
    )


def _write_output(
    output: Path,
    *,
    manifest_bytes: bytes,
    signatures: Mapping[str, bytes],
    payload: Iterable[tuple[str, int, _Source]],
    total: int,
    mtime: int,
    compress: bool,
    encrypt_to: Sequence[str],
    progress: Progress | None,
    split: int | None,
) -> int:
    """`write_bundle_file` for payload members given one at a time as (path, size, source),
    with `total` the sum of their sizes (for `progress`)."""
    tar = _TarSpec(manifest_bytes, signatures, payload, total, mtime, progress)
    sink = split_output(output, split) if split else atomic_output(output)
    with sink as target:
        if not encrypt_to:
            _write_maybe_gzip(target, tar, compress)
        else:
            with tempfile.TemporaryFile(dir=output.parent) as plain:
                _write_maybe_gzip(plain, tar, compress)
                plain.seek(0)
                encrypt_stream(plain, target, encrypt_to)
        target.flush()
        return target.tell()


@dataclass(frozen=True)
class _TarSpec:
    """Everything the tar holds: the signed manifest, its signatures and the payload."""

    manifest_bytes: bytes
    signatures: Mapping[str, bytes]
    payload: Iterable[tuple[str, int, _Source]]
    total: int  # bytes of payload in all
    mtime: int
    progress: Progress | None


def _write_maybe_gzip(target: BinaryIO, tar: _TarSpec, compress: bool) -> None:
    if not compress:
        _write_tar(target, tar)
        return
    # mtime=0 and no file name keep gzip output a function of the tar bytes alone.
    with gzip.GzipFile(filename="", mode="wb", fileobj=target, mtime=0) as zipped:
        _write_tar(zipped, tar)  # type: ignore[arg-type]


class _Batched:
    """Joins small writes into ~1 MiB ones: a bundle of 10,000 reports is 30,000 pieces."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._pieces: list[bytes] = []
        self._pending = 0
        self.written = 0

    def write(self, *pieces: bytes) -> None:
        """Queue `pieces` in order (a member's header, data and padding in one call)."""
        size = sum(map(len, pieces))
        self.written += size
        if size >= _COPY_CHUNK:
            # Large already (the manifest of 100,000 members is 14 MB): written as it is,
            # rather than joined into a copy.
            self.flush()
            for piece in pieces:
                self._target.write(piece)
            return
        self._pieces += pieces
        self._pending += size
        if self._pending >= _COPY_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._pieces:
            self._target.write(b"".join(self._pieces))
            self._pieces.clear()
            self._pending = 0


def _write_tar(target: BinaryIO, tar: _TarSpec) -> None:
    out = _Batched(target)
    mtime, progress = tar.mtime, tar.progress
    header, padding = tarstream.header_bytes, tarstream.padding
    done = 0
    out.write(header(MANIFEST_NAME, len(tar.manifest_bytes), mtime), tar.manifest_bytes)
    out.write(padding(len(tar.manifest_bytes)))
    for key in sorted(tar.signatures):
        data = tar.signatures[key]
        out.write(header(f"signatures/{key}.sig", len(data), mtime), data, padding(len(data)))
    for name, size, source in tar.payload:
        if isinstance(source, bytes):
            out.write(header(name, size, mtime), source, padding(size))
        elif isinstance(source, str | Path) and size < _COPY_CHUNK:
            # One read for a small file (the usual report): header, data and padding at once.
            out.write(header(name, size, mtime), _read_small(source, size), padding(size))
        else:
            out.write(header(name, size, mtime))
            if isinstance(source, str | Path):
                _copy_file(out, source, size, done, tar)
            else:
                _copy_spooled(out, source, size)
            out.write(padding(size))
        done += size
        if progress:
            progress(done, tar.total)
    out.write(tarstream.end_of_archive(out.written))
    out.flush()


def _read_small(source: str | Path, size: int) -> bytes:
    """The `size` bytes of the file at `source`, refused if it no longer has that size."""
    try:
        fd = os.open(source, _READ_FLAGS)
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror}") from exc
    try:
        # Asking for one byte more than expected: a file that grew returns it, one that did
        # not ends the read short, so one call does for a file of the size it had.
        data = os.read(fd, size + 1)
        while 0 < len(data) < size and (more := os.read(fd, size + 1 - len(data))):
            data += more
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) != size:
        raise InputError(f"{source} changed while it was being packed; pack again")
    return data


def _copy_file(out: _Batched, source: str | Path, size: int, done: int, tar: _TarSpec) -> None:
    """Copy the file at `source` into the tar; it must still hold exactly `size` bytes."""
    try:
        fd = os.open(source, _READ_FLAGS)
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror}") from exc
    try:
        copied = 0
        while copied < size and (chunk := os.read(fd, min(_COPY_CHUNK, size - copied))):
            out.write(chunk)
            copied += len(chunk)
            if tar.progress and copied < size:
                tar.progress(done + copied, tar.total)
        if copied != size or os.read(fd, 1):
            raise InputError(f"{source} changed while it was being packed; pack again")
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)


def _copy_spooled(out: _Batched, source: BinaryIO, size: int) -> None:
    """Copy the first `size` bytes of one of the writer's own temporary files."""
    source.seek(0)
    copied = 0
    while copied < size and (chunk := source.read(min(_COPY_CHUNK, size - copied))):
        out.write(chunk)
        copied += len(chunk)
    if copied != size:
        raise InputError(f"a temporary file of the writer lost data ({copied} of {size} bytes)")
