"""`airgap inside pack`: turn plans and capture folders into one signed request bundle.

Inputs are loaded with `airgap.inside.plan` (plans and directory intake), checked for
duplicates across every source, numbered `i00001`… in input order and written with
`airgap.bundle.build_bundle`. The request is then recorded as outstanding in state.db, in the
same transaction that uses its sequence number, and logged in the audit log.

Nothing is left behind when something fails before the bundle is complete: no output file, no
state row, no sequence number used. Printing and progress bars are the CLI's business; this
module reports progress through a callback.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from airgap.bundle import PayloadFile, WrittenBundle, build_bundle
from airgap.bundle.parts import part_group, part_path
from airgap.errors import ConfigError, InputError, PlanError
from airgap.home import Home
from airgap.inside.intake import Blob, Source, load_sources
from airgap.inside.plan import PlanItem, check_duplicates, parse_entitlement_spec
from airgap.inside.state import InsideState, RequestRecord, SequenceReservation
from airgap.keys import Signer
from airgap.model import action, device_key
from airgap.review import require_home_role
from airgap.units import format_timestamp, utc_now

Progress = Callable[[int, int], None]  # (bytes written, bytes in all)

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_NAME_SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_NAME_MAX = 100  # characters of an attachment's file name inside the bundle


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _cyclic_gc_paused(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `function` with the cyclic garbage collector paused.

    A large pack keeps some 100,000 small containers alive until it ends, and every automatic
    collection walks all of them again for nothing: nothing here builds cycles worth collecting
    early. Pausing it took a 10,000-device pack from 2.2 s to 1.7 s.
    """

    @functools.wraps(function)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return paused


@dataclass(frozen=True)
class PackResult:
    """What `pack` wrote: the bundle, its identity and what it asks for."""

    path: Path
    bundle_id: str
    manifest_sha256: str
    sequence: int
    items: int
    by_action: dict[str, int]
    by_vendor: dict[str, int]
    size: int
    created: datetime
    expires: datetime
    encrypted: bool
    compressed: bool
    sources: list[str] = field(default_factory=list)
    parts: list[Path] = field(default_factory=list)  # NAME.001… when written with --split

    def to_json(self) -> dict[str, Any]:
        """The result as plain JSON types (for `--json`)."""
        return {
            "file": str(self.path),
            "bundle_id": self.bundle_id,
            "manifest_sha256": self.manifest_sha256,
            "sequence": self.sequence,
            "items": self.items,
            "by_action": self.by_action,
            "by_vendor": self.by_vendor,
            "size": self.size,
            "created": format_timestamp(self.created),
            "expires": format_timestamp(self.expires),
            "encrypted": self.encrypted,
            "compressed": self.compressed,
            "sources": self.sources,
            "parts": [str(p) for p in self.parts],
        }


@_cyclic_gc_paused
def pack(
    home: Home,
    *,
    plans: Sequence[Path],
    udi_dir: Path | None,
    entitlements: Sequence[str],
    rum_dir: Path | None,
    returns_dir: Path | None,
    output: Path,
    expires: timedelta | None = None,
    encrypt: bool = False,
    compress: bool = False,
    progress: Progress | None = None,
    split: int | None = None,
) -> PackResult:
    """Build, sign and record one request bundle from plans and capture folders.

    Args:
        home: an inside home.
        plans: CSV or JSON plan files, in the order their items are numbered.
        udi_dir: a folder of `show license udi` captures: one `cisco.reserve` per UDI.
        entitlements: `TAG[:N]` to reserve for every device of `udi_dir`.
        rum_dir: a folder of RUM reports: one `cisco.report_usage` per file.
        returns_dir: a folder of return-code captures: one `cisco.return` per capture.
        output: the bundle file to write; must not exist yet.
        expires: how long the request is valid (default: the home's `bundle.expiry`).
        encrypt: age-encrypt the bundle to the trusted outside sites (and this home).
        compress: gzip the tar.
        progress: called with (bytes written, bytes in all) while the bundle is written.
        split: write media-sized parts `output.001`, `.002`, … of this many bytes each.

    Raises:
        ConfigError: not an inside home, the output (or a part of it) exists, no outside site
            to encrypt to, a bad expiry, more than 999 parts, or state.db cannot be used.
        PlanError: nothing to pack, a bad plan or entitlement, or duplicate items (each
            problem names both places).
        InputError: a capture, report or folder cannot be read or parsed.
        AuthError: the signing key's passphrase is wrong.

    Returns:
        The bundle written and what it holds.
    """
    require_home_role(home, "inside")
    _check_outputs(output, split)
    sources, wanted = _sources(plans, udi_dir, entitlements, rum_dir, returns_dir)
    lifetime = expires if expires is not None else home.config.expiry
    if lifetime <= timedelta(0):
        raise ConfigError(f"the expiry must be positive, not {lifetime}")
    recipients = home.recipients() if encrypt else []
    items, files, expected = _load_items(sources, wanted)
    signer = home.signer()
    audit = home.audit()
    created = utc_now()
    expiry = created + timedelta(seconds=int(lifetime.total_seconds()))
    written = _write_and_record(
        home,
        items,
        files,
        expected,
        output=output,
        bundle=_BundleSpec(signer, created, expiry, audit.head(), compress, recipients, split),
        progress=progress,
    )
    result = _result(output, written, items, sources, created, expiry, bool(recipients), compress)
    audit.append(
        "pack",
        bundle_id=result.bundle_id,
        manifest_sha256=result.manifest_sha256,
        details={
            "file": output.name,
            "sequence": result.sequence,
            "items": result.items,
            "by_action": result.by_action,
            "by_vendor": result.by_vendor,
            "size": result.size,
            "encrypted": result.encrypted,
            "compressed": compress,
            "expires": format_timestamp(expiry),
            **({"parts": len(result.parts)} if result.parts else {}),
        },
    )
    return result


# --- the steps of a pack -------------------------------------------------------------------------


def _check_outputs(output: Path, split: int | None) -> None:
    """Refuse before any work if the bundle (or any part of it) would overwrite a file."""
    _check_output(output)
    if split:
        for existing in part_group(part_path(output, 1)):
            if existing.exists():
                _check_output(existing)


def _sources(
    plans: Sequence[Path],
    udi_dir: Path | None,
    entitlements: Sequence[str],
    rum_dir: Path | None,
    returns_dir: Path | None,
) -> tuple[list[Source], list[tuple[str, int]]]:
    """The inputs in numbering order, and the entitlements to reserve for `--udi` devices."""
    wanted = [parse_entitlement_spec(spec) for spec in entitlements]
    if wanted and udi_dir is None:
        message = "--entitlement applies to the devices of --udi DIR; give --udi too"
        raise PlanError(message, problems=[message])
    sources = [Source("plan", p) for p in plans]
    sources += [Source(k, d) for k, d in (("udi", udi_dir), ("rum", rum_dir)) if d is not None]
    if returns_dir is not None:
        sources.append(Source("returns", returns_dir))
    if not sources:
        message = "nothing to pack: give a plan, or --udi DIR --entitlement TAG, --rum, --returns"
        raise PlanError(message, problems=[message], hint="See `airgap inside pack --help`.")
    return sources, wanted


def _load_items(
    sources: Sequence[Source], wanted: Sequence[tuple[str, int]]
) -> tuple[list[dict[str, Any]], list[PayloadFile], dict[str, str]]:
    """Parse every input into numbered request items and their attachments; refuse repeats."""
    loaded = load_sources(sources, list(wanted))
    check_duplicates(loaded.items)
    if not loaded.items:
        message = "nothing to pack: the inputs hold no items"
        raise PlanError(message, problems=[message])
    return _request_items(loaded.items, loaded.blobs)


@dataclass(frozen=True)
class _BundleSpec:
    """How the bundle is signed, dated and written (everything but its content)."""

    signer: Signer
    created: datetime
    expires: datetime
    audit_head: str
    compress: bool
    recipients: Sequence[str]
    split: int | None


def _write_and_record(
    home: Home,
    items: list[dict[str, Any]],
    files: list[PayloadFile],
    expected: dict[str, str],
    *,
    output: Path,
    bundle: _BundleSpec,
    progress: Progress | None,
) -> WrittenBundle:
    """Write the bundle under a temporary name and record it with its sequence number in ONE
    state.db transaction; publish the file only once the record is in. Any failure leaves no
    file, no row and no sequence number used."""
    device_keys = [device_key(item) for item in items]
    published: list[Path] = []
    temp = output.parent / f".{output.name}.{uuid.uuid4().hex}.pack"
    try:
        with InsideState(home.paths.state_db) as state, state.reserve_sequence() as reservation:
            try:
                written = _write_bundle(
                    temp, items, files, reservation, device_keys, bundle, progress
                )
                _check_attachments(written, expected)
                reservation.record(
                    RequestRecord(
                        bundle_id=written.manifest.bundle_id,
                        manifest_sha256=written.manifest_sha256,
                        sequence=reservation.sequence,
                        created=format_timestamp(bundle.created),
                        expires=format_timestamp(bundle.expires),
                        path=str(output.resolve()),
                        items=items,
                    ),
                    device_keys,
                    items_json=written.items_json,
                )
                # Published while the transaction is still open: if the commit then fails,
                # the files are taken back below. Parts go last to first, so the first part
                # appears only when all the others are there.
                targets = _final_parts(output, written) if bundle.split else [output]
                temps = list(written.parts) or [temp]
                for source, target in reversed(list(zip(temps, targets, strict=True))):
                    _publish(source, target)
                    published.append(target)
            finally:
                for leftover in [temp, *_temp_parts(temp)]:
                    with contextlib.suppress(FileNotFoundError):
                        leftover.unlink()
    except BaseException:
        for target in published:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
        raise
    return written


def _write_bundle(
    temp: Path,
    items: list[dict[str, Any]],
    files: list[PayloadFile],
    reservation: SequenceReservation,
    device_keys: list[str | None],
    bundle: _BundleSpec,
    progress: Progress | None,
) -> WrittenBundle:
    """Build the signed bundle at `temp` while the item rows go into state.db on a thread:
    for a large request the rows are most of the recording, and SQLite runs without the GIL."""
    bundle_id = str(uuid.uuid4())
    with ThreadPoolExecutor(max_workers=1) as recorder:
        rows = recorder.submit(reservation.record_items, bundle_id, items, device_keys)
        written = build_bundle(
            temp,
            kind="request",
            items=items,
            files=files,
            signers=[bundle.signer],
            sequence=reservation.sequence,
            created=bundle.created,
            expires=bundle.expires,
            audit_head=bundle.audit_head,
            bundle_id=bundle_id,
            compress=bundle.compress,
            encrypt_to=bundle.recipients,
            progress=progress,
            split=bundle.split,
        )
    rows.result()  # the thread has ended either way: `with` waited for it
    return written


def _result(
    output: Path,
    written: WrittenBundle,
    items: Sequence[dict[str, Any]],
    sources: Sequence[Source],
    created: datetime,
    expires: datetime,
    encrypted: bool,
    compressed: bool,
) -> PackResult:
    actions = Counter(str(item["action"]) for item in items)
    vendors: Counter[str] = Counter()
    for name, count in actions.items():
        vendors[action(name).vendor] += count
    return PackResult(
        path=output,
        bundle_id=written.manifest.bundle_id,
        manifest_sha256=written.manifest_sha256,
        sequence=written.manifest.sequence,
        items=len(items),
        by_action=dict(sorted(actions.items())),
        by_vendor=dict(sorted(vendors.items())),
        size=written.size,
        created=created,
        expires=expires,
        encrypted=encrypted,
        compressed=compressed,
        sources=[source.describe() for source in sources],
        parts=_final_parts(output, written) if written.parts else [],
    )


def _check_output(output: Path) -> None:
    if output.exists() or output.is_symlink():
        raise ConfigError(
            f"{output} already exists; refusing to overwrite it",
            hint="Choose another -o file name, or move the old file away first.",
        )
    if not output.name or output.name in (".", ".."):
        raise ConfigError(f"{output} is not a file name")


def _final_parts(output: Path, written: WrittenBundle) -> list[Path]:
    return [part_path(output, n) for n in range(1, len(written.parts) + 1)]


def _temp_parts(temp: Path) -> list[Path]:
    """Part files a failed build may have left under the temporary name."""
    return part_group(part_path(temp, 1))


def _publish(temp: Path, output: Path) -> None:
    """Move the finished bundle to `output` without ever replacing a file that appeared there."""
    try:
        os.link(temp, output)
    except FileExistsError:
        raise ConfigError(
            f"{output} appeared while the bundle was being written; refusing to overwrite it",
            hint="Choose another -o file name.",
        ) from None
    except OSError:
        # Some file systems (FAT on USB sticks) have no hard links; check, then rename.
        if output.exists():
            raise ConfigError(f"{output} already exists; refusing to overwrite it") from None
        os.replace(temp, output)


# --- building items ------------------------------------------------------------------------------


def _member_name(name: str, used: set[str]) -> str:
    """A file name safe as the last part of a member path, unique within one item."""
    if not used and len(name) <= _NAME_MAX and _NAME_SAFE.fullmatch(name):
        used.add(name.casefold())  # the usual case, one well-named file: nothing to change
        return name
    clean = _NAME_UNSAFE.sub("_", name)[-_NAME_MAX:].lstrip(".") or "file"
    candidate, n = clean, 1
    while candidate.casefold() in used:
        n += 1
        candidate = f"{n}-{clean}"
    used.add(candidate.casefold())
    return candidate


def _request_items(
    plan_items: Sequence[PlanItem], blobs: Sequence[Sequence[Blob]]
) -> tuple[list[dict[str, Any]], list[PayloadFile], dict[str, str]]:
    """Request items (ids `i00001`… in input order), their payload files, and expected hashes."""
    items: list[dict[str, Any]] = []
    files: list[PayloadFile] = []
    expected: dict[str, str] = {}
    for index, (plan_item, contents) in enumerate(zip(plan_items, blobs, strict=True), start=1):
        item_id = f"i{index:05d}"
        members: list[str] = []
        used: set[str] = set()
        digests = plan_item.attachment_sha256
        for n, (path, content) in enumerate(zip(plan_item.attachments, contents, strict=True)):
            member = f"files/{item_id}/{_member_name(os.path.basename(path), used)}"
            members.append(member)
            digest = digests[n] if n < len(digests) else None
            if isinstance(content, Path):
                files.append(PayloadFile(member, content))
                if digest is not None:
                    expected[member] = digest  # compared once the writer has read the file
            else:
                files.append(PayloadFile(member, content, sha256=digest))
        items.append(
            {
                "id": item_id,
                "action": plan_item.action,
                "device": plan_item.device,
                "params": plan_item.params,
                "files": members,
            }
        )
    return items, files, expected


def _check_attachments(written: WrittenBundle, expected: dict[str, str]) -> None:
    """Refuse a bundle whose streamed attachment differs from the file that was parsed."""
    for member in written.manifest.members:
        want = expected.get(member.path)
        if want is not None and member.sha256 != want:
            raise InputError(f"{member.path}: its source changed while it was being packed")
