"""The watch loop itself, with a stand-in station: readiness, crash windows, filing, signals."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from watch.conftest import audit_events, ledger, wait_for

from airgap.errors import ConfigError, NetworkError, UntrustedKey
from airgap.home import Home
from airgap.outside.process import ProcessOptions
from airgap.watch import DONE, Handled, OutsideStation, Watcher, stop_on_signals


class FakeStation:
    """Records what it was given; answers with a fixed outcome or raises."""

    name = "fake"

    def __init__(self, home: Path, *, error: Exception | None = None) -> None:
        self.home = Home.open(home)
        self.error = error
        self.calls: list[tuple[str, bytes]] = []

    def output_for(self, bundle: Path, taken: set[str]) -> str | None:
        return None

    def handle(self, bundle: Path, output: str | None) -> Handled:
        self.calls.append((bundle.name, bundle.read_bytes()))
        if self.error is not None:
            raise self.error
        if b"forged" in bundle.read_bytes():
            return Handled.refused(UntrustedKey("signed by a stranger", hint="trust add"))
        return Handled(DONE, details={"size": bundle.stat().st_size})


@pytest.fixture
def home(make_home: Callable[..., Path]) -> Path:
    return make_home("inside", name="lab")


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


def test_a_file_still_growing_is_taken_only_when_complete(home: Path, inbox: Path) -> None:
    station = FakeStation(home)
    stop = threading.Event()
    watcher = Watcher(station, inbox, interval=0.15, stop=stop)
    runner = threading.Thread(target=watcher.run)
    runner.start()
    try:
        with (inbox / "req.airgap").open("wb") as handle:
            for _ in range(8):  # written in place, a chunk every 0.1 s: never still for 0.15 s
                handle.write(b"x" * 1000)
                handle.flush()
                time.sleep(0.1)
        wait_for(lambda: (inbox / "done" / "req.airgap").exists(), timeout=10)
    finally:
        stop.set()
        runner.join(timeout=10)
    assert station.calls == [("req.airgap", b"x" * 8000)]


def test_only_bundles_and_first_parts_are_taken(home: Path, inbox: Path) -> None:
    for name in ("a.airgap", "b.airgap.001", "b.airgap.002", ".c.airgap.tmp", "notes.txt"):
        (inbox / name).write_bytes(name.encode())
    (inbox / "sub.airgap").mkdir()
    station = FakeStation(home)
    Watcher(station, inbox, interval=0.05).run(until_idle=True)
    assert sorted(name for name, _ in station.calls) == ["a.airgap", "b.airgap.001"]
    assert sorted(p.name for p in (inbox / "done").iterdir()) == [
        "a.airgap",
        "b.airgap.001",
        "b.airgap.002",
    ]
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [
        ".airgap-watch.json",
        ".airgap-watch.lock",
        ".c.airgap.tmp",
        "notes.txt",
    ]


def test_refused_bundle_gets_a_reason_file_and_an_audit_entry(home: Path, inbox: Path) -> None:
    (inbox / "good.airgap").write_bytes(b"fine")
    (inbox / "bad.airgap").write_bytes(b"forged")
    events = Watcher(FakeStation(home), inbox, interval=0.05).run(until_idle=True)
    assert sorted((e.file, e.outcome, e.moved_to) for e in events) == [
        ("bad.airgap", "refused", "refused/bad.airgap"),
        ("good.airgap", "done", "done/good.airgap"),
    ]
    reason = (inbox / "refused" / "bad.airgap.reason.txt").read_text().splitlines()
    assert reason[:3] == [
        "E_UNTRUSTED_KEY: signed by a stranger",
        "hint: trust add",
        "file: bad.airgap",
    ]
    [refused] = audit_events(home, "watch_refused")
    assert refused["outcome"] == "refused"
    assert refused["details"]["code"] == "E_UNTRUSTED_KEY"
    assert refused["details"]["moved_to"] == "refused/bad.airgap"
    [done] = audit_events(home, "watch_done")
    assert done["details"]["size"] == 4


def test_a_second_bundle_with_a_taken_name_is_filed_beside_the_first(
    home: Path, inbox: Path
) -> None:
    (inbox / "req.airgap").write_bytes(b"first")
    Watcher(FakeStation(home), inbox, interval=0.05).run(until_idle=True)
    (inbox / "req.airgap").write_bytes(b"second, other bytes")
    Watcher(FakeStation(home), inbox, interval=0.05).run(until_idle=True)
    assert (inbox / "done" / "req.airgap").read_bytes() == b"first"
    assert (inbox / "done" / "2-req.airgap").read_bytes() == b"second, other bytes"


@pytest.mark.parametrize("crash_at_save", [2, 3, 4])
def test_a_crash_after_the_outcome_is_finished_on_restart_without_handling_again(
    home: Path, inbox: Path, monkeypatch: pytest.MonkeyPatch, crash_at_save: int
) -> None:
    """Saves: 1 processing, 2 outcome, 3 move planned, 4 audited, 5 moved. Crash after save N."""
    import airgap.watch as watch

    (inbox / "req.airgap").write_bytes(b"payload")
    real_save = watch._Ledger.save
    saves = 0

    class Crash(BaseException):
        pass

    def save(self: Any) -> None:
        nonlocal saves
        real_save(self)
        saves += 1
        if saves == crash_at_save:
            raise Crash

    monkeypatch.setattr(watch._Ledger, "save", save)
    first = FakeStation(home)
    with pytest.raises(Crash):
        Watcher(first, inbox, interval=0.05).run(until_idle=True)
    monkeypatch.setattr(watch._Ledger, "save", real_save)

    second = FakeStation(home)
    Watcher(second, inbox, interval=0.05).run(until_idle=True)
    assert len(first.calls) == 1 and second.calls == []
    assert (inbox / "done" / "req.airgap").read_bytes() == b"payload"
    assert not (inbox / "req.airgap").exists()
    assert len(audit_events(home, "watch_done")) == 1
    [entry] = ledger(inbox).values()
    assert entry["status"] == "done" and entry["moved"] and entry["audited"]


def test_a_crash_before_the_outcome_handles_the_bundle_again(
    home: Path, inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airgap.watch as watch

    (inbox / "req.airgap").write_bytes(b"payload")

    class Crash(BaseException):
        pass

    def handle(self: Any, bundle: Path, output: str | None) -> Handled:
        raise Crash

    real_handle = FakeStation.handle
    monkeypatch.setattr(FakeStation, "handle", handle)
    with pytest.raises(Crash):
        Watcher(FakeStation(home), inbox, interval=0.05).run(until_idle=True)
    monkeypatch.setattr(FakeStation, "handle", real_handle)
    [entry] = ledger(inbox).values()
    assert entry["status"] == "processing"
    station = FakeStation(home)
    Watcher(station, inbox, interval=0.05).run(until_idle=True)
    assert station.calls == [("req.airgap", b"payload")]
    assert (inbox / "done" / "req.airgap").exists()
    assert watch.LEDGER_NAME == ".airgap-watch.json"


def test_an_error_that_is_not_a_refusal_leaves_the_bundle_for_later(
    home: Path, inbox: Path
) -> None:
    (inbox / "req.airgap").write_bytes(b"payload")
    station = FakeStation(home, error=NetworkError("vendor unreachable"))
    events = Watcher(station, inbox, interval=0.05).run(until_idle=True)
    assert [(e.outcome, e.code) for e in events] == [("deferred", "E_NETWORK")]
    assert len(station.calls) == 1
    assert (inbox / "req.airgap").exists()
    assert not (inbox / "done").exists() and not (inbox / "refused").exists()
    assert audit_events(home, "watch_done", "watch_refused") == []
    # The next run (the problem fixed) handles it.
    ok = FakeStation(home)
    Watcher(ok, inbox, interval=0.05).run(until_idle=True)
    assert ok.calls == [("req.airgap", b"payload")]


def test_one_station_per_inbox(home: Path, inbox: Path) -> None:
    stop = threading.Event()
    first = Watcher(FakeStation(home), inbox, interval=0.05, stop=stop)
    runner = threading.Thread(target=first.run)
    runner.start()
    try:
        wait_for(lambda: (inbox / ".airgap-watch.lock").exists(), timeout=10)
        time.sleep(0.1)
        with pytest.raises(ConfigError, match="already running"):
            Watcher(FakeStation(home), inbox, interval=0.05).run(until_idle=True)
    finally:
        stop.set()
        runner.join(timeout=10)


def test_bad_interval_or_inbox_is_refused(home: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Watcher(FakeStation(home), tmp_path, interval=0)
    with pytest.raises(ConfigError):
        Watcher(FakeStation(home), tmp_path / "missing", interval=1)


def test_a_damaged_ledger_stops_the_station(home: Path, inbox: Path) -> None:
    (inbox / ".airgap-watch.json").write_text("{not json")
    with pytest.raises(ConfigError, match="damaged"):
        Watcher(FakeStation(home), inbox, interval=0.05)


def test_first_signal_sets_stop_second_acts_as_before() -> None:
    stop = threading.Event()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(stop.is_set, timeout=5)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_outside_station_names_responses_after_requests_without_clobbering(
    make_home: Callable[..., Path], tmp_path: Path
) -> None:
    outside = make_home("outside", name="dmz")
    outbox = tmp_path / "outbox"
    station = OutsideStation(Home.open(outside), outbox, ProcessOptions())
    assert station.output_for(tmp_path / "req-7.airgap", set()) == "req-7.response.airgap"
    assert station.output_for(tmp_path / "req-7.airgap.001", set()) == "req-7.response.airgap"
    (outbox / "req-7.response.airgap.001").write_bytes(b"")
    taken = {"req-7.response-2.airgap"}
    assert station.output_for(tmp_path / "req-7.airgap", taken) == "req-7.response-3.airgap"
    with pytest.raises(ConfigError, match="outside home"):
        OutsideStation(Home.open(make_home("inside")), outbox, ProcessOptions())
