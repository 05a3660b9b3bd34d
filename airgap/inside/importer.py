"""`airgap inside import`: verify a response, match it to its request, write per-device outputs.

Order of work, so that a refusal writes nothing: verify the bundle (trust, threshold, role,
expiry, every reading rule), match `in_reply_to` to a request this home packed, check every
response item against its request item, work out every output path and compare with what is
already there, and only then write the files (each atomically), record the new item states in
state.db and log the import in the audit log.

An import killed at any point (`kill -9`) is finished by running it again: the temporary files
it left beside outputs are removed, the INSTRUCTIONS.md and summary.json it wrote are known as
its own (their hashes are noted in state.db before writing), and an import recorded in state.db
but missing from the audit log is logged then, marked `recovered`.

Outputs go under `OUT/<first 8 characters of the request id>/`; which files a response item of
each action may carry, which one it cannot be without and where they land is the catalogue's
(`airgap.model`) to say, by the item's action and the file's name (the outside stores them as
`files/<item id>/<name>`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airgap.audit import AuditLog
from airgap.bundle import OpenedBundle, open_bundle
from airgap.errors import ConfigError, InputError, Replay, SchemaError, UnknownRequest
from airgap.fsutil import atomic_write_bytes, sync_filesystem
from airgap.home import Home
from airgap.inside.instructions import (
    ItemView,
    RequestView,
    count_statuses,
    render_instructions,
    summary_bytes,
)
from airgap.inside.state import (
    FINAL_STATUSES,
    ApplyRecord,
    InsideState,
    ItemRecord,
    RequestRecord,
    ResponseRecord,
    now_text,
)
from airgap.model import ACTIONS, RequestItem, ResponseItem, device_key, normalize_mac, udi_key
from airgap.review import audited_refusal, identity_for, require_home_role

REPORTS = ("INSTRUCTIONS.md", "summary.json")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_TEMP_NAME = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")  # tempfile.mkstemp names of fsutil


class ResponseMismatch(SchemaError):
    """A response item does not fit the request it claims to answer (wrong item, action,
    device or files). Code `E_SCHEMA`, exit 3: the response is refused as a whole."""


@dataclass(frozen=True)
class ImportResult:
    """What an import did: where outputs went and where every item of the request stands."""

    response_id: str
    response_sha256: str
    request_id: str
    out_dir: Path
    counts: dict[str, int]
    already_imported: bool
    partial: bool
    items: list[dict[str, Any]] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The result as plain JSON types (for `--json`)."""
        return {
            "response_id": self.response_id,
            "response_sha256": self.response_sha256,
            "request_id": self.request_id,
            "out": str(self.out_dir),
            "counts": self.counts,
            "already_imported": self.already_imported,
            "partial": self.partial,
            "items": self.items,
            "written": self.written,
            "unchanged": self.unchanged,
            "stale": self.stale,
        }


@dataclass(frozen=True)
class _Member:
    """A verified payload member of the response, read from the bundle's spool when needed:
    a response of 100,000 files is not held in memory between checking and writing."""

    path: str
    sha256: str
    size: int


_Data = bytes | _Member  # what an output file will hold


def _data(opened: OpenedBundle, source: _Data) -> bytes:
    return opened.member_bytes(source.path) if isinstance(source, _Member) else source


def _sha256(source: _Data) -> str:
    return source.sha256 if isinstance(source, _Member) else hashlib.sha256(source).hexdigest()


def _size(source: _Data) -> int:
    return source.size if isinstance(source, _Member) else len(source)


@dataclass
class _Answer:
    """One response item, checked, with its files (by name)."""

    item: ResponseItem
    request_item: RequestItem
    files: dict[str, _Member]  # name -> member

    @property
    def status(self) -> str:
        return self.item.status

    def stored_result(self) -> dict[str, Any]:
        return {
            "result": dict(self.item.result),
            "files": {n: m.sha256 for n, m in sorted(self.files.items())},
            "vendor_refs": dict(self.item.vendor_refs),
        }


@dataclass
class _Plan:
    """Everything an import will do, worked out before anything is written."""

    request: RequestRecord
    request_dir: Path
    updates: dict[str, ItemRecord]
    targets: dict[Path, _Data]
    unchanged: list[Path]
    stale: list[str]
    views: list[ItemView]


def import_response(home: Home, response: Path, *, out: Path) -> ImportResult:
    """Verify a response bundle and write its outputs for the operator.

    Args:
        home: an inside home.
        response: the response bundle from `airgap outside process`.
        out: the output folder; files go under `out/<request id prefix>/`.

    Raises:
        VerificationError: the bundle is refused (signature, trust, threshold, role, expiry,
            hashes, schema, unsafe member, …); the refusal is logged in the audit log.
        UnknownRequest: `in_reply_to` names no request this home packed, or its manifest hash
            differs (`E_UNKNOWN_REQUEST`).
        ResponseMismatch: an item answers no item of the request, or has another action,
            device or unexpected files (`E_SCHEMA`).
        Replay: the response would change an item that is already final, or its bundle id was
            imported before with other content (`E_REPLAY`).
        ConfigError: not an inside home, state.db cannot be used, or an output path already
            holds a different file (nothing is written then).

    Returns:
        Where the outputs went and the state of every item of the request.
    """
    require_home_role(home, "inside")
    audit = home.audit()
    with InsideState(home.paths.state_db) as state:
        with audited_refusal(home, "import", response):
            identity = identity_for(home, response)
            with open_bundle(
                response,
                home.policy(expected_kind="response"),
                identity=identity,
                limits=home.limits(),
                spool_files=True,  # one temp file for every member, not one file each
            ) as opened:
                request = _match_request(state, opened)
                previous = state.response(opened.manifest.bundle_id)
                if previous is not None:
                    if previous.manifest_sha256 != opened.manifest_sha256:
                        raise Replay(
                            f"response {opened.manifest.bundle_id} was imported before with "
                            f"another manifest ({previous.manifest_sha256[:16]}…); refusing "
                            "this copy",
                            hint="Two different files carry the same response id; ask the "
                            "outside which one it wrote.",
                        )
                    already = _already(state, request, previous)
                    _audit_if_missing(audit, opened, request, response, already)
                    return already
                answers = _check_items(opened, request)
                plan = _plan(state, request, answers, opened, out)
        _check_targets(state, plan)
        # Noted before writing: if this import is killed before it is recorded, the next one
        # knows the reports it left as its own (see `_check_targets`).
        state.note_pending_outputs(
            opened.manifest.bundle_id,
            {
                path: _sha256(data)
                for path, data in plan.targets.items()
                if path.name in REPORTS and path.parent == plan.request_dir
            },
        )
        _remove_stale_temp_files([*plan.targets, *plan.unchanged])
        written = _write_outputs(plan.targets, opened)
        imported_at = now_text()
        counts = count_statuses(plan.views)
        state.record_import(
            ResponseRecord(
                bundle_id=opened.manifest.bundle_id,
                manifest_sha256=opened.manifest_sha256,
                request_id=request.bundle_id,
                imported_at=imported_at,
                out_dir=str(plan.request_dir),
                counts=counts,
            ),
            list(plan.updates.values()),
            {path: _sha256(data) for path, data in plan.targets.items()},
        )
    manifest = opened.manifest
    audit.append(
        "import",
        bundle_id=manifest.bundle_id,
        manifest_sha256=opened.manifest_sha256,
        details={
            "file": response.name,
            "request_id": request.bundle_id,
            "request_manifest_sha256": request.manifest_sha256,
            "producer": dict(manifest.producer),
            "producer_audit_head": manifest.audit_head,
            "signers": [c.fingerprint for c in opened.signatures if c.status == "valid"],
            "items": opened.item_count,
            "counts": counts,
            "updated": len(plan.updates),
            "stale": len(plan.stale),
            "out": str(plan.request_dir),
            "files_written": len(written),
        },
    )
    return ImportResult(
        response_id=manifest.bundle_id,
        response_sha256=opened.manifest_sha256,
        request_id=request.bundle_id,
        out_dir=plan.request_dir,
        counts=counts,
        already_imported=False,
        partial=counts["ok"] != len(plan.views),
        items=_item_rows(plan.views),
        written=written,
        unchanged=[str(p) for p in plan.unchanged],
        stale=plan.stale,
    )


# --- matching ------------------------------------------------------------------------------------


def _match_request(state: InsideState, opened: OpenedBundle) -> RequestRecord:
    reply = opened.manifest.in_reply_to
    if not reply:
        raise UnknownRequest("the response names no request (in_reply_to is empty)")
    request = state.request(str(reply["bundle_id"]))
    if request is None:
        raise UnknownRequest(
            f"the response answers request {reply['bundle_id']}, which this home did not pack",
            hint="Import it in the inside home that packed the request (--home).",
        )
    if request.manifest_sha256 != reply["manifest_sha256"]:
        raise UnknownRequest(
            f"the response answers request {reply['bundle_id']} with manifest sha256 "
            f"{str(reply['manifest_sha256'])[:16]}…, but this home packed it as "
            f"{request.manifest_sha256[:16]}…",
            hint="The outside processed a different request under the same id; refuse it.",
        )
    return request


def _device_claims(document: Mapping[str, Any]) -> list[str]:
    """The devices a result or confirmation names, as device keys (`PID:SN` or a MAC)."""
    claims: list[str] = []
    udi = document.get("udi")
    if isinstance(udi, Mapping) and "pid" in udi and "sn" in udi:
        claims.append(udi_key(str(udi["pid"]), str(udi["sn"])))
    sudi = document.get("sudi")
    if isinstance(sudi, Mapping) and "udi_pid" in sudi and "udi_serial_number" in sudi:
        claims.append(udi_key(str(sudi["udi_pid"]), str(sudi["udi_serial_number"])))
    for key in ("mac", "macAddress"):
        value = document.get(key)
        if isinstance(value, str) and value:
            try:
                claims.append(normalize_mac(value))
            except InputError:
                claims.append(value)
    return claims


def _check_items(opened: OpenedBundle, request: RequestRecord) -> list[_Answer]:
    """Every response item must answer one request item, with its action, device and files."""
    by_id = {str(item["id"]): RequestItem.from_json(item) for item in request.items}
    answered: dict[str, str] = {}
    answers: list[_Answer] = []
    for raw in opened.iter_items():
        item = ResponseItem.from_json(raw)
        rid, target = item.id, item.request_item
        wanted = by_id.get(target)
        if wanted is None:
            raise ResponseMismatch(
                f"response item {rid} answers {target}, which is not an item of request "
                f"{request.bundle_id}"
            )
        if target in answered:
            raise ResponseMismatch(
                f"response items {answered[target]} and {rid} both answer request item {target}"
            )
        answered[target] = rid
        if item.action != wanted.action:
            raise ResponseMismatch(
                f"response item {rid} is a {item.action}, but request item {target} asked "
                f"for {wanted.action}"
            )
        files, read = _item_files(opened, item, wanted)
        _check_subject(item, wanted, read)
        answers.append(_Answer(item, wanted, files))
    return answers


def _check_subject(
    item: ResponseItem, wanted: RequestItem, files: Mapping[str, bytes | None]
) -> None:
    """The answer must be about the device (or registration key) the request item named."""
    rid, target = item.id, wanted.id
    entry = wanted.entry
    by = entry.dedupe_by
    if by not in ("device", "files", "params"):
        # A device-less item identified by a param (a registration key) must be answered
        # for that same value.
        claimed = item.result.get(by)
        asked = str(wanted.params.get(by, ""))
        if isinstance(claimed, str) and claimed.strip().upper() != asked.strip().upper():
            label = entry.label or f"{{{by}}}"
            raise ResponseMismatch(
                f"response item {rid} is for {label.format_map({by: claimed})}, but request "
                f"item {target} is for {label.format_map({by: asked})}"
            )
    key = wanted.device_key
    if key is None:
        return  # queries name many devices in their results; only device actions are checked
    documents: list[Mapping[str, Any]] = [item.result]
    for name, data in files.items():
        if data is not None and name.endswith(".json"):
            try:
                parsed = json.loads(data)
            except ValueError:
                raise ResponseMismatch(f"response item {rid}: {name} is not JSON") from None
            if isinstance(parsed, Mapping):
                documents.append(parsed)
    for document in documents:
        for claim in _device_claims(document):
            if claim != key:
                raise ResponseMismatch(
                    f"response item {rid} is about device {claim}, but request item "
                    f"{target} is for {key}"
                )


def _item_files(
    opened: OpenedBundle, item: ResponseItem, wanted: RequestItem
) -> tuple[dict[str, _Member], dict[str, bytes | None]]:
    """The item's files as spooled members, and the bytes of those `_check_subject` reads."""
    rid, entry = item.id, item.entry
    allowed = entry.response_files
    files: dict[str, _Member] = {}
    read: dict[str, bytes | None] = {}
    for member in item.files:
        name = member.rsplit("/", 1)[-1]
        if name not in allowed:
            expected = ", ".join(sorted(allowed)) or "none"
            raise ResponseMismatch(
                f"response item {rid} ({item.action}) carries {member}; expected files: {expected}"
            )
        if name in files:
            raise ResponseMismatch(f"response item {rid} carries two files named {name}")
        if item.status != "ok":
            raise ResponseMismatch(f"response item {rid} is {item.status} but carries {member}")
        data = opened.member_bytes(member)
        files[name] = _Member(member, hashlib.sha256(data).hexdigest(), len(data))
        read[name] = data if name.endswith(".json") else None
    required = entry.required_file
    if item.status == "ok" and required and required not in files:
        raise ResponseMismatch(
            f"response item {rid} ({item.action}) is ok but carries no {required} for device "
            f"{wanted.device_key}"
        )
    return files, read


# --- planning outputs ----------------------------------------------------------------------------


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("._") or "device"


def folders(items: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Each request item's output folder (relative to the request folder); queries have none.

    Each folder is under the action's vendor: Cisco devices go to `cisco/<hostname>`
    (`cisco/<PID>_<SN>` without a hostname; with the UDI appended when devices of an HA pair or
    stack share a hostname), BIG-IPs to `bigiq/<MAC with dashes>`, device-less actions named by
    a param (RegKey activations) to `bigiq/<regkey>`. Computed from the request alone, so every
    import of the same request agrees.
    """
    names: dict[str, str] = {}
    owners: dict[str, set[str]] = {}
    for item in items:
        entry = ACTIONS[str(item["action"])]
        device = item.get("device") or {}
        udi = device.get("udi")
        if isinstance(udi, Mapping):
            host = device.get("hostname")
            base = _safe(str(host)) if host else _safe(f"{udi['pid']}_{udi['sn']}")
            name = f"{entry.vendor}/{base}"
            owners.setdefault(name.casefold(), set()).add(udi_key(udi["pid"], udi["sn"]))
        elif device.get("mac"):
            name = f"{entry.vendor}/" + str(device["mac"]).replace(":", "-")
        elif entry.folder_param:
            value = item["params"].get(entry.folder_param, item["id"])
            name = f"{entry.vendor}/{_safe(str(value))}"
        else:
            continue
        names[str(item["id"])] = name
    for item in items:
        item_id = str(item["id"])
        shared = names.get(item_id)
        if shared is None or len(owners.get(shared.casefold(), ())) < 2:
            continue
        udi = item["device"]["udi"]
        names[item_id] = f"{shared}_{_safe(udi['pid'])}_{_safe(udi['sn'])}"
    return names


def _file_numbers(items: Sequence[Mapping[str, Any]], where: Mapping[str, str]) -> dict[str, int]:
    """`n` of `ack-<n>.xml`: items with a numbered file (usage reports) of one device folder,
    counted in request order."""
    numbers: dict[str, int] = {}
    seen: dict[str, int] = {}
    for item in items:
        if ACTIONS[str(item["action"])].numbered_file:
            folder = where.get(str(item["id"]), "")
            seen[folder] = seen.get(folder, 0) + 1
            numbers[str(item["id"])] = seen[folder]
    return numbers


def _pretty(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _outputs_for(answer: _Answer, folder: str | None, number: int | None) -> dict[str, _Data]:
    """Relative output path -> what it will hold, for one `ok` answer."""
    entry = answer.item.entry
    item_id = answer.item.request_item
    files: dict[str, _Data] = dict(answer.files)
    if entry.result_file and entry.result_file not in files:
        # A confirmation or query answer the outside sent as the item's result.
        files[entry.result_file] = _pretty(dict(answer.item.result))
    if entry.query:
        return {f"queries/{item_id}.json": files[str(entry.result_file)]}
    if folder is None:  # pragma: no cover - every other action has a folder
        raise ResponseMismatch(f"request item {item_id} has no device to write outputs for")
    out: dict[str, _Data] = {}
    for name, data in sorted(files.items()):
        target = name
        if name == entry.numbered_file:
            stem, dot, suffix = name.rpartition(".")
            target = f"{stem}-{number or 1}{dot}{suffix}"
        out[f"{folder}/{target}"] = data
    return out


def _plan(
    state: InsideState,
    request: RequestRecord,
    answers: Sequence[_Answer],
    opened: OpenedBundle,
    out: Path,
) -> _Plan:
    request_dir = (out / request.bundle_id[:8]).absolute()
    where = folders(request.items)
    numbers = _file_numbers(request.items, where)
    current = {record.item_id: record for record in state.items(request.bundle_id)}
    response_id = opened.manifest.bundle_id
    stamp = now_text()
    updates: dict[str, ItemRecord] = {}
    targets: dict[Path, _Data] = {}
    stale: list[str] = []
    for answer in answers:
        item_id = answer.item.request_item
        before = current[item_id]
        new_status = answer.status
        if before.status in FINAL_STATUSES:
            if new_status not in FINAL_STATUSES:
                # An older response imported after a newer one: the final result stands.
                stale.append(item_id)
                continue
            if new_status != before.status or _fingerprint(
                answer.stored_result(), answer.item.error
            ) != _fingerprint(before.result, before.error):
                raise Replay(
                    f"request item {item_id} is already {before.status}; this response gives "
                    f"it another final result ({new_status}). A request item never gets two "
                    "final results",
                    hint="Refuse this response and ask the outside why it answered twice.",
                )
        outputs: dict[str, _Data] = {}
        if new_status == "ok":
            outputs = _outputs_for(answer, where.get(item_id), numbers.get(item_id))
        for rel, data in outputs.items():
            if request_dir / rel in targets:  # pragma: no cover - folders() keeps them apart
                raise ResponseMismatch(f"two items would write {rel}")
            targets[request_dir / rel] = data
        updates[item_id] = ItemRecord(
            request_id=request.bundle_id,
            item_id=item_id,
            action=before.action,
            device_key=before.device_key,
            status=new_status,
            result=answer.stored_result(),
            error=None if answer.item.error is None else dict(answer.item.error),
            outputs=sorted(outputs),
            out_dir=str(request_dir),
            # A final result repeated by a later response still comes from the first one.
            response_id=before.response_id if before.status in FINAL_STATUSES else response_id,
            updated=stamp,
        )
    applies = state.applies(request.bundle_id)
    views = _views(request, {**current, **updates}, where, request_dir, applies)
    responses = [(r.bundle_id, r.imported_at) for r in state.responses(request.bundle_id)]
    request_view = RequestView(
        bundle_id=request.bundle_id,
        manifest_sha256=request.manifest_sha256,
        sequence=request.sequence,
        created=request.created,
        responses=[*responses, (response_id, stamp)],
    )
    targets[request_dir / "INSTRUCTIONS.md"] = render_instructions(request_view, views).encode()
    targets[request_dir / "summary.json"] = summary_bytes(request_view, views)
    unchanged = [path for path, data in targets.items() if _same_file(path, data, opened)]
    for path in unchanged:
        del targets[path]
    return _Plan(request, request_dir, updates, targets, unchanged, stale, views)


def _fingerprint(result: Any, error: Any) -> str:
    text = json.dumps([result, error], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _views(
    request: RequestRecord,
    records: Mapping[str, ItemRecord],
    where: Mapping[str, str],
    request_dir: Path,
    applies: Sequence[ApplyRecord] = (),
) -> list[ItemView]:
    applied: dict[str, list[str]] = {}
    for done in applies:
        if done.state == "APPLIED":
            applied.setdefault(done.item_id, []).append(
                f"`{done.file}` on {done.hostname} at {done.updated}"
            )
    views: list[ItemView] = []
    # Each item's outputs are shown relative to `request_dir` when they are in it: compared as
    # text, once per folder, rather than as a Path per item.
    same_dir: dict[str, bool] = {}
    for item in request.items:
        item_id = str(item["id"])
        record = records[item_id]
        shown: list[str] = []
        if record.outputs:
            out_dir = record.out_dir or ""
            inside = same_dir.get(out_dir)
            if inside is None:
                inside = same_dir[out_dir] = not out_dir or Path(out_dir) == request_dir
            for rel in record.outputs:
                shown.append(rel if inside else str(Path(out_dir) / rel))
        views.append(
            ItemView(
                item_id=item_id,
                action=str(item["action"]),
                device=item.get("device"),
                params=item.get("params") or {},
                folder=where.get(item_id),
                status=record.status,
                error=record.error,
                result=(record.result or {}).get("result", {}),
                files=shown,
                response_id=record.response_id,
                applied=applied.get(item_id, ()),
            )
        )
    return views


def _same_file(path: Path, data: _Data, opened: OpenedBundle) -> bool:
    try:
        info = os.lstat(path)  # one call: a missing file (the usual case) costs only this
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_size != _size(data):
        return False
    try:
        return path.read_bytes() == _data(opened, data)
    except OSError:
        return False


def _check_targets(state: InsideState, plan: _Plan) -> None:
    """Refuse before writing anything if an output path holds something else.

    INSTRUCTIONS.md and summary.json may be replaced when they still hold exactly what an
    earlier import wrote (or was about to write when it was interrupted); any other existing,
    different file is left alone and the import is refused.
    """
    conflicts: list[str] = []
    inside = plan.request_dir
    folders_seen: dict[Path, str | None] = {}  # folder -> its conflict, checked once each
    for path in plan.targets:
        if path.parent not in folders_seen:
            folders_seen[path.parent] = _folder_conflict(path.parent, inside)
            if folders_seen[path.parent] is not None:
                conflicts.append(str(folders_seen[path.parent]))
        try:
            os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue  # nothing there (a file on the way is the folder's conflict)
        if path.name in REPORTS and path.parent == inside and path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            ours = {state.output_sha256(path), *state.pending_output_sha256(path)}
            if not path.is_symlink() and digest in ours:
                continue
        conflicts.append(f"{path} already exists with different content")
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ConfigError(
            f"refusing to overwrite: {conflicts[0]}{more}; nothing was written",
            hint="Move the existing files away, or import into another folder with --out.",
        )


def _folder_conflict(folder: Path, inside: Path) -> str | None:
    """Why outputs cannot go into `folder` (a symbolic link or a file on its way), or None."""
    for parent in (folder, *folder.parents):
        within = parent == inside or inside in parent.parents
        if within and parent.is_symlink():
            return f"{parent} is a symbolic link, not a folder"
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is not a folder"
            return None
    return None


def _remove_stale_temp_files(paths: Sequence[Path]) -> None:
    """Delete the temporary files an interrupted import left beside these outputs.

    `atomic_write_bytes` writes `.<name>.<random>.tmp` next to the file and renames it into
    place; a process killed in between leaves the temporary file behind. Only names of exactly
    that shape, beside an output this import writes, are removed.
    """
    for folder, names in _by_folder(paths).items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # not created yet: nothing left there
        for entry in entries:
            match = _TEMP_NAME.fullmatch(entry.name)
            if match and match.group(1) in names and not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _by_folder(paths: Sequence[Path]) -> dict[Path, set[str]]:
    folders: dict[Path, set[str]] = {}
    for path in paths:
        folders.setdefault(path.parent, set()).add(path.name)
    return folders


def _write_outputs(targets: Mapping[Path, _Data], opened: OpenedBundle | None = None) -> list[str]:
    """Write every output atomically; device files first, the reports last, all on disk when
    this returns.

    Each file is written to a temporary name and renamed into place without an fsync of its
    own (one fsync a file made 10,000 files take half a minute); the device files are made
    durable together before the reports are written, and the reports after them, so a report
    on disk never names a device file that is not.

    Raises:
        ConfigError: a file cannot be written (the files written so far are complete, and a
            new import of the same response writes the rest).
    """
    written: list[str] = []
    ordered = sorted(targets, key=lambda p: (p.name in REPORTS, str(p)))
    made: set[Path] = set()
    reports_from = next((n for n, p in enumerate(ordered) if p.name in REPORTS), len(ordered))
    for group in (ordered[:reports_from], ordered[reports_from:]):
        for path in group:
            try:
                if path.parent not in made:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made.add(path.parent)
                data = targets[path]
                if isinstance(data, _Member):
                    assert opened is not None
                    data = opened.member_bytes(data.path)
                atomic_write_bytes(path, data, fsync=False, make_parents=False)
            except OSError as exc:
                raise ConfigError(
                    f"cannot write {path}: {exc.strerror or exc}",
                    hint="Free some space or fix the folder's permissions, then import again.",
                ) from exc
            written.append(str(path))
        if group:
            try:
                sync_filesystem(group[0].parent)
            except OSError as exc:
                raise ConfigError(
                    f"cannot make the files in {group[0].parent} durable: {exc.strerror or exc}",
                    hint="Check the disk, then import again.",
                ) from exc
    return written


# --- the no-op of a repeated import -------------------------------------------------------------


def _already(state: InsideState, request: RequestRecord, previous: ResponseRecord) -> ImportResult:
    # What the result shows of each item needs no stored result: not read, nor parsed.
    records = {r.item_id: r for r in state.items(request.bundle_id, results=False)}
    out_dir = Path(previous.out_dir)
    views = _views(request, records, folders(request.items), out_dir)
    counts = count_statuses(views)
    return ImportResult(
        response_id=previous.bundle_id,
        response_sha256=previous.manifest_sha256,
        request_id=request.bundle_id,
        out_dir=out_dir,
        counts=counts,
        already_imported=True,
        partial=counts["ok"] != len(views),
        items=_item_rows(views),
    )


def _audit_if_missing(
    audit: AuditLog,
    opened: OpenedBundle,
    request: RequestRecord,
    response: Path,
    result: ImportResult,
) -> None:
    """Log an import that state.db recorded but the audit log lacks.

    An import killed after recording it and before logging it would otherwise never reach the
    audit log: the next import of the same response is a no-op. It is logged then, marked
    `recovered`.
    """
    manifest = opened.manifest
    for entry, _ in audit.entries():
        if (
            entry.get("event") == "import"
            and entry.get("bundle_id") == manifest.bundle_id
            and entry.get("manifest_sha256") == opened.manifest_sha256
        ):
            return
    audit.append(
        "import",
        bundle_id=manifest.bundle_id,
        manifest_sha256=opened.manifest_sha256,
        details={
            "file": response.name,
            "request_id": request.bundle_id,
            "request_manifest_sha256": request.manifest_sha256,
            "producer": dict(manifest.producer),
            "producer_audit_head": manifest.audit_head,
            "signers": [c.fingerprint for c in opened.signatures if c.status == "valid"],
            "items": opened.item_count,
            "counts": result.counts,
            "out": str(result.out_dir),
            "recovered": True,
        },
    )


def _item_rows(views: Sequence[ItemView]) -> list[dict[str, Any]]:
    return [
        {
            "id": view.item_id,
            "action": view.action,
            "device": device_key({"device": view.device}),
            "status": view.status,
            "error": dict(view.error) if view.error else None,
            "files": list(view.files),
            "applied": list(view.applied),
        }
        for view in views
    ]


# --- status ------------------------------------------------------------------------------------


def inside_status(home: Home, *, include_complete: bool = False) -> dict[str, Any]:
    """Requests this home packed (outstanding only, unless asked) and their items' states.

    Raises:
        ConfigError: not an inside home, or state.db cannot be used.

    Returns:
        `{"requests": [{bundle_id, manifest_sha256, sequence, created, expires, expired, file,
        status, counts, responses, items: [{id, action, device, status, error, files}]}]}`,
        newest request first.
    """
    require_home_role(home, "inside")
    now = now_text()
    requests: list[dict[str, Any]] = []
    with InsideState(home.paths.state_db) as state:
        for request in state.requests(include_complete=include_complete):
            records = {record.item_id: record for record in state.items(request.bundle_id)}
            views = _views(
                request,
                records,
                folders(request.items),
                Path("/nonexistent"),
                state.applies(request.bundle_id),
            )
            responses = state.responses(request.bundle_id)
            requests.append(
                {
                    "bundle_id": request.bundle_id,
                    "manifest_sha256": request.manifest_sha256,
                    "sequence": request.sequence,
                    "created": request.created,
                    "expires": request.expires,
                    # Both are UTC `YYYY-MM-DDTHH:MM:SS…Z`, so text order is time order.
                    "expired": request.expires <= now[:19] + "Z",
                    "file": request.path,
                    "status": request.status,
                    "counts": count_statuses(views),
                    "responses": [
                        {"bundle_id": r.bundle_id, "imported_at": r.imported_at, "out": r.out_dir}
                        for r in responses
                    ],
                    "items": _item_rows(views),
                }
            )
    return {"requests": requests}


def refresh_reports(home: Home, request_id: str) -> list[Path]:
    """Write a request's INSTRUCTIONS.md and summary.json again from state.db (after `inside
    apply`, so they say which files are on their devices).

    A report that someone changed since airgap wrote it is left alone (its path is not in the
    list returned).

    Raises:
        ConfigError: state.db cannot be used, or a report cannot be written.

    Returns:
        The reports written.
    """
    with InsideState(home.paths.state_db) as state:
        request = state.request(request_id)
        responses = state.responses(request_id)
        if request is None or not responses:
            return []
        request_dir = Path(responses[-1].out_dir)
        records = {record.item_id: record for record in state.items(request_id)}
        views = _views(
            request, records, folders(request.items), request_dir, state.applies(request_id)
        )
        request_view = RequestView(
            bundle_id=request.bundle_id,
            manifest_sha256=request.manifest_sha256,
            sequence=request.sequence,
            created=request.created,
            responses=[(r.bundle_id, r.imported_at) for r in responses],
        )
        targets = {
            request_dir / "INSTRUCTIONS.md": render_instructions(request_view, views).encode(),
            request_dir / "summary.json": summary_bytes(request_view, views),
        }
        written: list[str] = []
        for path, data in targets.items():
            try:
                current = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                continue  # moved away by the operator: nothing to refresh
            if current != state.output_sha256(path):
                continue  # someone changed it: never overwrite
            digest = hashlib.sha256(data).hexdigest()
            state.note_pending_outputs(responses[-1].bundle_id, {path: digest})
            written += _write_outputs({path: data})
            state.record_outputs(responses[-1], {path: digest})
    return [Path(p) for p in written]
