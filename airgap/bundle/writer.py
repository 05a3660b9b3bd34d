"""Deterministic bundle writer: same items, files, keys and clock give the same bytes."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from airgap.bundle import tarstream
from airgap.bundle.crypt import encrypt_stream
from airgap.bundle.manifest import (
    ITEMS_NAME,
    KINDS,
    MANIFEST_NAME,
    ROLE_FOR_KIND,
    SUMS_NAME,
    Manifest,
    MemberEntry,
    summarize,
    sums_text,
)
from airgap.bundle.names import check_member_name
from airgap.bundle.parts import part_paths, split_output
from airgap.errors import ConfigError, InputError
from airgap.fastjson import dumps_sorted
from airgap.fsutil import atomic_output
from airgap.keys import Signer, fp16
from airgap.schema import validate

Progress = Callable[[int, int], None]  # (bytes done, bytes total)
_COPY_CHUNK = 1 << 20


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
class _Payload:
    entry: MemberEntry
    source: Path | bytes


def _hash_source(source: Path | bytes) -> tuple[str, int]:
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest(), len(source)
    digest = hashlib.sha256()
    size = 0
    try:
        with source.open("rb") as handle:
            while chunk := handle.read(_COPY_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror}") from exc
    return digest.hexdigest(), size


def items_bytes(items: Sequence[Mapping[str, Any]]) -> bytes:
    """`items.json` bytes: sorted keys, no whitespace, so the same items give the same bytes."""
    return dumps_sorted({"items": list(items)})


def build_bundle(
    output: Path,
    *,
    kind: str,
    items: Sequence[Mapping[str, Any]],
    files: Sequence[PayloadFile],
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
    of `split` bytes each (see `write_bundle_file`).

    Raises:
        ConfigError: no signer, a signer's role does not fit the kind, or more than 999 parts.
        InputError: an attached file cannot be read or changed while being packed.
        SchemaError: the items do not fit the schema of their kind.
        UnsafeMember: an attachment path breaks the member-name rules.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown bundle kind {kind!r}")
    if not signers:
        raise ConfigError("a bundle needs at least one signer")
    producer = signers[0]
    if producer.role != ROLE_FOR_KIND[kind]:
        raise ConfigError(
            f"a {kind} is produced by the {ROLE_FOR_KIND[kind]} site, not {producer.role}"
        )
    validate(f"{kind}-items", {"items": list(items)}, what=ITEMS_NAME)
    items_data = items_bytes(items)
    payload = [
        _Payload(
            MemberEntry(ITEMS_NAME, hashlib.sha256(items_data).hexdigest(), len(items_data)),
            items_data,
        )
    ]
    seen = {ITEMS_NAME.casefold(), SUMS_NAME.casefold(), MANIFEST_NAME.casefold()}
    for attachment in files:
        check_member_name(attachment.path)
        if not attachment.path.startswith("files/"):
            raise InputError(f"attachment {attachment.path!r} must live under files/")
        if attachment.path.casefold() in seen:
            raise InputError(f"attachment {attachment.path!r} is given twice")
        seen.add(attachment.path.casefold())
        if attachment.sha256 is not None and isinstance(attachment.source, bytes):
            digest, size = attachment.sha256, len(attachment.source)
        else:
            digest, size = _hash_source(attachment.source)
        payload.append(_Payload(MemberEntry(attachment.path, digest, size), attachment.source))
    sums = sums_text([p.entry for p in payload])
    sums_entry = MemberEntry(SUMS_NAME, hashlib.sha256(sums).hexdigest(), len(sums))
    payload.insert(0, _Payload(sums_entry, sums))
    manifest = Manifest(
        bundle_id=bundle_id or str(uuid.uuid4()),
        kind=kind,
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
        summary=summarize(items),
        members=tuple(p.entry for p in payload),
    )
    manifest_bytes = manifest.to_canonical_bytes()
    signatures = {fp16(s.fingerprint): s.sign(manifest_bytes) for s in signers}
    size = write_bundle_file(
        output,
        manifest_bytes=manifest_bytes,
        signatures=signatures,
        payload=[(p.entry, p.source) for p in payload],
        mtime=int(created.timestamp()),
        compress=compress,
        encrypt_to=encrypt_to,
        progress=progress,
        split=split,
    )
    return WrittenBundle(
        path=output,
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        size=size,
        parts=tuple(part_paths(output, size, split)) if split else (),
        items_json=items_data,
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
    sink = split_output(output, split) if split else atomic_output(output)
    with sink as target:
        if not encrypt_to:
            _write_maybe_gzip(
                target, manifest_bytes, signatures, payload, mtime, compress, progress
            )
        else:
            with tempfile.TemporaryFile(dir=output.parent) as plain:
                _write_maybe_gzip(
                    plain, manifest_bytes, signatures, payload, mtime, compress, progress
                )
                plain.seek(0)
                encrypt_stream(plain, target, encrypt_to)
        target.flush()
        return target.tell()


def _write_maybe_gzip(
    target: BinaryIO,
    manifest_bytes: bytes,
    signatures: Mapping[str, bytes],
    payload: Sequence[tuple[MemberEntry, Path | bytes]],
    mtime: int,
    compress: bool,
    progress: Progress | None,
) -> None:
    if not compress:
        _write_tar(target, manifest_bytes, signatures, payload, mtime, progress)
        return
    # mtime=0 and no file name keep gzip output a function of the tar bytes alone.
    with gzip.GzipFile(filename="", mode="wb", fileobj=target, mtime=0) as zipped:
        _write_tar(zipped, manifest_bytes, signatures, payload, mtime, progress)  # type: ignore[arg-type]


class _Batched:
    """Joins small writes into ~1 MiB ones: a bundle of 10,000 reports is 30,000 pieces."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._pieces: list[bytes] = []
        self._pending = 0
        self.written = 0

    def write(self, *pieces: bytes) -> None:
        """Queue `pieces` in order (a member's header, data and padding in one call)."""
        self._pieces += pieces
        size = sum(map(len, pieces))
        self._pending += size
        self.written += size
        if self._pending >= _COPY_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._pieces:
            self._target.write(b"".join(self._pieces))
            self._pieces.clear()
            self._pending = 0


def _write_tar(
    target: BinaryIO,
    manifest_bytes: bytes,
    signatures: Mapping[str, bytes],
    payload: Sequence[tuple[MemberEntry, Path | bytes]],
    mtime: int,
    progress: Progress | None,
) -> None:
    out = _Batched(target)
    total = sum(entry.size for entry, _ in payload)
    done = 0

    def put_member(name: str, data: bytes) -> None:
        header = tarstream.header_bytes(name, len(data), mtime)
        out.write(header, data, tarstream.padding(len(data)))

    put_member(MANIFEST_NAME, manifest_bytes)
    for key in sorted(signatures):
        put_member(f"signatures/{key}.sig", signatures[key])
    for entry, source in payload:
        if isinstance(source, bytes):
            put_member(entry.path, source)
        else:
            out.write(tarstream.header_bytes(entry.path, entry.size, mtime))
            copied = 0
            with contextlib.ExitStack() as stack:
                try:
                    handle = stack.enter_context(source.open("rb"))
                except OSError as exc:
                    raise InputError(f"{source}: cannot read: {exc.strerror}") from exc
                while copied < entry.size and (
                    chunk := handle.read(min(_COPY_CHUNK, entry.size - copied))
                ):
                    out.write(chunk)
                    copied += len(chunk)
                    if progress:
                        progress(done + copied, total)
                if copied != entry.size or handle.read(1):
                    raise InputError(f"{source} changed while it was being packed; pack again")
            out.write(tarstream.padding(entry.size))
        done += entry.size
        if progress:
            progress(done, total)
    out.write(tarstream.end_of_archive(out.written))
    out.flush()
