"""`airgap inside pack`: turn plans and capture folders into one signed request bundle.

Inputs stream in from `airgap.inside.intake` (plans and capture folders) one item at a time:
each is numbered `i00001`… in input order, noted for the duplicate check across every source,
and handed to `airgap.bundle.BundleBuilder`, which checks it against the schema and spools it to
disk. No list of every item exists: memory stays flat from ten to a hundred thousand devices
(docs/performance.md, "Pack at scale"). Once every input is read, the bundle is signed and
written, and the request recorded as outstanding in state.db, in the same transaction that uses
its sequence number, and logged in the audit log.

Nothing is left behind when something fails before the bundle is complete: no output file, no
temporary file, no state row, no sequence number used. Printing and progress bars are the CLI's
business; this module reports progress through a callback.
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

from airgap.bundle import BundleBuilder, StreamedBundle
from airgap.bundle.parts import part_group, part_path
from airgap.errors import AirgapError, ConfigError, PlanError
from airgap.home import Home
from airgap.inside.intake import Source, stream_sources
from airgap.inside.plan import DuplicateCheck, PlanItem, parse_entitlement_spec
from airgap.inside.state import InsideState, RequestRecord, SequenceReservation
from airgap.keys import Signer
from airgap.model import action, device_key
from airgap.review import require_home_role
from airgap.spool import RecordSpool
from airgap.units import format_timestamp, utc_now

Progress = Callable[[int, int], None]  # (bytes written, bytes in all)

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_NAME_SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_NAME_MAX = 100  # characters of an attachment's file name inside the bundle
_ROWS_BATCH = 8192  # item rows per state.db statement


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _cyclic_gc_paused(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `function` with the cyclic garbage collector paused.

    A large pack makes millions of short-lived containers (an item, its device, its row), and
    every automatic collection would walk the young ones again for nothing: nothing here builds
    cycles worth collecting early. Pausing it took a 10,000-device pack from 2.2 s to 1.7 s when
    every item was held; it still saves the collections' time.
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
    with BundleBuilder("request") as builder, RecordSpool() as rows:
        _gather(builder, rows, sources, wanted)
        signer = home.signer()
        audit = home.audit()
        created = utc_now()
        expiry = created + timedelta(seconds=int(lifetime.total_seconds()))
        written = _write_and_record(
            home,
            builder,
            rows,
            output=output,
            bundle=_BundleSpec(signer, created, expiry, audit.head(), compress, recipients, split),
            progress=progress,
        )
        summary = builder.summary()
    result = _result(output, written, summary, sources, created, expiry, bool(recipients), compress)
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


def _gather(
    builder: BundleBuilder,
    rows: RecordSpool,
    sources: Sequence[Source],
    wanted: Sequence[tuple[str, int]],
) -> None:
    """Read every input into `builder` (items and attachments, numbered `i00001`… in input
    order) and `rows` (per item its id, action and device key, for state.db).

    Errors come in the order a pack has always reported them: a bad input (the first in input
    order), then repeated items (all of them), then an empty request, then an item the schema
    refuses, which is kept until the inputs are all read.

    Raises:
        PlanError: a bad plan, duplicate items, or nothing to pack.
        InputError: a capture, report or folder cannot be read or parsed.
        SchemaError: an item does not fit the request schema.
    """
    refused: AirgapError | None = None
    count = 0
    stream = stream_sources(sources, list(wanted))
    with contextlib.closing(stream), DuplicateCheck() as duplicates:
        for count, (plan_item, attachments) in enumerate(stream, start=1):
            item_id = f"i{count:05d}"
            item = _request_item(item_id, plan_item)
            key = device_key(item)
            duplicates.add(plan_item, device=key)
            rows.append((item_id, plan_item.action, key))
            if refused is not None:
                continue  # no bundle will be written: later items are not added
            try:
                builder.add_item(item)
                for member, stored in zip(item["files"], attachments, strict=True):
                    # Hashed where it was parsed; read again only to be copied into the tar.
                    builder.add_file(member, stored.path, sha256=stored.sha256, size=stored.size)
            except AirgapError as exc:
                refused = exc
        duplicates.check()
    if not count:
        message = "nothing to pack: the inputs hold no items"
        raise PlanError(message, problems=[message])
    if refused is not None:
        raise refused


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
    builder: BundleBuilder,
    rows: RecordSpool,
    *,
    output: Path,
    bundle: _BundleSpec,
    progress: Progress | None,
) -> StreamedBundle:
    """Write the bundle under a temporary name and record it with its sequence number in ONE
    state.db transaction; publish the file only once the record is in. Any failure leaves no
    file, no row and no sequence number used."""
    published: list[Path] = []
    temp = output.parent / f".{output.name}.{uuid.uuid4().hex}.pack"
    try:
        with InsideState(home.paths.state_db) as state, state.reserve_sequence() as reservation:
            try:
                written = _write_bundle(temp, builder, rows, reservation, bundle, progress)
                # The item rows are in already (`_record_rows`): `record` adds the request row
                # and stores items.json as signed, copied from the builder's file into state.db
                # a chunk at a time; `items` stays empty rather than parse it back.
                reservation.record(
                    RequestRecord(
                        bundle_id=written.bundle_id,
                        manifest_sha256=written.manifest_sha256,
                        sequence=reservation.sequence,
                        created=format_timestamp(bundle.created),
                        expires=format_timestamp(bundle.expires),
                        path=str(output.resolve()),
                        items=[],
                    ),
                    [],
                    items_json=builder.items_json_file(),
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
    builder: BundleBuilder,
    rows: RecordSpool,
    reservation: SequenceReservation,
    bundle: _BundleSpec,
    progress: Progress | None,
) -> StreamedBundle:
    """Sign and write the bundle at `temp` while the item rows go into state.db on a thread:
    for a large request the rows are most of the recording, and SQLite runs without the GIL."""
    bundle_id = str(uuid.uuid4())
    with ThreadPoolExecutor(max_workers=1) as recorder:
        recorded = recorder.submit(_record_rows, reservation, bundle_id, rows)
        written = builder.write(
            temp,
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
    recorded.result()  # the thread has ended either way: `with` waited for it
    return written


def _record_rows(reservation: SequenceReservation, bundle_id: str, rows: RecordSpool) -> None:
    """Insert the item rows of the request a batch at a time, as they come off the spool."""
    items: list[dict[str, Any]] = []
    keys: list[str | None] = []
    for item_id, name, key in rows:
        items.append({"id": item_id, "action": name})
        keys.append(key)
        if len(items) >= _ROWS_BATCH:
            reservation.record_items(bundle_id, items, keys)
            items, keys = [], []
    if items:
        reservation.record_items(bundle_id, items, keys)


def _result(
    output: Path,
    written: StreamedBundle,
    summary: dict[str, Any],
    sources: Sequence[Source],
    created: datetime,
    expires: datetime,
    encrypted: bool,
    compressed: bool,
) -> PackResult:
    actions: dict[str, int] = summary["by_action"]
    vendors: Counter[str] = Counter()
    for name, count in actions.items():
        vendors[action(name).vendor] += count
    return PackResult(
        path=output,
        bundle_id=written.bundle_id,
        manifest_sha256=written.manifest_sha256,
        sequence=written.sequence,
        items=summary["items"],
        by_action=dict(actions),
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


def _final_parts(output: Path, written: StreamedBundle) -> list[Path]:
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


def _request_item(item_id: str, plan_item: PlanItem) -> dict[str, Any]:
    """The request item of a plan item: its attachments become `files/<id>/<name>`."""
    members: list[str] = []
    if plan_item.attachments:
        used: set[str] = set()
        for path in plan_item.attachments:
            members.append(f"files/{item_id}/{_member_name(os.path.basename(path), used)}")
    return {
        "id": item_id,
        "action": plan_item.action,
        "device": plan_item.device,
        "params": plan_item.params,
        "files": members,
    }
