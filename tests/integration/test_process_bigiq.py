"""`outside process` with BIG-IQ items (and mixed with Cisco), over real HTTP to emulators."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from bundles import make_request
from conftest import airgap_command, run_airgap
from craft import reserve_item
from integration.conftest import DEMO_SECRETS, kill_mid_run, point_outside_at


def mac(n: int) -> str:
    return f"00:50:56:{(n >> 16) & 255:02X}:{(n >> 8) & 255:02X}:{n & 255:02X}"


def assign(n: int, pool: str = "demo-utility") -> dict[str, Any]:
    return {
        "id": f"mac-{n:05d}",
        "action": "bigiq.assign",
        "device": {"mac": mac(n)},
        "params": {"pool": pool, "hypervisor": "vmware", "unit_of_measure": "yearly"},
        "files": [],
    }


@pytest.fixture
def sites(make_home, exchange_cards):
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    return inside, outside


def process(outside: Path, request: Path, out: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = run_airgap(
        "--json",
        "--home",
        str(outside),
        "outside",
        "process",
        str(request),
        "-o",
        str(out),
        "--rate",
        "0",
        *extra,
        env=DEMO_SECRETS,
        timeout=600,
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_assign_batch_outlives_many_token_lifetimes(sites, start_emulator, tmp_path) -> None:
    inside, outside = sites
    bigiq = start_emulator("bigiq", "--token-ttl", "2", "--latency", "40", "--task-delay", "0.3")
    point_outside_at(outside, bigiq=bigiq.url)
    items = [assign(n) for n in range(300)]
    request = make_request(inside, tmp_path / "req.airgap", items=items, files={}).path
    started = time.monotonic()
    code, document = process(outside, request, tmp_path / "resp.airgap", "--concurrency", "4")
    elapsed = time.monotonic() - started
    assert code == 0, document
    assert document["counts"] == {"ok": 300}
    assert elapsed > 3 * 2, f"the batch ran {elapsed:.1f} s, not several token lifetimes"
    stats = bigiq.stats()
    assert {m["assign"] for m in stats["mutations"].values()} == {1}
    assert len(stats["mutations"]) == 300


def request_with_sequence(inside: Path, items: list[dict[str, Any]], path: Path, seq: int) -> Path:
    """A request with a chosen sequence (make_request always uses 1)."""
    from datetime import timedelta

    from airgap.bundle import build_bundle
    from airgap.home import Home
    from airgap.units import utc_now

    home = Home.open(inside)
    now = utc_now()
    build_bundle(
        path,
        kind="request",
        items=items,
        files=[],
        signers=[home.signer()],
        sequence=seq,
        created=now,
        expires=now + timedelta(days=1),
        audit_head=home.audit().head(),
    )
    return path


def test_vendor_refusals_are_failed_items_and_the_rest_succeed(
    sites, start_emulator, tmp_path
) -> None:
    inside, outside = sites
    bigiq = start_emulator("bigiq", "--pool", "small:3")
    point_outside_at(outside, bigiq=bigiq.url)
    items = [assign(n, "small") for n in range(5)]  # capacity 3: two are refused
    items.append(assign(100, "no-such-pool"))
    first = request_with_sequence(inside, items, tmp_path / "one.airgap", 1)
    code, document = process(outside, first, tmp_path / "r1.airgap")
    assert code == 4
    statuses = [i["status"] for i in document["items"]]
    assert statuses.count("ok") == 3 and statuses.count("failed") == 3
    messages = [i["error"]["message"] for i in document["items"] if i["status"] == "failed"]
    assert "License pool 'no-such-pool' not found" in messages
    # A MAC that is already licensed is refused by BIG-IQ; its message reaches the item.
    licensed = next(i for i in document["items"] if i["status"] == "ok")
    n = int(licensed["id"].split("-")[1])
    second = request_with_sequence(
        inside, [dict(assign(n, "small"), id="again-1")], tmp_path / "two.airgap", 2
    )
    code, document = process(outside, second, tmp_path / "r2.airgap")
    assert code == 4
    (item,) = document["items"]
    assert item["status"] == "failed"
    assert mac(n) in item["error"]["message"] or "licensed" in item["error"]["message"].lower()


def test_sigkill_during_assign_batch_then_rerun(sites, start_emulator, tmp_path) -> None:
    inside, outside = sites
    bigiq = start_emulator("bigiq", "--latency", "40", "--task-delay", "0.2")
    point_outside_at(outside, bigiq=bigiq.url)
    items = [assign(n) for n in range(200)]
    request = make_request(inside, tmp_path / "req.airgap", items=items, files={}).path
    command = [
        *airgap_command(),
        "outside",
        "process",
        str(request),
        "-o",
        str(tmp_path / "resp.airgap"),
        "--rate",
        "0",
        "--concurrency",
        "4",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")}
    env.update(DEMO_SECRETS, AIRGAP_HOME=str(outside))
    # Killed once it has made 3 to 12 new assignments: 8 kills leave most of the 200 to do.
    kills = kill_mid_run(command, env, [bigiq], kills=8, rng=random.Random(7), per_kill=(3, 12))
    assert all(kill.at_kill > kill.before_run for kill in kills)
    assert kills[-1].after_kill < 200
    code, document = process(outside, request, tmp_path / "resp.airgap")
    assert code == 0, document
    assert document["counts"] == {"ok": 200}
    mutations = bigiq.stats()["mutations"]
    assert len(mutations) == 200 and {m["assign"] for m in mutations.values()} == {1}


def test_mixed_cisco_and_bigiq_request_of_500_items(sites, start_emulator, tmp_path) -> None:
    inside, outside = sites
    cisco = start_emulator("cisco", "--poll-delay", "0.2")
    bigiq = start_emulator("bigiq", "--task-delay", "0.2")
    point_outside_at(outside, cisco=cisco.url, bigiq=bigiq.url)
    items = [reserve_item(n) for n in range(1, 251)] + [assign(n) for n in range(250)]
    request = make_request(inside, tmp_path / "req.airgap", items=items, files={}).path
    code, document = process(outside, request, tmp_path / "resp.airgap", "--concurrency", "16")
    assert code == 0, document["counts"]
    assert document["counts"] == {"ok": 500}
    assert len(cisco.stats()["mutations"]) == 250
    assert len(bigiq.stats()["mutations"]) == 250


def test_manual_regkey_activation_with_license_text_from_f5(
    sites, start_emulator, tmp_path
) -> None:
    from airgap.emulators.bigiq import DEMO_REGKEY_POOL, REGKEY_PLAIN, license_text

    inside, outside = sites
    bigiq = start_emulator("bigiq")
    point_outside_at(outside, bigiq=bigiq.url)
    dossier = "ab" * 231
    item = {
        "id": "rk-1",
        "action": "bigiq.regkey_activate",
        "device": None,
        "params": {
            "pool": DEMO_REGKEY_POOL,
            "regkey": REGKEY_PLAIN,
            "mode": "manual",
            "dossier": dossier,
            "accept_eula": False,
        },
        "files": [],
    }
    licenses = tmp_path / "f5"
    licenses.mkdir()
    # No license text saved yet: the item fails and says exactly what to fetch and where.
    first = request_with_sequence(inside, [item], tmp_path / "one.airgap", 1)
    code, document = process(outside, first, tmp_path / "r1.airgap", "--license-dir", str(licenses))
    assert code == 4
    (failed,) = document["items"]
    assert failed["status"] == "failed"
    assert f"{REGKEY_PLAIN}.license" in failed["error"]["message"]
    assert "activate.f5.com" in failed["error"]["message"]
    # The operator saves F5's answer; the next request activates the key.
    (licenses / f"{REGKEY_PLAIN}.license").write_text(license_text(REGKEY_PLAIN, dossier=dossier))
    second = request_with_sequence(inside, [dict(item, id="rk-2")], tmp_path / "two.airgap", 2)
    code, document = process(
        outside, second, tmp_path / "r2.airgap", "--license-dir", str(licenses)
    )
    assert code == 0, document
    (done,) = document["items"]
    assert done["status"] == "ok" and done["files"] == ["files/rk-2/license.txt"]


def test_tokens_expiring_during_429_backoff_do_not_stop_the_run(
    sites, start_emulator, tmp_path
) -> None:
    # Regression: the token was attached once per call, so retries after 429s that outlived
    # it got two 401s in a row and the whole run stopped with E_AUTH. And again, now and then:
    # the one resend after a 401 could itself meet a 401 (the renewed token lapsed while the
    # renewing thread deleted the rotated refresh token through 429s, or while the resend
    # waited out Retry-After). TokenSession's 401 rule and its retiring of replaced tokens after
    # the send fix it; tests/unit/outside/test_session.py pins both without timing.
    inside, outside = sites
    faults = ("--faults", "429=0.3", "--token-ttl", "1.5")
    cisco = start_emulator("cisco", "--poll-delay", "0.2", *faults)
    bigiq = start_emulator("bigiq", *faults)
    point_outside_at(outside, cisco=cisco.url, bigiq=bigiq.url)
    items = [reserve_item(n) for n in range(1, 13)] + [assign(n) for n in range(12)]
    request = make_request(inside, tmp_path / "req.airgap", items=items, files={}).path
    for _ in range(8):  # an item can run out of attempts on 429s: pending, retried later
        code, document = process(outside, request, tmp_path / "resp.airgap", "--concurrency", "8")
        if code == 1:
            # A call at start (token, login, account or version) met five 429s in a row
            # (0.3**5 a call): the vendor was unavailable and the run stopped before touching
            # an item, honestly. Never E_AUTH.
            assert document["error"]["code"] == "E_NETWORK", document
            assert "HTTP 429" in document["error"]["message"], document
            continue
        assert code in (0, 4), document
        if code == 0:
            break
    assert document["counts"] == {"ok": 24}
