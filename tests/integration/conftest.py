"""Fixtures for runs against emulators started as separate processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import airgap_command

DEMO_SECRETS = {
    "AIRGAP_CISCO_CLIENT_ID": "test-client",
    "AIRGAP_CISCO_CLIENT_SECRET": "test-secret-value",
    "AIRGAP_BIGIQ_USERNAME": "admin",
    "AIRGAP_BIGIQ_PASSWORD": "test-password-value",
}


class RunningEmulator:
    def __init__(self, url: str, proc: subprocess.Popen[str]) -> None:
        self.url = url
        self.proc = proc
        self.session = requests.Session()
        self.session.trust_env = False

    def stats(self) -> dict[str, Any]:
        response = self.session.get(f"{self.url}/_emulator/stats", timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


@contextmanager
def emulator_process(kind: str, *args: str) -> Iterator[RunningEmulator]:
    """`airgap emulate KIND ...` on a random port, stopped afterwards."""
    command = airgap_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")}
    proc = subprocess.Popen(
        [*command, "emulate", kind, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http"), f"emulator did not start: {url!r}"
        yield RunningEmulator(url, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., RunningEmulator]]:
    """Factory: `start_emulator("cisco", "--latency", "20")`; all are stopped at the end."""
    with contextlib_exit_stack() as stack:

        def start(kind: str, *args: str) -> RunningEmulator:
            return stack.enter_context(emulator_process(kind, *args))

        yield start


def contextlib_exit_stack() -> Any:
    import contextlib

    return contextlib.ExitStack()


def point_outside_at(outside: Path, *, cisco: str | None = None, bigiq: str | None = None) -> None:
    """Configure an outside home for emulators, as a user would with `config set`."""
    from airgap.config import HomePaths, set_value

    paths = HomePaths(outside)
    if cisco:
        set_value(paths, "cisco.token_url", f"{cisco}/oauth2/default/v1/token")
        set_value(paths, "cisco.api_base", f"{cisco}/services/api/smart-accounts-and-licensing/")
    if bigiq:
        set_value(paths, "bigiq.url", bigiq)


def mutations_seen(emulators: Sequence[RunningEmulator]) -> int:
    """State changes the emulators have accepted in all (reserves, returns, reports, assigns...)."""
    return sum(
        sum(counts.values())
        for emulator in emulators
        for counts in emulator.stats()["mutations"].values()
    )


@dataclass
class KillRecord:
    """One SIGKILL: mutations seen before the run started, when it was killed, and after."""

    before_run: int
    at_kill: int
    after_kill: int


def kill_mid_run(
    command: Sequence[str],
    env: dict[str, str],
    emulators: Sequence[RunningEmulator],
    *,
    kills: int,
    rng: random.Random,
    per_kill: tuple[int, int],
    timeout: float = 60,
) -> list[KillRecord]:
    """Start `command` `kills` times and SIGKILL each run once it has made new vendor changes.

    The trigger is an event, not a sleep: each run is killed as soon as the emulators have
    accepted N more mutations than before it started, N drawn from `per_kill` (inclusive), so
    every kill lands mid-run however busy the machine is. Fails if a run finishes before its
    kill, or makes no change within `timeout` seconds.

    Returns:
        One record per kill, for the caller's assertions.
    """
    records: list[KillRecord] = []
    for _ in range(kills):
        before = mutations_seen(emulators)
        wanted = before + rng.randint(*per_kill)
        proc = subprocess.Popen(
            list(command), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + timeout
            seen = before
            while proc.poll() is None and seen < wanted:
                assert time.monotonic() < deadline, f"no change in {timeout} s ({seen - before})"
                time.sleep(0.01)
                seen = mutations_seen(emulators)
            assert proc.poll() is None, (
                f"run {len(records) + 1} finished (exit {proc.returncode}) before its kill: "
                "give the loop more work"
            )
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        records.append(KillRecord(before, seen, mutations_seen(emulators)))
    return records
