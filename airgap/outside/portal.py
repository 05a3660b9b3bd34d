"""`airgap outside portal-export` / `portal-import`: the Cisco path without API credentials.

Where a site has no Smart Licensing API client credentials, an operator does the Cisco items of
a request by hand in the CSSM web portal. `portal_export` verifies the request exactly as
`outside process` does (trust, replay rules, the claim), journals its portal items as handed to
the portal, and writes what the operator needs: the usage upload `UD_SA_<stamp>.tar.gz` (the
devices' RUM reports byte for byte, numbered `dev_1`, `dev_2`, … in request order), the
worksheet (`worksheet.csv`, `worksheet.html`) and `portal-export.json`. `portal_import` reads
back what the portal gave — ACK downloads, authorization codes saved under the worksheet's
names, returns ticked done in `worksheet.csv` —, matches every file to its request item,
refuses anything that does not fit with nothing written, and writes the signed response as
`outside process` would.

At-most-once holds across both paths: an exported item is SUBMITTED in the journal with the
export's reference, so `outside process` never sends it to the API, and an item the API path
already has is never exported. Queries and BIG-IQ items are left for `outside process`.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from airgap.bundle import OpenedBundle
from airgap.errors import ConfigError, InputError, ItemCode, PortalFileError
from airgap.formats.cssm import (
    DeviceUsage,
    read_ack_download,
    stamp_for,
    usage_document,
    write_usage_upload,
)
from airgap.formats.rum import parse_rum_file
from airgap.formats.smartlicense import (
    ack_report_ids,
    ack_udis,
    authorization_udi,
    is_ack,
)
from airgap.fsutil import atomic_write_bytes
from airgap.home import Home
from airgap.model import RequestItem, action
from airgap.outside.handling import (
    PORTAL_VIA,
    ProcessResult,
    admit,
    claim_owner,
    opened_request,
    portal_note,
    portal_ref,
    request_facts,
    write_response,
)
from airgap.outside.journal import ItemState, Journal, JournalItem
from airgap.outside.vendor import Outcome
from airgap.outside.worksheet import (
    PORTAL_ACTIONS,
    code_file_name,
    read_csv,
    render_csv,
    render_html,
    tasks_for,
)
from airgap.review import require_home_role
from airgap.units import format_timestamp, parse_timestamp, utc_now

__all__ = [
    "CODES_DIR",
    "EXPORT_RECORD",
    "ExportResult",
    "PortalImportResult",
    "portal_export",
    "portal_import",
]

EXPORT_RECORD: Final = "portal-export.json"
WORKSHEET_CSV: Final = "worksheet.csv"
WORKSHEET_HTML: Final = "worksheet.html"
CODES_DIR: Final = "codes"
RECORD_FORMAT: Final = "airgap-portal-export/1"
CODE_LIMIT: Final = 1024 * 1024  # bytes of one saved authorization code
WORKSHEET_LIMIT: Final = 16 * 1024 * 1024  # bytes of worksheet.csv
_USAGE_UPLOAD: Final = re.compile(r"UD_SA_[0-9A-Za-z_]{1,64}\.tar\.gz")

Clock = Callable[[], datetime]


# --- export ------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    """What `portal_export` did: the items exported (now or before), the files written, and
    the items left for `outside process`."""

    request_id: str
    request_sha256: str
    out_dir: Path
    exports: list[dict[str, Any]]  # {"export_id", "exported_at", "usage_file", "items"}
    items: list[dict[str, Any]]  # every exported item: id, action, export, device id, save as
    left: list[dict[str, str]]  # {"id", "action", "why"}: not the portal's to do
    files: list[Path]
    new_items: int  # exported by this run (0: a repeat that wrote the same files again)

    @property
    def repeated(self) -> bool:
        """True when this run exported nothing new and only wrote the files again."""
        return self.new_items == 0 and bool(self.items)


def portal_export(
    home: Home, request: Path, out_dir: Path, *, clock: Clock = utc_now
) -> ExportResult:
    """Verify a request and write the CSSM portal's files and worksheet for its Cisco items.

    Items are journaled as handed to the portal (NEW → SUBMITTED, reference: export id, device
    id or file name) in one commit before any file is written. A second export of the same
    request exports nothing again and writes the same files (same bytes); it says when the
    items were exported.

    Args:
        home: an outside home.
        request: the request bundle (or the first of its parts).
        out_dir: where the files go (created if absent).
        clock: the current time (for tests).

    Raises:
        VerificationError: the request was refused (exit 3; E_REPLAY for a replay).
        PortalFileError: (E_PORTAL) a usage report the portal cannot take as it is.
        ConfigError: not an outside home, or the folder cannot be written.
        Busy: another airgap process holds the request.

    Returns:
        What was exported and written.
    """
    require_home_role(home, "outside")
    smart_account = str(home.config.get("cisco.smart_account") or "")
    default_va = str(home.config.get("cisco.virtual_account") or "Default")
    _make_dir(out_dir)
    with opened_request(home, request, action="portal-export") as opened:
        bundle_id = opened.manifest.bundle_id
        items = [RequestItem.from_json(item) for item in opened.items]
        numbers = _device_numbers(items)
        with Journal.open(home.paths.state_db) as journal:
            admit(home, journal, opened, request, action="portal-export")
            with journal.claim(bundle_id, claim_owner("outside portal-export")):
                entries = {entry.item_id: entry for entry in journal.items(bundle_id)}
                documents = _usage_documents(opened, items, entries)
                fresh = [
                    item
                    for item in items
                    if item.action in PORTAL_ACTIONS and entries[item.id].state is ItemState.NEW
                ]
                if fresh:
                    refs = _export_refs(fresh, entries, numbers, clock())
                    for entry in journal.mark_exported_many(bundle_id, refs):
                        entries[entry.item_id] = entry
                exported = [item for item in items if portal_ref(entries[item.id]) is not None]
                result = _write_export(
                    opened,
                    request,
                    out_dir,
                    items,
                    exported,
                    entries,
                    documents,
                    smart_account=smart_account,
                    default_va=default_va,
                    new_items=len(fresh),
                )
                _audit_export(home, opened, request, result)
    return result


def _audit_export(home: Home, opened: OpenedBundle, request: Path, result: ExportResult) -> None:
    manifest = opened.manifest
    home.audit().append(
        "portal_export",
        outcome="ok",
        bundle_id=manifest.bundle_id,
        manifest_sha256=opened.manifest_sha256,
        details={
            "request": request_facts(opened, request),
            "exports": result.exports,
            "new_items": result.new_items,
            "items": {item["id"]: item["export"] for item in result.items},
            "left_for_process": [item["id"] for item in result.left],
            "files": [path.name for path in result.files],
        },
    )


def _device_numbers(items: Sequence[RequestItem]) -> dict[str, str]:
    """Item id → its usage device id: 1, 2, … over the request's usage items, in request order.

    A function of the request alone, so every export of it numbers its devices the same way.
    """
    usage = [item for item in items if item.action == "cisco.report_usage"]
    return {item.id: str(number) for number, item in enumerate(usage, start=1)}


def _usage_documents(
    opened: OpenedBundle, items: Sequence[RequestItem], entries: Mapping[str, JournalItem]
) -> dict[str, bytes]:
    """Item id → its `dev_<id>` file, for the usage items the portal has or will have."""
    documents: dict[str, bytes] = {}
    for item in items:
        if item.action != "cisco.report_usage":
            continue
        entry = entries[item.id]
        if entry.state is not ItemState.NEW and portal_ref(entry) is None:
            continue  # the API path has it
        if len(item.files) != 1:
            raise PortalFileError(
                f"item {item.id} carries {len(item.files)} usage files; the portal's usage "
                "upload takes one file per device",
                hint="Send this request with `airgap outside process`, or pack one report "
                "file per item.",
            )
        documents[item.id] = usage_document(opened.file_path(item.files[0]).read_bytes())
    return documents


def _export_refs(
    fresh: Sequence[RequestItem],
    entries: Mapping[str, JournalItem],
    numbers: Mapping[str, str],
    moment: datetime,
) -> dict[str, dict[str, str]]:
    """The journal references of the items exported now (one export: one id, one stamp)."""
    taken = {str(ref.get("export")) for e in entries.values() if (ref := portal_ref(e))}
    while stamp_for(moment) in taken:  # two exports in one second: the file names must differ
        moment += timedelta(seconds=1)
    stamp = stamp_for(moment)
    base = {"via": PORTAL_VIA, "export": stamp, "exported_at": format_timestamp(moment)}
    refs: dict[str, dict[str, str]] = {}
    for item in fresh:
        ref = dict(base)
        if item.action == "cisco.report_usage":
            ref.update(
                device_id=numbers[item.id],
                device_file=f"dev_{numbers[item.id]}_{stamp}.txt",
                usage_file=f"UD_SA_{stamp}.tar.gz",
            )
        elif item.action in ("cisco.reserve", "cisco.slr_reserve"):
            ref["save_as"] = code_file_name(item)
        refs[item.id] = ref
    return refs


def _left_reason(item: RequestItem, entry: JournalItem) -> str | None:
    """Why an item is not on the worksheet, or None if it is the portal's."""
    if portal_ref(entry) is not None:
        return None
    if item.action not in PORTAL_ACTIONS:
        if action(item.action).vendor != "cisco":
            return "not Cisco: the CSSM portal does Cisco's items only"
        return "a query: it needs the Smart Licensing API"
    return "already with `outside process` (the API) when the request was exported"


def _write_export(
    opened: OpenedBundle,
    request: Path,
    out_dir: Path,
    items: Sequence[RequestItem],
    exported: Sequence[RequestItem],
    entries: Mapping[str, JournalItem],
    documents: Mapping[str, bytes],
    *,
    smart_account: str,
    default_va: str,
    new_items: int,
) -> ExportResult:
    """Write every file of the request's exports; the bytes depend on the journal's export
    references and the request alone, so a repeat writes the same files."""
    refs = {item.id: dict(portal_ref(entries[item.id]) or {}) for item in exported}
    exports: dict[str, dict[str, Any]] = {}
    for item in exported:
        ref = refs[item.id]
        exports.setdefault(
            ref["export"],
            {
                "export_id": ref["export"],
                "exported_at": ref["exported_at"],
                "usage_file": None,
                "items": 0,
            },
        )["items"] += 1
        if item.action == "cisco.report_usage":
            exports[ref["export"]]["usage_file"] = ref["usage_file"]
    written: list[Path] = []
    for export_id, export in sorted(exports.items()):
        devices = [
            DeviceUsage(refs[item.id]["device_id"], documents[item.id])
            for item in exported
            if item.action == "cisco.report_usage" and refs[item.id]["export"] == export_id
        ]
        if devices:
            moment = parse_timestamp(export["exported_at"])
            with _writing(out_dir):
                upload = write_usage_upload(
                    out_dir,
                    devices,
                    stamp=export_id,
                    mtime=int(moment.timestamp()),
                    smart_account=smart_account,
                    virtual_account=default_va,
                )
            written.append(upload)
    tasks = tasks_for(
        exported,
        smart_account=smart_account or "(your smart account)",
        default_virtual_account=default_va,
        usage_file=None,
        device_files={
            i.id: refs[i.id]["device_file"] for i in exported if "device_file" in refs[i.id]
        },
        usage_files={
            i.id: refs[i.id]["usage_file"] for i in exported if "usage_file" in refs[i.id]
        },
    )
    left = [
        {"id": item.id, "action": item.action, "why": why}
        for item in items
        if (why := _left_reason(item, entries[item.id])) is not None
    ]
    uploads = [str(e["usage_file"]) for _, e in sorted(exports.items()) if e["usage_file"]]
    manifest = opened.manifest
    command = (
        f"airgap outside portal-import {request} --from {out_dir} "
        f"-o resp-{manifest.bundle_id[:8]}.airgap"
    )
    html = render_html(
        tasks,
        request_id=manifest.bundle_id,
        request_sha256=opened.manifest_sha256,
        usage_file=", ".join(uploads) or None,
        import_command=command,
        left=[(e["id"], e["action"], e["why"]) for e in left],
    )
    listed = [
        {
            "id": item.id,
            "action": item.action,
            "hostname": item.hostname,
            "udi": None if item.udi is None else {"pid": item.udi[0], "sn": item.udi[1]},
            **{k: v for k, v in sorted(refs[item.id].items()) if k != "via"},
        }
        for item in exported
    ]
    export_list = [export for _, export in sorted(exports.items())]
    record = {
        "format": RECORD_FORMAT,
        "request": {"bundle_id": manifest.bundle_id, "manifest_sha256": opened.manifest_sha256},
        "smart_account": smart_account,
        "virtual_account": default_va,
        "exports": export_list,
        "items": listed,
        "left_for_process": left,
        "import": command,
    }
    outputs = {
        WORKSHEET_CSV: render_csv(tasks).encode("utf-8"),
        WORKSHEET_HTML: html.encode("utf-8"),
        EXPORT_RECORD: (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8"),
    }
    for name, data in outputs.items():
        path = out_dir / name
        with _writing(out_dir):
            atomic_write_bytes(path, data)
        written.append(path)
    if any(item.action in ("cisco.reserve", "cisco.slr_reserve") for item in exported):
        _make_dir(out_dir / CODES_DIR)  # where the operator saves the codes
    return ExportResult(
        request_id=manifest.bundle_id,
        request_sha256=opened.manifest_sha256,
        out_dir=out_dir,
        exports=export_list,
        items=listed,
        left=left,
        files=written,
        new_items=new_items,
    )


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror or exc}") from exc


@contextmanager
def _writing(out_dir: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise ConfigError(
            f"cannot write into {out_dir}: {exc.strerror or exc}",
            hint="The items are recorded as exported; run portal-export again with a writable "
            "folder to write the same files.",
        ) from exc


# --- import ------------------------------------------------------------------------------------


@dataclass
class PortalImportResult(ProcessResult):
    """A response written from portal files, and which file answered which item."""

    matched: list[dict[str, str]] = field(default_factory=list)  # {"item", "file", "kind"}


@dataclass
class _Found:
    """What the import folder holds, matched to the request's exported items."""

    acks: dict[str, dict[tuple[str, str], tuple[str, bytes]]] = field(default_factory=dict)
    codes: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    returns: dict[str, int] = field(default_factory=dict)  # item → worksheet.csv line
    reported: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # item → its UDIs


def portal_import(
    home: Home,
    request: Path,
    from_dir: Path,
    *,
    output: Path | None = None,
    split: int | None = None,
) -> PortalImportResult:
    """Read what the CSSM portal gave back, match it to the request, and write the response.

    Reads from `from_dir`: ACK downloads (`*.tar.gz`; the usage upload `UD_SA_*.tar.gz` is
    skipped), authorization codes under `codes/` named as the worksheet says, and
    `worksheet.csv`, whose `done` cell marks a return done. Every file must fit an exported
    item of this request, or nothing is written: no journal change, no response. Items with
    their files become DONE; the rest stay pending (exit 4) for a later import.

    Args:
        home: an outside home.
        request: the request bundle (the one that was exported).
        from_dir: the folder holding the portal's files.
        output: the response file (default `resp-<id>-<n>.airgap`).
        split: bytes per part, to write the response as parts.

    Raises:
        VerificationError: the request was refused (exit 3; E_REPLAY for a replay).
        PortalFileError: (E_PORTAL) a file that is not what it claims or fits no exported item
            (an ACK for a device not in the export, two different ACKs for one report, a code
            naming another UDI, an unsafe tar), or a request never exported from this home.
        ConfigError: not an outside home; `from_dir` is not a folder.
        Busy: another airgap process holds the request.

    Returns:
        The response written, with every item's status and the files matched.
    """
    require_home_role(home, "outside")
    if not from_dir.is_dir():
        raise ConfigError(f"{from_dir} is not a folder", hint="Give --from the export folder.")
    signer = home.signer()  # ask for a passphrase before any work
    with opened_request(home, request, action="portal-import") as opened:
        bundle_id = opened.manifest.bundle_id
        items = {str(item["id"]): RequestItem.from_json(item) for item in opened.items}
        with Journal.open(home.paths.state_db) as journal:
            if journal.request(bundle_id) is None:
                never = PortalFileError(
                    f"request {bundle_id} was never exported from this home",
                    hint="Run `airgap outside portal-export` on it first (in this home).",
                )
                _audit_refusal(home, request, bundle_id, never)
                raise never
            admit(home, journal, opened, request, action="portal-import")
            with journal.claim(bundle_id, claim_owner("outside portal-import")):
                entries = {entry.item_id: entry for entry in journal.items(bundle_id)}
                try:
                    found = _read_folder(from_dir, opened, items, entries)
                    outcomes, matched = _outcomes(items, entries, found)
                except PortalFileError as exc:
                    _audit_refusal(home, request, bundle_id, exc)
                    raise
                for entry in journal.record_outcomes_many(bundle_id, outcomes):
                    entries[entry.item_id] = entry
                transient = _pending_notes(items, entries, found, from_dir)
                result = write_response(
                    home,
                    journal,
                    opened,
                    list(entries.values()),
                    transient,
                    signer=signer,
                    request=request,
                    output=output,
                    split=split,
                    event="portal_import",
                    vendor_calls=False,
                )
    return PortalImportResult(**vars(result), matched=matched)


def _audit_refusal(home: Home, request: Path, bundle_id: str, exc: PortalFileError) -> None:
    home.audit().append(
        "refusal",
        outcome="refused",
        bundle_id=bundle_id,
        details={
            "action": "portal-import",
            "file": request.name,
            "code": exc.code,
            "reason": exc.message,
        },
    )


def _udi_text(udi: tuple[str, str]) -> str:
    return f"{udi[0]}:{udi[1]}"


def _read_folder(
    folder: Path,
    opened: OpenedBundle,
    items: Mapping[str, RequestItem],
    entries: Mapping[str, JournalItem],
) -> _Found:
    """Read and match every portal file in the folder; refuse the first that does not fit."""
    refs = {item_id: ref for item_id, e in entries.items() if (ref := portal_ref(e)) is not None}
    found = _Found()
    by_device = {
        str(ref["device_id"]): item_id for item_id, ref in refs.items() if "device_id" in ref
    }
    for path in sorted(folder.iterdir()):
        if not path.name.endswith(".tar.gz") or _USAGE_UPLOAD.fullmatch(path.name):
            continue
        _require_regular(path, folder)
        _read_acks(path, opened, items, by_device, found)
    codes = folder / CODES_DIR
    if codes.exists() or codes.is_symlink():
        _require_dir(codes, folder)
        by_name = {
            str(ref["save_as"]): item_id for item_id, ref in refs.items() if "save_as" in ref
        }
        for path in sorted(codes.iterdir()):
            if path.name.startswith("."):
                continue  # editor and desktop droppings (.DS_Store, .swp)
            _read_code(path, folder, items, by_name, found)
    sheet = folder / WORKSHEET_CSV
    if sheet.exists() or sheet.is_symlink():
        _require_regular(sheet, folder)
        _read_worksheet(sheet, items, refs, found)
    return found


def _require_regular(path: Path, folder: Path) -> None:
    mode = path.lstat().st_mode
    if not stat.S_ISREG(mode):
        kind = "a link" if stat.S_ISLNK(mode) else "not a regular file"
        raise PortalFileError(
            f"{path.relative_to(folder)} is {kind}; portal files are read only as plain files",
            hint="Save the file the portal gave in the folder itself.",
        )


def _require_dir(path: Path, folder: Path) -> None:
    if not stat.S_ISDIR(path.lstat().st_mode):
        raise PortalFileError(
            f"{path.relative_to(folder)} is not a plain folder (a link?)",
            hint="Save the codes in a folder named codes beside the worksheet.",
        )


def _report_facts(opened: OpenedBundle, item: RequestItem) -> tuple[set[tuple[str, str]], set[int]]:
    """The devices and report ids of a usage item's report file, as the request carries it."""
    udis: set[tuple[str, str]] = set()
    report_ids: set[int] = set()
    for member in item.files:
        try:
            rum = parse_rum_file(opened.file_path(member))
        except InputError as exc:  # verified and signed by the inside; a bug if it happens
            raise PortalFileError(
                f"item {item.id}: its report cannot be read ({exc.message})"
            ) from exc
        for report in rum.reports:
            udis.add(report.udi)
            if report.report_id is not None:
                report_ids.add(int(report.report_id))
    return udis, report_ids


def _read_acks(
    path: Path,
    opened: OpenedBundle,
    items: Mapping[str, RequestItem],
    by_device: Mapping[str, str],
    found: _Found,
) -> None:
    for ack in read_ack_download(path):
        source = f"{path.name}/{ack.name}"
        item_id = by_device.get(ack.device_id)
        if item_id is None:
            raise PortalFileError(
                f"{source}: an ACK for device file dev_{ack.device_id}, which no exported item "
                "of this request has",
                hint="This ACK belongs to another export or request; keep it out of the folder.",
            )
        item = items[item_id]
        try:
            acked, acked_ids = ack_udis(ack.data), ack_report_ids(ack.data)
        except InputError as exc:
            raise PortalFileError(f"{source}: {exc.message}") from exc
        udis, report_ids = _report_facts(opened, item)
        found.reported[item_id] = udis
        strangers = sorted(set(acked) - udis)
        if not acked or strangers:
            named = ", ".join(_udi_text(u) for u in strangers) or "no device"
            raise PortalFileError(
                f"{source}: acknowledges {named}, but device file dev_{ack.device_id} (item "
                f"{item_id}) reports {', '.join(sorted(_udi_text(u) for u in udis))}",
                hint="This ACK is not the portal's answer to this export's usage file.",
            )
        unknown = sorted(acked_ids - report_ids) if report_ids else []
        if unknown:
            raise PortalFileError(
                f"{source}: acknowledges report ids {unknown}, which device file "
                f"dev_{ack.device_id} (item {item_id}) does not hold",
                hint="This ACK is not the portal's answer to this export's usage file.",
            )
        mine = found.acks.setdefault(item_id, {})
        for udi in acked:
            earlier = mine.get(udi)
            if earlier is not None and earlier[1] != ack.data:
                raise PortalFileError(
                    f"two different ACKs for one report (item {item_id}, {_udi_text(udi)}): "
                    f"{earlier[0]} and {source}",
                    hint="One report gets one acknowledgement; keep only the ACK download the "
                    "portal gave for this upload.",
                )
            mine[udi] = (source, ack.data)


def _read_code(
    path: Path,
    folder: Path,
    items: Mapping[str, RequestItem],
    by_name: Mapping[str, str],
    found: _Found,
) -> None:
    name = f"{CODES_DIR}/{path.name}"
    _require_regular(path, folder)
    item_id = by_name.get(name)
    if item_id is None:
        raise PortalFileError(
            f"{name} is not a file the worksheet asks for",
            hint="Save each code under the exact name in its worksheet row (save_as); remove "
            "files that belong elsewhere.",
        )
    try:
        with path.open("rb") as handle:
            code = handle.read(CODE_LIMIT + 1)
    except OSError as exc:
        raise PortalFileError(f"{name}: cannot read ({exc.strerror or exc})") from exc
    if len(code) > CODE_LIMIT:
        raise PortalFileError(f"{name}: larger than an authorization code may be ({CODE_LIMIT})")
    if is_ack(code):
        raise PortalFileError(
            f"{name}: a usage ACK, not an authorization code",
            hint="ACK downloads go into the folder itself, as the .tar.gz the portal gave.",
        )
    udi = authorization_udi(code)
    if udi is None:
        raise PortalFileError(
            f"{name}: not an authorization code (it names no <udi>)",
            hint="Download the code again from the portal and save it under this name.",
        )
    item = items[item_id]
    if item.udi is not None and udi != item.udi:
        raise PortalFileError(
            f"{name}: the code is for {_udi_text(udi)}, but item {item_id} is "
            f"{_udi_text(item.udi)}",
            hint="The code was saved under another device's name; save each code under the name "
            "in its own worksheet row.",
        )
    found.codes[item_id] = (name, code)


def _read_worksheet(
    sheet: Path,
    items: Mapping[str, RequestItem],
    refs: Mapping[str, Mapping[str, Any]],
    found: _Found,
) -> None:
    try:
        with sheet.open("rb") as handle:
            raw = handle.read(WORKSHEET_LIMIT + 1)
        if len(raw) > WORKSHEET_LIMIT:
            raise PortalFileError(f"{WORKSHEET_CSV}: larger than a worksheet may be")
        rows = read_csv(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PortalFileError(f"{WORKSHEET_CSV}: not the worksheet airgap wrote ({exc})") from exc
    for row in rows:
        if not row.done:
            continue
        cells = row.cells
        item = items.get(cells.get("item", ""))
        where = f"{WORKSHEET_CSV} line {row.line}"
        if item is None or item.id not in refs:
            raise PortalFileError(
                f"{where}: item {cells.get('item')!r} was not exported for the portal from this "
                "request",
                hint="This worksheet belongs to another request or export.",
            )
        pid, sn = item.udi or ("", "")
        expected = {"action": item.action, "pid": pid, "sn": sn}
        if item.action == "cisco.return":
            expected["code"] = str(item.params.get("return_code", ""))
        changed = [k for k, v in expected.items() if cells.get(k, "") != v]
        if changed:
            raise PortalFileError(
                f"{where}: the row's {', '.join(changed)} do not match item {item.id} of the "
                "request",
                hint="This worksheet belongs to another request, or the row was edited; only "
                "the done column is for the operator.",
            )
        if item.action == "cisco.return":
            found.returns[item.id] = row.line


def _outcomes(
    items: Mapping[str, RequestItem], entries: Mapping[str, JournalItem], found: _Found
) -> tuple[dict[str, Outcome], list[dict[str, str]]]:
    """The outcome of every exported item whose files are all here; refuse a file that
    contradicts what an earlier import already answered."""
    outcomes: dict[str, Outcome] = {}
    matched: list[dict[str, str]] = []
    for item_id, item in items.items():
        entry = entries[item_id]
        ref = portal_ref(entry)
        if ref is None:
            continue
        outcome, sources = _outcome_for(item, found)
        if outcome is None:
            continue
        if entry.state is ItemState.DONE:
            if dict(entry.files) != dict(outcome.files):
                raise PortalFileError(
                    f"item {item_id} was answered by an earlier portal-import, and "
                    f"{', '.join(sources)} differs from what it brought",
                    hint="One report gets one acknowledgement and one device one code; keep "
                    "the files of the earlier import, or remove the new ones.",
                )
            continue
        if entry.state is not ItemState.SUBMITTED:
            continue
        outcomes[item_id] = outcome
        matched.extend({"item": item_id, "file": s, "kind": item.action} for s in sources)
    return outcomes, matched


def _outcome_for(item: RequestItem, found: _Found) -> tuple[Outcome | None, list[str]]:
    """The outcome the files found give an item, and their names; (None, []) if incomplete."""
    if item.action == "cisco.report_usage":
        acks = found.acks.get(item.id, {})
        if not acks or set(acks) != found.reported.get(item.id):
            return None, []  # a device of the report file is not acknowledged yet
        primary = acks.get(item.udi) if item.udi else None
        first_udi = next(iter(sorted(acks)))
        main = primary or acks[first_udi]
        result: dict[str, Any] = {
            "acknowledgements": [
                {"udi": _udi_text(udi), "status": "SUCCESS", "status_message": None}
                for udi in sorted(acks)
            ],
            "via": PORTAL_VIA,
        }
        others = {
            _udi_text(udi): data.decode("utf-8", "replace")
            for udi, (_, data) in sorted(acks.items())
            if data != main[1]
        }
        if others:
            result["other_acks"] = others
        sources = sorted({source for source, _ in acks.values()})
        return (
            Outcome.ok(result, files={"ack.xml": main[1]}, vendor_ref={"portal_file": main[0]}),
            sources,
        )
    if item.action in ("cisco.reserve", "cisco.slr_reserve"):
        code = found.codes.get(item.id)
        if code is None:
            return None, []
        name = "lic.txt" if item.action == "cisco.reserve" else "slr-auth.txt"
        udi = authorization_udi(code[1])
        result = {"udi": _udi_text(udi) if udi else None, "via": PORTAL_VIA}
        return (
            Outcome.ok(result, files={name: code[1]}, vendor_ref={"portal_file": code[0]}),
            [code[0]],
        )
    if item.action == "cisco.return" and item.id in found.returns:
        line = found.returns[item.id]
        pid, sn = item.udi or ("", "")
        document = {
            "udi": {"pid": pid, "sn": sn},
            "hostname": item.hostname,
            "status": "RETURNED",
            "return_code": item.params.get("return_code"),
            "confirmed_by": "the operator in the CSSM portal, ticked done in worksheet.csv",
        }
        data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
        source = f"{WORKSHEET_CSV} line {line}"
        return (
            Outcome.ok(
                {"auth_status": "RETURNED", "via": PORTAL_VIA},
                files={"return.json": data},
                vendor_ref={"portal_file": source},
            ),
            [source],
        )
    return None, []


def _pending_notes(
    items: Mapping[str, RequestItem],
    entries: Mapping[str, JournalItem],
    found: _Found,
    folder: Path,
) -> dict[str, dict[str, str]]:
    """Why each item still pending after this import is pending, for the response."""
    notes: dict[str, dict[str, str]] = {}
    for item_id, item in items.items():
        entry = entries[item_id]
        if entry.state in (ItemState.DONE, ItemState.FAILED, ItemState.NEEDS_ATTENTION):
            continue
        ref = portal_ref(entry)
        if ref is None:
            if entry.state is ItemState.NEW:
                notes[item_id] = {
                    "code": ItemCode.PENDING,
                    "message": "not the portal's to do: `airgap outside process` does it",
                }
            continue
        note = portal_note(ref)
        if item.action == "cisco.report_usage":
            note["message"] = (
                f"no ACK for device file {ref.get('device_file')} in {folder.name} yet: upload "
                f"{ref.get('usage_file')} in the portal and save the ACK download there; "
                + note["message"]
            )
        elif "save_as" in ref:
            note["message"] = f"no code saved as {ref['save_as']} yet; " + note["message"]
        else:
            note["message"] = f"not ticked done in {WORKSHEET_CSV} yet; " + note["message"]
        notes[item_id] = note
    return notes
