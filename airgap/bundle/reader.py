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
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

from airgap.bundle import itemcheck, itemstream, tarstream
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
    skip_entries,
    summarize,
    sums_text,
)
from airgap.bundle.names import SIGNATURE_NAME, check_member_name, plainly_safe_run
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
_RUN_WINDOW = 128 * 1024  # bytes of the manifest's member list looked at per run of members
SPLIT_MIN = 32 << 20  # bytes of listed members left below which a second reader does not pay
_SPECIAL_NAMES = (SUMS_NAME.encode(), ITEMS_NAME.encode())
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
    _rendered: list[BinaryIO] | None = None  # what `render_items` made, a file per range
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

    def rendered_items(self) -> Iterator[bytes] | None:
        """What the `render_items` function given to `open_bundle` returned for the items,
        every batch's in order and joined by commas, a chunk at a time; None when it was not
        run (no function given, or items.json had to be read the general way)."""
        if self._rendered is None:
            return None
        return itemcheck.rendered_chunks(self._rendered)

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
    render_items: Callable[[list[Any]], bytes] | None = None,
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
        render_items: applied to each batch of items (a list) once it is checked, while
            `items.json` is checked; what it returns is kept in temporary files, for
            `OpenedBundle.rendered_items` (inspect's JSON is written this way).

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
            reader.render_items = render_items
            stack.callback(reader.stop_items_check)
            if spool_files:
                reader.spool = cast(BinaryIO, tempfile.TemporaryFile(dir=tmp))  # noqa: SIM115 (the OpenedBundle keeps it)
            # A read makes no cycles; collections would only walk its items batches again.
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                opened = reader.read()
            except (OSError, EOFError, zlib.error) as exc:
                reader.close_files()
                _close(reader.spool)
                raise NotABundle(f"{path.name} is not a readable bundle ({exc})") from None
            except BaseException:
                reader.close_files()
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

    def advance_run(self, paths: list[bytes], sizes: list[bytes], size: int) -> None:
        """Fast mode: the entries with these raw `paths` and `sizes`, from the cursor on,
        were found, `size` bytes in all."""
        self.offset = skip_entries(self.offset, paths, sizes)
        self.index += len(paths)
        self.total += size

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


def _entry_windows(fast: MemberList, offset: int) -> Iterator[tuple[int, list[bytes], list[int]]]:
    """The listed entries from byte `offset` (an entry's start) on, a window at a time: the
    offset past the window's entries, their paths, and their sizes."""
    while offset < fast.end:
        paths, _, sizes = fast.raw_entries(offset, _RUN_WINDOW)
        offset = skip_entries(offset, paths, sizes)
        yield offset, paths, list(map(int, sizes))


def _tar_bytes(sizes: list[int]) -> int:
    """Bytes that members of these sizes take in a tar as airgap writes it: a header each and
    the data padded to whole blocks."""
    return 512 * len(sizes) + sum(sizes) + sum(map((512).__rmod__, map(operator.neg, sizes)))


@dataclass
class _MemberWorker:
    """A forked process verifying the listed members `start` (an index) to `stop` as
    `take_listed_run` would, reading the bundle file by offset while this one reads the
    members before `start`. Its answer: how many of them it took, from `start` on."""

    pid: int
    pipe: int
    start: int
    stop: int
    offset: int  # where member `start`'s header lies in the file
    end: int  # where the header after member `stop - 1` lies
    listing_offset: int  # the listing's cursor past entry `stop - 1`
    data_bytes: int  # the listed sizes of members `start` to `stop - 1`, summed

    def taken(self) -> int:
        """How many members it took (0 if it failed); reaps it."""
        answer = itemcheck.read_all(self.pipe)
        self.pipe = -1
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        if status != 0 or not answer.isdigit():
            return 0
        return int(answer)

    def stop_now(self) -> None:
        itemcheck.kill_worker(self.pid, self.pipe)
        self.pid, self.pipe = 0, -1


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
        self.render_items: itemcheck.Render | None = None
        self.items_check: itemcheck.ItemsCheck | None = None
        self.manifest: Manifest | None = None
        self.sums_verified = False  # SHA256SUMS hashed equal to the text its listing implies
        self.member_worker: _MemberWorker | None = None
        self.member_worker_tried = False
        self.spool: BinaryIO | None = None  # spool_files: where payload members are appended
        self.spooled: dict[str, tuple[int, int]] = {}
        self.spool_size = 0  # bytes written to the spool (its tell() costs a flush)

    def start_items_check(self) -> None:
        """Start checking the verified items.json (in worker processes, if it pays)."""
        assert self.items_file is not None and self.manifest is not None
        try:
            self.items_check = itemcheck.ItemsCheck(
                self.items_file,
                self.items_size,
                manifest=self.manifest,
                max_piece=self.limits.items_max,
                render=self.render_items,
                tmp=self.tmp,
                workers=itemcheck.worker_count(self.items_size),
            )
        except itemstream.Unusual:
            self.items_check = None  # read the general way

    def stop_items_check(self) -> None:
        if self.items_check is not None:
            self.items_check.stop()
        if self.member_worker is not None:
            self.member_worker.stop_now()
            self.member_worker = None

    def start_member_worker(self, listing: _Listing, seen: set[str]) -> None:
        """Fork a process that verifies the second half (by bytes) of the listed members left,
        if the bundle is a plain file with enough of them left and forking can pay."""
        self.member_worker_tried = True
        fast = listing.fast
        here = self.tar.offset()
        if fast is None or here is None or not itemcheck.can_fork():
            return
        # Two walks over the entries left, a window at a time (flat memory): the tar bytes of
        # their members, then where half of those bytes lie.
        total = data = 0
        for _, _, sizes in _entry_windows(fast, listing.offset):
            total += _tar_bytes(sizes)
            data += sum(sizes)
        if total < SPLIT_MIN:
            return
        before, start, entry_offset = 0, listing.index, listing.offset
        for after, paths, sizes in _entry_windows(fast, listing.offset):
            if before + _tar_bytes(sizes) < total // 2:
                before += _tar_bytes(sizes)
                start += len(sizes)
                data -= sum(sizes)
                entry_offset = after
                continue
            for path, size in zip(paths, sizes, strict=True):
                if before >= total // 2:
                    break
                before += _tar_bytes([size])
                start += 1
                data -= size
                entry_offset = skip_entries(entry_offset, (path,), (b"%d" % size,))
            break
        count = len(fast) - listing.index  # entries left
        if start == listing.index + count or total - before < SPLIT_MIN // 2:
            return  # a few large members: the second half would be (nearly) empty
        data_bytes = data
        worker = _MemberWorker(
            pid=0,
            pipe=-1,
            start=start,
            stop=listing.index + count,
            offset=here + before,
            end=here + total,
            listing_offset=fast.end + 1,  # past the last entry, as `skip_entries` counts
            data_bytes=data_bytes,
        )
        stop = worker.stop
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: its answer goes down the pipe, and it never returns
            status = 1
            try:
                os.close(read_end)
                fd = self.tar._stream.fileno()
                source = tarstream.PreadFile(fd, worker.offset, worker.end)
                self.tar = tarstream.TarReader(tarstream.CountingReader(source, 1 << 62))  # type: ignore[arg-type]
                listing.offset, listing.index = entry_offset, start
                while listing.index < stop and self.take_listed_run(listing, seen, stop):
                    pass
                itemcheck.write_all(write_end, b"%d" % (listing.index - start))
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        worker.pid, worker.pipe = pid, read_end
        self.member_worker = worker

    def take_worker_members(self, listing: _Listing) -> bool:
        """At the member worker's first member: skip its members if it took them all and
        they fit the size limit (else they are read here, which words any refusal)."""
        worker = self.member_worker
        assert worker is not None
        self.member_worker = None
        if worker.taken() != worker.stop - worker.start:
            return False
        if self.tar.offset() != worker.offset:
            return False
        if self.source.count + (worker.end - worker.offset) > self.source.limit:
            return False
        self.tar.skip_to(worker.end)
        listing.offset = worker.listing_offset
        listing.index = worker.stop
        listing.total += worker.data_bytes
        return True

    def close_files(self) -> None:
        """After a refusal: the items file and any rendering."""
        self.stop_items_check()
        _close(self.items_file)
        if self.items_check is not None:
            self.items_check.close_rendering()

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
        # Runs of small listed members are checked at once while the tar is as airgap writes
        # it; kept or spooled files are written one at a time.
        runs = self.keep_dir is None and self.spool is None
        while True:
            if listing is not None and listing.fast is not None:
                if not self.member_worker_tried and runs:
                    self.start_member_worker(listing, seen)
                worker = self.member_worker
                if worker is not None and listing.index == worker.start:
                    if self.take_worker_members(listing):
                        continue
                    worker = None
            if runs and listing is not None and listing.fast is not None:
                taken = self.take_listed_run(listing, seen, worker.start if worker else None)
                if taken is None:
                    runs = False  # something differs: one member at a time from here on
                elif taken:
                    continue
            entry = next(members, None)
            if entry is None:
                break
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
        if self.member_worker is not None:  # its members were read here after all
            self.member_worker.stop_now()
            self.member_worker = None
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
        rendered = None
        if self.render_items is not None and self.items_check is not None and items is None:
            rendered = self.items_check.rendering()
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
            _rendered=rendered,
            _spool=self.spool,
            _spooled=self.spooled,
        )

    def take_listed_run(
        self, listing: _Listing, seen: set[str], stop: int | None = None
    ) -> int | None:
        """Fast mode: take the next listed members at once if the tar holds them exactly as
        listed (`TarReader.take_plain_files`); how many, or None when it does not.

        Only a run of plain files the one-at-a-time checks would pass by name is tried: each
        name acceptable at a glance (`plainly_safe_run`), neither `SHA256SUMS` nor
        `items.json` (handled on their own), and none folding onto a name seen before.
        """
        fast = listing.fast
        assert fast is not None
        paths, digests, sizes = fast.raw_entries(listing.offset, _RUN_WINDOW)
        if stop is not None:  # the members from `stop` on are another reader's
            paths = paths[: stop - listing.index]
        count = plainly_safe_run(paths)
        for special in _SPECIAL_NAMES:
            if special in paths[:count]:
                count = paths.index(special)
        if not count:
            return 0
        names = paths[:count]
        if not seen.isdisjoint(map(bytes.decode, map(bytes.lower, names))):
            return None
        lengths = list(map(int, sizes[:count]))
        taken = self.tar.take_plain_files(
            names, lengths, bytes.fromhex(b"".join(digests[:count]).decode("ascii"))
        )
        if taken:
            listing.advance_run(names[:taken], sizes[:taken], sum(lengths[:taken]))
        return taken

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
        if name == ITEMS_NAME:
            self.start_items_check()  # the signed bytes: checked while the rest streams
        return digest

    def expected_sums_sha256(self) -> str | None:
        """SHA-256 of the SHA256SUMS airgap writes for this listing (fast mode only)."""
        manifest = self.manifest
        if manifest is None or not isinstance(manifest.members, MemberList):
            return None
        return manifest.members.sums_sha256

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
            if self.items_check is None:
                raise itemstream.Unusual("not in the shape airgap writes")
            count = itemcheck.combine(self.items_check.tallies(), manifest)
        except itemstream.Unusual:
            if self.items_check is not None:
                self.items_check.close_rendering()
                self.items_check.jobs.clear()
            self.items_file.seek(0)
            items = self.parse_items_whole(self.items_file.read(), manifest, set(listing.paths))
            return len(items), items
        self.checks.append(f"items: {count} schema-valid {manifest.kind} items")
        return count, None

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
