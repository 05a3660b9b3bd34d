"""Fixtures for runs against emulators started as separate processes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
