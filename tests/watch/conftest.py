"""Fixtures for transfer-station tests: two sites, packed requests, and the real `watch` CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import airgap_command
from integration.conftest import DEMO_SECRETS, start_emulator

from airgap.home import Home

__all__ = ["DEMO_SECRETS", "start_emulator"]

TAG = "regid.2017-03.com.cisco.advantagek9"


@pytest.fixture
def sites(
    make_home: Callable[..., Path], exchange_cards: Callable[[Path, Path], None]
) -> tuple[Path, Path]:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    return inside, outside


@pytest.fixture
def pack_request(sites: tuple[Path, Path], tmp_path: Path) -> Callable[..., list[Path]]:
    """Factory: `pack_request("req-1", devices=3, first=1)` packs cisco.reserve items for
    devices FOC<first>… with the inside home (recorded as outstanding) into tmp_path/staging
    and returns the written file(s): one bundle, or its parts with `split`."""
    from airgap.inside.pack import pack

    inside, _ = sites
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)

    def make(
        name: str, *, devices: int = 2, first: int = 1, split: int | None = None
    ) -> list[Path]:
        plan = staging / f"{name}.csv"
        rows = ["action,hostname,pid,sn,entitlements"]
        rows += [
            f"cisco.reserve,sw-{n},C9300-24T,FOC{n:08d},{TAG}:1"
            for n in range(first, first + devices)
        ]
        plan.write_text("\n".join(rows) + "\n")
        result = pack(
            Home.open(inside),
            plans=[plan],
            udi_dir=None,
            entitlements=[],
            rum_dir=None,
            returns_dir=None,
            output=staging / f"{name}.airgap",
            split=split,
        )
        return list(result.parts) or [result.path]

    return make


def drop(files: list[Path], inbox: Path) -> list[Path]:
    """Put bundle files into the inbox the way a careful writer does: copy, then rename."""
    placed = []
    for source in files:
        temp = inbox / f".{source.name}.copying"
        shutil.copyfile(source, temp)
        os.replace(temp, inbox / source.name)
        placed.append(inbox / source.name)
    return placed


def watch_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")}
    env.update(DEMO_SECRETS, AIRGAP_HOME=str(home))
    return env


@pytest.fixture
def start_watch() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Factory: `start_watch(home, "outside", "watch", INBOX, ...)` runs the real CLI in the
    background (stdout/stderr to files beside nothing else); all are killed at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(home: Path, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*airgap_command(), *args],
            env=watch_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def wait_for(condition: Callable[[], Any], *, timeout: float = 60.0, what: str = "") -> Any:
    """Poll `condition` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what or condition}")


def audit_events(home: Path, *events: str) -> list[dict[str, Any]]:
    lines = (home / "audit.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    return [e for e in entries if e["event"] in events]


def ledger(inbox: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((inbox / ".airgap-watch.json").read_text())
    return document["handled"]  # type: ignore[no-any-return]
