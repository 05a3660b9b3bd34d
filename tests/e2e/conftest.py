"""End-to-end fixtures: sites made with the real `airgap` command, emulators as processes.

Nothing here imports `airgap`: every step is the installed command run in a subprocess, as an
operator would type it, and outputs are read with the standard library only.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import airgap_command, run_airgap

# Emulator credentials: the emulators accept any non-empty values. Secrets only ever travel
# in the environment of the outside's `process` runs, never on a command line or in config.
SECRETS = {
    "AIRGAP_CISCO_CLIENT_ID": "e2e-client",
    "AIRGAP_CISCO_CLIENT_SECRET": "e2e-secret-not-real",
    "AIRGAP_BIGIQ_USERNAME": "admin",
    "AIRGAP_BIGIQ_PASSWORD": "e2e-password-not-real",
}
# A tag the Cisco emulator's smart account holds 1,000 of (a public Cisco tag string).
NETWORK_ADVANTAGE = "regid.2017-03.com.cisco.advantagek9,1.0_bd1da96e-ec1d-412b-a50e-53846b347d53"
# Fast vendors: a 2 ms round trip, Cisco polls complete after 0.2 s, BIG-IQ tasks after 0.2 s.
CISCO_ARGS = ("--latency", "2", "--poll-delay", "0.2")
BIGIQ_ARGS = ("--latency", "2", "--task-delay", "0.2")


@dataclass
class Result:
    """One finished `airgap` run: exit code, output, and the --json document if any."""

    proc: subprocess.CompletedProcess[str]

    @property
    def rc(self) -> int:
        return self.proc.returncode

    @property
    def doc(self) -> dict[str, Any]:
        text = self.proc.stdout.strip()
        assert text, f"no JSON on stdout (exit {self.rc}); stderr: {self.proc.stderr}"
        document: dict[str, Any] = json.loads(text)
        return document

    @property
    def code(self) -> str:
        """The stable error code of a failure printed under --json."""
        document = self.doc
        assert document["ok"] is False, document
        return str(document["error"]["code"])

    def __str__(self) -> str:
        return f"exit {self.rc}\nstdout: {self.proc.stdout[-3000:]}\nstderr: {self.proc.stderr}"


@dataclass
class Site:
    """One airgap home, driven only through the `airgap` command."""

    name: str
    role: str
    home: Path
    card: Path
    fingerprint: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def run(
        self, *args: str, json_output: bool = True, cwd: Path | None = None, timeout: float = 120
    ) -> Result:
        """`airgap [--json] --home HOME ARGS…`."""
        globals_ = ["--json"] if json_output else []
        return Result(
            run_airgap(
                *globals_, "--home", str(self.home), *args, env=self.env, cwd=cwd, timeout=timeout
            )
        )

    def ok(self, *args: str, expect: int = 0, **kwargs: Any) -> dict[str, Any]:
        """Run with --json, require exit `expect` and `"ok": true`, return the document."""
        result = self.run(*args, **kwargs)
        assert result.rc == expect, f"airgap {' '.join(args)}: {result}"
        document = result.doc
        assert document["ok"] is True, document
        return document

    def refused(self, *args: str, code: str, exit_code: int = 3, **kwargs: Any) -> Result:
        """Run with --json and require the failure `code` with `exit_code`."""
        result = self.run(*args, **kwargs)
        assert result.rc == exit_code, f"airgap {' '.join(args)}: {result}"
        assert result.code == code, result.doc
        return result

    def outside_status(self) -> dict[str, Any]:
        return self.ok("outside", "status")

    def inside_status(self, *, all_requests: bool = True) -> dict[str, Any]:
        return self.ok("inside", "status", *(["--all"] if all_requests else []))


@dataclass
class Emulator:
    """`airgap emulate cisco|bigiq` running in a process this test started."""

    kind: str
    url: str
    proc: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.url}/_emulator/stats", timeout=10) as response:
            document: dict[str, Any] = json.loads(response.read())
        return document


class World:
    """The sites and emulators of one test, all in its tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.emulators: list[Emulator] = []

    def site(self, name: str, role: str) -> Site:
        """`airgap init --no-passphrase` a home and `key export` its site card."""
        home = self.root / f"home-{name}"
        card = self.root / "cards" / f"{name}.card"
        card.parent.mkdir(exist_ok=True)
        site = Site(name, role, home, card, env=dict(SECRETS) if role == "outside" else {})
        document = site.ok("init", "--role", role, "--name", name, "--no-passphrase")
        site.fingerprint = document["fingerprint"]
        assert site.fingerprint.startswith("sha256:"), document
        exported = site.ok("key", "export", "-o", str(card))
        assert exported["card"]["fingerprint"] == site.fingerprint
        assert json.loads(card.read_text())["fingerprint"] == site.fingerprint
        return site

    def trust(self, a: Site, b: Site) -> None:
        """Carry each site card across: `trust add CARD --yes` on both sides."""
        for site, peer in ((a, b), (b, a)):
            added = site.ok("trust", "add", str(peer.card), "--yes")
            assert (added["name"], added["fingerprint"]) == (peer.name, peer.fingerprint)

    def start(self, kind: str, *args: str) -> Emulator:
        """`airgap emulate KIND --port 0 ARGS…`; the first stdout line is its URL."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")}
        proc = subprocess.Popen(
            [*airgap_command(), "emulate", kind, "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=30)
        url = proc.stdout.readline().strip() if ready else ""
        emulator = Emulator(kind, url, proc)
        self.emulators.append(emulator)
        assert url.startswith("http://127.0.0.1:"), f"{kind} emulator did not start: {url!r}"
        return emulator

    def vendors(
        self, outside: Site, *, cisco: bool = True, bigiq: bool = True
    ) -> dict[str, Emulator]:
        """Start the emulators and point the outside home at them with `config set`."""
        started: dict[str, Emulator] = {}
        if cisco:
            started["cisco"] = self.start("cisco", *CISCO_ARGS)
        if bigiq:
            started["bigiq"] = self.start("bigiq", *BIGIQ_ARGS)
        settings: list[tuple[str, str]] = []
        if cisco:
            url = started["cisco"].url
            settings += [
                ("cisco.token_url", f"{url}/oauth2/default/v1/token"),
                ("cisco.api_base", f"{url}/services/api/smart-accounts-and-licensing/"),
            ]
        if bigiq:
            settings.append(("bigiq.url", started["bigiq"].url))
        for key, value in settings:
            assert outside.ok("config", "set", key, value)["value"] == value
        return started

    def stop(self) -> None:
        for emulator in self.emulators:
            if emulator.proc.poll() is None:
                emulator.proc.terminate()
            try:
                emulator.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                emulator.proc.kill()
                emulator.proc.wait(timeout=10)
            if emulator.proc.stdout:
                emulator.proc.stdout.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """Sites and emulators for one test; the emulators are stopped afterwards."""
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.stop()


@dataclass(frozen=True)
class Device:
    hostname: str
    pid: str
    sn: str

    @property
    def udi(self) -> str:
        return f"{self.pid}:{self.sn}"


@dataclass(frozen=True)
class DevicePool:
    """Captures written by `airgap emulate device`, one folder per group.

    RUM reports are signed by the emulated device, so they can only come from the command; the
    pool is made once per session and copied by each test (every test starts fresh emulators,
    so the same report is new to each of them).
    """

    root: Path
    groups: dict[str, list[Device]]

    def copy(self, group: str, dest: Path, count: int | None = None) -> list[Device]:
        """Copy the captures of the first `count` devices of `group` into `dest`."""
        devices = self.groups[group][:count]
        dest.mkdir(parents=True, exist_ok=True)
        for device in devices:
            for path in (self.root / group).glob(f"{device.hostname}.*"):
                shutil.copy2(path, dest / path.name)
        return devices


# Fresh devices (UDI capture + signed RUM report), decommissioned devices that hold a
# reservation once an earlier round trip made it (return-code capture), and one stray device
# whose return code is genuine but which holds no reservation at the vendor.
POOL_SPEC: dict[str, tuple[int, str, str, bool]] = {
    "fresh": (24, "sw-new-{:02d}", "FOCNEW{:04d}", False),
    "old": (6, "old-{:02d}", "FOCOLD{:04d}", True),
    "stray": (1, "stray-{:02d}", "FOCSTRAY{:02d}", True),
}


@pytest.fixture(scope="session")
def device_pool(tmp_path_factory: pytest.TempPathFactory) -> DevicePool:
    root = tmp_path_factory.mktemp("device-pool")
    pids = ("C9300-24T", "C9300-48P")
    jobs: list[tuple[str, Device, bool]] = []
    groups: dict[str, list[Device]] = {}
    for group, (count, host_fmt, sn_fmt, with_return) in POOL_SPEC.items():
        devices = [
            Device(host_fmt.format(n), pids[n % 2], sn_fmt.format(n)) for n in range(1, count + 1)
        ]
        groups[group] = devices
        jobs += [(group, device, with_return) for device in devices]

    def emulate(job: tuple[str, Device, bool]) -> subprocess.CompletedProcess[str]:
        group, device, with_return = job
        args = ["emulate", "device", "--pid", device.pid, "--sn", device.sn]
        args += ["--hostname", device.hostname, "--out", str(root / group)]
        return run_airgap(*args, *(["--return-code"] if with_return else []))

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        for result in pool.map(emulate, jobs):
            assert result.returncode == 0, result.stderr
    return DevicePool(root, groups)


@pytest.fixture
def pool_copy(device_pool: DevicePool) -> Callable[..., list[Device]]:
    return device_pool.copy
