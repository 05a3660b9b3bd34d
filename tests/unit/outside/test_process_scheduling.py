"""The processor's scheduling and journal rules, with an in-memory vendor (no HTTP).

The vendor here is a small simulator of the `VendorClient` contract; the processor's real
clients are exercised against the emulators in tests/integration.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from bundles import make_request
from craft import reserve_item

from airgap.bundle import TrustPolicy, verify_bundle
from airgap.errors import AirgapError, AuthError
from airgap.home import Home
from airgap.outside import journal as journal_module
from airgap.outside.http import UncertainOutcome
from airgap.outside.journal import Journal
from airgap.outside.process import ProcessOptions, process_request
from airgap.outside.vendor import NOT_SUBMITTED, Outcome, Reconciled, WorkItem


class SimVendor:
    """Reserves per device; `pending_polls` polls before done; scripted faults per item."""

    vendor: ClassVar[str] = "cisco"
    actions: ClassVar[frozenset[str]] = frozenset({"cisco.reserve", "cisco.usage_summary"})

    def __init__(self, *, pending_polls: int = 1, lose: set[str] | None = None) -> None:
        self.pending_polls = pending_polls
        self.lose = set(lose or ())  # items whose first submit answer is lost (UncertainOutcome)
        self.reserved: Counter[str] = Counter()
        self.polls: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.started = self.finished = 0

    def start(self) -> None:
        self.started += 1

    def finish(self) -> None:
        self.finished += 1

    def submit(self, item: WorkItem) -> Outcome:
        with self.lock:
            self.calls["submit"] += 1
            if item.action == "cisco.usage_summary":
                return Outcome.ok({"tags": 1}, files={"result.json": b"{}"})
            self.reserved[item.id] += 1
            if item.id in self.lose:
                self.lose.discard(item.id)
                raise UncertainOutcome("connection reset after sending")
        return Outcome.pending({"poll_id": str(2**60 + self.reserved.total())}, retry_after=0.01)

    def poll(self, item: WorkItem, vendor_ref: Mapping[str, str]) -> Outcome:
        with self.lock:
            self.calls["poll"] += 1
            self.polls[item.id] += 1
            if self.polls[item.id] <= self.pending_polls:
                return Outcome.pending(vendor_ref, retry_after=0.01)
        return Outcome.ok({"status": "SUCCESS"}, files={"lic.txt": f"LIC {item.id}".encode()})

    def reconcile(self, item: WorkItem, vendor_ref: Mapping[str, str]) -> Reconciled:
        with self.lock:
            self.calls["reconcile"] += 1
            if self.reserved[item.id]:
                return Outcome.ok({"found": True}, files={"lic.txt": f"LIC {item.id}".encode()})
        return NOT_SUBMITTED


@pytest.fixture
def sites(make_home, exchange_cards) -> tuple[Path, Path]:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    return inside, outside


def run(outside: Path, request: Path, vendor: SimVendor, **options: Any) -> Any:
    opts = ProcessOptions(output=request.parent / "resp.airgap", rate=0, **options)
    return process_request(Home.open(outside), request, opts, client_factory=lambda *_: vendor)


def request_of(inside: Path, tmp: Path, n: int, name: str = "req.airgap") -> Path:
    items = [reserve_item(i) for i in range(1, n + 1)]
    return make_request(inside, tmp / name, items=items, files={}).path


def test_every_item_done_once_and_response_verifies(sites, tmp_path: Path) -> None:
    inside, outside = sites
    request = request_of(inside, tmp_path, 30)
    vendor = SimVendor(pending_polls=2)
    result = run(outside, request, vendor, concurrency=4)
    assert result.counts == {"ok": 30}
    assert set(vendor.reserved.values()) == {1}
    opened = verify_bundle(result.response_path, Home.open(inside).policy(expected_kind="response"))
    assert opened.manifest.in_reply_to == {
        "bundle_id": result.request_id,
        "manifest_sha256": result.request_sha256,
    }
    first = opened.items[0]
    assert first["files"] == [f"files/{first['id']}/lic.txt"]
    assert first["status"] == "ok" and first["request_item"] == first["id"]


def test_rerun_of_a_finished_request_makes_no_vendor_call(sites, tmp_path: Path) -> None:
    inside, outside = sites
    request = request_of(inside, tmp_path, 5)
    first = run(outside, request, SimVendor())
    idle = SimVendor()
    second = run(outside, request, idle)
    assert idle.calls.total() == 0 and idle.started == 0
    assert second.items == first.items
    assert not second.vendor_calls


def test_lost_answer_is_reconciled_never_resent(sites, tmp_path: Path) -> None:
    inside, outside = sites
    request = request_of(inside, tmp_path, 6)
    vendor = SimVendor(lose={"item-0002", "item-0005"})
    result = run(outside, request, vendor)
    assert result.counts == {"ok": 6}
    assert set(vendor.reserved.values()) == {1}
    assert vendor.calls["reconcile"] == 2


def test_deadline_leaves_items_pending_and_a_later_run_finishes_them(sites, tmp_path: Path) -> None:
    inside, outside = sites
    request = request_of(inside, tmp_path, 4)
    slow = SimVendor(pending_polls=10**6)
    result = run(outside, request, slow, max_wait=timedelta(seconds=0.3))
    assert result.counts == {"pending": 4}
    assert not result.complete
    with Journal.open(outside / "state.db") as journal:
        assert {i.state.value for i in journal.items(result.request_id)} == {"SUBMITTED"}
    slow.pending_polls = 0
    finished = run(outside, request, slow)
    assert finished.counts == {"ok": 4}
    assert set(slow.reserved.values()) == {1}  # polled, never submitted again


def test_item_left_submitting_by_a_crash_is_reconciled(sites, tmp_path: Path) -> None:
    inside, outside = sites
    request = request_of(inside, tmp_path, 3)
    opened = verify_bundle(request, Home.open(outside).policy())
    with Journal.open(outside / "state.db") as journal:
        journal.admit_request(
            opened.manifest.bundle_id,
            opened.manifest.producer_fingerprint,
            opened.manifest.sequence,
            opened.manifest_sha256,
            [(i["id"], i["action"], None) for i in opened.items],
        )
        journal.mark_submitting(opened.manifest.bundle_id, "item-0001")  # crashed here...
        journal.mark_submitting(opened.manifest.bundle_id, "item-0002")
    vendor = SimVendor()
    vendor.reserved["item-0001"] = 1  # ...after the vendor acted on item 1, before item 2
    result = run(outside, request, vendor)
    assert result.counts == {"ok": 3}
    assert vendor.reserved == Counter({"item-0001": 1, "item-0002": 1, "item-0003": 1})


def test_replays_are_refused(sites, tmp_path: Path) -> None:
    inside, outside = sites
    old = request_of(inside, tmp_path, 1, "old.airgap")
    run(outside, old, SimVendor())
    # A new request id with the same (not higher) sequence from the same producer.
    again = request_of(inside, tmp_path, 1, "again.airgap")
    with pytest.raises(AirgapError) as info:
        run(outside, again, SimVendor())
    assert info.value.code == "E_REPLAY"
    events = (outside / "audit.jsonl").read_text()
    assert '"code":"E_REPLAY"' in events


def test_dry_run_calls_nothing_and_writes_nothing(sites, tmp_path: Path) -> None:
    inside, outside = sites
    request = request_of(inside, tmp_path, 3)
    vendor = SimVendor()
    result = run(outside, request, vendor, dry_run=True)
    assert result.plan == {"cisco.reserve": 3}
    assert vendor.calls.total() == 0
    assert not (tmp_path / "resp.airgap").exists()
    with Journal.open(outside / "state.db") as journal:
        assert journal.request(result.request_id) is None


def test_outside_process_refuses_an_inside_home(sites, tmp_path: Path) -> None:
    inside, _ = sites
    request = request_of(inside, tmp_path, 1)
    with pytest.raises(AirgapError) as info:
        process_request(Home.open(inside), request, ProcessOptions())
    assert info.value.code == "E_CONFIG"


def test_response_reemit_gives_identical_items(sites, tmp_path: Path) -> None:
    inside, outside = sites
    request = request_of(inside, tmp_path, 3)
    run(outside, request, SimVendor())
    policy: TrustPolicy = Home.open(inside).policy(expected_kind="response")
    one = verify_bundle(tmp_path / "resp.airgap", policy).items
    run(outside, request, SimVendor())
    two = verify_bundle(tmp_path / "resp.airgap", policy).items
    assert one == two


def count_journal_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the processor's calls into `Journal` (calls the journal makes to itself are not)."""
    calls: Counter[str] = Counter()
    depth = threading.local()

    def counted(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            level = getattr(depth, "level", 0)
            if level == 0:
                calls[name] += 1
            depth.level = level + 1
            try:
                return method(*args, **kwargs)
            finally:
                depth.level = level

        return wrapper

    for name in dir(Journal):
        method = getattr(Journal, name)
        if callable(method) and not name.startswith("_") and name != "open":
            monkeypatch.setattr(journal_module.Journal, name, counted(name, method))
    return calls


def test_item_steps_are_journaled_only_by_the_loops_group_commits_and_never_read_back(
    sites, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, outside = sites
    request = request_of(inside, tmp_path, 5)
    calls = count_journal_calls(monkeypatch)
    result = run(outside, request, SimVendor(pending_polls=1), concurrency=1)
    assert result.counts == {"ok": 5}
    # Per item: submit (SUBMITTING, then SUBMITTED), a poll still pending (nothing to record),
    # a poll that finishes (DONE). Every one of those changes goes into the loop's one commit
    # per turn (`advance`), at most one turn per step; the run reads the items once, after
    # taking its claim, and answers from what the commits handed back.
    advances = calls.pop("advance")
    assert 1 <= advances <= 3 * 5
    assert dict(calls) == {
        "admit_request": 1,
        "claim": 1,
        "items": 1,
        "next_response_sequence": 1,
        "record_response": 1,
        "close": 1,
    }


def test_a_failed_item_answers_with_its_result_beside_its_error(sites, tmp_path: Path) -> None:
    inside, outside = sites
    request = request_of(inside, tmp_path, 1)

    class Refusing(SimVendor):
        def submit(self, item: WorkItem) -> Outcome:
            return Outcome.failed("E_VENDOR", "taken", result={"status": "FAILED"})

    result = run(outside, request, Refusing())
    (item,) = result.items
    assert item["status"] == "failed"
    assert item["error"] == {"code": "E_VENDOR", "message": "taken"}
    assert item["result"] == {"status": "FAILED"}
    with Journal.open(outside / "state.db") as journal:
        (entry,) = journal.items(result.request_id)
    assert entry.error == {"code": "E_VENDOR", "message": "taken"}
    assert entry.result == {"status": "FAILED"}


def test_submits_that_start_together_are_made_durable_in_one_commit(
    sites, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, outside = sites
    request = request_of(inside, tmp_path, 5)
    marked: list[list[str]] = []
    real = Journal.advance

    class Watching(SimVendor):
        def submit(self, item: WorkItem) -> Outcome:
            # The group's commit came before any of its calls.
            assert any(item.id in group for group in marked)
            return super().submit(item)

    def spy(self: Journal, bundle_id: str, outcomes: Any, item_ids: list[str]) -> Any:
        if item_ids:
            marked.append(list(item_ids))
        return real(self, bundle_id, outcomes, item_ids)

    monkeypatch.setattr(Journal, "advance", spy)
    vendor = Watching()
    result = run(outside, request, vendor, concurrency=8)
    assert result.counts == {"ok": 5}
    assert marked == [[f"item-{n:04d}" for n in range(1, 6)]]
    assert set(vendor.reserved.values()) == {1}


def test_a_batch_stopped_by_a_refused_login_still_records_the_calls_in_flight(
    sites, tmp_path: Path
) -> None:
    inside, outside = sites
    request = request_of(inside, tmp_path, 4)
    gate = threading.Barrier(4)

    class Refusing(SimVendor):
        def submit(self, item: WorkItem) -> Outcome:
            gate.wait(timeout=10)  # all four calls are in flight together
            if item.id == "item-0001":
                raise AuthError("the token was refused")
            time.sleep(0.3)  # ... and the others come back after the refusal stopped the batch
            return super().submit(item)

    with pytest.raises(AuthError):
        run(outside, request, Refusing(), concurrency=4)
    with Journal.open(outside / "state.db") as journal:
        (seen,) = journal.summary().requests
        states = {e.item_id: e.state.value for e in journal.items(seen.request.bundle_id)}
    # The refused call went back to NEW; the three that came back pending are SUBMITTED, not
    # left SUBMITTING to be reconciled by the next run.
    assert states == {
        "item-0001": "NEW",
        "item-0002": "SUBMITTED",
        "item-0003": "SUBMITTED",
        "item-0004": "SUBMITTED",
    }
