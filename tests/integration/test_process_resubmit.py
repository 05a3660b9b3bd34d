"""`airgap outside process --resubmit`, run as a subprocess against the Cisco emulator.

Items get into NEEDS_ATTENTION the way they do in the field: the answer to an SLR reservation is
lost (a connection reset armed at the emulator after it acted) and the reconciling look-up finds
a reservation whose code it cannot fetch. A refused command must leave the journal as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bundles import make_request
from conftest import run_airgap
from craft import reserve_item
from integration.conftest import DEMO_SECRETS, RunningEmulator, point_outside_at

from airgap.outside.journal import ItemState, Journal, JournalItem

HSEC = "regid.2021-05.com.cisco.C9K_HSEC,1.0_4c1f0e8a-72d3-4b9e-a6f5-0d93e1b7c2a4"


def slr_item(n: int) -> dict[str, Any]:
    sn = f"FOC{n:08d}"
    return {
        "id": f"item-{n:04d}",
        "action": "cisco.slr_reserve",
        "device": {"hostname": None, "udi": {"pid": "C9300-24T", "sn": sn}},
        "params": {
            "request_code": f"CB-ZC9300-24T:{sn}-AQ7fK2mZr-3C",
            "reservation_type": "SPECIFIC",
            "entitlements": [{"tag": HSEC, "count": 2}],
        },
        "files": [],
    }


@dataclass
class Stuck:
    """An outside home whose request has item-0001 and item-0002 in NEEDS_ATTENTION."""

    outside: Path
    request: Path
    request_id: str
    cisco: RunningEmulator
    out: Path

    def process(self, *resubmit: str) -> tuple[int, dict[str, Any]]:
        args = [arg for item in resubmit for arg in ("--resubmit", item)]
        done = run_airgap(
            "--json",
            "--home",
            str(self.outside),
            "outside",
            "process",
            str(self.request),
            "-o",
            str(self.out),
            "--rate",
            "0",
            *args,
            env=DEMO_SECRETS,
        )
        assert done.stdout, done.stderr
        document: dict[str, Any] = json.loads(done.stdout)
        return done.returncode, document

    def journal(self) -> list[JournalItem]:
        with Journal.open(self.outside / "state.db") as journal:
            return journal.items(self.request_id)

    def reserves(self) -> dict[str, int]:
        mutations = self.cisco.stats()["mutations"]
        return {udi: counts["reserve"] for udi, counts in mutations.items()}


@pytest.fixture
def stuck(
    make_home: Callable[..., Path],
    exchange_cards: Callable[[Path, Path], None],
    start_emulator: Callable[..., RunningEmulator],
    tmp_path: Path,
) -> Stuck:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    cisco = start_emulator("cisco", "--poll-delay", "0.1")
    point_outside_at(outside, cisco=cisco.url)
    request = make_request(
        inside,
        tmp_path / "req.airgap",
        items=[slr_item(1), slr_item(2), reserve_item(3)],
        files={},
    )
    for _ in range(2):  # both SLR reservations act, then lose their answer
        armed = cisco.session.post(
            f"{cisco.url}/_emulator/faults",
            json={"path_contains": "reserve-licenses", "status": "reset"},
            timeout=10,
        )
        armed.raise_for_status()
    situation = Stuck(
        outside, request.path, request.manifest.bundle_id, cisco, tmp_path / "resp.airgap"
    )
    code, document = situation.process()
    assert code == 4, document
    states = {item["id"]: item["status"] for item in document["items"]}
    assert states == {
        "item-0001": "needs_attention",
        "item-0002": "needs_attention",
        "item-0003": "ok",
    }
    return situation


@pytest.mark.parametrize(
    ("resubmit", "phrases"),
    [
        (["item-9999"], ["not in this request: ['item-9999']"]),
        (["item-0003"], ["not in NEEDS_ATTENTION: item-0003 is DONE"]),
        (
            ["item-0001", "item-9999", "item-0003"],
            ["not in this request: ['item-9999']", "item-0003 is DONE"],
        ),
    ],
    ids=["unknown", "not-needing-attention", "mixed"],
)
def test_a_refused_resubmit_changes_nothing(
    stuck: Stuck, resubmit: list[str], phrases: list[str]
) -> None:
    before, reserves = stuck.journal(), stuck.reserves()
    code, document = stuck.process(*resubmit)
    assert code == 1, document
    assert document["ok"] is False and document["error"]["code"] == "E_CONFIG"
    for phrase in phrases:
        assert phrase in document["error"]["message"]
    assert "item-0001" not in document["error"]["message"]  # the good one is not blamed
    assert stuck.journal() == before  # item-0001 still NEEDS_ATTENTION, its error kept
    assert stuck.reserves() == reserves  # and no vendor was called


def test_a_resubmit_of_an_item_needing_attention_sends_it_again(stuck: Stuck) -> None:
    before = {item.item_id: item for item in stuck.journal()}
    reserves = stuck.reserves()
    code, document = stuck.process("item-0001")
    states = {item["id"]: item["status"] for item in document["items"]}
    assert states == {"item-0001": "ok", "item-0002": "needs_attention", "item-0003": "ok"}
    assert code == 4  # item-0002 still waits for the operator
    after = {item.item_id: item for item in stuck.journal()}
    assert after["item-0001"].state is ItemState.DONE
    assert after["item-0001"].attempts == before["item-0001"].attempts + 1
    assert after["item-0001"].files  # the authorization code this time
    assert after["item-0002"] == before["item-0002"]
    device = "C9300-24T:FOC00000001"
    assert stuck.reserves() == {**reserves, device: reserves[device] + 1}  # sent once more
    # The same command again: item-0001 is DONE now, so it is refused and nothing is sent.
    code, document = stuck.process("item-0001")
    assert code == 1 and "item-0001 is DONE" in document["error"]["message"]
