"""End to end: whole round trips driven only through the installed `airgap` command.

Each test creates its homes with `airgap init`, exchanges site cards with `key export` and
`trust add`, runs `airgap emulate cisco|bigiq` as processes, and reads what the commands wrote
with the standard library alone (json, csv, tarfile, hashlib). No `airgap` module is imported.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool

PLAN_COLUMNS = [  # every plan column, in the documented order
    *("action", "hostname", "pid", "sn", "entitlements", "return_code", "request_code"),
    *("reservation_type", "rum_file", "mac", "hypervisor", "pool", "sku_keyword1"),
    *("sku_keyword2", "unit_of_measure", "tenant", "chargeback_tag", "regkey", "add_on_keys"),
    *("mode", "dossier_file", "accept_eula", "virtual_account", "tags"),
]
NETWORK_ADVANTAGE = "regid.2017-03.com.cisco.advantagek9,1.0_bd1da96e-ec1d-412b-a50e-53846b347d53"
ENTITLEMENT = f"{NETWORK_ADVANTAGE}:1"
TYPED_PIDS = ("C9300-24T", "C9300-48P", "C9500-32C")
HYPERVISORS = ("vmware", "kvm", "hyperv", "aws")
PROCESS_FAST = ("--concurrency", "16", "--rate", "0")
AGE_HEADER = b"age-encryption.org/v1"


# --- inputs an operator would prepare ----------------------------------------------------------


def write_udi_captures(folder: Path, devices: Iterable[tuple[str, str, str]]) -> None:
    """`show license udi` terminal captures, as an operator saves them from a device session."""
    folder.mkdir(parents=True, exist_ok=True)
    for hostname, pid, sn in devices:
        (folder / f"{hostname}.udi.txt").write_text(
            f"\n{hostname}#terminal length 0\n{hostname}#show license udi\n"
            f"UDI: PID:{pid},SN:{sn}\n\n\n{hostname}#",
            encoding="utf-8",
        )


def write_stack_capture(path: Path, members: list[tuple[str, str, str]]) -> None:
    """`show license udi` of an HA stack: the active UDI, then every member's (one hostname)."""
    hostname, pid, sn = members[0]
    roles = ["Active", "Standby", *["Member"] * (len(members) - 2)]
    listing = "".join(
        f"    {r}:PID:{p},SN:{s}\n" for r, (_, p, s) in zip(roles, members, strict=True)
    )
    path.write_text(
        f"{hostname}#show license udi\nUDI: PID:{pid},SN:{sn}\n\nHA UDI List:\n{listing}\n"
        f"{hostname}#",
        encoding="utf-8",
    )


def write_plan(path: Path, rows: list[dict[str, str]]) -> Path:
    """A CSV plan with the full header (every column; empty cell = absent)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=PLAN_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def assign_row(mac: str, pool: str = "demo-utility", hypervisor: str = "vmware") -> dict[str, str]:
    return {
        "action": "bigiq.assign",
        "mac": mac,
        "hypervisor": hypervisor,
        "pool": pool,
        "unit_of_measure": "yearly",
    }


def mac_for(n: int) -> str:
    """A MAC written the way people type them: lower-case dashes, upper-case colons, mixed."""
    octets = [0x00, 0x50, 0x56, 0xAB, n // 256, n % 256]
    styles = (
        "-".join(f"{o:02x}" for o in octets),
        ":".join(f"{o:02X}" for o in octets),
        ":".join(f"{o:02x}" for o in octets),
    )
    return styles[n % 3]


def canonical_mac(mac: str) -> str:
    digits = mac.replace("-", "").replace(":", "").upper()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


# --- reading and damaging bundles with tarfile only --------------------------------------------


def read_members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        result: dict[str, bytes] = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            if handle is not None:
                result[member.name] = handle.read()
        return result


def member_offsets(bundle: Path) -> dict[str, tuple[int, int]]:
    """Member name -> (offset of its data in the file, size); plain tar only."""
    with tarfile.open(bundle, mode="r:") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}


def flip_byte(
    src: Path, dst: Path, member: str, at: int | None = None, value: int | None = None
) -> Path:
    """Copy `src` to `dst` with one byte of `member`'s data changed (one bit, or to `value`);
    the tar headers stay valid."""
    offset, size = member_offsets(src)[member]
    data = bytearray(src.read_bytes())
    where = offset + (size // 2 if at is None else at)
    data[where] = data[where] ^ 0x01 if value is None else value
    assert data != src.read_bytes()
    dst.write_bytes(bytes(data))
    return dst


def rewrite(
    src: Path,
    dst: Path,
    *,
    add: tuple[str, bytes] | None = None,
    link: tuple[str, str] | None = None,
    drop: str | None = None,
) -> Path:
    """A modified copy written member by member with tarfile: `add` a file or a symbolic `link`
    after items.json, or `drop` a member (every other header unchanged)."""
    with tarfile.open(src) as tar, tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as out:
        for member in tar.getmembers():
            if member.name == drop:
                continue
            handle = tar.extractfile(member) if member.isfile() else None
            data = handle.read() if handle is not None else b""
            out.addfile(member, io.BytesIO(data) if member.isfile() else None)
            if add and member.name == "items.json":
                info = tarfile.TarInfo(add[0])
                info.size, info.mtime, info.mode = len(add[1]), member.mtime, 0o644
                out.addfile(info, io.BytesIO(add[1]))
            if link and member.name == "items.json":
                info = tarfile.TarInfo(link[0])
                info.type, info.linkname, info.mtime = tarfile.SYMTYPE, link[1], member.mtime
                out.addfile(info)
    return dst


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its SHA-256 (empty when the folder does not exist)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def check_by_hand(bundle: Path, signer: Any, scratch: Path) -> dict[str, bytes]:
    """The README's check with stock tools: canonical manifest, listed members, SHA256SUMS, and
    `openssl pkeyutl -verify` of the signer's signature. Returns the members."""
    members = read_members(bundle)
    raw = members["manifest.json"]
    manifest = json.loads(raw)
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical.encode("utf-8") == raw
    listed = {m["path"]: m for m in manifest["members"]}
    signatures = {n for n in members if n.startswith("signatures/")}
    assert set(listed) == set(members) - {"manifest.json"} - signatures
    for path, entry in listed.items():
        data = members[path]
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"])
    sums = [line.split("  ", 1) for line in members["SHA256SUMS"].decode().splitlines()]
    assert {path: digest for digest, path in sums} == {
        path: entry["sha256"] for path, entry in listed.items() if path != "SHA256SUMS"
    }
    assert manifest["producer"]["fingerprint"] == signer.fingerprint
    signature = f"signatures/{signer.fingerprint.removeprefix('sha256:')[:16]}.sig"
    assert len(members[signature]) == 64
    scratch.mkdir(parents=True, exist_ok=True)
    card = json.loads(signer.card.read_text(encoding="utf-8"))
    (scratch / "signer.pub.pem").write_text(card["ed25519_public_key"], encoding="ascii")
    (scratch / "manifest.json").write_bytes(raw)
    (scratch / "manifest.sig").write_bytes(members[signature])
    command = [require_tool("openssl"), "pkeyutl", "-verify", "-pubin", "-inkey"]
    command += ["signer.pub.pem", "-rawin", "-in", "manifest.json", "-sigfile", "manifest.sig"]
    verified = subprocess.run(
        command,
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0 and "Success" in verified.stdout, verified
    return members


def setup_pair(world: Any, *, cisco: bool = True, bigiq: bool = True) -> tuple[Any, Any, dict]:
    inside = world.site("secure-lab", "inside")
    outside = world.site("dmz-licensing", "outside")
    world.trust(inside, outside)
    vendors = world.vendors(outside, cisco=cisco, bigiq=bigiq) if cisco or bigiq else {}
    return inside, outside, vendors


# --- 1. the full round trip ----------------------------------------------------------------------


def test_round_trip_of_1000_mixed_devices(world, pool_copy, tmp_path: Path) -> None:
    inside, outside, vendors = setup_pair(world)
    work = tmp_path / "work"
    out = tmp_path / "usb" / "licences"

    # Round trip 1: the devices being decommissioned get their reservations first.
    old_dir = work / "old"
    old = pool_copy("old", old_dir)
    n_old = len(old)
    req_a, resp_a = work / "req-a.airgap", work / "resp-a.airgap"
    packed_a = inside.ok(
        "inside", "pack", "--udi", str(old_dir), "--entitlement", ENTITLEMENT, "-o", str(req_a)
    )
    assert packed_a["by_action"] == {"cisco.reserve": n_old}
    done_a = outside.ok("outside", "process", str(req_a), "-o", str(resp_a), *PROCESS_FAST)
    assert done_a["counts"] == {"ok": n_old}
    imported_a = inside.ok("inside", "import", str(resp_a), "--out", str(out))
    assert imported_a["counts"]["ok"] == n_old and not imported_a["partial"]

    # Round trip 2: 1,000 devices. 600 reserve (typed captures, a 3-member stack, and emulated
    # devices that also report usage), the returns of round trip 1's devices plus one for a
    # device holding no reservation, BIG-IP assigns and one to a pool that does not exist.
    captures = work / "captures"
    fresh = pool_copy("fresh", captures)
    n_typed = 600 - 3 - len(fresh)
    n_assign = 1000 - 600 - (n_old + 1) - 1
    n_items = 600 + len(fresh) + n_old + 1 + n_assign + 1
    typed = [(f"sw-{n:04d}", TYPED_PIDS[n % 3], f"FDO{n:08d}") for n in range(1, n_typed + 1)]
    write_udi_captures(captures, typed)
    stack = [("sw-stack-01", "C9300-48P", f"FOCSTK{n:04d}") for n in range(1, 4)]
    write_stack_capture(captures / "sw-stack-01.txt", stack)
    returns = work / "returns"
    pool_copy("old", returns)
    (stray,) = pool_copy("stray", returns)
    macs = [mac_for(n) for n in range(n_assign)]
    bad_mac = "00:50:56:ab:ff:ff"
    rows = [assign_row(m, hypervisor=HYPERVISORS[n % 4]) for n, m in enumerate(macs)]
    rows.insert(200, assign_row(bad_mac, pool="no-such-pool"))
    plan = write_plan(work / "plan.csv", rows)
    req_b, resp_b = work / "req-b.airgap", work / "resp-b.airgap"
    packed = inside.ok(
        "inside",
        "pack",
        str(plan),
        "--udi",
        str(captures),
        "--entitlement",
        ENTITLEMENT,
        "--rum",
        str(captures),
        "--returns",
        str(returns),
        "-o",
        str(req_b),
    )
    assert packed["by_action"] == {
        "bigiq.assign": n_assign + 1,
        "cisco.report_usage": len(fresh),
        "cisco.reserve": 600,
        "cisco.return": n_old + 1,
    }
    assert packed["items"] == n_items and packed["sequence"] == 2
    request_id = packed["bundle_id"]

    # What crosses the gap checks out by hand, and carries each RUM report byte for byte.
    carried = check_by_hand(req_b, inside, work / "by-hand-request")
    for device in fresh:
        saved = (captures / f"{device.hostname}.rum.xml").read_bytes()
        (name,) = [n for n in carried if n.endswith(f"/{device.hostname}.rum.xml")]
        assert carried[name] == saved

    processed = outside.ok(
        "outside", "process", str(req_b), "-o", str(resp_b), *PROCESS_FAST, expect=4
    )
    check_by_hand(resp_b, outside, work / "by-hand-response")
    assert processed["request_id"] == request_id
    assert processed["counts"] == {"ok": n_items - 2, "failed": 2}
    failures = {i["action"]: i["error"] for i in processed["items"] if i["status"] != "ok"}
    assert failures["bigiq.assign"]["message"] == "License pool 'no-such-pool' not found"
    stray_message = f"No reserved licenses found for UDI PID:{stray.pid},SN:{stray.sn}"
    assert stray_message in failures["cisco.return"]["message"]

    imported = inside.ok("inside", "import", str(resp_b), "--out", str(out), expect=4)
    assert imported["partial"] is True and imported["already_imported"] is False
    counts = {"ok": n_items - 2, "failed": 2, "outstanding": 0, "pending": 0, "needs_attention": 0}
    assert imported["counts"] == counts
    target = out / request_id[:8]
    assert Path(imported["out"]) == target

    # Per-device files, where README's import section says they go.
    for hostname, _, sn in [*typed, *((d.hostname, d.pid, d.sn) for d in fresh)]:
        lic = target / "cisco" / hostname / "lic.txt"
        assert sn in lic.read_text(encoding="utf-8"), lic
    # A stack's members share a hostname; each still gets its own, unambiguous folder.
    stack_codes = {p.parent.name: p.read_text() for p in target.glob("cisco/sw-stack-01*/lic.txt")}
    assert len(stack_codes) == 3
    for _, _, sn in stack:
        assert len([name for name, text in stack_codes.items() if sn in text]) == 1
    for device in fresh:
        assert (target / "cisco" / device.hostname / "ack-1.xml").stat().st_size > 0
    for device in old:
        returned = json.loads((target / "cisco" / device.hostname / "return.json").read_text())
        assert returned["udi"] == {"pid": device.pid, "sn": device.sn}
    assert not (target / "cisco" / stray.hostname / "return.json").exists()
    for mac in macs:
        license_file = target / "bigiq" / canonical_mac(mac).replace(":", "-") / "bigip.license"
        assert "Registration Key" in license_file.read_text(encoding="utf-8"), license_file
    assert not (target / "bigiq" / canonical_mac(bad_mac).replace(":", "-")).exists()

    instructions = (target / "INSTRUCTIONS.md").read_text(encoding="utf-8")
    for phrase in (
        "License pool 'no-such-pool' not found",
        stray_message,
        canonical_mac(bad_mac),
        "license smart import flash:lic.txt",
        "reloadlic",
        "/config/bigip.license",
        f"sw-{n_typed:04d}",
        "sw-stack-01",
        fresh[-1].hostname,
    ):
        assert phrase in instructions, phrase

    summary = json.loads((target / "summary.json").read_text())
    assert summary["counts"] == counts and summary["complete"] is True
    assert len(summary["items"]) == n_items
    failed = {i["id"] for i in summary["items"] if i["status"] == "failed"}
    assert failed == {i["id"] for i in processed["items"] if i["status"] == "failed"}

    # Both audit logs verify; both sides tell the same story.
    for site in (inside, outside):
        assert site.ok("audit", "verify")["entries"] > 0
    assert inside.inside_status(all_requests=False)["requests"] == []
    inside_view = {r["bundle_id"]: r for r in inside.inside_status()["requests"]}
    outside_view = outside.outside_status()
    assert outside_view["attention"] == [] and outside_view["in_flight"] == []
    journal = {r["bundle_id"]: r for r in outside_view["requests"]}
    assert set(journal) == set(inside_view) == {packed_a["bundle_id"], request_id}
    for bundle_id, entry in journal.items():
        assert entry["status"] == "complete" and entry["responses"] == 1
        assert entry["producer"] == inside.fingerprint
        mine = inside_view[bundle_id]["counts"]
        assert (entry["items"]["DONE"], entry["items"]["FAILED"]) == (mine["ok"], mine["failed"])
        assert entry["items"]["NEEDS_ATTENTION"] == entry["items"]["SUBMITTING"] == 0
    assert journal[request_id]["items"]["DONE"] == n_items - 2

    # At most once at the vendors: one reservation, report and assignment each.
    cisco = vendors["cisco"].stats()["mutations"]
    for _, pid, sn in [*typed, *stack]:
        assert cisco[f"{pid}:{sn}"]["reserve"] == 1
    for device in fresh:
        assert (cisco[device.udi]["reserve"], cisco[device.udi]["report"]) == (1, 1)
    for device in old:
        assert (cisco[device.udi]["reserve"], cisco[device.udi]["return"]) == (1, 1)
    bigiq = vendors["bigiq"].stats()["mutations"]
    assert all(bigiq[canonical_mac(m)]["assign"] == 1 for m in macs)


# --- 2. tampering on the way out and on the way back -------------------------------------------


def test_tampered_request_and_response_are_refused_and_nothing_is_written(
    world, pool_copy, tmp_path: Path
) -> None:
    inside, outside, _ = setup_pair(world)
    work = tmp_path / "work"
    work.mkdir()
    # An earlier, genuine round trip so the outside's journal is not empty.
    first = write_plan(work / "first.csv", [assign_row(mac_for(900))])
    inside.ok("inside", "pack", str(first), "-o", str(work / "req-0.airgap"))
    outside.ok("outside", "process", str(work / "req-0.airgap"), "-o", str(work / "resp-0.airgap"))

    captures = work / "captures"
    pool_copy("fresh", captures, 2)
    plan = write_plan(work / "plan.csv", [assign_row(mac_for(1))])
    request = work / "req.airgap"
    inside.ok(
        "inside",
        "pack",
        str(plan),
        "--udi",
        str(captures),
        "--entitlement",
        ENTITLEMENT,
        "--rum",
        str(captures),
        "-o",
        str(request),
    )
    names = list(member_offsets(request))
    rum = next(n for n in names if n.endswith(".rum.xml"))
    signature = next(n for n in names if n.startswith("signatures/"))
    manifest = read_members(request)["manifest.json"]
    digest_at = manifest.index(b'"sha256":"') + len(b'"sha256":"')
    other_hex = ord("1") if manifest[digest_at : digest_at + 1] == b"0" else ord("0")
    tampered = work / "tampered"
    tampered.mkdir()
    cases = [
        (flip_byte(request, tampered / "items.airgap", "items.json"), "E_HASH_MISMATCH"),
        (flip_byte(request, tampered / "rum.airgap", rum), "E_HASH_MISMATCH"),
        (flip_byte(request, tampered / "sig.airgap", signature), "E_SIGNATURE"),
        # A listed digest changed in the signed manifest: still canonical and schema-valid,
        # no longer what was signed.
        (
            flip_byte(request, tampered / "manifest.airgap", "manifest.json", digest_at, other_hex),
            "E_SIGNATURE",
        ),
        (
            rewrite(request, tampered / "extra.airgap", add=("files/extra.txt", b"#!/bin/sh\n")),
            "E_UNLISTED_MEMBER",
        ),
        (rewrite(request, tampered / "dropped.airgap", drop=rum), "E_MISSING_MEMBER"),
    ]
    truncated = tampered / "truncated.airgap"
    offset, size = member_offsets(request)[rum]
    truncated.write_bytes(request.read_bytes()[: offset + size // 2])
    cases.append((truncated, "E_NOT_A_BUNDLE"))
    assert all(c[0].read_bytes() != request.read_bytes() for c in cases)

    journal_before = outside.outside_status()
    outbox = work / "outbox"
    outbox.mkdir()
    for n, (bad, code) in enumerate(cases):
        outside.refused("outside", "process", str(bad), code=code, cwd=outbox)
        if n < 3:  # `verify` reads bundles the same way; a few cases show it
            outside.refused("verify", str(bad), code=code)
    assert outside.outside_status() == journal_before
    assert list(outbox.iterdir()) == []
    assert sorted(p.name for p in tampered.iterdir()) == sorted(c[0].name for c in cases)
    # The auditor sees each refusal, with its code, in the outside's log.
    export = work / "audit.csv"
    assert outside.ok("audit", "export", "--format", "csv", "-o", str(export))["entries"] > 0
    with export.open(newline="", encoding="utf-8") as handle:
        rows = [(r["event"], json.loads(r["details"])) for r in csv.DictReader(handle)]
    refusals = [d["code"] for e, d in rows if e == "refusal" and d.get("action") == "process"]
    assert refusals == [code for _, code in cases]
    assert outside.ok("audit", "verify")["ok"] is True

    # The genuine request goes through.
    response = work / "resp.airgap"
    done = outside.ok("outside", "process", str(request), "-o", str(response))
    assert done["counts"] == {"ok": 5}
    # Bundles fed to the wrong side are refused for their kind.
    outside.refused("outside", "process", str(response), code="E_WRONG_ROLE", cwd=outbox)
    assert list(outbox.iterdir()) == []

    # On the way back.
    names = list(member_offsets(response))
    lic = next(n for n in names if n.endswith("lic.txt"))
    signature = next(n for n in names if n.startswith("signatures/"))
    back = [
        (flip_byte(response, tampered / "resp-lic.airgap", lic), "E_HASH_MISMATCH"),
        (flip_byte(response, tampered / "resp-items.airgap", "items.json"), "E_HASH_MISMATCH"),
        (flip_byte(response, tampered / "resp-sig.airgap", signature), "E_SIGNATURE"),
        (
            rewrite(response, tampered / "resp-extra.airgap", add=("files/x/lic.txt", b"x")),
            "E_UNLISTED_MEMBER",
        ),
    ]
    # A link planted among the licences, aimed out of the output folder.
    escape = rewrite(response, tampered / "resp-link.airgap", link=("files/evil", "/etc/cron.d"))
    back += [(escape, "E_UNSAFE_MEMBER"), (request, "E_WRONG_ROLE")]
    out = tmp_path / "licences"
    status_before = inside.inside_status()
    for bad, code in back:
        inside.refused("inside", "import", str(bad), "--out", str(out), code=code)
        assert not out.exists(), f"{bad.name} wrote {tree(out)}"
    assert inside.inside_status() == status_before
    (outstanding,) = [r for r in status_before["requests"] if r["bundle_id"] == done["request_id"]]
    assert outstanding["counts"]["outstanding"] == 5 and outstanding["responses"] == []

    imported = inside.ok("inside", "import", str(response), "--out", str(out))
    assert imported["counts"]["ok"] == 5
    assert len([p for p in tree(out) if p.endswith("lic.txt")]) == 2


# --- 3. replays ----------------------------------------------------------------------------------


def test_replayed_and_foreign_responses(world, tmp_path: Path) -> None:
    inside, outside, vendors = setup_pair(world, bigiq=False)
    other = world.site("other-lab", "inside")
    world.trust(other, outside)
    work = tmp_path / "work"
    out = tmp_path / "licences"
    devices = [(f"rp-{n:02d}", "C9300-24T", f"FOCRP{n:04d}") for n in range(6)]

    def round_trip(site: Any, n: int, count_from: int) -> tuple[dict, Path, Path]:
        folder = work / f"udi-{n}"
        write_udi_captures(folder, devices[count_from : count_from + 2])
        request, response = work / f"req-{n}.airgap", work / f"resp-{n}.airgap"
        packed = site.ok(
            "inside", "pack", "--udi", str(folder), "--entitlement", ENTITLEMENT, "-o", str(request)
        )
        outside.ok("outside", "process", str(request), "-o", str(response))
        return packed, request, response

    packed_1, request_1, response_1 = round_trip(inside, 1, 0)
    first = inside.ok("inside", "import", str(response_1), "--out", str(out))
    assert first["already_imported"] is False and first["counts"]["ok"] == 2
    _, _, response_2 = round_trip(inside, 2, 2)
    inside.ok("inside", "import", str(response_2), "--out", str(out))
    files = tree(out)
    status = inside.inside_status()

    # The old response again: a no-op that says so.
    again = inside.ok("inside", "import", str(response_1), "--out", str(out))
    assert again["already_imported"] is True and again["written"] == []
    human = inside.run("inside", "import", str(response_1), "--out", str(out), json_output=False)
    assert human.rc == 0 and "Already imported" in human.proc.stdout, human
    assert tree(out) == files and inside.inside_status() == status

    # The outside answers the same request again from its journal, without calling Cisco.
    response_1b = work / "resp-1b.airgap"
    redo = outside.ok("outside", "process", str(request_1), "-o", str(response_1b))
    assert redo["vendor_calls"] is False and redo["request_id"] == packed_1["bundle_id"]
    items_1 = json.loads(read_members(response_1)["items.json"])
    assert json.loads(read_members(response_1b)["items.json"]) == items_1
    mutations = vendors["cisco"].stats()["mutations"]
    assert all(mutations[f"{pid}:{sn}"]["reserve"] == 1 for _, pid, sn in devices[:4])

    # A response to another inside home's request: signed by a trusted outside, yet unknown here.
    _, _, foreign = round_trip(other, 3, 4)
    inside.refused("inside", "import", str(foreign), "--out", str(out), code="E_UNKNOWN_REQUEST")
    assert tree(out) == files and inside.inside_status() == status

    # An older request processed after a newer one from the same producer: refused as a replay.
    early, late = work / "req-early.airgap", work / "req-late.airgap"
    for bundle, hostname in ((early, "seq-early"), (late, "seq-late")):
        folder = work / hostname
        write_udi_captures(folder, [(hostname, "C9300-24T", f"FOC{hostname[4:].upper()}01")])
        inside.ok(
            "inside", "pack", "--udi", str(folder), "--entitlement", ENTITLEMENT, "-o", str(bundle)
        )
    outside.ok("outside", "process", str(late), "-o", str(work / "resp-late.airgap"))
    journal = outside.outside_status()
    outside.refused("outside", "process", str(early), "-o", str(work / "x.airgap"), code="E_REPLAY")
    assert outside.outside_status() == journal and not (work / "x.airgap").exists()
    assert "C9300-24T:FOCEARLY01" not in vendors["cisco"].stats()["mutations"]
    assert inside.ok("audit", "verify")["ok"] and outside.ok("audit", "verify")["ok"]


# --- 4. expiry -----------------------------------------------------------------------------------


def test_expired_request_is_refused(world, tmp_path: Path) -> None:
    inside, outside, _ = setup_pair(world, cisco=False, bigiq=False)
    plan = write_plan(tmp_path / "plan.csv", [assign_row(mac_for(3))])
    request = tmp_path / "req.airgap"
    packed = inside.ok("inside", "pack", str(plan), "--expires", "1s", "-o", str(request))
    time.sleep(2)
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    refusal = outside.refused("outside", "process", str(request), code="E_EXPIRED", cwd=outbox)
    assert "expire" in refusal.doc["error"]["message"].lower()
    outside.refused("verify", str(request), code="E_EXPIRED")
    assert list(outbox.iterdir()) == []
    assert outside.outside_status()["requests"] == []
    (entry,) = inside.inside_status()["requests"]
    assert entry["bundle_id"] == packed["bundle_id"] and entry["expired"] is True


# --- 5. encryption -------------------------------------------------------------------------------


def test_encrypted_round_trip(world, pool_copy, tmp_path: Path) -> None:
    inside, outside, _ = setup_pair(world)
    work = tmp_path / "work"
    captures = work / "captures"
    devices = pool_copy("fresh", captures, 3)
    plan = write_plan(work / "plan.csv", [assign_row(mac_for(n)) for n in range(3)])
    request, response = work / "req.airgap", work / "resp.airgap"
    packed = inside.ok(
        "inside",
        "pack",
        str(plan),
        "--udi",
        str(captures),
        "--entitlement",
        ENTITLEMENT,
        "--rum",
        str(captures),
        "-o",
        str(request),
        "--encrypt",
        "--compress",
    )
    assert packed["encrypted"] is True and packed["compressed"] is True
    assert request.read_bytes().startswith(AGE_HEADER)
    # Nothing readable crosses the gap: no serial number, MAC or RUM report in the clear.
    clear = request.read_bytes()
    assert all(d.sn.encode() not in clear for d in devices)
    assert b"RUMReport" not in clear and b"00:50:56" not in clear.upper()
    with pytest.raises(tarfile.ReadError):
        tarfile.open(request).close()

    done = outside.ok("outside", "process", str(request), "-o", str(response))
    assert done["counts"] == {"ok": 9}
    assert response.read_bytes().startswith(AGE_HEADER)
    imported = inside.ok("inside", "import", str(response), "--out", str(tmp_path / "licences"))
    assert imported["counts"]["ok"] == 9
    target = Path(imported["out"])
    assert all((target / "cisco" / d.hostname / "lic.txt").exists() for d in devices)

    # A site the request was not encrypted to cannot open it.
    stranger = world.site("other-dmz", "outside")
    world.trust(inside, stranger)
    stranger.refused("outside", "process", str(request), code="E_DECRYPT", cwd=work)
    assert sorted(p.name for p in work.glob("*.airgap")) == ["req.airgap", "resp.airgap"]

    # The stock age CLI opens both with the receiving home's identity (skipped without age),
    # and what comes out checks by hand.
    age = require_tool("age")
    for bundle, receiver, producer in ((request, outside, inside), (response, inside, outside)):
        plain = work / f"{bundle.stem}.decrypted"
        identity = receiver.home / "keys" / "age-identity.txt"
        subprocess.run(
            [age, "-d", "-i", str(identity), "-o", str(plain), str(bundle)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        check_by_hand(plain, producer, work / f"{bundle.stem}-by-hand")


# --- 6. two-person rule --------------------------------------------------------------------------


def test_two_person_approval_round_trip(world, tmp_path: Path) -> None:
    alice = world.site("lab-alice", "inside")
    bob = world.site("lab-bob", "inside")
    outside = world.site("dmz-licensing", "outside")
    world.trust(alice, outside)
    world.trust(bob, outside)
    world.trust(alice, bob)
    world.vendors(outside, bigiq=False)
    assert outside.ok("config", "set", "trust.required_signatures", "2")["value"] in (2, "2")
    work = tmp_path / "work"
    out = tmp_path / "licences"

    # Once signed only, once signed and encrypted (then also to Bob, who must read what he signs).
    for n, encrypt in enumerate((False, True)):
        captures = work / f"captures-{n}"
        edges = [(f"edge-{n}{k}", "ISR4331/K9", f"FDO2234A{n}A{k}") for k in range(2)]
        write_udi_captures(captures, edges)
        request, response = work / f"req-{n}.airgap", work / f"resp-{n}.airgap"
        packed = alice.ok(
            "inside",
            "pack",
            "--udi",
            str(captures),
            "--entitlement",
            ENTITLEMENT,
            "-o",
            str(request),
            *(["--encrypt"] if encrypt else []),
        )
        assert request.read_bytes().startswith(AGE_HEADER) is encrypt

        journal = outside.outside_status()
        outside.refused("outside", "process", str(request), "-o", str(response), code="E_THRESHOLD")
        assert not response.exists() and outside.outside_status() == journal

        approved = bob.ok("approve", str(request))
        assert approved["signatures"] == 2 and approved["already_approved"] is False
        assert request.read_bytes().startswith(AGE_HEADER) is encrypt
        # The co-signature leaves the signed manifest exactly as Alice made it.
        assert approved["manifest_sha256"] == packed["manifest_sha256"]
        inspected = outside.ok("inspect", str(request))
        assert inspected["manifest"]["bundle_id"] == packed["bundle_id"]
        assert sorted(s["status"] for s in inspected["signatures"]) == ["valid", "valid"]
        assert {s["fingerprint"] for s in inspected["signatures"]} == {
            alice.fingerprint,
            bob.fingerprint,
        }
        if not encrypt:
            signatures = [m for m in read_members(request) if m.startswith("signatures/")]
            assert len(signatures) == 2

        done = outside.ok("outside", "process", str(request), "-o", str(response))
        assert done["counts"] == {"ok": 2}
        imported = alice.ok("inside", "import", str(response), "--out", str(out))
        assert imported["counts"]["ok"] == 2 and not imported["partial"]
        assert all((Path(imported["out"]) / "cisco" / e[0] / "lic.txt").exists() for e in edges)

    # Bob co-signed but never packed it: the response is not his to import.
    bob.refused("inside", "import", str(response), code="E_UNKNOWN_REQUEST", cwd=work)
    assert not (work / "airgap-out").exists()
