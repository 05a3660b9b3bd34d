"""`airgap outside watch`: a transfer station against the Cisco emulator, through the real CLI.

Several bundles at once (one tampered), a duplicate drop, `kill -9` twice mid-run and a
restart, and SIGTERM: every request is processed exactly once (the emulator counts one
reservation per device), filed under done/ or refused/, audited once, and answered by exactly
one response in the outbox.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import run_airgap
from integration.conftest import RunningEmulator, point_outside_at
from watch.conftest import DEMO_SECRETS, audit_events, drop, ledger, wait_for

from airgap.bundle import verify_bundle
from airgap.home import Home

Packer = Callable[..., list[Path]]
Starter = Callable[..., subprocess.Popen[str]]


def _reserves(cisco: RunningEmulator) -> dict[str, int]:
    return {udi: m.get("reserve", 0) for udi, m in cisco.stats()["mutations"].items()}


def _watch_once(outside: Path, inbox: Path, outbox: Path, *extra: str) -> Any:
    return run_airgap(
        "--json", "--home", str(outside), "outside", "watch", str(inbox),
        "--outbox", str(outbox), "--interval", "0.2s", "--once", "--rate", "0", *extra,
        env=DEMO_SECRETS, timeout=300,
    )  # fmt: skip


def test_several_bundles_at_once_tampered_one_refused_others_processed(
    sites: tuple[Path, Path],
    pack_request: Packer,
    start_emulator: Callable[..., RunningEmulator],
    tmp_path: Path,
) -> None:
    inside, outside = sites
    cisco = start_emulator("cisco", "--poll-delay", "0.1")
    point_outside_at(outside, cisco=cisco.url)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    good = [pack_request(f"req-{n}", devices=2, first=10 * n)[0] for n in (1, 2, 3)]
    tampered = pack_request("req-4", devices=2, first=40)[0]
    data = bytearray(tampered.read_bytes())
    data[data.index(b'"items":[') + 20] ^= 0x01  # inside items.json: its hash no longer matches
    tampered.write_bytes(bytes(data))
    # Dropped in reverse: the station still takes them in their producer's sequence order.
    drop([tampered, *reversed(good)], inbox)

    result = _watch_once(outside, inbox, outbox)

    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"done": 3, "refused": 1}
    assert sorted(p.name for p in (inbox / "done").iterdir()) == [
        "req-1.airgap",
        "req-2.airgap",
        "req-3.airgap",
    ]
    assert sorted(p.name for p in (inbox / "refused").iterdir()) == [
        "req-4.airgap",
        "req-4.airgap.reason.txt",
    ]
    reason = (inbox / "refused" / "req-4.airgap.reason.txt").read_text()
    assert reason.startswith("E_HASH_MISMATCH: items.json")
    assert not [p for p in inbox.iterdir() if p.is_file() and not p.name.startswith(".")]
    responses = sorted(p.name for p in outbox.iterdir())
    assert responses == [f"req-{n}.response.airgap" for n in (1, 2, 3)]
    policy = Home.open(inside).policy(expected_kind="response")
    for name in responses:
        opened = verify_bundle(outbox / name, policy)
        assert [item["status"] for item in opened.items] == ["ok", "ok"]
    assert sorted(_reserves(cisco).values()) == [1] * 6
    done = audit_events(outside, "watch_done")
    refused = audit_events(outside, "watch_refused")
    assert sorted(e["details"]["file"] for e in done) == [f"req-{n}.airgap" for n in (1, 2, 3)]
    assert [(e["details"]["file"], e["details"]["code"]) for e in refused] == [
        ("req-4.airgap", "E_HASH_MISMATCH")
    ]
    assert Home.open(outside).audit().verify().entries > 0

    # The same request dropped again is not processed again: no call, no new response.
    calls = sum(cisco.stats()["calls"].values())
    shutil.copyfile(inbox / "done" / "req-1.airgap", inbox / "req-1.airgap")
    again = _watch_once(outside, inbox, outbox)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["counts"] == {"refused": 1}
    assert (inbox / "refused" / "req-1.airgap.reason.txt").read_text().startswith("E_DUPLICATE")
    assert sum(cisco.stats()["calls"].values()) == calls
    assert sorted(p.name for p in outbox.iterdir()) == responses


def test_kill_9_twice_mid_run_then_restart_handles_everything_exactly_once(
    sites: tuple[Path, Path],
    pack_request: Packer,
    start_emulator: Callable[..., RunningEmulator],
    start_watch: Starter,
    tmp_path: Path,
) -> None:
    inside, outside = sites
    cisco = start_emulator("cisco", "--latency", "40", "--poll-delay", "0.3")
    point_outside_at(outside, cisco=cisco.url)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    devices = 30
    for n in (1, 2, 3):
        drop(pack_request(f"req-{n}", devices=devices, first=100 * n), inbox)
    args = (
        "outside", "watch", str(inbox), "--outbox", str(outbox), "--interval", "0.2s",
        "--concurrency", "4", "--rate", "0",
    )  # fmt: skip

    def reserved() -> int:
        return sum(_reserves(cisco).values())

    first = start_watch(outside, *args)
    wait_for(lambda: 0 < reserved() < devices, what="the first request to be under way")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)

    second = start_watch(outside, *args)
    wait_for(lambda: devices < reserved() < 2 * devices, what="the second request under way")
    second.send_signal(signal.SIGKILL)
    second.wait(timeout=30)
    assert (inbox / "done" / "req-1.airgap").exists()

    final = run_airgap(
        "--json", "--home", str(outside), *args, "--once", env=DEMO_SECRETS, timeout=300
    )
    assert final.returncode == 0, final.stdout + final.stderr

    assert sorted(p.name for p in (inbox / "done").iterdir()) == [
        f"req-{n}.airgap" for n in (1, 2, 3)
    ]
    assert not (inbox / "refused").exists()
    reserves = _reserves(cisco)
    assert len(reserves) == 3 * devices
    assert set(reserves.values()) == {1}, {u: n for u, n in reserves.items() if n != 1}
    responses = sorted(p.name for p in outbox.iterdir())
    assert responses == [f"req-{n}.response.airgap" for n in (1, 2, 3)]
    policy = Home.open(inside).policy(expected_kind="response")
    for name in responses:
        opened = verify_bundle(outbox / name, policy)
        assert {item["status"] for item in opened.items} == {"ok"}
    done = audit_events(outside, "watch_done")
    assert sorted(e["details"]["file"] for e in done) == [f"req-{n}.airgap" for n in (1, 2, 3)]
    entries = ledger(inbox)
    assert len(entries) == 3
    assert all(e["status"] == "done" and e["moved"] for e in entries.values())
    assert not [p for p in outbox.iterdir() if p.name.startswith(".")]


def test_sigterm_finishes_the_bundle_at_hand_then_exits_0(
    sites: tuple[Path, Path],
    pack_request: Packer,
    start_emulator: Callable[..., RunningEmulator],
    start_watch: Starter,
    tmp_path: Path,
) -> None:
    _, outside = sites
    cisco = start_emulator("cisco", "--latency", "40", "--poll-delay", "0.3")
    point_outside_at(outside, cisco=cisco.url)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    devices = 20
    drop(pack_request("req-1", devices=devices, first=100), inbox)
    drop(pack_request("req-2", devices=devices, first=200), inbox)
    proc = start_watch(
        outside, "outside", "watch", str(inbox), "--outbox", str(outbox),
        "--interval", "0.2s", "--concurrency", "2", "--rate", "0",
    )  # fmt: skip
    wait_for(lambda: _reserves(cisco), what="the first request to be under way")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)

    assert proc.returncode == 0, stdout + stderr
    assert "done" in stdout and "req-1.airgap" in stdout
    assert [p.name for p in (inbox / "done").iterdir()] == ["req-1.airgap"]
    assert (inbox / "req-2.airgap").exists()  # not started: the station stopped first
    assert [p.name for p in outbox.iterdir()] == ["req-1.response.airgap"]
    reserves = _reserves(cisco)
    assert len(reserves) == devices and set(reserves.values()) == {1}
