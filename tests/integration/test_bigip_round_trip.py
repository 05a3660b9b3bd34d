"""BIG-IPs inside the gap: base MACs collected into a plan, licensed through the BIG-IQ
emulator, and each license installed once on the box whose MAC it names."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.conftest import point_outside_at
from integration.test_devices_round_trip import DEVICE_ENV

from airgap.emulators.bigip import BigIpFleetServer, start_bigip_fleet
from airgap.emulators.bigiq import BigIqEmulator
from airgap.emulators.server import EmulatorServer
from airgap.home import Home
from airgap.inside.apply import ApplyOptions, apply_response
from airgap.inside.collect import CollectOptions, collect
from airgap.inside.importer import import_response
from airgap.inside.pack import pack
from airgap.outside.process import ProcessOptions, process_request

VENDOR_ENV = {"AIRGAP_BIGIQ_USERNAME": "admin", "AIRGAP_BIGIQ_PASSWORD": "test-password"}


@pytest.fixture
def bigiq() -> Iterator[EmulatorServer]:
    server = EmulatorServer(BigIqEmulator(task_delay=0.0)).start()
    yield server
    server.stop()


def _installs(fleet: BigIpFleetServer) -> dict[str, int]:
    return {name: c.get("install", 0) for name, c in fleet.stats()["devices"].items()}


def _licensed(tmp_path: Path, inside: Path, outside: Path, bigiq: EmulatorServer) -> Path:
    """collect (MACs, plan rows) → pack → process at BIG-IQ → import; the inventory path."""
    inventory = tmp_path / "inventory.csv"
    collected = collect(
        Home.open(inside),
        inventory,
        CollectOptions(
            out=tmp_path / "collected",
            plan_out=tmp_path / "plan.csv",
            pool="demo-utility",
            hypervisor="vmware",
            unit_of_measure="yearly",
            concurrency=16,
        ),
        env=DEVICE_ENV,
    )
    assert collected.complete, collected.to_json()
    request = pack(
        Home.open(inside),
        plans=[tmp_path / "plan.csv"],
        udi_dir=None,
        entitlements=[],
        rum_dir=None,
        returns_dir=None,
        output=tmp_path / "req.airgap",
    )
    point_outside_at(outside, bigiq=bigiq.url)
    processed = process_request(
        Home.open(outside, VENDOR_ENV),
        request.path,
        ProcessOptions(output=tmp_path / "resp.airgap", rate=0, concurrency=16),
    )
    assert processed.complete, [i["error"] for i in processed.items][:3]
    import_response(Home.open(inside), tmp_path / "resp.airgap", out=tmp_path / "out")
    return inventory


def test_a_hundred_big_ips_are_licensed_once_each_across_token_expiry_and_restarts(
    tmp_path: Path, make_home: Any, exchange_cards: Any, bigiq: EmulatorServer
) -> None:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    # Tokens live 2 s and every reloadlic is followed by a 0.3 s restart window (503).
    with start_bigip_fleet(
        100, token_ttl=2.0, restart_seconds=0.3, cert_out=tmp_path / "ca.pem"
    ) as fleet:
        fleet.write_inventory(tmp_path / "inventory.csv")
        inventory = _licensed(tmp_path, inside, outside, bigiq)
        plan_rows = list(csv.DictReader((tmp_path / "plan.csv").open()))
        assert len(plan_rows) == 100
        assert {r["mac"] for r in plan_rows} == {d.base_mac.upper() for d in fleet.devices}
        result = apply_response(
            Home.open(inside), None, inventory, ApplyOptions(concurrency=16), env=DEVICE_ENV
        )
        assert result.complete, result.to_json()
        assert result.files == {"applied": 100}
        assert _installs(fleet) == {d.hostname: 1 for d in fleet.devices}
        assert all(d.registration_key for d in fleet.devices)
        stats = fleet.stats()["devices"]
        # The run outlived the tokens: boxes saw more than one login.
        assert sum(c.get("login", 0) for c in stats.values()) > 100


def test_a_license_for_another_mac_is_refused_and_nothing_installed(
    tmp_path: Path, make_home: Any, exchange_cards: Any, bigiq: EmulatorServer
) -> None:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    with start_bigip_fleet(3, cert_out=tmp_path / "ca.pem") as fleet:
        fleet.write_inventory(tmp_path / "inventory.csv")
        inventory = _licensed(tmp_path, inside, outside, bigiq)
        # bigip-0002 is replaced by a box with another base MAC before the licenses arrive.
        fleet.devices[1].base_mac = "52:54:00:99:99:99"
        result = apply_response(Home.open(inside), None, inventory, ApplyOptions(), env=DEVICE_ENV)
        refused = {o.name: o.code for o in result.outcomes if not o.ok}
        assert refused == {"bigip-0002": "E_DEVICE_MISMATCH"}
        assert _installs(fleet) == {"bigip-0001": 1, "bigip-0002": 0, "bigip-0003": 1}


def test_apply_killed_during_installs_then_run_again_installs_each_license_once(
    tmp_path: Path, make_home: Any, exchange_cards: Any, bigiq: EmulatorServer
) -> None:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    with start_bigip_fleet(
        10, latency_ms=60, restart_seconds=0.5, cert_out=tmp_path / "ca.pem"
    ) as fleet:
        fleet.write_inventory(tmp_path / "inventory.csv")
        inventory = _licensed(tmp_path, inside, outside, bigiq)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")},
            "AIRGAP_HOME": str(inside),
            **DEVICE_ENV,
        }
        command = [
            str(Path(sys.executable).parent / "airgap"),
            "inside",
            "apply",
            "--inventory",
            str(inventory),
            "--concurrency",
            "3",
        ]
        landed_kills = 0
        for _kill in range(3):
            seen = sum(_installs(fleet).values())
            if seen >= 10:
                break
            proc = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 60
            while sum(_installs(fleet).values()) < seen + 1 and time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                time.sleep(0.01)
            landed = proc.poll() is None
            proc.kill()
            proc.wait(timeout=10)
            if landed:
                assert seen < sum(_installs(fleet).values()) < 10
                landed_kills += 1
        assert landed_kills >= 2
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stdout + final.stderr
        assert _installs(fleet) == {d.hostname: 1 for d in fleet.devices}


def test_pack_collect_packs_the_big_ips_rows_beside_the_cisco_items(
    tmp_path: Path, make_home: Any, airgap: Any
) -> None:
    from airgap.emulators.device import NETWORK_ADVANTAGE_TAG
    from airgap.emulators.iosxe import start_fleet

    inside = make_home("inside", name="lab")
    inventory = tmp_path / "devices.csv"
    with (
        start_fleet(devices=2, cert_out=tmp_path / "ios.pem") as cisco_fleet,
        start_bigip_fleet(2, cert_out=tmp_path / "f5.pem") as f5_fleet,
    ):
        cisco_fleet.write_inventory(tmp_path / "ios.csv")
        f5_fleet.write_inventory(tmp_path / "f5.csv")
        f5_rows = (tmp_path / "f5.csv").read_text().splitlines()[1:]
        inventory.write_text((tmp_path / "ios.csv").read_text() + "\n".join(f5_rows) + "\n")
        packed = airgap(
            "--json", "--home", str(inside), "inside", "pack", "--collect", str(inventory),
            "--accept-new-host-keys", "--entitlement", f"{NETWORK_ADVANTAGE_TAG}:1",
            "--pool", "demo-utility", "--hypervisor", "vmware", "--unit-of-measure", "yearly",
            "-o", str(tmp_path / "req.airgap"),
            env=DEVICE_ENV,
        )  # fmt: skip
        macs = {d.base_mac.upper() for d in f5_fleet.devices}
        units = sum(len(d.members) for d in cisco_fleet.devices)
    assert packed.returncode == 0, packed.stderr
    document = json.loads(packed.stdout)
    assert document["by_action"]["bigiq.assign"] == 2
    assert document["by_action"]["cisco.reserve"] == units
    plan = tmp_path / "req.airgap.collected" / "bigip-plan.csv"
    assert {row["mac"] for row in csv.DictReader(plan.open())} == macs
    assert document["collect"]["plan"] == str(plan)


def test_pack_collect_without_a_pool_for_the_big_ips_writes_no_bundle(
    tmp_path: Path, make_home: Any, airgap: Any
) -> None:
    inside = make_home("inside", name="lab")
    with start_bigip_fleet(1, cert_out=tmp_path / "f5.pem") as f5_fleet:
        f5_fleet.write_inventory(tmp_path / "f5.csv")
        packed = airgap(
            "--home", str(inside), "inside", "pack", "--collect", str(tmp_path / "f5.csv"),
            "-o", str(tmp_path / "req.airgap"),
            env=DEVICE_ENV,
        )  # fmt: skip
    assert packed.returncode == 1, packed.stdout + packed.stderr
    assert "E_PLAN" in packed.stderr and "bigip-plan.csv" in packed.stderr
    assert "pool" in packed.stderr
    assert not (tmp_path / "req.airgap").exists()
