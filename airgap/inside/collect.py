"""`airgap inside collect`: read what `inside pack` needs from every device of an inventory.

For each IOS XE device: the `show license udi` capture (`udi/<hostname>.udi.txt`), the signed
usage reports (`rum/<hostname>.rum.xml`, payloads byte for byte), and, only for the devices the
operator names, the return code of its authorization (`returns/<hostname>.return.txt`; this
removes the authorization from the device). For each BIG-IP: its base MAC, and the dossier of
the registration key its inventory row names (`dossiers/<hostname>.dossier.txt`); `plan_out`
writes the plan rows for them. Every file is checked with the parser `pack` uses before it is
written (atomically), every device's result is recorded in state.db and the run in the audit
log. Credentials are resolved before any device is contacted and never stored.
"""

from __future__ import annotations

import csv
import hashlib
import io
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
from airgap.devices.iosxe import render_capture
from airgap.errors import AirgapError, ConfigError, DeviceError
from airgap.formats.rum import parse_rum_bytes
from airgap.fsutil import atomic_write_bytes
from airgap.home import Home
from airgap.inside.fleet import DeviceOutcome, FleetPolicy, run_fleet
from airgap.inside.parsers.codes import parse_return_capture
from airgap.inside.parsers.udi import parse_udi_capture
from airgap.inside.state import InsideState, now_text
from airgap.review import require_home_role

__all__ = ["CollectOptions", "CollectResult", "collect", "select_devices"]

DEVICE_TIMEOUT: Final = 30.0  # seconds per connection attempt, read or command


@dataclass(frozen=True)
class CollectOptions:
    """What to collect, from which devices, and how many at once."""

    out: Path
    udi: bool = True
    usage: bool = True
    returns: frozenset[str] = frozenset()  # hostnames whose authorization is returned
    only: frozenset[str] = frozenset()  # hostnames; empty means every device
    concurrency: int = 16
    dry_run: bool = False
    accept_new_host_keys: bool = False
    plan_out: Path | None = None  # BIG-IP plan rows
    pool: str | None = None  # for bigiq.assign rows of plan_out
    hypervisor: str | None = None  # for bigiq.assign rows of plan_out
    unit_of_measure: str | None = None  # for bigiq.assign rows of plan_out (utility pools)
    timeout: float = DEVICE_TIMEOUT


@dataclass
class CollectResult:
    """What a collect did, per device."""

    run_id: str
    outcomes: list[DeviceOutcome[DeviceEntry]]
    files: list[Path] = field(default_factory=list)
    plan: Path | None = None
    plan_rows: int = 0  # BIG-IP rows written to `plan`
    dry_run: bool = False

    @property
    def counts(self) -> dict[str, int]:
        """Devices per outcome status."""
        return dict(sorted(Counter(o.status for o in self.outcomes).items()))

    @property
    def complete(self) -> bool:
        """True when every device's collect finished."""
        return all(o.ok for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        """The result as plain JSON types (for `--json`)."""
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "counts": self.counts,
            "files": [str(p) for p in self.files],
            "plan": str(self.plan) if self.plan else None,
            "devices": [
                {
                    "hostname": o.name,
                    "platform": o.target.platform,
                    "transport": o.target.transport,
                    "status": o.status,
                    "code": o.code,
                    "message": o.message,
                    **{k: v for k, v in o.details.items() if k != "records"},
                }
                for o in self.outcomes
            ],
        }


def select_devices(inventory: Inventory, only: frozenset[str]) -> list[DeviceEntry]:
    """The devices of an inventory a run works on: all, or those named by `--only`.

    Raises:
        ConfigError: `only` names a host the inventory does not list.
    """
    if not only:
        return list(inventory)
    wanted = {name.lower() for name in only}
    known = {d.hostname.lower() for d in inventory} | {d.host.lower() for d in inventory}
    unknown = sorted(name for name in only if name.lower() not in known)
    if unknown:
        raise ConfigError(
            f"--only names devices the inventory does not list: {', '.join(unknown)}",
            hint=f"Hostnames come from {inventory.source}.",
        )
    return [d for d in inventory if d.hostname.lower() in wanted or d.host.lower() in wanted]


def collect(
    home: Home,
    inventory_path: Path,
    options: CollectOptions,
    *,
    env: Mapping[str, str],
    prompt: Prompt | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CollectResult:
    """Collect captures, usage reports, MACs and dossiers from the devices of an inventory.

    Args:
        home: an inside home (its known_hosts, state.db and audit log are used).
        inventory_path: the inventory (CSV or JSON).
        options: what to collect and how.
        env: the environment the device credentials are read from.
        prompt: asks for a missing password (None: never ask).
        progress: called with (devices done, devices in all).

    Raises:
        InventoryError: the inventory has bad rows (every one listed).
        ConfigError: not an inside home, `--only`/`--return` names an unknown device, a
            credential cannot be resolved, or the output folder cannot be written.

    Returns:
        One outcome per device (failures do not raise: the result says which devices failed).
    """
    require_home_role(home, "inside")
    inventory = load_inventory(inventory_path)
    devices = select_devices(inventory, options.only)
    unknown = sorted(name for name in options.returns if inventory.by_hostname(name) is None)
    if unknown:
        raise ConfigError(f"--return names devices the inventory does not list: {unknown}")
    run_id = uuid.uuid4().hex
    if options.dry_run:  # contacts nothing, so it needs no credential
        planned = [
            DeviceOutcome(d, d.hostname, "ok", details={"planned": _planned(d, options)})
            for d in devices
        ]
        return CollectResult(run_id, planned, dry_run=True)
    resolver = CredentialResolver(env, prompt)
    logins = {d.credential: resolver.login(d.credential) for d in devices}  # all up front
    folders = {kind: options.out / kind for kind in ("udi", "rum", "returns", "dossiers")}
    known_hosts = KnownHosts.for_home(home.paths.root)

    def job(device: DeviceEntry) -> dict[str, Any]:
        login = logins[device.credential]
        if device.platform == "bigip":
            return _collect_bigip(device, login, options, folders)
        return _collect_iosxe(device, login, options, folders, known_hosts)

    outcomes = run_fleet(
        devices,
        job,
        name=lambda d: d.hostname,
        policy=FleetPolicy(concurrency=options.concurrency),
        progress=progress,
    )
    files = [Path(p) for o in outcomes if o.ok for p in o.details.get("files", [])]
    plan, plan_rows = _write_plan(options, outcomes) if options.plan_out else (None, 0)
    _record(home, run_id, outcomes)
    home.audit().append(
        "collect",
        outcome="ok" if all(o.ok for o in outcomes) else "partial",
        details={
            "run_id": run_id,
            "inventory": inventory_path.name,
            "out": str(options.out),
            "devices": {o.name: o.status for o in outcomes},
            "errors": {o.name: o.code for o in outcomes if not o.ok},
            "returns": sorted(options.returns),
            "files": len(files),
        },
    )
    return CollectResult(run_id, outcomes, files, plan, plan_rows)


def _planned(device: DeviceEntry, options: CollectOptions) -> list[str]:
    if device.platform == "bigip":
        return ["base MAC"] + (["dossier"] if device.regkey else [])
    planned = (["udi"] if options.udi else []) + (["usage"] if options.usage else [])
    if device.hostname in options.returns:
        planned.append("return (removes the authorization)")
    return planned


def _write(path: Path, data: bytes) -> dict[str, Any]:
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return {"path": str(path), "sha256": hashlib.sha256(data).hexdigest()}


def _collect_iosxe(
    device: DeviceEntry,
    login: Login,
    options: CollectOptions,
    folders: Mapping[str, Path],
    known_hosts: KnownHosts,
) -> dict[str, Any]:
    transport = open_iosxe(
        device.endpoint(timeout=options.timeout),
        login,
        device.transport,
        known_hosts=known_hosts,
        accept_new_host_keys=options.accept_new_host_keys,
    )
    records: list[dict[str, Any]] = []
    udis: list[str] = []
    try:
        # Usage first: over the REST API the reports it fetches also name the UDIs.
        udi_text: str | None = None
        if options.usage:
            if options.udi:
                data, udi_text = transport.read_usage_and_udi()
            else:
                data = transport.read_usage(close=True)
            parsed = parse_rum_bytes(data, path=f"{device.hostname} (usage)")
            path = folders["rum"] / f"{device.hostname}.rum.xml"
            records.append({"kind": "usage", **_write(path, data), "reports": len(parsed.reports)})
        if options.udi:
            if udi_text is None:
                udi_text = transport.read_udi()
            capture = render_capture(device.hostname, "show license udi", udi_text)
            found = parse_udi_capture(capture, source=f"{device.hostname} (show license udi)")
            udis = [f"{r.pid}:{r.sn}" for r in found]
            path = folders["udi"] / f"{device.hostname}.udi.txt"
            records.append({"kind": "udi", **_write(path, capture.encode("utf-8")), "udis": udis})
        if device.hostname in options.returns:
            capture = transport.return_authorization()
            if "Return code" not in capture:
                capture = render_capture(
                    device.hostname, "license smart authorization return local offline", capture
                )
            try:
                parse_return_capture(capture, source=f"{device.hostname} (return)")
            except AirgapError as exc:
                raise DeviceError(f"the device printed no return code: {exc.message}") from exc
            path = folders["returns"] / f"{device.hostname}.return.txt"
            records.append({"kind": "return", **_write(path, capture.encode("utf-8"))})
    finally:
        transport.close()
    return {"files": [r["path"] for r in records], "udis": udis, "records": records}


def _collect_bigip(
    device: DeviceEntry,
    login: Login,
    options: CollectOptions,
    folders: Mapping[str, Path],
) -> dict[str, Any]:
    from airgap.devices.bigip import BigIpTransport

    records: list[dict[str, Any]] = []
    with BigIpTransport(device.endpoint(timeout=options.timeout), login) as transport:
        info = transport.device_info()
        records.append({"kind": "mac", "mac": info.base_mac, "version": info.version})
        if device.regkey:
            dossier = transport.dossier(device.regkey, device.add_on_keys)
            path = folders["dossiers"] / f"{device.hostname}.dossier.txt"
            records.append({"kind": "dossier", **_write(path, (dossier + "\n").encode("ascii"))})
    return {
        "files": [r["path"] for r in records if "path" in r],
        "mac": info.base_mac,
        "regkey": device.regkey,
        "records": records,
    }


def _write_plan(
    options: CollectOptions, outcomes: Sequence[DeviceOutcome[DeviceEntry]]
) -> tuple[Path, int]:
    """Plan rows for the BIG-IPs collected: a manual RegKey activation where the inventory names
    a key, else a utility-pool assignment (which needs --pool and --hypervisor). Returns the
    file and how many rows it has."""
    assert options.plan_out is not None
    columns = [
        "action",
        "mac",
        "pool",
        "hypervisor",
        "unit_of_measure",
        "regkey",
        "add_on_keys",
        "mode",
        "dossier_file",
    ]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    base = options.plan_out.parent.resolve()
    rows = 0
    for outcome in outcomes:
        device = outcome.target
        if not outcome.ok or device.platform != "bigip":
            continue
        dossier = next(
            (r["path"] for r in outcome.details["records"] if r["kind"] == "dossier"), None
        )
        rows += 1
        if device.regkey and dossier:
            writer.writerow(
                {
                    "action": "bigiq.regkey_activate",
                    "pool": options.pool or "",
                    "regkey": device.regkey,
                    "add_on_keys": ";".join(device.add_on_keys),
                    "mode": "manual",
                    "dossier_file": _relative(Path(dossier), base),
                }
            )
        else:
            writer.writerow(
                {
                    "action": "bigiq.assign",
                    "mac": outcome.details["mac"],
                    "pool": options.pool or "",
                    "hypervisor": options.hypervisor or "",
                    "unit_of_measure": options.unit_of_measure or "",
                }
            )
    try:
        atomic_write_bytes(options.plan_out, out.getvalue().encode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot write {options.plan_out}: {exc.strerror or exc}") from exc
    return options.plan_out, rows


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path.resolve())


def _record(home: Home, run_id: str, outcomes: Sequence[DeviceOutcome[DeviceEntry]]) -> None:
    stamp = now_text()
    rows = []
    for outcome in outcomes:
        device = outcome.target
        records = outcome.details.get("records", []) if outcome.ok else []
        for record in records or [{"kind": "failed"}]:
            rows.append(
                (
                    run_id,
                    device.hostname,
                    device.host,
                    device.port,
                    device.transport,
                    record["kind"] if outcome.ok else "failed",
                    record.get("path"),
                    record.get("sha256"),
                    {k: v for k, v in record.items() if k not in ("kind", "path", "sha256")}
                    | ({} if outcome.ok else {"code": outcome.code, "status": outcome.status}),
                    stamp,
                )
            )
    with InsideState(home.paths.state_db) as state:
        state.record_collect(rows)
