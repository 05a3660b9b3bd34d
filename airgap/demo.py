"""`airgap demo`: the whole round trip with devices, on one machine, against in-process emulators.

Two homes (inside, outside) exchange site cards. An emulated estate runs on 127.0.0.1: IOS XE
devices (every other one reached over the Smart Licensing REST API, the rest over SSH) and two
BIG-IPs, beside the Cisco and BIG-IQ emulators. The inside collects from every device (UDIs,
signed usage reports, BIG-IP base MACs and their plan rows), packs a signed request encrypted to
the outside; the outside processes it against Cisco and BIG-IQ; the inside imports the response
and applies it to every device. The summary then reads back, from the emulated devices
themselves, what each one now holds. Nothing here is a stand-in for the real commands: it calls
the same core functions the CLI calls. Credentials live in the demo's own environment mapping
(never the process environment) and are never printed.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from airgap.config import set_value
from airgap.emulators.bigip import BigIpFleetServer, start_bigip_fleet
from airgap.emulators.bigiq import BigIqEmulator
from airgap.emulators.cisco import CiscoEmulator, Reservation, build_cisco_server
from airgap.emulators.device import NETWORK_ADVANTAGE_TAG, write_device
from airgap.emulators.iosxe import INVENTORY_COLUMNS, IosXeFleet, start_fleet
from airgap.emulators.server import EmulatorServer
from airgap.errors import ConfigError
from airgap.home import Home, init_home
from airgap.inside.fleet import DeviceOutcome
from airgap.site import trust_site

if TYPE_CHECKING:  # the steps themselves are imported when the demo runs (start-up time)
    from airgap.inside.importer import ImportResult
    from airgap.inside.pack import PackResult
    from airgap.outside.handling import ProcessResult

Say = Callable[[str], None]

# Demo credentials for the emulators only. The device emulators are started requiring exactly
# this password, so the demo proves the named credential reaches every device.
DEVICE_PASSWORD: Final = "demo-device-password-not-real"
DEMO_ENV = {
    "AIRGAP_CISCO_CLIENT_ID": "demo-client",
    "AIRGAP_CISCO_CLIENT_SECRET": "demo-secret-not-real",
    "AIRGAP_BIGIQ_USERNAME": "admin",
    "AIRGAP_BIGIQ_PASSWORD": "demo-password-not-real",
    # The credential `lab` that both device emulators' inventories name.
    "AIRGAP_DEVICE_LAB_USERNAME": "admin",
    "AIRGAP_DEVICE_LAB_PASSWORD": DEVICE_PASSWORD,
}
BIGIPS: Final = 2  # BIG-IPs beside the IOS XE devices
MAX_DEVICES: Final = 200  # IOS XE devices; each takes two ports (HTTPS and SSH)
POOL: Final = "demo-utility"  # the BIG-IQ emulator's utility pool
ENTITLEMENT: Final = f"{NETWORK_ADVANTAGE_TAG}:1"
PIDS: Final = ("C9300-24T", "C9300-48P", "ISR4331/K9", "C9500-32C")  # the portal demo's devices

# What a user types to do the same by hand; README.md, "The round trip with devices", has the
# whole block (set-up included) and a test runs it.
BY_HAND: Final = (
    "airgap emulate ios-xe --devices 6 --inventory-out ios-xe.csv &   # and emulate bigip, "
    "cisco, bigiq",
    "airgap --home inside inside collect devices.csv --out collected --accept-new-host-keys "
    f"--plan-out plan.csv --pool {POOL} --hypervisor vmware --unit-of-measure yearly",
    "airgap --home inside inside pack plan.csv --udi collected/udi --rum collected/rum "
    f"--entitlement '{ENTITLEMENT}' -o request.airgap --encrypt",
    "airgap --home outside outside process request.airgap -o response.airgap",
    "airgap --home inside inside import response.airgap --out licences",
    "airgap --home inside inside apply --inventory devices.csv",
)


@dataclass(frozen=True)
class DeviceRow:
    """One device at the end of the demo: what was collected from it, what came back for it,
    and what the emulated device itself now holds (read from its state, not airgap's records)."""

    hostname: str
    platform: str  # ios-xe | bigip
    transport: str  # slp-rest | ssh | icontrol
    collected: str
    came_back: str
    on_device: str
    licensed: bool
    acknowledged: bool | None  # None for a BIG-IP: it takes no usage ACK
    facts: dict[str, Any] = field(default_factory=dict)  # the same, as JSON

    @property
    def done(self) -> bool:
        """Licensed, and acknowledged where the platform takes ACKs."""
        return self.licensed and self.acknowledged is not False


@dataclass
class DemoReport:
    """What the demo did, for the summary a person reads."""

    workdir: Path
    inside_home: Path
    outside_home: Path
    request: Path
    request_sha256: str
    request_items: dict[str, int]
    response: Path
    response_sha256: str
    outcomes: dict[str, dict[str, int]]
    problems: list[tuple[str, str, str]]
    out_dir: Path
    audit_entries: dict[str, int]
    commands: list[str] = field(default_factory=list)
    inventory: Path | None = None  # None: a round trip without devices (the portal demo)
    devices: list[DeviceRow] = field(default_factory=list)
    by_hand: Sequence[str] = BY_HAND
    by_hand_section: str = "The round trip with devices"
    rerun: str = "airgap demo --keep ./airgap-demo"

    @property
    def all_licensed(self) -> bool:
        """Every device licensed (and acknowledged, where it takes ACKs) on the device; True
        for a report that lists no devices (a demo without them has nothing to fail)."""
        return all(row.done for row in self.devices)


@dataclass
class _Estate:
    """The running emulators, the inventory that points at the devices, and what the devices
    held when they started."""

    cisco: EmulatorServer
    bigiq: EmulatorServer
    iosxe: IosXeFleet
    bigip: BigIpFleetServer
    inventory: Path
    started: datetime
    acked_at_start: dict[str, set[int]]


def _start_estate(workdir: Path, devices: int, running: ExitStack) -> _Estate:
    """Start every emulator (each stopped by `running`) and write one inventory for both kinds
    of device: the two emulators write the same columns."""
    cisco = build_cisco_server(poll_delay=0.2).start()
    running.callback(cisco.stop)
    bigiq = EmulatorServer(BigIqEmulator(task_delay=0.2)).start()
    running.callback(bigiq.stop)
    folder = workdir / "devices"
    folder.mkdir()
    iosxe = running.enter_context(
        start_fleet(devices=devices, password=DEVICE_PASSWORD, cert_out=folder / "ios-xe-ca.pem")
    )
    bigip = running.enter_context(
        start_bigip_fleet(
            BIGIPS,
            password=DEVICE_PASSWORD,
            restart_seconds=0.3,
            cert_out=folder / "bigip-ca.pem",
        )
    )
    inventory = folder / "devices.csv"
    with inventory.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=INVENTORY_COLUMNS, restval="", lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows([*iosxe.inventory_rows, *bigip.inventory_rows])
    acked: dict[str, set[int]] = {}
    for dev in iosxe.devices:
        with dev.lock:
            acked[dev.hostname] = {r.report_id for r in dev.reports if r.state == "acked"}
    return _Estate(cisco, bigiq, iosxe, bigip, inventory, iosxe.clock(), acked)


def run_demo(workdir: Path, *, devices: int = 6, say: Say | None = None) -> DemoReport:
    """Run the round trip with devices in `workdir` (which must be empty or absent).

    Every emulator runs in this process on 127.0.0.1 and is stopped (its ports freed) before
    this returns or raises.

    Args:
        workdir: where the homes, the inventory, the collected files and both bundles go.
        devices: how many IOS XE devices to emulate (two BIG-IPs are always added).
        say: called with one line per step.

    Raises:
        ConfigError: `workdir` is not empty, or `devices` is out of range.
        AirgapError: a step failed outright (a bug: the demo controls every input). A device
            that is not licensed at the end does not raise: its row says so.

    Returns:
        The report; `all_licensed` says whether every device holds what came back.
    """
    tell = say or (lambda _: None)
    if not 1 <= devices <= MAX_DEVICES:
        raise ConfigError(f"--devices must be between 1 and {MAX_DEVICES}")
    workdir, inside_root, outside_root = _two_homes(workdir)
    tell("1/7 creating an inside and an outside home and exchanging site cards")

    tell(
        f"2/7 starting on 127.0.0.1: {devices} IOS XE device(s) (REST and SSH), {BIGIPS} "
        "BIG-IPs, the Cisco and BIG-IQ emulators"
    )
    with ExitStack() as running:
        estate = _start_estate(workdir, devices, running)
        return _round_trip(workdir, inside_root, outside_root, estate, tell)


def _round_trip(
    workdir: Path,
    inside_root: Path,
    outside_root: Path,
    estate: _Estate,
    tell: Say,
) -> DemoReport:
    from airgap.inside.apply import ApplyOptions, apply_response
    from airgap.inside.collect import CollectOptions, collect
    from airgap.inside.importer import import_response
    from airgap.inside.pack import pack
    from airgap.outside.process import ProcessOptions, process_request

    paths = Home.open(outside_root).paths
    cisco_url = estate.cisco.url
    set_value(paths, "cisco.token_url", f"{cisco_url}/oauth2/default/v1/token")
    set_value(paths, "cisco.api_base", f"{cisco_url}/services/api/smart-accounts-and-licensing/")
    set_value(paths, "bigiq.url", estate.bigiq.url)
    env = dict(DEMO_ENV)

    tell(
        "3/7 inside: collecting UDIs and signed usage from the IOS XE devices and base MACs "
        "from the BIG-IPs (first contact: pinning the SSH host keys)"
    )
    collected_dir, plan = workdir / "collected", workdir / "plan.csv"
    collected = collect(
        Home.open(inside_root),
        estate.inventory,
        CollectOptions(
            out=collected_dir,
            accept_new_host_keys=True,
            plan_out=plan,
            pool=POOL,
            hypervisor="vmware",
            unit_of_measure="yearly",
        ),
        env=env,
    )

    tell("4/7 inside: packing and signing the request (age-encrypted to the outside)")
    request = workdir / "transfer" / "request.airgap"
    packed = pack(
        Home.open(inside_root),
        plans=[plan],
        udi_dir=collected_dir / "udi",
        entitlements=[ENTITLEMENT],
        rum_dir=collected_dir / "rum",
        returns_dir=None,
        output=request,
        expires=timedelta(days=1),
        encrypt=True,
        compress=True,
    )

    tell("5/7 outside: verifying, calling Cisco and BIG-IQ, signing the response")
    response = workdir / "transfer" / "response.airgap"
    processed = process_request(
        Home.open(outside_root, env),
        request,
        ProcessOptions(output=response, concurrency=8, rate=100.0, max_wait=timedelta(minutes=5)),
    )

    tell("6/7 inside: verifying the response and writing per-device files")
    out_dir = workdir / "out"
    imported = import_response(Home.open(inside_root), response, out=out_dir)

    tell("7/7 inside: applying codes, ACKs and licenses to every device, then reading them back")
    applied = apply_response(
        Home.open(inside_root), None, estate.inventory, ApplyOptions(), env=env
    )
    rows = _device_rows(estate, collected.outcomes, applied.to_json()["devices"])

    return DemoReport(
        **_common_report(
            workdir, inside_root, outside_root, request, packed, response, processed, imported
        ),
        inventory=estate.inventory,
        devices=rows,
    )


def _common_report(
    workdir: Path,
    inside_root: Path,
    outside_root: Path,
    request: Path,
    packed: PackResult,
    response: Path,
    processed: ProcessResult,
    imported: ImportResult,
) -> dict[str, Any]:
    """The fields both demos report: what crossed, what each vendor answered, the audit logs
    verified, and the commands that check the request by hand."""
    outcomes: dict[str, Counter[str]] = {}
    problems = []
    for item in processed.items:
        vendor = "Cisco" if item["action"].startswith("cisco.") else "BIG-IQ"
        outcomes.setdefault(vendor, Counter())[item["status"]] += 1
        if item["status"] != "ok":
            problems.append((item["id"], item["action"], (item["error"] or {}).get("message", "")))
    pub = inside_root / "keys" / "signing.pub.pem"
    identity = outside_root / "keys" / "age-identity.txt"
    fp16 = Home.open(inside_root).fingerprint.removeprefix("sha256:")[:16]
    return {
        "workdir": workdir,
        "inside_home": inside_root,
        "outside_home": outside_root,
        "request": request,
        "request_sha256": packed.manifest_sha256,
        "request_items": dict(sorted(packed.by_action.items())),
        "response": response,
        "response_sha256": str(processed.response_sha256),
        "outcomes": {k: dict(sorted(v.items())) for k, v in sorted(outcomes.items())},
        "problems": problems,
        "out_dir": Path(imported.out_dir),
        "audit_entries": {
            "inside": Home.open(inside_root).audit().verify().entries,
            "outside": Home.open(outside_root).audit().verify().entries,
        },
        "commands": [
            f"age -d -i {identity} -o req.tar.gz {request}",
            "mkdir b && tar -xzf req.tar.gz -C b && cd b",
            f"openssl pkeyutl -verify -pubin -inkey {pub} -rawin -in manifest.json "
            f"-sigfile signatures/{fp16}.sig",
            "sha256sum -c SHA256SUMS",
        ],
    }


def _two_homes(workdir: Path) -> tuple[Path, Path, Path]:
    """In `workdir` (new or empty), an inside and an outside home that trust each other;
    returns the absolute workdir and both homes' roots.

    Raises:
        ConfigError: `workdir` is not empty.
    """
    if workdir.exists() and any(workdir.iterdir()):
        raise ConfigError(f"{workdir} is not empty", hint="Give --keep an empty or new folder.")
    workdir.mkdir(parents=True, exist_ok=True)
    # Absolute, so the printed commands still find the key after they `cd` into the bundle.
    workdir = workdir.resolve()
    inside_root, outside_root = workdir / "inside-home", workdir / "outside-home"
    init_home(inside_root, role="inside", name="secure-lab", passphrase=None)
    init_home(outside_root, role="outside", name="dmz-licensing", passphrase=None)
    inside, outside = Home.open(inside_root), Home.open(outside_root)
    trust_site(inside, outside.card())
    trust_site(outside, inside.card())
    return workdir, inside_root, outside_root


# --- what each device holds ----------------------------------------------------------------------


def _file_kind(file: str) -> str:
    """What a response file is, in the words of the summary."""
    name = Path(file).name
    if name == "lic.txt":
        return "code"
    if name.startswith("ack") and name.endswith(".xml"):
        return "ACK"
    return "license" if name == "bigip.license" else name


def _device_rows(
    estate: _Estate,
    collected: Sequence[DeviceOutcome[Any]],
    applied: list[dict[str, Any]],
) -> list[DeviceRow]:
    """One row per device of the inventory, its last column read from the emulators."""
    got = {outcome.name: _collect_facts(outcome) for outcome in collected}
    pushed = {row["hostname"]: row for row in applied}
    rows = []
    for entry in [*estate.iosxe.inventory_rows, *estate.bigip.inventory_rows]:
        name = entry["hostname"]
        collect_row, apply_row = got.get(name, {}), pushed.get(name, {})
        if entry["platform"] == "ios-xe":
            on_device, licensed, acked, facts = _iosxe_state(estate, name)
        else:
            on_device, licensed, facts = _bigip_state(estate, name)
            acked = None
        rows.append(
            DeviceRow(
                hostname=name,
                platform=entry["platform"],
                transport=entry["transport"],
                collected=_collected_text(collect_row),
                came_back=_came_back_text(apply_row),
                on_device=on_device,
                licensed=licensed,
                acknowledged=acked,
                facts={
                    "collected": collect_row,
                    "came_back": [
                        {"file": f["file"], "result": f["result"]}
                        for f in apply_row.get("files", [])
                    ],
                    "on_device": facts,
                },
            )
        )
    return rows


def _collect_facts(outcome: DeviceOutcome[Any]) -> dict[str, Any]:
    """What a collect read from one device, as JSON."""
    if not outcome.ok:
        return {"status": outcome.status, "code": outcome.code}
    records = outcome.details.get("records", [])
    facts: dict[str, Any] = {"status": "ok"}
    if outcome.details.get("mac"):
        facts["mac"] = outcome.details["mac"]
    else:
        facts["udis"] = list(outcome.details.get("udis", []))
        facts["usage_reports"] = sum(r.get("reports", 0) for r in records if r["kind"] == "usage")
    return facts


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _collected_text(facts: Mapping[str, Any]) -> str:
    if not facts:
        return "not collected"
    if facts["status"] != "ok":
        return f"{facts['status']}: {facts['code']}"
    if "mac" in facts:
        return f"base MAC {facts['mac']}"
    return (
        f"{_plural(len(facts['udis']), 'UDI')}, {_plural(facts['usage_reports'], 'usage report')}"
    )


def _came_back_text(row: Mapping[str, Any]) -> str:
    files = row.get("files", [])
    if not files:
        return f"nothing ({row['status']}: {row['code']})" if row.get("code") else "nothing"
    kinds = Counter(_file_kind(f["file"]) for f in files)
    text = ", ".join(kind if n == 1 else f"{n} {kind}s" for kind, n in kinds.items())
    failed = [f for f in files if f["result"] not in ("applied", "already", "confirmed")]
    return text + (f" ({len(failed)} not applied)" if failed else "")


def _iosxe_state(estate: _Estate, hostname: str) -> tuple[str, bool, bool, dict[str, Any]]:
    """Licensed: every unit holds an authorization code installed during this run.
    Acknowledged: no closed report is left waiting for an ACK, and an ACK arrived in this run."""
    dev = estate.iosxe.device(hostname)
    imports = estate.iosxe.stats()["devices"][hostname]["import"]
    with dev.lock:
        codes = {
            m.udi: auth.confirmation_code
            for m in dev.members
            if (auth := dev.authorizations.get(m.udi)) is not None
            and auth.installed_at >= estate.started
        }
        waiting = sorted(r.report_id for r in dev.reports if r.state == "closed")
        acked_now = sorted(
            r.report_id
            for r in dev.reports
            if r.state == "acked" and r.report_id not in estate.acked_at_start[hostname]
        )
        last_ack = dev.last_ack_received
        units = len(dev.members)
    licensed = len(codes) == units
    acknowledged = not waiting and last_ack is not None and last_ack >= estate.started
    parts = [
        ("licensed" if licensed else "NOT licensed")
        + (
            f" (code {next(iter(codes.values()))})"
            if units == 1 and codes
            else f" ({len(codes)}/{units} units)"
        ),
        ("acknowledged" if acknowledged else "NOT acknowledged")
        + f" ({_plural(len(acked_now), 'report')}"
        + (f", {len(waiting)} waiting" if waiting else "")
        + ")",
    ]
    facts = {
        "confirmation_codes": codes,
        "units": units,
        "reports_acknowledged": acked_now,
        "reports_waiting_for_ack": waiting,
        "last_ack_received": last_ack.astimezone(UTC).isoformat() if last_ack else None,
        "imports": imports,
    }
    return ", ".join(parts), licensed, acknowledged, facts


def _bigip_state(estate: _Estate, hostname: str) -> tuple[str, bool, dict[str, Any]]:
    """Licensed: the box's loaded license names a registration key (what its registration
    shows), installed during this run."""
    counts = estate.bigip.stats()["devices"][hostname]
    with estate.bigip.fleet.lock:
        key = estate.bigip.fleet.device(hostname).registration_key
    licensed = key is not None and counts.get("install", 0) >= 1
    text = f"licensed (registration key {key})" if licensed else "NOT licensed"
    return text, licensed, {"registration_key": key, "installs": counts.get("install", 0)}


def _table(rows: list[DeviceRow]) -> list[str]:
    header = ("device", "via", "collected", "came back", "on the device")
    cells = [(r.hostname, r.transport, r.collected, r.came_back, r.on_device) for r in rows]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header) - 1)]
    lines = []
    for line in [header, *cells]:
        padded = [c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)]
        lines.append("  " + "  ".join([*padded, line[-1]]))
    return lines


def _verdict(rows: list[DeviceRow]) -> str:
    ios = sum(1 for r in rows if r.platform == "ios-xe")
    bigip = len(rows) - ios
    missing = [r.hostname for r in rows if not r.done]
    if not missing:
        return (
            f"All {len(rows)} devices are licensed and acknowledged on the device: {ios} IOS XE "
            f"(authorization code installed, usage acknowledged), {bigip} BIG-IP (license loaded)."
        )
    return (
        f"{len(missing)} of {len(rows)} devices are not licensed and acknowledged on the device: "
        + ", ".join(missing)
    )


def summary_lines(report: DemoReport, *, kept: bool = True) -> list[str]:
    """The demo's summary as plain lines (the CLI adds colour).

    Args:
        report: what `run_demo` returned.
        kept: whether the demo folder stays. When it does not, the summary names no path in
            it (they are gone when the command ends) and says how to keep them instead of
            printing commands that could not work.

    Returns:
        The lines, section headings unindented.
    """
    request = str(report.request) if kept else report.request.name
    response = str(report.response) if kept else report.response.name
    audit = ", ".join(f"{k}: {n} entries" for k, n in report.audit_entries.items())
    lines = [
        "What crossed the gap:",
        f"  request   {request} ({report.request.stat().st_size} bytes, signed by "
        f"secure-lab, encrypted to dmz-licensing)",
        f"            manifest sha256 {report.request_sha256}",
        "            " + ", ".join(f"{n} {a}" for a, n in report.request_items.items()),
        f"  response  {response} ({report.response.stat().st_size} bytes, signed by dmz-licensing)",
        f"            manifest sha256 {report.response_sha256}",
        "Outcomes:",
    ]
    for vendor, counts in report.outcomes.items():
        lines.append(f"  {vendor:7} " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for item_id, action, message in report.problems:
        lines.append(f"  {item_id} {action}: {message}")
    if report.inventory is not None:
        lines += [
            "Devices (the last column is read from the emulated devices themselves):",
            *_table(report.devices),
            _verdict(report.devices),
        ]
    by_hand = [
        f"The same by hand (README.md, '{report.by_hand_section}', has every step):",
        *[f"  {command}" for command in report.by_hand],
    ]
    if not kept:
        return [
            *lines,
            f"Audit logs verified: {audit}.",
            *by_hand,
            "The demo folder has been removed. To keep the homes, both bundles and the device "
            "files, and get the commands that check the request by hand with age, tar, openssl "
            "and sha256sum, run it again with a folder to keep:",
            f"  {report.rerun}",
        ]
    return [
        *lines,
        "Where things are:",
        *(
            [
                f"  inventory (devices now stopped)   {report.inventory}",
                f"  collected files and plan          {report.workdir / 'collected'}, "
                f"{report.workdir / 'plan.csv'}",
            ]
            if report.inventory is not None
            else [f"  plan                              {report.workdir / 'plan.csv'}"]
        ),
        f"  device files and INSTRUCTIONS.md  {report.out_dir}",
        f"  inside home / outside home        {report.inside_home} / {report.outside_home}",
        f"  audit logs verified               {audit}",
        *by_hand,
        "Verify the request by hand (from any folder; it writes req.tar.gz and b/ there):",
        *[f"  {command}" for command in report.commands],
    ]


def report_json(report: DemoReport) -> dict[str, Any]:
    """The demo's result for `--json`."""
    return {
        "workdir": str(report.workdir),
        "request": str(report.request),
        "request_sha256": report.request_sha256,
        "request_items": report.request_items,
        "response": str(report.response),
        "response_sha256": report.response_sha256,
        "outcomes": report.outcomes,
        "problems": [{"id": i, "action": a, "message": m} for i, a, m in report.problems],
        "out_dir": str(report.out_dir),
        "audit_entries": report.audit_entries,
        "inventory": str(report.inventory) if report.inventory else None,
        "devices": [
            {
                "hostname": row.hostname,
                "platform": row.platform,
                "transport": row.transport,
                "licensed": row.licensed,
                "acknowledged": row.acknowledged,
                **row.facts,
            }
            for row in report.devices
        ],
        "all_licensed": report.all_licensed,
    }


# --- the same round trip through the CSSM portal (no API credentials) ----------------------------

PORTAL_BY_HAND: Final = (
    "airgap --home inside inside pack plan.csv --udi captures --rum rum "
    f"--entitlement '{ENTITLEMENT}' -o request.airgap --encrypt",
    "airgap --home outside outside portal-export request.airgap -o portal/",
    "# in the portal: upload portal/UD_SA_*.tar.gz; save the ACK and codes as worksheet.csv says",
    "airgap --home outside outside portal-import request.airgap --from portal/ -o response.airgap",
    "airgap --home inside inside import response.airgap --out licences",
)


@dataclass
class PortalDemoReport(DemoReport):
    """What `run_portal_demo` did: the demo's report, plus the files the portal path exchanged."""

    portal_dir: Path = Path()
    exchanged: list[tuple[str, str, int]] = field(default_factory=list)  # (step, file, bytes)
    api_calls: int = 0  # calls to the Smart Licensing API (none: the portal path needs none)
    portal_calls: dict[str, int] = field(default_factory=dict)
    by_hand: Sequence[str] = PORTAL_BY_HAND
    by_hand_section: str = "Without API credentials"
    rerun: str = "airgap demo --portal --keep ./airgap-demo"

    @property
    def all_licensed(self) -> bool:
        """Every item of the request came back done: this demo has no devices to ask."""
        return not self.problems


def run_portal_demo(workdir: Path, *, devices: int = 6, say: Say | None = None) -> PortalDemoReport:
    """Run the round trip through the CSSM portal path in `workdir` (empty or absent).

    The inside packs reservations, usage reports and a return; the outside exports them for
    the portal (usage upload and worksheet); an operator's portal work is done against the
    Cisco emulator's portal endpoints by following worksheet.csv (upload → ACK download,
    generate → authorization code, enter the return code → tick done); the outside imports
    what the portal gave and the inside imports the response. No API credentials are used.

    Raises:
        ConfigError: `workdir` is not empty, or `devices` is out of range.
        AirgapError: any step failed (a bug: the demo controls every input).
    """
    tell = say or (lambda _: None)
    if not 1 <= devices <= 5000:
        raise ConfigError("--devices must be between 1 and 5000")
    workdir, inside_root, outside_root = _two_homes(workdir)
    tell("1/7 creating an inside and an outside home (no API credentials) and exchanging cards")

    tell("2/7 starting the Cisco emulator (its CSSM portal endpoints) on 127.0.0.1")
    cisco = build_cisco_server(poll_delay=0.0).start()
    try:
        return _portal_round_trip(workdir, inside_root, outside_root, cisco, devices, tell)
    finally:
        cisco.stop()


def _portal_round_trip(
    workdir: Path,
    inside_root: Path,
    outside_root: Path,
    cisco: EmulatorServer,
    count: int,
    tell: Say,
) -> PortalDemoReport:
    from airgap.inside.importer import import_response
    from airgap.inside.pack import pack
    from airgap.outside.portal import portal_export, portal_import

    tell(f"3/7 emulating {count} devices and one being decommissioned (it returns its licenses)")
    captures, rum = workdir / "captures", workdir / "rum"
    rum.mkdir(parents=True)
    for n in range(count):
        pid, sn = PIDS[n % len(PIDS)], f"FDO{n + 1:08d}"
        files = write_device(pid=pid, sn=sn, hostname=f"sw-{n + 1:03d}", out=captures)
        files.rum.rename(rum / files.rum.name)
    hostname, old_pid, old_sn = "sw-old-001", "C9300-24T", "FDO99999999"
    old = write_device(
        pid=old_pid, sn=old_sn, hostname=hostname, out=workdir / "returns", return_code=True
    )
    emulator = cisco.app
    assert isinstance(emulator, CiscoEmulator) and old.return_code is not None
    emulator.reservations[f"{old_pid}:{old_sn}"] = Reservation(
        pid=old_pid,
        sn=old_sn,
        hostname=hostname,
        virtual_account="Default",
        entitlements={NETWORK_ADVANTAGE_TAG: 1},
    )
    text = old.return_code.read_text()
    code_line = next(line for line in text.splitlines() if "Return code:" in line)
    plan = workdir / "plan.csv"
    with plan.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["action", "hostname", "pid", "sn", "return_code"])
        writer.writerow(
            ["cisco.return", hostname, old_pid, old_sn, code_line.split(":", 1)[1].strip()]
        )

    tell("4/7 inside: packing and signing the request (age-encrypted to the outside)")
    request = workdir / "transfer" / "request.airgap"
    packed = pack(
        Home.open(inside_root),
        plans=[plan],
        udi_dir=captures,
        entitlements=[f"{NETWORK_ADVANTAGE_TAG}:1"],
        rum_dir=rum,
        returns_dir=None,
        output=request,
        expires=timedelta(days=1),
        encrypt=True,
        compress=True,
    )

    tell("5/7 outside: verifying, writing the usage upload and the worksheet for the portal")
    portal_dir = workdir / "portal"
    exported = portal_export(Home.open(outside_root), request, portal_dir)
    exchanged = [("to the portal", p.name, p.stat().st_size) for p in exported.files]

    tell("6/7 in the portal (emulated): upload, download the ACK, generate codes, enter returns")
    exchanged += _do_portal_tasks(cisco.url, portal_dir)

    tell("7/7 outside: matching the portal's files and signing the response; inside: import")
    response = workdir / "transfer" / "response.airgap"
    processed = portal_import(Home.open(outside_root), request, portal_dir, output=response)
    out_dir = workdir / "out"
    imported = import_response(Home.open(inside_root), response, out=out_dir)

    stats = emulator.stats()["calls"]
    return PortalDemoReport(
        **_common_report(
            workdir, inside_root, outside_root, request, packed, response, processed, imported
        ),
        portal_dir=portal_dir,
        exchanged=exchanged,
        api_calls=sum(n for name, n in stats.items() if not name.startswith("portal_")),
        portal_calls={k: n for k, n in sorted(stats.items()) if k.startswith("portal_")},
    )


def _do_portal_tasks(url: str, folder: Path) -> list[tuple[str, str, int]]:
    """What an operator does in the CSSM portal, done against the emulator's portal endpoints
    by following worksheet.csv; returns (step, file, bytes) of every file it saved."""
    import json

    import requests

    from airgap.outside.worksheet import COLUMNS, read_csv

    session = requests.Session()
    session.trust_env = False  # 127.0.0.1 only; never through a proxy
    saved: list[tuple[str, str, int]] = []
    record = json.loads((folder / "portal-export.json").read_text(encoding="utf-8"))
    for export in record["exports"]:
        if export["usage_file"]:
            upload = (folder / export["usage_file"]).read_bytes()
            answer = session.post(f"{url}/portal/usage-upload", data=upload, timeout=60)
            answer.raise_for_status()
            ack = folder / f"ACK_{export['usage_file'].removeprefix('UD_SA_')}"
            ack.write_bytes(answer.content)
            saved.append(("from the portal", ack.name, len(answer.content)))
    sheet = folder / "worksheet.csv"
    rows = read_csv(sheet.read_text(encoding="utf-8"))
    done: set[int] = set()
    for row in rows:
        cells = row.cells
        device = {
            "udi_pid": cells["pid"],
            "udi_serial_number": cells["sn"],
            "virtual_account": cells["virtual_account"],
        }
        if cells["action"] == "cisco.reserve":
            entitlements = []
            for part in cells["entitlements"].split(";"):
                tag, _, count = part.strip().rpartition(" x ")
                entitlements.append({"tag": tag, "count": int(count)})
            answer = session.post(
                f"{url}/portal/authorization",
                json={**device, "hostname": cells["hostname"], "entitlements": entitlements},
                timeout=30,
            )
            answer.raise_for_status()
            target = folder / cells["save_as"]
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(answer.content)
            saved.append(("from the portal", cells["save_as"], len(answer.content)))
        elif cells["action"] == "cisco.return":
            answer = session.post(
                f"{url}/portal/return", json={**device, "return_code": cells["code"]}, timeout=30
            )
            answer.raise_for_status()
            done.add(row.line)
    if done:
        # As a spreadsheet would save it: the same columns, `yes` in the done cells.
        with sheet.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({**row.cells, "done": "yes" if row.line in done else ""})
        saved.append(("ticked done", "worksheet.csv", sheet.stat().st_size))
    return saved


def portal_summary_lines(report: PortalDemoReport, *, kept: bool = True) -> list[str]:
    """The portal demo's summary: the demo's, with the files exchanged with the portal."""
    lines = summary_lines(report, kept=kept)
    at = lines.index("Outcomes:")
    folder = str(report.portal_dir) if kept else report.portal_dir.name
    portal = [f"Through the CSSM portal ({folder}), with no API credentials:"]
    portal += [f"  {step:16} {name} ({size} bytes)" for step, name, size in report.exchanged]
    calls = ", ".join(
        f"{n} {name.removeprefix('portal_')}" for name, n in report.portal_calls.items()
    )
    portal.append(f"  portal operations: {calls}; Smart Licensing API calls: {report.api_calls}")
    return [*lines[:at], *portal, *lines[at:]]


def portal_report_json(report: PortalDemoReport) -> dict[str, Any]:
    """The portal part of the portal demo's result for `--json`."""
    return {
        "folder": str(report.portal_dir),
        "exchanged": [
            {"step": step, "file": name, "bytes": size} for step, name, size in report.exchanged
        ],
        "api_calls": report.api_calls,
        "portal_calls": report.portal_calls,
    }
