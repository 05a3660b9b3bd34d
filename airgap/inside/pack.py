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
import hashlib
import multiprocessing
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from airgap.bundle import PayloadFile, WrittenBundle, build_bundle
from airgap.bundle.parts import part_group, part_path
from airgap.errors import AirgapError, ConfigError, InputError, PlanError
from airgap.home import Home
from airgap.inside.parsers._text import read_bytes
from airgap.inside.plan import (
    PlanItem,
    check_duplicates,
    items_from_returns_dir,
    items_from_rum_dir,
    items_from_udi_dir,
    load_plan,
    parse_entitlement_spec,
)
from airgap.inside.state import InsideState, RequestRecord, device_key
from airgap.review import require_home_role
from airgap.units import format_timestamp, utc_now

Progress = Callable[[int, int], None]  # (bytes written, bytes in all)

INLINE_MAX = 8 * 1024 * 1024  # bytes; smaller attachments are read once and packed from memory
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
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


@dataclass(frozen=True)
class _Source:
    """One input: a plan file, or a folder of captures of one kind."""

    kind: str  # plan | udi | rum | returns
    path: Path

    def describe(self) -> str:
        return str(self.path) if self.kind == "plan" else f"--{self.kind} {self.path}"


@dataclass(frozen=True)
class _Loaded:
    """The items of one source and, per item, the content of each attachment."""

    items: list[PlanItem]
    blobs: list[list[bytes | Path]]


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
    _check_output(output)
    if split:
        for existing in part_group(part_path(output, 1)):
            if existing.exists():
                _check_output(existing)
    wanted = [parse_entitlement_spec(spec) for spec in entitlements]
    if wanted and udi_dir is None:
        message = "--entitlement applies to the devices of --udi DIR; give --udi too"
        raise PlanError(message, problems=[message])
    sources = [_Source("plan", p) for p in plans]
    sources += [_Source(k, d) for k, d in (("udi", udi_dir), ("rum", rum_dir)) if d is not None]
    if returns_dir is not None:
        sources.append(_Source("returns", returns_dir))
    if not sources:
        message = "nothing to pack: give a plan, or --udi DIR --entitlement TAG, --rum, --returns"
        raise PlanError(message, problems=[message], hint="See `airgap inside pack --help`.")
    lifetime = expires if expires is not None else home.config.expiry
    if lifetime <= timedelta(0):
        raise ConfigError(f"the expiry must be positive, not {lifetime}")
    recipients = home.recipients() if encrypt else []

    loaded = _load_sources(sources, wanted)
    plan_items = [item for part in loaded for item in part.items]
    blobs = [blob for part in loaded for blob in part.blobs]
    check_duplicates(plan_items)
    if not plan_items:
        message = "nothing to pack: the inputs hold no items"
        raise PlanError(message, problems=[message])
    items, files, expected = _request_items(plan_items, blobs)
    signer = home.signer()
    audit = home.audit()
    created = utc_now()
    expiry = created + timedelta(seconds=int(lifetime.total_seconds()))

    published: list[Path] = []
    try:
        with InsideState(home.paths.state_db) as state, state.reserve_sequence() as reservation:
            # Built under a temporary name, then linked into place: a file that appeared at
            # `output` meanwhile is never replaced. The reservation commits when the block ends.
            temp = output.parent / f".{output.name}.{uuid.uuid4().hex}.pack"
            try:
                written = build_bundle(
                    temp,
                    kind="request",
                    items=items,
                    files=files,
                    signers=[signer],
                    sequence=reservation.sequence,
                    created=created,
                    expires=expiry,
                    audit_head=audit.head(),
                    compress=compress,
                    encrypt_to=recipients,
                    progress=progress,
                    split=split,
                )
                _check_attachments(written, expected)
                reservation.record(
                    RequestRecord(
                        bundle_id=written.manifest.bundle_id,
                        manifest_sha256=written.manifest_sha256,
                        sequence=reservation.sequence,
                        created=format_timestamp(created),
                        expires=format_timestamp(expiry),
                        path=str(output.resolve()),
                        items=items,
                    ),
                    [device_key(item) for item in items],
                )
                # Parts go last to first, so the first part appears when all others are there.
                published_paths = _final_parts(output, written) if split else [output]
                temps = list(written.parts) or [temp]
                for source, target in reversed(list(zip(temps, published_paths, strict=True))):
                    _publish(source, target)
                    published.append(target)
            finally:
                for leftover in [temp, *_temp_parts(temp)]:
                    with contextlib.suppress(FileNotFoundError):
                        leftover.unlink()
    except BaseException:
        # Recorded nothing after all (the commit failed): take the file(s) back.
        for target in published:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
        raise
    by_action = dict(sorted(Counter(item["action"] for item in items).items()))
    by_vendor = dict(sorted(Counter(str(i["action"]).split(".", 1)[0] for i in items).items()))
    result = PackResult(
        path=output,
        bundle_id=written.manifest.bundle_id,
        manifest_sha256=written.manifest_sha256,
        sequence=written.manifest.sequence,
        items=len(items),
        by_action=by_action,
        by_vendor=by_vendor,
        size=written.size,
        created=created,
        expires=expiry,
        encrypted=bool(recipients),
        compressed=compress,
        sources=[source.describe() for source in sources],
        parts=_final_parts(output, written) if split else [],
    )
    audit.append(
        "pack",
        bundle_id=result.bundle_id,
        manifest_sha256=result.manifest_sha256,
        details={
            "file": output.name,
            "sequence": result.sequence,
            "items": result.items,
            "by_action": by_action,
            "by_vendor": by_vendor,
            "size": result.size,
            "encrypted": result.encrypted,
            "compressed": compress,
            "expires": format_timestamp(expiry),
            **({"parts": len(result.parts)} if result.parts else {}),
        },
    )
    return result


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


# --- loading inputs ------------------------------------------------------------------------------


def _intake(source: _Source, entitlements: list[tuple[str, int]]) -> list[PlanItem]:
    if source.kind == "plan":
        return load_plan(source.path)
    if source.kind == "udi":
        return items_from_udi_dir(source.path, entitlements)
    if source.kind == "rum":
        return items_from_rum_dir(source.path)
    return items_from_returns_dir(source.path)


def _attachment(path: Path, expected: str | None) -> bytes | Path:
    """The bytes to pack for an attachment (read once), or its path when it is large.

    Raises:
        InputError: the file cannot be read, or changed since it was parsed.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    if size > INLINE_MAX:
        return path  # streamed by the writer; its hash is compared after the build
    data = read_bytes(path)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise InputError(f"{path} changed while it was being packed; pack again")
    return data


def _load_one(source: _Source, entitlements: list[tuple[str, int]]) -> _Loaded:
    items = _intake(source, entitlements)
    blobs: list[list[bytes | Path]] = []
    for item in items:
        if item.attachment_data:
            blobs.append(list(item.attachment_data))  # already read (and hashed) while parsing
            continue
        digests: Sequence[str | None] = item.attachment_sha256 or [None] * len(item.attachments)
        blobs.append([_attachment(p, d) for p, d in zip(item.attachments, digests, strict=True)])
    return _Loaded(items, blobs)


_Outcome = tuple[str, Any]
# A PlanItem as plain values (paths as text): pickles about twice as fast as the dataclass.
_Flat = tuple[str, Any, Any, tuple[str, ...], str, tuple[str, ...]]


def _flatten(loaded: _Loaded) -> tuple[list[_Flat], list[list[bytes | Path]]]:
    flat = [
        (i.action, i.device, i.params, tuple(map(str, i.attachments)), i.origin,
         i.attachment_sha256)
        for i in loaded.items
    ]  # fmt: skip
    return flat, loaded.blobs


def _unflatten(flat: list[_Flat], blobs: list[list[bytes | Path]]) -> _Loaded:
    items = [
        PlanItem(action, device, params, tuple(Path(p) for p in paths), origin, digests)
        for action, device, params, paths, origin, digests in flat
    ]
    return _Loaded(items, blobs)


def _load_in_worker(source: _Source, entitlements: list[tuple[str, int]]) -> _Outcome:
    """Run in a worker process: errors travel back as plain values (they lose extras in pickle)."""
    try:
        return "ok", _flatten(_load_one(source, entitlements))
    except AirgapError as exc:
        return "error", (type(exc), exc.message, exc.hint, getattr(exc, "problems", None))


_Failure = tuple[type[AirgapError], str, str | None, list[str] | None]


def _error_from_worker(payload: _Failure) -> AirgapError:
    cls, message, hint, problems = payload
    error = cls.__new__(cls)
    AirgapError.__init__(error, message, hint=hint)
    if isinstance(error, PlanError):
        error.problems = problems or []
    return error


def _parallel_ok(sources: Sequence[_Source]) -> bool:
    # Parsing 10,000 captures is CPU-bound Python; sources are parsed side by side when there
    # is more than one, a second CPU, and fork (cheap: the parsers are already imported).
    return (
        len(sources) > 1
        and (os.cpu_count() or 1) > 1
        and "fork" in multiprocessing.get_all_start_methods()
        and any(source.kind != "plan" for source in sources)
    )


def _load_sources(sources: Sequence[_Source], entitlements: list[tuple[str, int]]) -> list[_Loaded]:
    """Load every source, in order; the first error (in input order) is raised.

    With several sources, one is loaded here while worker processes load the others. The one
    kept here is a RUM folder when there is one: its file contents are the bulk of the data,
    and sending them between processes would cost more than parsing them in parallel saves.
    """
    if not _parallel_ok(sources):
        return [_load_one(source, entitlements) for source in sources]
    kinds = [source.kind for source in sources]
    local = kinds.index("rum") if "rum" in kinds else len(sources) - 1
    workers = max(1, min(len(sources) - 1, (os.cpu_count() or 2) - 1))
    results: list[_Loaded | AirgapError | None] = [None] * len(sources)
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {
            index: pool.submit(_load_in_worker, source, entitlements)
            for index, source in enumerate(sources)
            if index != local
        }
        try:
            results[local] = _load_one(sources[local], entitlements)
        except AirgapError as exc:
            results[local] = exc
        for index, future in futures.items():
            status, value = future.result()
            results[index] = _unflatten(*value) if status == "ok" else _error_from_worker(value)
    loaded: list[_Loaded] = []
    for result in results:
        if isinstance(result, AirgapError):
            raise result
        assert result is not None
        loaded.append(result)
    return loaded


# --- building items ------------------------------------------------------------------------------


def _member_name(name: str, used: set[str]) -> str:
    """A file name safe as the last part of a member path, unique within one item."""
    clean = _NAME_UNSAFE.sub("_", name)[-_NAME_MAX:].lstrip(".") or "file"
    candidate, n = clean, 1
    while candidate.casefold() in used:
        n += 1
        candidate = f"{n}-{clean}"
    used.add(candidate.casefold())
    return candidate


def _request_items(
    plan_items: Sequence[PlanItem], blobs: Sequence[Sequence[bytes | Path]]
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
            member = f"files/{item_id}/{_member_name(path.name, used)}"
            members.append(member)
            files.append(PayloadFile(member, content))
            if isinstance(content, Path) and n < len(digests):
                expected[member] = digests[n]
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
