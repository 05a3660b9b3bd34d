"""Both stations in a chain, with media-sized parts: the outside station's outbox is the inside
station's inbox. Split requests and responses are taken from their first part; a part set with
a gap and a forged response are refused with their codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from conftest import run_airgap
from integration.conftest import RunningEmulator, point_outside_at
from watch.conftest import DEMO_SECRETS, audit_events, drop

from airgap.bundle import build_bundle
from airgap.home import Home
from airgap.inside.state import InsideState
from airgap.outside.process import ProcessOptions
from airgap.units import utc_now
from airgap.watch import OutsideStation, Watcher

Packer = Callable[..., list[Path]]


def _forged_response(rogue: Path, request: Path, inside: Path, out: Path) -> Path:
    """A response to a real request, signed by an outside home the inside does not trust."""
    with InsideState(Home.open(inside).paths.state_db) as state:
        record = next(r for r in state.requests() if r.path == str(request.resolve()))
    home = Home.open(rogue)
    now = utc_now()
    build_bundle(
        out,
        kind="response",
        items=[
            {
                "id": "i00001",
                "request_item": "i00001",
                "action": "cisco.reserve",
                "status": "failed",
                "result": {},
                "error": {"code": "E_VENDOR", "message": "no"},
                "files": [],
                "vendor_refs": {},
            }
        ],
        files=[],
        signers=[home.signer()],
        sequence=1,
        created=now,
        expires=now + timedelta(days=1),
        audit_head=home.audit().head(),
        in_reply_to={"bundle_id": record.bundle_id, "manifest_sha256": record.manifest_sha256},
    )
    return out


def test_station_chain_with_parts_and_refusals(
    sites: tuple[Path, Path],
    pack_request: Packer,
    start_emulator: Callable[..., RunningEmulator],
    make_home: Callable[..., Path],
    tmp_path: Path,
) -> None:
    inside, outside = sites
    cisco = start_emulator("cisco", "--poll-delay", "0.1")
    point_outside_at(outside, cisco=cisco.url)
    to_outside, to_inside = tmp_path / "to-outside", tmp_path / "to-inside"
    to_outside.mkdir()
    whole = pack_request("req-1", devices=2, first=10)
    split = pack_request("req-2", devices=40, first=20, split=4096)
    gappy = pack_request("req-3", devices=40, first=70, split=4096)
    assert len(split) >= 3 and len(gappy) >= 3
    drop([*whole, *split, *[p for p in gappy if not p.name.endswith(".002")]], to_outside)

    # The outside station, in-process, writing responses in small parts too.
    station = OutsideStation(
        Home.open(outside, dict(DEMO_SECRETS)),
        to_inside,
        ProcessOptions(rate=0, max_wait=timedelta(minutes=2), split=4096),
    )
    events = Watcher(station, to_outside, interval=0.1).run(until_idle=True)
    outcomes = sorted((e.file, e.outcome, e.code) for e in events)
    assert outcomes == [
        ("req-1.airgap", "done", None),
        ("req-2.airgap.001", "done", None),
        ("req-3.airgap.001", "refused", "E_MISSING_PART"),
    ]
    assert sorted(p.name for p in (to_outside / "done").iterdir()) == sorted(
        p.name for p in [*whole, *split]
    )
    refused = sorted(p.name for p in (to_outside / "refused").iterdir())
    assert refused == sorted(
        [*(p.name for p in gappy if not p.name.endswith(".002")), "req-3.airgap.001.reason.txt"]
    )
    reason = (to_outside / "refused" / "req-3.airgap.001.reason.txt").read_text()
    assert reason.startswith("E_MISSING_PART: req-3.airgap.002")
    response_parts = sorted(p.name for p in to_inside.glob("req-*.response.airgap.*"))
    assert "req-1.response.airgap.001" in response_parts
    assert len([p for p in response_parts if p.startswith("req-2")]) >= 3

    # A forged response lands in the inside inbox too.
    rogue = make_home("outside", name="rogue")
    _forged_response(rogue, whole[0], inside, to_inside / "forged.airgap")

    out = tmp_path / "licences"
    result = run_airgap(
        "--json", "--home", str(inside), "inside", "watch", str(to_inside), "--out", str(out),
        "--interval", "0.2s", "--once", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"done": 2, "refused": 1}
    assert sorted(p.name for p in (to_inside / "done").iterdir()) == response_parts
    assert (
        (to_inside / "refused" / "forged.airgap.reason.txt")
        .read_text()
        .startswith("E_UNTRUSTED_KEY")
    )
    licences = sorted(out.glob("*/cisco/*/lic.txt"))
    assert len(licences) == 2 + 40
    with InsideState(Home.open(inside).paths.state_db) as state:
        statuses = {
            r.path.rsplit("/", 1)[-1]: r.status for r in state.requests(include_complete=True)
        }
    assert statuses["req-1.airgap"] == statuses["req-2.airgap"] == "complete"
    done = audit_events(inside, "watch_done")
    assert len(done) == 2
    assert all(e["details"]["station"] == "inside" for e in done)
