"""Collect and apply across a whole emulated estate, with faults: every device ends up with
each of its files exactly once (the emulator's own counts say so); a device whose identity
differs is refused and never written to; credentials never reach a file or an output."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.conftest import point_outside_at
from integration.test_devices_round_trip import DEVICE_ENV, VENDOR_ENV, _round_trip

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

# Timeouts are left to the transport tests: each one costs a whole timeout here.
FAULTS = "refused=0.02,disconnect=0.03,auth=0.01,seed=11"


@pytest.fixture
def cisco() -> Iterator[EmulatorServer]:
    server = build_cisco_server(poll_delay=0.0).start()
    yield server
    server.stop()


def _imports(fleet: IosXeFleet) -> dict[str, int]:
    return {name: counts.get("import", 0) for name, counts in fleet.stats()["devices"].items()}


def _until_complete(run: Any, tries: int = 6) -> list[Any]:
    """Run again, on the devices that failed only, as an operator would with --only."""
    results = []
    only: frozenset[str] = frozenset()
    for _ in range(tries):
        results.append(run(only))
        if results[-1].complete:
            break
        only = frozenset(o.name for o in results[-1].outcomes if not o.ok)
    return results


def test_two_hundred_devices_with_faults_get_each_file_exactly_once(
    tmp_path: Path, make_home: Any, exchange_cards: Any, cisco: EmulatorServer
) -> None:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    inventory = tmp_path / "inventory.csv"
    with start_fleet(devices=200, faults=FAULTS, cert_out=tmp_path / "ca.pem") as fleet:
        fleet.write_inventory(inventory)
        collects = _until_complete(
            lambda only: collect(
                Home.open(inside),
                inventory,
                CollectOptions(
                    out=tmp_path / "collected",
                    accept_new_host_keys=True,
                    concurrency=32,
                    only=only,
                ),
                env=DEVICE_ENV,
            )
        )
        assert collects[-1].complete, collects[-1].counts
        request = pack(
            Home.open(inside),
            plans=[],
            udi_dir=tmp_path / "collected" / "udi",
            entitlements=[f"{NETWORK_ADVANTAGE_TAG}:1"],
            rum_dir=tmp_path / "collected" / "rum",
            returns_dir=None,
            output=tmp_path / "req.airgap",
        )
        point_outside_at(outside, cisco=cisco.url)
        processed = process_request(
            Home.open(outside, VENDOR_ENV),
            request.path,
            ProcessOptions(output=tmp_path / "resp.airgap", rate=0, concurrency=16),
        )
        assert processed.complete, processed.counts
        import_response(Home.open(inside), tmp_path / "resp.airgap", out=tmp_path / "out")
        before = _imports(fleet)
        applies = _until_complete(
            lambda only: apply_response(
                Home.open(inside),
                None,
                inventory,
                ApplyOptions(accept_new_host_keys=True, concurrency=32, only=only),
                env=DEVICE_ENV,
            )
        )
        assert applies[-1].complete, applies[-1].to_json()["files"]
        injected = dict(fleet.device_faults.injected)
        pushed = {name: n - before.get(name, 0) for name, n in _imports(fleet).items()}
        expected = {d.hostname: len(d.members) + 1 for d in fleet.devices}
        assert pushed == expected, injected
    # The faults really happened, of every kind: the run had something to survive.
    assert set(injected) == {"refused", "disconnect", "auth"}, injected


def test_a_device_with_another_udi_is_refused_and_never_written_to(
    tmp_path: Path, make_home: Any, exchange_cards: Any, cisco: EmulatorServer
) -> None:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    inventory = tmp_path / "inventory.csv"
    with start_fleet(devices=4, cert_out=tmp_path / "ca.pem") as fleet:
        fleet.write_inventory(inventory)

        _round_trip(tmp_path, inside, outside, cisco)
        # iosxe-0002 and iosxe-0003 swap addresses in the inventory: each row's hostname now
        # points at the other device (a re-cabled or renumbered estate).
        lines = inventory.read_text().splitlines()
        rows = {line.split(",")[5]: line.split(",") for line in lines[1:]}
        a, b = rows["iosxe-0002"], rows["iosxe-0003"]
        for column in (1, 3, 8):  # port, transport, ca_bundle
            a[column], b[column] = b[column], a[column]
        inventory.write_text("\n".join([lines[0], *(",".join(r) for r in rows.values())]) + "\n")
        before = _imports(fleet)
        result = apply_response(Home.open(inside), None, inventory, ApplyOptions(), env=DEVICE_ENV)
        refused = {o.name: o.code for o in result.outcomes if not o.ok}
        assert refused == {"iosxe-0002": "E_DEVICE_MISMATCH", "iosxe-0003": "E_DEVICE_MISMATCH"}
        after = _imports(fleet)
        for host in ("iosxe-0002", "iosxe-0003"):
            assert after.get(host, 0) == before.get(host, 0), host  # nothing written
        others = {d.hostname: len(d.members) + 1 for d in fleet.devices}
        del others["iosxe-0002"], others["iosxe-0003"]
        assert {h: after[h] - before.get(h, 0) for h in others} == others


def test_device_passwords_never_reach_a_file_or_an_output(
    tmp_path: Path, make_home: Any, exchange_cards: Any
) -> None:
    secret = "Pw-Zq7x91-never-print"
    inside = make_home("inside", name="lab")
    inventory = tmp_path / "inventory.csv"
    with start_fleet(devices=3, cert_out=tmp_path / "ca.pem", password=secret) as fleet:
        fleet.write_inventory(inventory)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")},
            "AIRGAP_HOME": str(inside),
            "AIRGAP_DEVICE_LAB_USERNAME": "admin",
            "AIRGAP_DEVICE_LAB_PASSWORD": secret,
        }
        exe = Path(sys.executable).parent / "airgap"
        runs = [
            [
                str(exe),
                "inside",
                "collect",
                str(inventory),
                "--out",
                str(tmp_path / "c"),
                "--accept-new-host-keys",
            ],
            [str(exe), "--json", "inside", "collect", str(inventory), "--out", str(tmp_path / "c")],
            # A wrong password for one run: the refusal must not echo either password.
            [str(exe), "inside", "collect", str(inventory), "--out", str(tmp_path / "d")],
        ]
        outputs = []
        for number, command in enumerate(runs):
            run_env = dict(env)
            if number == 2:
                run_env["AIRGAP_DEVICE_LAB_PASSWORD"] = secret + "-wrong"
            done = subprocess.run(command, env=run_env, capture_output=True, text=True, timeout=120)
            outputs.append(done.stdout + done.stderr)
            assert done.returncode in (0, 4), done.stderr
        assert "auth_failed" in outputs[2] or "E_DEVICE_AUTH" in outputs[2]
    for text in outputs:
        assert secret not in text
    for path in [*inside.rglob("*"), *tmp_path.rglob("*")]:
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert secret.encode() not in path.read_bytes(), path


def test_apply_killed_mid_run_then_run_again_pushes_no_file_twice(
    tmp_path: Path, make_home: Any, exchange_cards: Any, cisco: EmulatorServer
) -> None:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    inventory = tmp_path / "inventory.csv"
    # Slow devices (150 ms a command), so a kill lands in the middle of a run.
    with start_fleet(devices=12, cert_out=tmp_path / "ca.pem", latency_ms=150) as fleet:
        fleet.write_inventory(inventory)
        _round_trip(tmp_path, inside, outside, cisco)
        expected = {d.hostname: len(d.members) + 1 for d in fleet.devices}
        total = sum(expected.values())
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
            "4",
        ]
        landed_kills = 0
        for _kill in range(3):
            seen = sum(_imports(fleet).values())
            if seen >= total:
                break
            proc = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 60
            while sum(_imports(fleet).values()) < seen + 2 and time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                time.sleep(0.02)
            landed = proc.poll() is None
            proc.kill()
            proc.wait(timeout=10)
            pushed = sum(_imports(fleet).values())
            if landed and pushed < total:
                # Killed while it was pushing: some files went, not all. (A kill that comes
                # after the last push, while the run confirms, proves nothing and is not counted.)
                assert pushed > seen
                landed_kills += 1
        assert landed_kills >= 2  # the kills really interrupted runs
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stdout + final.stderr
        assert _imports(fleet) == expected  # every file once, whatever the kills interrupted
