"""`inside collect` and `inside apply` on an emulated estate against their lower bound.

Starts `airgap emulate ios-xe --devices N --latency L` (every CLI command and every REST request
answered after L ms; inventory rows alternate the SLP REST API and SSH), then times

    airgap inside collect INVENTORY --out DIR --concurrency C
    airgap inside apply --inventory INVENTORY --concurrency C

as child processes (between them: pack, `outside process` against the Cisco emulator, import).
The lower bound of each is the commands the work needs x latency / concurrency:

- collect: over SSH `terminal length 0`, `show license udi`, `license smart save usage` (the
  SCP copy is not delayed); over REST `close-reports` and `all-reports`;
- apply, with f files for the device (one authorization code per unit, one ACK): over SSH
  `terminal length 0`, `show license udi`, f x `license smart import`, then `show license
  status`, `show license authorization`, `show license rum id all`; over REST the table of
  contents, f imports, the table of contents again.

It prints both times, the ratios (target ≤ 1.3), the commands the emulator actually answered,
and each command's peak RSS.

    python benchmarks/devices.py                 # 1,000 devices, 200 ms, concurrency 50
    python benchmarks/devices.py --smoke         # 40 devices, 50 ms: for CI (ratio means little)
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Run, airgap_command, child_env, run_child

TAG = "regid.2017-03.com.cisco.advantagek9,1.0_bd1da96e-ec1d-412b-a50e-53846b347d53"
DEVICE_ENV = {"AIRGAP_DEVICE_LAB_USERNAME": "admin", "AIRGAP_DEVICE_LAB_PASSWORD": "bench"}
VENDOR_ENV = {"AIRGAP_CISCO_CLIENT_ID": "bench", "AIRGAP_CISCO_CLIENT_SECRET": "bench-secret"}


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


def _commands(stats_url: str, rest_hosts: set[str], ca: str) -> int:
    """CLI commands (SSH devices) and API requests (REST devices) the emulator answered."""
    devices = requests.get(stats_url, verify=ca, timeout=30).json()["devices"]
    rest_kinds = ("close_reports", "all_reports", "list", "import")
    return sum(
        sum(int(c.get(k, 0)) for k in rest_kinds)
        if name in rest_hosts
        else int(c.get("commands", 0))
        for name, c in devices.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=200.0, help="ms per command")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="40 devices, 50 ms (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.devices, args.latency, args.concurrency = 40, 50.0, 20
    exe = airgap_command()
    if exe is None:
        raise SystemExit("airgap is not installed")
    env = child_env(**DEVICE_ENV, **VENDOR_ENV)
    latency = args.latency / 1000.0
    with tempfile.TemporaryDirectory(prefix="airgap-bench-devices-") as tmp:
        root = Path(tmp)
        inventory = root / "inventory.csv"
        fleet, fleet_url = _start(
            [
                exe,
                "emulate",
                "ios-xe",
                "--devices",
                str(args.devices),
                "--latency",
                str(args.latency),
                "--inventory-out",
                str(inventory),
            ],
            env,
        )
        cisco, cisco_url = _start(
            [exe, "emulate", "cisco", "--port", "0", "--poll-delay", "0"], env
        )
        try:
            inside, outside = root / "inside", root / "outside"
            for home, role in ((inside, "inside"), (outside, "outside")):
                run_child(
                    [exe, "--home", str(home), "init", "--role", role, "--no-passphrase"], env=env
                )
            run_child(
                [exe, "--home", str(inside), "key", "export", "-o", str(root / "in.card")], env=env
            )
            run_child(
                [exe, "--home", str(outside), "key", "export", "-o", str(root / "out.card")],
                env=env,
            )
            run_child(
                [exe, "--home", str(inside), "trust", "add", str(root / "out.card"), "--yes"],
                env=env,
            )
            run_child(
                [exe, "--home", str(outside), "trust", "add", str(root / "in.card"), "--yes"],
                env=env,
            )
            for key, value in (
                ("cisco.token_url", f"{cisco_url}/oauth2/default/v1/token"),
                ("cisco.api_base", f"{cisco_url}/services/api/smart-accounts-and-licensing/"),
            ):
                run_child([exe, "--home", str(outside), "config", "set", key, value], env=env)
            rows = list(csv.DictReader(inventory.open()))
            ssh = sum(1 for r in rows if r["transport"] == "ssh")
            rest = len(rows) - ssh
            rest_hosts = {r["hostname"] for r in rows if r["transport"] != "ssh"}
            ca = str(inventory.parent / next(r["ca_bundle"] for r in rows if r["ca_bundle"]))
            stats_url = fleet_url

            before = _commands(stats_url, rest_hosts, ca)
            collect = run_child(
                [
                    exe,
                    "--home",
                    str(inside),
                    "inside",
                    "collect",
                    str(inventory),
                    "--out",
                    str(root / "c"),
                    "--concurrency",
                    str(args.concurrency),
                    "--accept-new-host-keys",
                ],
                env=env,
            )
            collect_commands = _commands(stats_url, rest_hosts, ca) - before
            collect_needed = ssh * 3 + rest * 2
            collect_bound = collect_needed * latency / args.concurrency

            run_child(
                [
                    exe,
                    "--home",
                    str(inside),
                    "inside",
                    "pack",
                    "--udi",
                    str(root / "c" / "udi"),
                    "--entitlement",
                    f"{TAG}:1",
                    "--rum",
                    str(root / "c" / "rum"),
                    "-o",
                    str(root / "req.airgap"),
                ],
                env=env,
            )
            run_child(
                [
                    exe,
                    "--home",
                    str(outside),
                    "outside",
                    "process",
                    str(root / "req.airgap"),
                    "-o",
                    str(root / "resp.airgap"),
                    "--concurrency",
                    "32",
                    "--rate",
                    "0",
                ],
                env=env,
                allowed=(0, 4),  # a partial result still leaves plenty to apply
            )
            run_child(
                [
                    exe,
                    "--home",
                    str(inside),
                    "inside",
                    "import",
                    str(root / "resp.airgap"),
                    "--out",
                    str(root / "out"),
                ],
                env=env,
                allowed=(0, 4),  # a partial result still leaves plenty to apply
            )
            files = {r["hostname"]: 1 for r in rows}  # the ACK
            for path in (root / "c" / "udi").iterdir():
                files[path.name.removesuffix(".udi.txt")] += path.read_text().count("PID:")
            before = _commands(stats_url, rest_hosts, ca)
            apply = run_child(
                [
                    exe,
                    "--home",
                    str(inside),
                    "inside",
                    "apply",
                    "--inventory",
                    str(inventory),
                    "--concurrency",
                    str(args.concurrency),
                ],
                env=env,
            )
            apply_commands = _commands(stats_url, rest_hosts, ca) - before
            apply_needed = sum(
                (5 + files[r["hostname"]])
                if r["transport"] == "ssh"
                else (2 + files[r["hostname"]])
                for r in rows
            )
            apply_bound = apply_needed * latency / args.concurrency
        finally:
            for proc in (fleet, cisco):
                proc.terminate()
                proc.wait(timeout=30)

    def line(name: str, run: Run, bound: float, needed: int, answered: int) -> None:
        ratio = run.seconds / bound
        print(
            f"{name:8} {run.seconds:7.2f} s   lower bound {bound:6.2f} s   ratio {ratio:5.2f}   "
            f"commands needed {needed}, answered {answered}   peak RSS {run.max_rss_mib:.0f} MiB"
        )

    print(
        f"{args.devices} devices ({ssh} ssh, {rest} slp-rest), {args.latency:g} ms per command, "
        f"concurrency {args.concurrency}; target ratio <= 1.3"
        + ("   (smoke: the ratio means little at this size)" if args.smoke else "")
    )
    line("collect", collect, collect_bound, collect_needed, collect_commands)
    line("apply", apply, apply_bound, apply_needed, apply_commands)


if __name__ == "__main__":
    main()
