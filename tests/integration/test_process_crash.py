"""`outside process` killed with SIGKILL at random points, then run again: nothing twice.

Also: a batch under injected faults (429, 500, connection resets) finishes with every item
final and exactly one reservation per device at the emulator.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from bundles import make_request
from conftest import airgap_command, run_airgap
from craft import reserve_item
from integration.conftest import DEMO_SECRETS, kill_mid_run, point_outside_at

from airgap.bundle import verify_bundle
from airgap.home import Home

KILLS = int(os.environ.get("AIRGAP_CRASH_KILLS", "20"))


@pytest.fixture
def sites(make_home, exchange_cards):
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    return inside, outside


def test_sigkill_loop_then_rerun_reserves_each_device_exactly_once(
    sites, start_emulator, tmp_path: Path
) -> None:
    inside, outside = sites
    cisco = start_emulator("cisco", "--latency", "50", "--poll-delay", "0.3")
    point_outside_at(outside, cisco=cisco.url)
    # Enough work that the killed runs cannot finish it between them.
    devices = 400
    request = make_request(
        inside,
        tmp_path / "req.airgap",
        items=[reserve_item(n) for n in range(1, devices + 1)],
        files={},
    ).path
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")}
    env.update(DEMO_SECRETS, AIRGAP_HOME=str(outside))
    command = [
        *airgap_command(),
        "outside",
        "process",
        str(request),
        "-o",
        str(tmp_path / "resp.airgap"),
        "--concurrency",
        "4",
        "--rate",
        "0",
    ]
    # Each run is killed once it has made 3 to 10 new reservations: mid-run by construction.
    # 20 kills take at most 200 of the 400 devices, so no run can finish first.
    kills = kill_mid_run(
        command,
        env,
        [cisco],
        kills=KILLS,
        rng=random.Random(20261123),
        per_kill=(3, min(10, devices // (2 * KILLS))),
    )
    final = run_airgap(
        "--json",
        "--home",
        str(outside),
        "outside",
        "process",
        str(request),
        "-o",
        str(tmp_path / "resp.airgap"),
        "--rate",
        "0",
        env=DEMO_SECRETS,
    )
    assert final.returncode == 0, final.stdout + final.stderr
    document = json.loads(final.stdout)
    assert document["counts"] == {"ok": devices}
    assert len(kills) == KILLS
    for number, kill in enumerate(kills, 1):
        assert kill.at_kill > kill.before_run, f"kill {number} landed before any vendor call"
    assert kills[-1].after_kill < devices, "the killed runs did all the work; nothing was left"
    mutations = cisco.stats()["mutations"]
    reserves = {udi: m["reserve"] for udi, m in mutations.items()}
    assert len(reserves) == devices
    assert set(reserves.values()) == {1}, {u: n for u, n in reserves.items() if n != 1}
    opened = verify_bundle(tmp_path / "resp.airgap", Home.open(inside).policy())
    assert all(item["files"] for item in opened.items)


def test_faults_batch_finishes_with_one_reservation_per_device(
    sites, start_emulator, tmp_path: Path
) -> None:
    inside, outside = sites
    cisco = start_emulator(
        "cisco", "--latency", "5", "--poll-delay", "0.2", "--faults", "429=0.2,500=0.1,reset=0.05"
    )
    point_outside_at(outside, cisco=cisco.url)
    devices = 200
    request = make_request(
        inside,
        tmp_path / "req.airgap",
        items=[reserve_item(n) for n in range(1, devices + 1)],
        files={},
    ).path
    result = run_airgap(
        "--json",
        "--home",
        str(outside),
        "outside",
        "process",
        str(request),
        "-o",
        str(tmp_path / "resp.airgap"),
        "--concurrency",
        "16",
        "--rate",
        "0",
        env=DEMO_SECRETS,
        timeout=600,
    )
    document = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert document["counts"] == {"ok": devices}
    stats = cisco.stats()
    assert sum(stats["faults"].values()) > 20, stats["faults"]
    reserves = {udi: m["reserve"] for udi, m in stats["mutations"].items()}
    assert len(reserves) == devices and set(reserves.values()) == {1}
