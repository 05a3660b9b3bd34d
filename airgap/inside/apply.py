"""`airgap inside apply`: put an imported response's files onto their devices, confirm each.

For every `ok` item of the request whose action puts a file on a device (the catalogue's
`apply`: an authorization code or ACK imported on IOS XE, a license installed on a BIG-IP), the
file `inside import` wrote is pushed to the device that the inventory names and whose identity
matches (its UDIs, or its base MAC): a device with another identity is refused and never
written to. Each file goes through state.db as APPLYING (committed before the push) and
APPLIED (once the device shows it), so a re-run skips what is applied, and a run killed in the
middle confirms on the device before it pushes again: no device gets a file twice. Every run is
in the audit log, each device's error in its own words.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from airgap.devices.base import Login
from airgap.devices.connect import open_iosxe
from airgap.devices.credentials import CredentialResolver, Prompt
from airgap.devices.hostkeys import KnownHosts
from airgap.devices.inventory import DeviceEntry, Inventory, load_inventory
from airgap.devices.iosxe import IosXeTransport, LicenseStatus
from airgap.errors import (
    AirgapError,
    ConfigError,
    DeviceError,
    DeviceMismatch,
    DeviceUnreachable,
    InputError,
)
from airgap.formats.smartlicense import ack_report_ids, authorization_udi, is_ack
from airgap.home import Home
from airgap.inside.collect import select_devices
from airgap.inside.fleet import DeviceOutcome, FleetPolicy, run_fleet
from airgap.inside.importer import refresh_reports
from airgap.inside.state import ApplyRecord, InsideState, RequestRecord
from airgap.model import ACTIONS, RequestItem
from airgap.review import require_home_role

__all__ = ["ApplyOptions", "ApplyResult", "Push", "apply_response"]

DEVICE_TIMEOUT: Final = 30.0  # seconds per connection attempt, read or command


@dataclass(frozen=True)
class ApplyOptions:
    """Which devices, how many at once, and whether to push again what is applied."""

    only: frozenset[str] = frozenset()  # hostnames; empty means every device with a file
    dry_run: bool = False
    force: bool = False  # push again files already applied
    concurrency: int = 16
    accept_new_host_keys: bool = False
    timeout: float = DEVICE_TIMEOUT


@dataclass(frozen=True)
class Push:
    """One file for one device."""

    item_id: str
    action: str
    file: str  # relative to the request's output folder
    path: Path
    sha256: str
    device_key: str  # PID:SN or the MAC
    hostname: str | None  # the device's hostname as the request names it
    kind: str  # the catalogue's apply kind


@dataclass
class ApplyResult:
    """What an apply did, per device and per file."""

    request_id: str
    outcomes: list[DeviceOutcome[DeviceEntry]]
    unmatched: list[Push] = field(default_factory=list)  # files with no device in the inventory
    by_hand: list[str] = field(default_factory=list)  # items apply cannot do (e.g. SLR)
    dry_run: bool = False

    @property
    def files(self) -> dict[str, int]:
        """Files per result: applied, already, confirmed, failed, planned."""
        counts: Counter[str] = Counter()
        for outcome in self.outcomes:
            for entry in outcome.details.get("files", []):
                counts[entry["result"]] += 1
        counts["unmatched"] += len(self.unmatched)
        return {k: v for k, v in sorted(counts.items()) if v}

    @property
    def complete(self) -> bool:
        """True when every device finished and every file found a device."""
        return all(o.ok for o in self.outcomes) and not self.unmatched

    def to_json(self) -> dict[str, Any]:
        """The result as plain JSON types (for `--json`)."""
        return {
            "request_id": self.request_id,
            "dry_run": self.dry_run,
            "files": self.files,
            "devices": [
                {
                    "hostname": o.name,
                    "status": o.status,
                    "code": o.code,
                    "message": o.message,
                    "files": list(o.details.get("files", [])),
                }
                for o in self.outcomes
            ],
            "unmatched": [
                {"item": p.item_id, "file": p.file, "device": p.device_key} for p in self.unmatched
            ],
            "by_hand": self.by_hand,
        }


def apply_response(
    home: Home,
    request: str | None,
    inventory_path: Path,
    options: ApplyOptions,
    *,
    env: Mapping[str, str],
    prompt: Prompt | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ApplyResult:
    """Push the files of a request's imported responses to their devices and confirm them.

    Args:
        home: an inside home.
        request: the request's bundle id or a unique prefix of it (None: the newest request
            with an imported response).
        inventory_path: the device inventory.
        options: which devices, concurrency, dry run, force.
        env: the environment device credentials are read from.
        prompt: asks for a missing password (None: never ask).
        progress: called with (devices done, devices in all).

    Raises:
        ConfigError: not an inside home, no such request (or an ambiguous prefix), nothing
            imported yet, an unknown `--only` device, a credential that cannot be resolved.
        InventoryError: the inventory has bad rows.

    Returns:
        One outcome per device; per file: applied, already (skipped), confirmed (found on the
        device after an interrupted run), refused or failed.
    """
    require_home_role(home, "inside")
    inventory = load_inventory(inventory_path)
    with InsideState(home.paths.state_db) as state:
        record = _choose_request(state, request)
        pushes, by_hand = _pushes(state, record)
        done = {(a.item_id, a.file): a for a in state.applies(record.bundle_id)}
        macs = state.collected_macs()
    selected = {d.hostname.lower() for d in select_devices(inventory, options.only)}
    resolver = CredentialResolver(env, prompt)
    wanted_macs = {p.device_key for p in pushes if p.kind == "bigip-license"}
    if wanted_macs - set(macs) and not options.dry_run:
        macs |= _probe_macs(inventory, selected, resolver, options)
    targets, unmatched = _targets(inventory, pushes, selected, macs)
    if options.dry_run:
        planned = [
            DeviceOutcome(
                device,
                device.hostname,
                "ok",
                details={"files": [_planned(p, done, options) for p in todo]},
            )
            for device, todo in targets.items()
        ]
        return ApplyResult(record.bundle_id, planned, unmatched, by_hand, dry_run=True)
    # Resolved only now: a dry run contacts nothing, so it needs no credential.
    logins = {d.credential: resolver.login(d.credential) for d in targets}
    known_hosts = KnownHosts.for_home(home.paths.root)

    # One connection for every device's job (its lock serializes them): a connection per job
    # made the jobs of one process fight over SQLite's file lock, whose busy handler sleeps
    # (up to 100 ms a try) while a device waits for its APPLYING row.
    ledger = InsideState(home.paths.state_db)

    def job(device: DeviceEntry) -> dict[str, Any]:
        todo = targets[device]
        # Read anew for every attempt: an earlier attempt on this device may have pushed.
        mine = ledger.applies(record.bundle_id, [push.item_id for push in todo])
        now = {(a.item_id, a.file): a for a in mine}
        work = _DeviceWork(record.bundle_id, device, todo, now, ledger, options.force)
        if device.platform == "bigip":
            return work.bigip(logins[device.credential], options)
        return work.iosxe(logins[device.credential], options, known_hosts)

    order = list(targets)
    with ledger:
        outcomes = run_fleet(
            order,
            job,
            name=lambda d: d.hostname,
            policy=FleetPolicy(concurrency=options.concurrency),
            progress=progress,
        )
    result = ApplyResult(record.bundle_id, outcomes, unmatched, by_hand)
    refresh_reports(home, record.bundle_id)
    home.audit().append(
        "apply",
        outcome="ok" if result.complete else "partial",
        bundle_id=record.bundle_id,
        manifest_sha256=record.manifest_sha256,
        details={
            "inventory": inventory_path.name,
            "run_id": uuid.uuid4().hex,
            "files": result.files,
            "devices": {
                o.name: {
                    "status": o.status,
                    **({"code": o.code} if o.code else {}),
                    "files": {f["file"]: f["result"] for f in o.details.get("files", [])},
                }
                for o in outcomes
            },
            "unmatched": [p.file for p in unmatched],
        },
    )
    return result


# --- planning ------------------------------------------------------------------------------------


def _choose_request(state: InsideState, wanted: str | None) -> RequestRecord:
    requests = [r for r in state.requests(include_complete=True) if state.responses(r.bundle_id)]
    if not requests:
        raise ConfigError(
            "no response has been imported in this home yet",
            hint="Import the response with `airgap inside import RESPONSE` first.",
        )
    if wanted is None:
        return requests[0]  # newest first
    matches = [r for r in requests if r.bundle_id.startswith(wanted)]
    if len(matches) != 1:
        known = ", ".join(r.bundle_id[:8] for r in requests[:10])
        problem = "matches no" if not matches else "matches more than one"
        raise ConfigError(
            f"{wanted!r} {problem} request with an imported response (known: {known})",
            hint="Give the request id as `inside status` shows it.",
        )
    return matches[0]


def _pushes(state: InsideState, request: RequestRecord) -> tuple[list[Push], list[str]]:
    """The files to put on devices, in request order, and the items that need a person."""
    records = {r.item_id: r for r in state.items(request.bundle_id)}
    items = [RequestItem.from_json(raw) for raw in request.items]
    # A usage report read over REST names no hostname; another item of the same device does,
    # and so may the last collect from it.
    hostnames = state.collected_udis()
    hostnames |= {i.device_key: i.hostname for i in items if i.device_key and i.hostname}
    pushes: list[Push] = []
    by_hand: list[str] = []
    for item in items:
        record = records.get(item.id)
        entry = ACTIONS.get(item.action)
        if record is None or record.status != "ok" or entry is None:
            continue
        file = entry.device_file(record.outputs or [])
        if file is None:
            continue
        if entry.apply is None:
            by_hand.append(f"{item.id} {item.action}: {file}")
            continue
        base = Path(record.out_dir) if record.out_dir else None
        if base is None:
            continue
        path = base / file
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"{path}: cannot read ({exc.strerror}); `inside import` wrote it there",
                hint="Import the response again to restore it.",
            ) from exc
        key = item.device_key
        if entry.apply == "bigip-license" and key is None:
            # A RegKey activation names no device; the inventory row with that key does.
            key = f"regkey:{str(item.params.get('regkey', '')).upper()}"
        pushes.append(
            Push(
                item_id=item.id,
                action=item.action,
                file=file,
                path=path,
                sha256=hashlib.sha256(data).hexdigest(),
                device_key=str(key),
                hostname=item.hostname or hostnames.get(str(key)),
                kind=entry.apply,
            )
        )
    return pushes, by_hand


def _probe_macs(
    inventory: Inventory,
    selected: set[str],
    resolver: CredentialResolver,
    options: ApplyOptions,
) -> dict[str, str]:
    """Ask every selected BIG-IP for its base MAC (read-only), for licenses no collect tied to
    a device yet."""
    from airgap.devices.bigip import BigIpTransport

    def ask(device: DeviceEntry) -> dict[str, Any]:
        login = resolver.login(device.credential)
        with BigIpTransport(device.endpoint(timeout=options.timeout), login) as transport:
            return {"mac": transport.device_info().base_mac}

    bigips = [d for d in inventory if d.platform == "bigip" and d.hostname.lower() in selected]
    outcomes = run_fleet(
        bigips, ask, name=lambda d: d.hostname, policy=FleetPolicy(concurrency=options.concurrency)
    )
    return {str(o.details["mac"]): o.name for o in outcomes if o.ok}


def _targets(
    inventory: Inventory, pushes: Sequence[Push], selected: set[str], macs: Mapping[str, str]
) -> tuple[dict[DeviceEntry, list[Push]], list[Push]]:
    """Which inventory device each file goes to: Cisco files by the hostname the request
    names, BIG-IP licenses by the base MAC a collect or a probe read from the box (the push
    checks it again), RegKey licenses by the registration key the inventory row names."""
    targets: dict[DeviceEntry, list[Push]] = {}
    unmatched: list[Push] = []
    for push in pushes:
        device: DeviceEntry | None = None
        if push.kind == "ios-xe-import":
            found = inventory.by_hostname(push.hostname) if push.hostname else None
            device = found if found is not None and found.platform == "ios-xe" else None
        elif push.device_key.startswith("regkey:"):
            key = push.device_key.removeprefix("regkey:")
            device = next(
                (d for d in inventory if d.platform == "bigip" and (d.regkey or "").upper() == key),
                None,
            )
        elif push.device_key in macs:
            found = inventory.by_hostname(macs[push.device_key])
            device = found if found is not None and found.platform == "bigip" else None
        if device is None:
            unmatched.append(push)
        elif device.hostname.lower() in selected:
            targets.setdefault(device, []).append(push)
    return targets, unmatched


def _planned(
    push: Push, done: Mapping[tuple[str, str], ApplyRecord], options: ApplyOptions
) -> dict[str, Any]:
    previous = done.get((push.item_id, push.file))
    applied = (
        previous is not None and previous.state == "APPLIED" and previous.sha256 == push.sha256
    )
    result = "already" if applied and not options.force else "planned"
    return {"item": push.item_id, "file": push.file, "device": push.device_key, "result": result}


# --- the work on one device ----------------------------------------------------------------------


class _DeviceWork:
    """Push one device's files, each recorded before and after, confirmed on the device."""

    def __init__(
        self,
        request_id: str,
        device: DeviceEntry,
        pushes: Sequence[Push],
        done: Mapping[tuple[str, str], ApplyRecord],
        ledger: InsideState,
        force: bool,
    ) -> None:
        self.request_id = request_id
        self.device = device
        self.pushes = pushes
        self.done = done
        self.ledger = ledger
        self.force = force
        self.results: list[dict[str, Any]] = []

    def _previous(self, push: Push) -> ApplyRecord | None:
        return self.done.get((push.item_id, push.file))

    def _note(self, push: Push, result: str, **detail: Any) -> None:
        self.results.append(
            {"item": push.item_id, "file": push.file, "device": push.device_key, "result": result}
            | ({"detail": detail} if detail else {})
        )

    def _mark(self, push: Push, state: str, detail: Mapping[str, Any] | None = None) -> None:
        args = (
            self.request_id,
            push.item_id,
            push.file,
            push.sha256,
            push.device_key,
            self.device.hostname,
        )
        if state == "APPLYING":
            self.ledger.mark_applying(*args)
        elif state == "APPLIED":
            self.ledger.mark_applied(*args, dict(detail or {}))
        else:
            self.ledger.mark_apply_failed(*args, dict(detail or {}))

    def _interrupted(self, push: Push) -> bool:
        """A run that pushed this file did not live to record the answer: confirm on the
        device before anything else, never push blindly."""
        previous = self._previous(push)
        return previous is not None and previous.state == "APPLYING" and not self.force

    def _skip(self, push: Push) -> bool:
        previous = self._previous(push)
        if (
            previous is not None
            and previous.state == "APPLIED"
            and previous.sha256 == push.sha256
            and not self.force
        ):
            self._note(push, "already")
            return True
        return False

    # --- IOS XE

    def iosxe(self, login: Login, options: ApplyOptions, known_hosts: KnownHosts) -> dict[str, Any]:
        transport = open_iosxe(
            self.device.endpoint(timeout=options.timeout),
            login,
            self.device.transport,
            known_hosts=known_hosts,
            accept_new_host_keys=options.accept_new_host_keys,
        )
        try:
            theirs = {f"{pid}:{sn}" for pid, sn in transport.udis()}
            foreign = sorted({p.device_key for p in self.pushes} - theirs)
            if foreign:
                raise DeviceMismatch(
                    f"{self.device.hostname} reports UDIs {', '.join(sorted(theirs)) or 'none'}, "
                    f"not {', '.join(foreign)}: nothing was written to it",
                    hint="The inventory's hostname points at another device; fix the inventory.",
                )
            todo = [p for p in self.pushes if not self._skip(p)]
            if any(self._interrupted(p) for p in todo):
                # A run that pushed did not live to record the answers: ask, never push blindly.
                status = transport.status()
                for push in [p for p in todo if self._interrupted(p)]:
                    if _holds(status, push, push.path.read_bytes()):
                        self._mark(
                            push, "APPLIED", {"confirmed": "found on the device after a stop"}
                        )
                        self._note(push, "confirmed")
                        todo.remove(push)
            answers = {}
            for push in todo:
                answer = self._import(transport, push)
                if answer is not None:
                    answers[push] = answer
            if answers:
                # One status read confirms every file pushed.
                status = transport.status()
                for push, answer in answers.items():
                    self._confirm(status, push, answer)
        finally:
            transport.close()
        return {"files": self.results}

    def _import(self, transport: IosXeTransport, push: Push) -> str | None:
        """Push one file; its answer, or None when it is settled already (refused, or taken
        although the answer was lost)."""
        data = push.path.read_bytes()
        self._mark(push, "APPLYING")
        try:
            return transport.import_file(push.path.name, data)
        except DeviceUnreachable as exc:
            if exc.uncertain and _holds(transport.status(), push, data):
                self._mark(push, "APPLIED", {"confirmed": "answer lost; the device shows it"})
                self._note(push, "applied")
                return None
            raise
        except DeviceError as exc:
            self._mark(push, "FAILED", {"code": exc.code, "message": exc.message})
            self._note(push, "failed", message=exc.message)
            return None

    def _confirm(self, status: LicenseStatus, push: Push, answer: str) -> None:
        if _holds(status, push, push.path.read_bytes()):
            self._mark(push, "APPLIED", {"answer": answer.strip()[:500]})
            self._note(push, "applied")
            return
        message = f"the device took {push.path.name} but does not show it: {answer.strip()}"
        self._mark(push, "FAILED", {"code": DeviceError.code, "message": message})
        self._note(push, "failed", message=message)

    # --- BIG-IP

    def bigip(self, login: Login, options: ApplyOptions) -> dict[str, Any]:
        from airgap.devices.bigip import BigIpTransport, license_registration_key

        with BigIpTransport(self.device.endpoint(timeout=options.timeout), login) as transport:
            info = transport.device_info()
            for push in self.pushes:
                if not push.device_key.startswith("regkey:") and push.device_key != info.base_mac:
                    raise DeviceMismatch(
                        f"{self.device.hostname} has base MAC {info.base_mac}, not "
                        f"{push.device_key}: nothing was written to it",
                        hint="The license is for another BIG-IP; check the inventory.",
                    )
            for push in self.pushes:
                if self._skip(push):
                    continue
                text = push.path.read_text(encoding="utf-8")
                try:
                    key = license_registration_key(text)
                except InputError as exc:
                    self._mark(push, "FAILED", {"code": exc.code, "message": exc.message})
                    self._note(push, "failed", message=exc.message)
                    continue
                if self._interrupted(push) and transport.registration().registration_key == key:
                    self._mark(push, "APPLIED", {"confirmed": "found after a stop"})
                    self._note(push, "confirmed")
                    continue
                self._mark(push, "APPLYING")
                try:
                    registration = transport.install_license(text)
                except DeviceUnreachable as exc:
                    if exc.uncertain and transport.registration().registration_key == key:
                        self._mark(push, "APPLIED", {"confirmed": "answer lost; box shows it"})
                        self._note(push, "applied")
                        continue
                    raise
                except (DeviceError, InputError) as exc:
                    self._mark(push, "FAILED", {"code": exc.code, "message": exc.message})
                    self._note(push, "failed", message=exc.message)
                    continue
                self._mark(push, "APPLIED", {"registration_key": registration.registration_key})
                self._note(push, "applied")
        return {"files": self.results, "mac": info.base_mac}


def _holds(status: LicenseStatus, push: Push, data: bytes) -> bool:
    """Whether the device's state shows this file: the ACK's reports acknowledged, or an
    authorization installed for the code's UDI."""
    if is_ack(data):
        try:
            wanted = ack_report_ids(data)
        except AirgapError:
            return False
        if status.acknowledged_report_ids is not None and wanted:
            return wanted <= status.acknowledged_report_ids
        return status.last_ack_received is not None and not wanted
    udi = authorization_udi(data)
    if udi is None:
        return False
    entry = status.authorization_for(*udi)
    return entry is not None and entry.is_installed
