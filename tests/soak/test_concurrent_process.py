"""SQLite concurrency (issue 8 item 5): two `outside process` runs on one request at once.

Both are started at the same moment on a fresh request: one does the work, the other either
waits for it (and then answers from the journal) or is refused cleanly with `E_BUSY`, exit 1 and
a one-line message. Nothing is submitted twice (the emulators' stats), and the finished request
can be processed again: it answers from the journal without a single vendor call.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from soak.test_crash_import import RESERVE_TAG, airgap_command, clean_env
from soak.test_soak import (
    audit_verify,
    emulators,
    mac,
    pack,
    process,
    sites,
    udi_of,
    write_plan,
)

from airgap.bundle import verify_bundle
from airgap.home import Home

__all__ = ["emulators", "sites"]  # fixtures shared with test_soak


def plan_rows(count: int) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for n in range(count):
        rows.append(
            {
                "action": "cisco.reserve",
                "hostname": f"sw-{n}",
                "pid": "C9300-24T",
                "sn": f"FOC{n:08d}",
                "entitlements": f"{RESERVE_TAG}:1",
            }
        )
        rows.append(
            {
                "action": "bigiq.assign",
                "mac": mac(n),
                "pool": "demo-utility",
                "hypervisor": "vmware",
                "unit_of_measure": "yearly",
            }
        )
    return rows


def start(outside: Path, request: Path, output: Path, *, as_json: bool) -> subprocess.Popen[str]:
    from integration.conftest import DEMO_SECRETS

    command = [
        *airgap_command(),
        *(["--json"] if as_json else []),
        "outside",
        "process",
        str(request),
        "-o",
        str(output),
        "--rate",
        "0",
        "--concurrency",
        "8",
    ]
    env = clean_env(**DEMO_SECRETS, AIRGAP_HOME=str(outside), COLUMNS="200")
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, stdout, stderr


def assert_clean_busy_refusal(code: int, stdout: str, stderr: str, *, as_json: bool) -> None:
    """Exit 1 with E_BUSY in one line (plus a hint line for people), never a traceback."""
    assert code == 1, (code, stdout, stderr)
    assert "Traceback" not in stdout + stderr
    if as_json:
        document = json.loads(stdout)
        assert document["ok"] is False and document["error"]["code"] == "E_BUSY", document
        assert "\n" not in document["error"]["message"]
        assert "claimed by" in document["error"]["message"]
    else:
        assert stdout == ""
        lines = stderr.strip().splitlines()
        assert lines[0].startswith("error E_BUSY: request "), stderr
        assert "claimed by" in lines[0], stderr
        assert len(lines) <= 2 and all(not line.startswith(" ") for line in lines), stderr


def vendor_calls(*emus: Any) -> int:
    return sum(sum(emu.stats()["calls"].values()) for emu in emus)


def exactly_once(cisco: Any, bigiq: Any, count: int) -> None:
    seen = {**cisco.stats()["mutations"], **bigiq.stats()["mutations"]}
    expected: dict[str, dict[str, int]] = {}
    for n in range(count):
        expected[udi_of(f"FOC{n:08d}")] = {"reserve": 1, "return": 0, "report": 0}
        expected[mac(n)] = {"assign": 1, "revoke": 0}
    assert seen == expected, {k: v for k, v in seen.items() if max(v.values()) != 1}


def test_two_runs_started_at_once_one_works_the_other_waits_or_refuses(
    sites, emulators, tmp_path: Path
) -> None:
    inside, outside = sites
    cisco = emulators("cisco", "--latency", "20", "--poll-delay", "0.3")
    bigiq = emulators("bigiq", "--latency", "20", "--task-delay", "0.3")
    from integration.conftest import point_outside_at

    point_outside_at(outside, cisco=cisco.url, bigiq=bigiq.url)
    devices = 40
    request = tmp_path / "req.airgap"
    pack(inside, write_plan(tmp_path / "plan.csv", plan_rows(devices)), request)

    # Both at the same moment, on a request (and a journal) neither has seen yet.
    runs = [start(outside, request, tmp_path / f"resp-{n}.airgap", as_json=True) for n in (1, 2)]
    results = [finish(proc) for proc in runs]
    worked = [r for r in results if r[0] == 0]
    refused = [r for r in results if r[0] != 0]
    assert worked, results
    for code, stdout, stderr in refused:
        assert_clean_busy_refusal(code, stdout, stderr, as_json=True)
    documents = [json.loads(stdout) for _, stdout, _ in worked]
    assert all(doc["counts"] == {"ok": 2 * devices} for doc in documents)
    if len(worked) == 2:  # the second waited until the first was done, then used the journal
        assert sorted(doc["vendor_calls"] for doc in documents) == [False, True]
    exactly_once(cisco, bigiq, devices)

    # The finished request again: answered from the journal, no vendor call at all.
    calls = vendor_calls(cisco, bigiq)
    code, again = process(outside, request, tmp_path / "again.airgap")
    assert code == 0, again
    assert again["vendor_calls"] is False
    assert again["items"] == documents[0]["items"]
    assert vendor_calls(cisco, bigiq) == calls
    opened = verify_bundle(tmp_path / "again.airgap", Home.open(inside).policy())
    assert len(opened.items) == 2 * devices

    # And two re-runs at once: each answers from the journal or is refused; still no calls.
    runs = [start(outside, request, tmp_path / f"re-{n}.airgap", as_json=False) for n in (1, 2)]
    for code, stdout, stderr in (finish(proc) for proc in runs):
        if code != 0:
            assert_clean_busy_refusal(code, stdout, stderr, as_json=False)
        else:
            assert "No vendor call was needed" in stdout, stdout
    assert vendor_calls(cisco, bigiq) == calls
    exactly_once(cisco, bigiq, devices)
    audit_verify(outside)
    print(
        f"\nCONCURRENT started_together=2 worked={len(worked)} refused_busy={len(refused)} "
        f"items={2 * devices} duplicates_found=0"
    )


def test_run_while_another_holds_the_request_is_refused_in_one_line(
    sites, emulators, tmp_path: Path
) -> None:
    inside, outside = sites
    cisco = emulators("cisco", "--latency", "40", "--poll-delay", "0.5")
    bigiq = emulators("bigiq", "--latency", "40", "--task-delay", "0.5")
    from integration.conftest import point_outside_at

    point_outside_at(outside, cisco=cisco.url, bigiq=bigiq.url)
    devices = 30
    request = tmp_path / "req.airgap"
    pack(inside, write_plan(tmp_path / "plan.csv", plan_rows(devices)), request)
    first = start(outside, request, tmp_path / "first.airgap", as_json=False)
    # Wait until the first run holds its claim on the request.
    deadline = time.monotonic() + 60
    while True:
        with sqlite3.connect(outside / "state.db", timeout=30) as db:
            try:
                held = db.execute("SELECT COUNT(*) FROM leases").fetchone()[0]
            except sqlite3.OperationalError:  # the journal's tables are not created yet
                held = 0
        if held or first.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert first.poll() is None, "the first run ended before a second could be started"
    second = start(outside, request, tmp_path / "second.airgap", as_json=False)
    code, stdout, stderr = finish(second)
    assert_clean_busy_refusal(code, stdout, stderr, as_json=False)
    print(f"\nCONCURRENT refused run's output: {stderr.strip()}")
    assert first.poll() is None, "the refusal should come while the first run still works"
    assert not (tmp_path / "second.airgap").exists()
    code, stdout, stderr = finish(first)
    assert code == 0, stdout + stderr
    exactly_once(cisco, bigiq, devices)
    audit_verify(outside)
