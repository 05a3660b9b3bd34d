"""`inside collect` and `inside apply` on emulated estates against their lower bound.

For each kind of device — IOS XE over SSH, IOS XE over the SLP REST API, BIG-IP over iControl
REST — it starts that emulated fleet (`airgap emulate ios-xe --transport …` or `airgap emulate
bigip`, every command or request answered after L ms), then times, as child processes,

    airgap inside collect INVENTORY --out DIR --concurrency C
    airgap inside apply --inventory INVENTORY --concurrency C

(between them: pack, `outside process` against the Cisco or BIG-IQ emulator, import). Each
kind runs alone; with --rounds the kinds alternate. The emulators are processes of their own:
their CPU time is printed apart from airgap's (they share the machine's cores all the same).

The lower bound of each run is the commands or requests every device needs x latency /
concurrency:

- collect over SSH: `terminal length 0`, `show license udi`, `license smart save usage` (3;
  the SCP copy of the usage file is not delayed); over REST: `close-reports`, `all-reports`
  (2); BIG-IP: login, device-info, logout (3);
- apply with f files for the device (an ACK, and an authorization code per unit it reported):
  over SSH `terminal length 0`, `show license udi`, f x `license smart import`, then `show
  license status`, `show license authorization`, `show license rum id all` (5 + f; the SCP
  copies are not delayed); over REST the table of contents, f imports, the table of contents
  (2 + f); BIG-IP: login, device-info, the license write, reloadlic, mcp-state, registration,
  logout (7).

It prints for each: the time, the bound, their ratio (target <= 1.3), the commands the emulator
actually answered, airgap's CPU seconds and peak RSS, and the emulator's CPU seconds.

    python benchmarks/devices.py                # 1,000 devices of each kind, 200 ms, 50 at once
    python benchmarks/devices.py --rounds 2     # the kinds alternate, twice
    python benchmarks/devices.py --smoke        # 24 devices, 20 ms: for CI (ratio means little)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import airgap_command, child_env, run_child

TAG = "regid.2017-03.com.cisco.advantagek9,1.0_bd1da96e-ec1d-412b-a50e-53846b347d53"
DEVICE_ENV = {
    "AIRGAP_DEVICE_LAB_USERNAME": "admin",
    "AIRGAP_DEVICE_LAB_PASSWORD": "bench",
    "AIRGAP_DEVICE_BIGIP_USERNAME": "admin",
    "AIRGAP_DEVICE_BIGIP_PASSWORD": "bench",
}
VENDOR_ENV = {
    "AIRGAP_CISCO_CLIENT_ID": "bench",
    "AIRGAP_CISCO_CLIENT_SECRET": "bench-secret",
    "AIRGAP_BIGIQ_USERNAME": "admin",
    "AIRGAP_BIGIQ_PASSWORD": "bench",
}
KINDS = ("ssh", "slp-rest", "bigip")
REST_KINDS = ("close_reports", "all_reports", "list", "import")
BIGIP_CALLS = (
    "login",
    "logout",
    "device_info",
    "mcp_state",
    "registration",
    "write",
    "reloadlic",
    "dossier",
)


@dataclass(frozen=True)
class Timed:
    """One timed airgap command: wall seconds, its CPU seconds, peak RSS, the emulator's CPU."""

    seconds: float
    cpu: float
    max_rss_mib: float
    emulator_cpu: float


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(command: list[str], env: dict[str, str], emulator: int) -> Timed:
    before = _cpu_of(emulator)
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    error = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed ({code}): {error}")
    return Timed(
        elapsed,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        _cpu_of(emulator) - before,
    )


def _start(command: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"{command[1:4]} did not start")
    return proc, url


def _stop(procs: Sequence[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Result:
    kind: str
    step: str
    run: Timed
    needed: int  # commands or requests the work needs
    answered: int  # what the emulator answered
    latency: float
    concurrency: int

    @property
    def bound(self) -> float:
        return self.needed * self.latency / self.concurrency

    @property
    def ratio(self) -> float:
        return self.run.seconds / self.bound


class Scenario:
    """One kind of device: its emulators, homes, and the collect → … → apply round."""

    def __init__(
        self, kind: str, args: argparse.Namespace, exe: str, root: Path, homes: Path
    ) -> None:
        self.kind, self.args, self.exe, self.root = kind, args, exe, root
        self.env = child_env(**DEVICE_ENV, **VENDOR_ENV)
        self.inventory = root / "inventory.csv"
        self.inside, self.outside = homes / "inside", homes / "outside"

    def airgap(self, home: Path, *words: str, allowed: tuple[int, ...] = (0,)) -> None:
        run_child([self.exe, "--home", str(home), *words], env=self.env, allowed=allowed)

    def homes(self) -> None:
        """An inside and an outside home that trust each other (once per round)."""
        if self.inside.exists():
            return
        cards = self.inside.parent
        for home, role in ((self.inside, "inside"), (self.outside, "outside")):
            self.airgap(home, "init", "--role", role, "--no-passphrase")
        self.airgap(self.inside, "key", "export", "-o", str(cards / "in.card"))
        self.airgap(self.outside, "key", "export", "-o", str(cards / "out.card"))
        self.airgap(self.inside, "trust", "add", str(cards / "out.card"), "--yes")
        self.airgap(self.outside, "trust", "add", str(cards / "in.card"), "--yes")

    def run(self) -> list[Result]:
        args = self.args
        latency = args.latency / 1000.0
        if self.kind == "bigip":
            fleet_cmd = [
                self.exe,
                "emulate",
                "bigip",
                "--devices",
                str(args.devices),
                "--latency",
                str(args.latency),
                "--restart-seconds",
                "0",
                "--inventory-out",
                str(self.inventory),
                "--cert-out",
                str(self.root / "bigip-ca.pem"),
            ]
            vendor_cmd = [self.exe, "emulate", "bigiq", "--port", "0"]
        else:
            fleet_cmd = [
                self.exe,
                "emulate",
                "ios-xe",
                "--devices",
                str(args.devices),
                "--latency",
                str(args.latency),
                "--transport",
                self.kind,
                "--inventory-out",
                str(self.inventory),
                "--cert-out",
                str(self.root / "ios-xe-ca.pem"),
            ]
            vendor_cmd = [self.exe, "emulate", "cisco", "--port", "0", "--poll-delay", "0"]
        fleet, stats_url = _start(fleet_cmd, self.env)
        vendor, vendor_url = _start(vendor_cmd, self.env)
        try:
            self.homes()
            if self.kind == "bigip":
                self.airgap(self.outside, "config", "set", "bigiq.url", vendor_url)
                ca = str(self.root / "bigip-ca.pem")
            else:
                base = f"{vendor_url}/services/api/smart-accounts-and-licensing/"
                self.airgap(
                    self.outside,
                    "config",
                    "set",
                    "cisco.token_url",
                    f"{vendor_url}/oauth2/default/v1/token",
                )
                self.airgap(self.outside, "config", "set", "cisco.api_base", base)
                ca = str(self.root / "ios-xe-ca.pem")

            def answered() -> int:
                devices = requests.get(stats_url, verify=ca, timeout=30).json()["devices"]
                if self.kind == "bigip":
                    return sum(int(c.get(k, 0)) for c in devices.values() for k in BIGIP_CALLS)
                if self.kind == "slp-rest":
                    return sum(int(c.get(k, 0)) for c in devices.values() for k in REST_KINDS)
                return sum(int(c.get("commands", 0)) for c in devices.values())

            return self._round(fleet.pid, answered, latency)
        finally:
            _stop([fleet, vendor])

    def _round(self, emulator: int, answered: Callable[[], int], latency: float) -> list[Result]:
        args, kind, collected = self.args, self.kind, self.root / "c"
        common = ["--concurrency", str(args.concurrency)]
        collect_cmd = [
            self.exe,
            "--home",
            str(self.inside),
            "inside",
            "collect",
            str(self.inventory),
            "--out",
            str(collected),
            *common,
            "--accept-new-host-keys",
        ]
        if kind == "bigip":
            collect_cmd += [
                "--plan-out",
                str(self.root / "plan.csv"),
                "--pool",
                "demo-utility",
                "--hypervisor",
                "vmware",
                "--unit-of-measure",
                "yearly",
            ]
        before = answered()
        collect = _timed(collect_cmd, self.env, emulator)
        collect_answered = answered() - before
        devices = args.devices
        collect_needed = devices * {"ssh": 3, "slp-rest": 2, "bigip": 3}[kind]

        if kind == "bigip":
            pack = [str(self.root / "plan.csv")]
        else:
            pack = [
                "--udi",
                str(collected / "udi"),
                "--entitlement",
                f"{TAG}:1",
                "--rum",
                str(collected / "rum"),
            ]
        self.airgap(self.inside, "inside", "pack", *pack, "-o", str(self.root / "req.airgap"))
        self.airgap(
            self.outside,
            "outside",
            "process",
            str(self.root / "req.airgap"),
            "-o",
            str(self.root / "resp.airgap"),
            "--concurrency",
            "32",
            "--rate",
            "0",
            allowed=(0, 4),  # a partial result still leaves plenty to apply
        )
        self.airgap(
            self.inside,
            "inside",
            "import",
            str(self.root / "resp.airgap"),
            "--out",
            str(self.root / "out"),
            allowed=(0, 4),
        )
        apply_cmd = [
            self.exe,
            "--home",
            str(self.inside),
            "inside",
            "apply",
            "--inventory",
            str(self.inventory),
            *common,
        ]
        # The files each device gets (an ACK, a code per unit that came back), from a dry run
        # (which contacts nothing): a device with f files needs 5 + f commands over SSH, 2 + f
        # requests over REST, 6 + f as a BIG-IP.
        plan = subprocess.run(
            [*apply_cmd[:3], "--json", *apply_cmd[3:], "--dry-run"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        planned = [
            sum(1 for f in d["files"] if f["result"] == "planned")
            for d in json.loads(plan.stdout)["devices"]
        ]
        fixed = {"ssh": 5, "slp-rest": 2, "bigip": 6}[kind]
        apply_needed = sum(fixed + f for f in planned if f)
        before = answered()
        apply = _timed(apply_cmd, self.env, emulator)
        apply_answered = answered() - before
        return [
            Result(
                kind,
                "collect",
                collect,
                collect_needed,
                collect_answered,
                latency,
                args.concurrency,
            ),
            Result(kind, "apply", apply, apply_needed, apply_answered, latency, args.concurrency),
        ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000, help="devices of each kind")
    parser.add_argument("--latency", type=float, default=200.0, help="ms per command")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}"
    )
    parser.add_argument("--rounds", type=int, default=1, help="the kinds alternate this often")
    parser.add_argument("--smoke", action="store_true", help="24 devices, 20 ms (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.devices, args.latency, args.concurrency = 24, 20.0, 8
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise SystemExit(f"unknown kinds {unknown}; use {', '.join(KINDS)}")
    exe = airgap_command()
    if exe is None:
        raise SystemExit("airgap is not installed")
    print(
        f"{args.devices} devices of each kind, {args.latency:g} ms per command, "
        f"concurrency {args.concurrency}; target ratio <= 1.3"
        + ("   (smoke: the ratio means little at this size)" if args.smoke else ""),
        flush=True,
    )
    print(
        f"{'kind':8} {'step':7} {'time s':>7} {'bound s':>7} {'ratio':>5}  "
        f"{'needed':>6} {'answered':>8}  {'cpu s':>6} {'RSS MiB':>7}  {'emulator cpu s':>14}",
        flush=True,
    )
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="airgap-bench-devices-") as tmp:
            for kind in kinds:
                root = Path(tmp) / kind
                root.mkdir()
                for r in Scenario(kind, args, exe, root, Path(tmp)).run():
                    print(
                        f"{r.kind:8} {r.step:7} {r.run.seconds:7.2f} {r.bound:7.2f} "
                        f"{r.ratio:5.2f}  {r.needed:6d} {r.answered:8d}  {r.run.cpu:6.2f} "
                        f"{r.run.max_rss_mib:7.0f}  {r.run.emulator_cpu:14.2f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
