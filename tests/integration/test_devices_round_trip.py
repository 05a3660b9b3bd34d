"""collect → pack → process → import → apply against emulated IOS XE devices and the Cisco
emulator, on real sockets: every device licensed and acknowledged, every file pushed once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from integration.conftest import point_outside_at

from airgap.emulators.cisco import build_cisco_server
from airgap.emulators.device import NETWORK_ADVANTAGE_TAG
from airgap.emulators.iosxe import IosXeFleet, start_fleet
from airgap.emulators.server import EmulatorServer
from airgap.home import Home
from airgap.inside.apply import ApplyOptions, apply_response
from airgap.inside.collect import CollectOptions, collect
from airgap.inside.importer import import_response
from airgap.inside.pack import pack
from airgap.outside.process import ProcessOptions, process_request

DEVICE_ENV = {"AIRGAP_DEVICE_LAB_USERNAME": "admin", "AIRGAP_DEVICE_LAB_PASSWORD": "lab-pw"}
VENDOR_ENV = {"AIRGAP_CISCO_CLIENT_ID": "test-client", "AIRGAP_CISCO_CLIENT_SECRET": "test-secret"}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[IosXeFleet]:
    with start_fleet(devices=6, cert_out=tmp_path / "fleet.pem") as running:
        running.write_inventory(tmp_path / "inventory.csv")
        yield running


@pytest.fixture
def cisco() -> Iterator[EmulatorServer]:
    server = build_cisco_server(poll_delay=0.0).start()
    yield server
    server.stop()


def _round_trip(
    tmp_path: Path, inside: Path, outside: Path, cisco: EmulatorServer
) -> tuple[Any, Any]:
    collected = collect(
        Home.open(inside),
        tmp_path / "inventory.csv",
        CollectOptions(out=tmp_path / "collected", accept_new_host_keys=True),
        env=DEVICE_ENV,
    )
    assert collected.complete, collected.to_json()
    request = pack(
        Home.open(inside),
        plans=[],
        udi_dir=tmp_path / "collected" / "udi",
        entitlements=[f"{NETWORK_ADVANTAGE_TAG}:1"],
        rum_dir=tmp_path / "collected" / "rum",
        returns_dir=None,
        output=tmp_path / "req.airgap",
        expires=timedelta(days=1),
    )
    point_outside_at(outside, cisco=cisco.url)
    processed = process_request(
        Home.open(outside, VENDOR_ENV),
        request.path,
        ProcessOptions(output=tmp_path / "resp.airgap", rate=0, concurrency=8),
    )
    assert processed.complete, processed.counts
    import_response(Home.open(inside), tmp_path / "resp.airgap", out=tmp_path / "licences")
    return collected, request


def test_a_whole_estate_is_collected_licensed_and_acknowledged(
    tmp_path: Path, make_home: Any, exchange_cards: Any, fleet: IosXeFleet, cisco: EmulatorServer
) -> None:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    _collected, request = _round_trip(tmp_path, inside, outside, cisco)
    # Every unit of every device is in the request: stacks add members.
    units = sum(len(device.members) for device in fleet.devices)
    assert request.by_action["cisco.reserve"] == units
    result = apply_response(
        Home.open(inside),
        None,
        tmp_path / "inventory.csv",
        ApplyOptions(accept_new_host_keys=True),
        env=DEVICE_ENV,
    )
    assert result.complete, result.to_json()
    assert result.files == {"applied": request.items}
    imports = {name: counts.get("import", 0) for name, counts in fleet.stats()["devices"].items()}
    per_device = {d.hostname: len(d.members) + 1 for d in fleet.devices}  # codes + one ACK
    assert imports == per_device
    # A second apply pushes nothing: every file is already on its device.
    again = apply_response(
        Home.open(inside),
        None,
        tmp_path / "inventory.csv",
        ApplyOptions(),
        env=DEVICE_ENV,
    )
    assert again.files == {"already": request.items}
    after = {name: counts.get("import", 0) for name, counts in fleet.stats()["devices"].items()}
    assert after == imports


def test_instructions_and_status_say_what_is_on_the_devices(
    tmp_path: Path, make_home: Any, exchange_cards: Any, fleet: IosXeFleet, cisco: EmulatorServer
) -> None:
    from airgap.inside.importer import inside_status

    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    _round_trip(tmp_path, inside, outside, cisco)
    (guide,) = (tmp_path / "licences").glob("*/INSTRUCTIONS.md")
    assert "Applied by `airgap inside apply`" not in guide.read_text()
    apply_response(
        Home.open(inside),
        None,
        tmp_path / "inventory.csv",
        ApplyOptions(accept_new_host_keys=True, only=frozenset({"iosxe-0001"})),
        env=DEVICE_ENV,
    )
    text = guide.read_text()
    assert "Applied by `airgap inside apply`: `cisco/iosxe-0001/lic.txt` on iosxe-0001 at" in text
    assert text.count("Applied by `airgap inside apply`") == 2  # its code and its ACK only
    items = inside_status(Home.open(inside), include_complete=True)["requests"][0]["items"]
    applied = {item["id"] for item in items if item["applied"]}
    assert len(applied) == 2
    # An INSTRUCTIONS.md someone edited is never overwritten by the refresh.
    guide.write_text(text + "\nnotes of the operator\n")
    apply_response(
        Home.open(inside),
        None,
        tmp_path / "inventory.csv",
        ApplyOptions(accept_new_host_keys=True, only=frozenset({"iosxe-0002"})),
        env=DEVICE_ENV,
    )
    assert guide.read_text().endswith("notes of the operator\n")


def test_dry_runs_need_no_credentials_and_contact_no_device(
    tmp_path: Path, make_home: Any, exchange_cards: Any, fleet: IosXeFleet, cisco: EmulatorServer
) -> None:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    _round_trip(tmp_path, inside, outside, cisco)
    before = fleet.stats()
    planned_collect = collect(
        Home.open(inside),
        tmp_path / "inventory.csv",
        CollectOptions(out=tmp_path / "again", dry_run=True),
        env={},  # no AIRGAP_DEVICE_* at all, and no prompt
    )
    assert planned_collect.dry_run and planned_collect.complete
    assert not (tmp_path / "again").exists()
    planned_apply = apply_response(
        Home.open(inside),
        None,
        tmp_path / "inventory.csv",
        ApplyOptions(dry_run=True),
        env={},
    )
    assert planned_apply.dry_run
    assert {o.name for o in planned_apply.outcomes} == {d.hostname for d in fleet.devices}
    assert fleet.stats() == before


def test_ssh_devices_met_first_or_with_another_key_are_refused_and_named(
    tmp_path: Path, make_home: Any, fleet: IosXeFleet
) -> None:
    inside = make_home("inside", name="lab")
    ssh = {d.hostname for d in fleet.devices if fleet.transport_of(d) == "ssh"}
    assert ssh and len(ssh) < len(fleet.devices)
    first = collect(
        Home.open(inside),
        tmp_path / "inventory.csv",
        CollectOptions(out=tmp_path / "first"),
        env=DEVICE_ENV,
    )
    by_name = {o.name: o for o in first.outcomes}
    assert {n for n, o in by_name.items() if not o.ok} == ssh
    assert {(by_name[n].status, by_name[n].code) for n in ssh} == {("refused", "E_HOSTKEY_UNKNOWN")}
    assert all(fleet.stats()["devices"][n].get("logins", 0) == 0 for n in ssh)
