"""`airgap demo`: the whole round trip on one machine, against in-process emulators.

Two homes (inside, outside) exchange site cards; emulated devices produce `show license udi`
captures, signed RUM reports and a return code; the inside packs a mixed request (reserve,
usage reports, a return, BIG-IQ assigns, and one deliberately bad item), the outside processes
it against the Cisco and BIG-IQ emulators, the inside imports the response, and both audit
logs are verified. Nothing here is a stand-in for the real commands: it calls the same core
functions the CLI calls.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from airgap.config import set_value
from airgap.emulators.bigiq import BigIqEmulator
from airgap.emulators.cisco import CiscoEmulator, Reservation, build_cisco_server
from airgap.emulators.device import NETWORK_ADVANTAGE_TAG, write_device
from airgap.emulators.server import EmulatorServer
from airgap.errors import ConfigError
from airgap.home import Home, init_home
from airgap.site import trust_site

Say = Callable[[str], None]

# Demo credentials for the emulators only: the emulators accept any non-empty values.
DEMO_ENV = {
    "AIRGAP_CISCO_CLIENT_ID": "demo-client",
    "AIRGAP_CISCO_CLIENT_SECRET": "demo-secret-not-real",
    "AIRGAP_BIGIQ_USERNAME": "admin",
    "AIRGAP_BIGIQ_PASSWORD": "demo-password-not-real",
}
PIDS = ("C9300-24T", "C9300-48P", "ISR4331/K9", "C9500-32C")


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


def _mac(n: int) -> str:
    return f"00-50-56-9a-{n // 256:02x}-{n % 256:02x}"


def _write_plan(path: Path, macs: list[str], returning: Path, udi: tuple[str, str, str]) -> None:
    """Plan rows the captures do not give: a return, BIG-IQ assigns, one bad assign."""
    columns = [
        "action",
        "hostname",
        "pid",
        "sn",
        "return_code",
        "mac",
        "hypervisor",
        "pool",
        "unit_of_measure",
    ]
    code_line = next(line for line in returning.read_text().splitlines() if "Return code:" in line)
    hostname, pid, sn = udi
    rows: list[dict[str, str]] = [
        {
            "action": "cisco.return",
            "hostname": hostname,
            "pid": pid,
            "sn": sn,
            "return_code": code_line.split("Return code:", 1)[1].strip(),
        }
    ]
    rows += [
        {
            "action": "bigiq.assign",
            "mac": mac,
            "hypervisor": "vmware",
            "pool": "demo-utility",
            "unit_of_measure": "yearly",
        }
        for mac in macs
    ]
    # The deliberately bad item: a pool that does not exist on the BIG-IQ.
    rows.append(
        {
            "action": "bigiq.assign",
            "mac": _mac(9999),
            "hypervisor": "vmware",
            "pool": "no-such-pool",
        }
    )
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def run_demo(workdir: Path, *, devices: int = 6, say: Say | None = None) -> DemoReport:
    """Run the round trip in `workdir` (which must be empty or absent).

    Raises:
        ConfigError: `workdir` is not empty, or `devices` is out of range.
        AirgapError: any step failed (a bug: the demo controls every input).
    """
    tell = say or (lambda _: None)
    if not 1 <= devices <= 5000:
        raise ConfigError("--devices must be between 1 and 5000")
    if workdir.exists() and any(workdir.iterdir()):
        raise ConfigError(f"{workdir} is not empty", hint="Give --keep an empty or new folder.")
    workdir.mkdir(parents=True, exist_ok=True)
    # Absolute, so the printed commands still find the key after they `cd` into the bundle.
    workdir = workdir.resolve()
    inside_root, outside_root = workdir / "inside-home", workdir / "outside-home"

    tell("1/6 creating an inside and an outside home and exchanging site cards")
    init_home(inside_root, role="inside", name="secure-lab", passphrase=None)
    init_home(outside_root, role="outside", name="dmz-licensing", passphrase=None)
    inside, outside = Home.open(inside_root), Home.open(outside_root)
    trust_site(inside, outside.card())
    trust_site(outside, inside.card())

    tell("2/6 starting the Cisco and BIG-IQ emulators on 127.0.0.1")
    cisco = build_cisco_server(poll_delay=1.0).start()
    bigiq = EmulatorServer(BigIqEmulator(task_delay=0.5)).start()
    try:
        return _round_trip(workdir, inside_root, outside_root, cisco, bigiq, devices, tell)
    finally:
        cisco.stop()
        bigiq.stop()


def _round_trip(
    workdir: Path,
    inside_root: Path,
    outside_root: Path,
    cisco: EmulatorServer,
    bigiq: EmulatorServer,
    count: int,
    tell: Say,
) -> DemoReport:
    from airgap.inside.importer import import_response
    from airgap.inside.pack import pack
    from airgap.outside.process import ProcessOptions, process_request

    paths = Home.open(outside_root).paths
    set_value(paths, "cisco.token_url", f"{cisco.url}/oauth2/default/v1/token")
    set_value(paths, "cisco.api_base", f"{cisco.url}/services/api/smart-accounts-and-licensing/")
    set_value(paths, "bigiq.url", bigiq.url)

    tell(f"3/6 emulating {count} devices: show license udi captures, signed RUM reports")
    captures, rum = workdir / "captures", workdir / "rum"
    rum.mkdir(parents=True)
    for n in range(count):
        pid, sn = PIDS[n % len(PIDS)], f"FDO{n + 1:08d}"
        files = write_device(pid=pid, sn=sn, hostname=f"sw-{n + 1:03d}", out=captures)
        files.rum.rename(rum / files.rum.name)
    # A device being decommissioned already holds a reservation at Cisco; it returns it.
    old_udi = ("sw-old-001", "C9300-24T", "FDO99999999")
    old = write_device(
        pid=old_udi[1],
        sn=old_udi[2],
        hostname=old_udi[0],
        out=workdir / "returns",
        return_code=True,
    )
    emulator = cisco.app
    assert isinstance(emulator, CiscoEmulator)
    emulator.reservations[f"{old_udi[1]}:{old_udi[2]}"] = Reservation(
        pid=old_udi[1],
        sn=old_udi[2],
        hostname=old_udi[0],
        virtual_account="Default",
        entitlements={NETWORK_ADVANTAGE_TAG: 1},
    )
    assert old.return_code is not None
    plan = workdir / "plan.csv"
    _write_plan(plan, [_mac(n) for n in range(max(2, count // 2))], old.return_code, old_udi)

    tell("4/6 inside: packing and signing the request (age-encrypted to the outside)")
    inside = Home.open(inside_root)
    request = workdir / "transfer" / "request.airgap"
    packed = pack(
        inside,
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

    tell("5/6 outside: verifying, calling Cisco and BIG-IQ, signing the response")
    outside = Home.open(outside_root, dict(DEMO_ENV))
    response = workdir / "transfer" / "response.airgap"
    processed = process_request(
        outside,
        request,
        ProcessOptions(output=response, concurrency=8, rate=100.0, max_wait=timedelta(minutes=5)),
    )

    tell("6/6 inside: verifying the response and writing per-device files")
    out_dir = workdir / "out"
    imported = import_response(Home.open(inside_root), response, out=out_dir)

    audit_entries = {
        "inside": Home.open(inside_root).audit().verify().entries,
        "outside": Home.open(outside_root).audit().verify().entries,
    }
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
    commands = [
        f"age -d -i {identity} -o req.tar.gz {request}",
        "mkdir b && tar -xzf req.tar.gz -C b && cd b",
        f"openssl pkeyutl -verify -pubin -inkey {pub} -rawin -in manifest.json "
        f"-sigfile signatures/{fp16}.sig",
        "sha256sum -c SHA256SUMS",
    ]
    return DemoReport(
        workdir=workdir,
        inside_home=inside_root,
        outside_home=outside_root,
        request=request,
        request_sha256=packed.manifest_sha256,
        request_items=dict(sorted(packed.by_action.items())),
        response=response,
        response_sha256=str(processed.response_sha256),
        outcomes={k: dict(sorted(v.items())) for k, v in sorted(outcomes.items())},
        problems=problems,
        out_dir=Path(imported.out_dir),
        audit_entries=audit_entries,
        commands=commands,
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
    if not kept:
        return [
            *lines,
            f"Audit logs verified: {audit}.",
            "The demo folder has been removed. To keep the homes, both bundles and the device "
            "files, and get the commands that check the request by hand with age, tar, openssl "
            "and sha256sum, run it again with a folder to keep:",
            "  airgap demo --keep ./airgap-demo",
        ]
    return [
        *lines,
        "Where things are:",
        f"  device files and INSTRUCTIONS.md  {report.out_dir}",
        f"  inside home / outside home        {report.inside_home} / {report.outside_home}",
        f"  audit logs verified               {audit}",
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
    }


# --- the same round trip through the CSSM portal (no API credentials) ----------------------------


@dataclass
class PortalDemoReport(DemoReport):
    """What `run_portal_demo` did: the demo's report, plus the files the portal path exchanged."""

    portal_dir: Path = Path()
    exchanged: list[tuple[str, str, int]] = field(default_factory=list)  # (step, file, bytes)
    api_calls: int = 0  # calls to the Smart Licensing API (none: the portal path needs none)
    portal_calls: dict[str, int] = field(default_factory=dict)


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
    if workdir.exists() and any(workdir.iterdir()):
        raise ConfigError(f"{workdir} is not empty", hint="Give --keep an empty or new folder.")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    inside_root, outside_root = workdir / "inside-home", workdir / "outside-home"

    tell("1/7 creating an inside and an outside home (no API credentials) and exchanging cards")
    init_home(inside_root, role="inside", name="secure-lab", passphrase=None)
    init_home(outside_root, role="outside", name="dmz-licensing", passphrase=None)
    trust_site(Home.open(inside_root), Home.open(outside_root).card())
    trust_site(Home.open(outside_root), Home.open(inside_root).card())

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
    outcomes: dict[str, Counter[str]] = {}
    problems = []
    for item in processed.items:
        outcomes.setdefault("Cisco", Counter())[item["status"]] += 1
        if item["status"] != "ok":
            problems.append((item["id"], item["action"], (item["error"] or {}).get("message", "")))
    pub = inside_root / "keys" / "signing.pub.pem"
    identity = outside_root / "keys" / "age-identity.txt"
    fp16 = Home.open(inside_root).fingerprint.removeprefix("sha256:")[:16]
    return PortalDemoReport(
        workdir=workdir,
        inside_home=inside_root,
        outside_home=outside_root,
        request=request,
        request_sha256=packed.manifest_sha256,
        request_items=dict(sorted(packed.by_action.items())),
        response=response,
        response_sha256=str(processed.response_sha256),
        outcomes={k: dict(sorted(v.items())) for k, v in sorted(outcomes.items())},
        problems=problems,
        out_dir=Path(imported.out_dir),
        audit_entries={
            "inside": Home.open(inside_root).audit().verify().entries,
            "outside": Home.open(outside_root).audit().verify().entries,
        },
        commands=[
            f"age -d -i {identity} -o req.tar.gz {request}",
            "mkdir b && tar -xzf req.tar.gz -C b && cd b",
            f"openssl pkeyutl -verify -pubin -inkey {pub} -rawin -in manifest.json "
            f"-sigfile signatures/{fp16}.sig",
            "sha256sum -c SHA256SUMS",
        ],
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
