"""`--split` through the real commands: pack, process and import each take the first part."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import run_airgap
from integration.conftest import RunningEmulator, point_outside_at
from watch.conftest import DEMO_SECRETS, TAG


def test_split_round_trip_through_the_cli(
    sites: tuple[Path, Path], start_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    inside, outside = sites
    cisco = start_emulator("cisco", "--poll-delay", "0.1")
    point_outside_at(outside, cisco=cisco.url)
    plan = tmp_path / "plan.csv"
    plan.write_text(
        "action,hostname,pid,sn,entitlements\n"
        f"cisco.reserve,sw-1,C9300-24T,FOC00000001,{TAG}:1\n"
        f"cisco.reserve,sw-2,C9300-24T,FOC00000002,{TAG}:1\n"
    )
    request = tmp_path / "req-17.airgap"
    packed = run_airgap(
        "--json", "--home", str(inside), "inside", "pack", str(plan), "-o", str(request),
        "--split", "1MiB",
    )  # fmt: skip
    assert packed.returncode == 0, packed.stdout + packed.stderr
    assert json.loads(packed.stdout)["parts"] == [f"{request}.001"]
    assert not request.exists()

    response = tmp_path / "resp-17.airgap"
    processed = run_airgap(
        "--json", "--home", str(outside), "outside", "process", f"{request}.001",
        "-o", str(response), "--split", "1MiB", "--rate", "0",
        env=DEMO_SECRETS,
    )  # fmt: skip
    assert processed.returncode == 0, processed.stdout + processed.stderr
    assert json.loads(processed.stdout)["response_parts"] == [f"{response}.001"]

    imported = run_airgap(
        "--json", "--home", str(inside), "inside", "import", f"{response}.001",
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert json.loads(imported.stdout)["counts"]["ok"] == 2

    small = run_airgap(
        "--home", str(outside), "outside", "process", f"{request}.001", "--split", "10KiB",
        env=DEMO_SECRETS,
    )  # fmt: skip
    assert small.returncode == 1
    assert "E_CONFIG" in small.stderr and "1 MiB" in small.stderr
