"""Helpers shared by the benchmarks: timing child processes, reading their peak RSS, and the
emulated devices that pack.py and scale.py pack."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class Run:
    seconds: float
    max_rss_mib: float
    cpu_seconds: float = 0.0  # user + system: the child, its threads and the children it reaped


def airgap_command() -> str | None:
    """The `airgap` console script of this interpreter's environment, else the one on PATH.

    A version-manager shim on PATH (pyenv, asdf) is a shell script that adds ~0.1 s of its
    own to every run; timing it would charge airgap for the shim.
    """
    beside = Path(sys.executable).parent / "airgap"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("airgap")


def child_env(**extra: str) -> dict[str, str]:
    """The environment to time airgap in: this one without AIRGAP_* settings, and without
    PYTHONDONTWRITEBYTECODE, so an editable install runs from compiled bytecode after its first
    start, as an installed one always does (pip compiles at install time)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIRGAP_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(extra)
    return env


# A child's peak RSS as wait4 reports it includes the forking process's own high-water mark
# (Linux carries it across exec), so a benchmark that has grown (100,000 generated devices)
# would charge its own size to every command it times. Each command is therefore started by
# this small launcher, a fresh interpreter, which times and reaps it and reports back.
_LAUNCHER = """
import os, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
elapsed = time.perf_counter() - started
cpu = usage.ru_utime + usage.ru_stime
report = "%r %d %d %r" % (elapsed, usage.ru_maxrss, os.waitstatus_to_exitcode(status), cpu)
os.write(int(sys.argv[1]), report.encode())
"""


def run_child(
    command: Sequence[str], *, env: dict[str, str] | None = None, allowed: Sequence[int] = (0,)
) -> Run:
    """Run a command to completion; return its wall time, peak resident memory and CPU time.

    An exit status outside `allowed` stops the benchmark with the command's error output.
    """
    read_end, write_end = os.pipe()
    launcher = [sys.executable, "-I", "-c", _LAUNCHER, str(write_end), *command]
    proc = subprocess.Popen(
        launcher,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        pass_fds=(write_end,),
    )
    os.close(write_end)
    _, errors = proc.communicate()  # the report (a few bytes) waits in its pipe meanwhile
    err = errors.decode(errors="replace") if errors else ""
    with os.fdopen(read_end, "rb") as reports:
        report = reports.read().decode()
    if proc.returncode != 0 or not report:
        raise SystemExit(f"{' '.join(command)}: the launcher failed: {err}")
    elapsed, max_rss_kib, code, cpu = report.split()
    if int(code) not in allowed:
        raise SystemExit(f"{' '.join(command)} failed ({code}): {err}")
    return Run(seconds=float(elapsed), max_rss_mib=int(max_rss_kib) / 1024, cpu_seconds=float(cpu))


def best_of(repeats: int, command: Sequence[str], *, env: dict[str, str] | None = None) -> Run:
    """The fastest of several runs (the least disturbed by a noisy machine) and the peak RSS."""
    runs = [run_child(command, env=env) for _ in range(repeats)]
    return Run(min(r.seconds for r in runs), max(r.max_rss_mib for r in runs))


TAG = "regid.2017-03.com.cisco.advantagek9,1.0_bd1da96e-ec1d-412b-a50e-53846b347d53"
PIDS = ("C9300-24T", "C9300-48P", "ISR4331/K9")


def make_devices(root: Path, count: int) -> tuple[Path, Path]:
    """Write `count` devices' UDI captures and RUM reports into root/udi and root/rum.

    Each device is a `show license udi` capture and a signed RUM report, in the format of
    `airgap.emulators.device.write_device`; packed with `--udi`, `--entitlement TAG` and
    `--rum` they make two items and two attachments per device. Folders that hold exactly
    `count` files each already (a `--keep` folder of an earlier run) are used as they are.
    """
    from airgap.emulators.device import render_rum_report, render_udi_capture

    udi, rum = root / "udi", root / "rum"
    if udi.is_dir() and rum.is_dir():
        if all(sum(1 for _ in folder.iterdir()) == count for folder in (udi, rum)):
            return udi, rum
        raise SystemExit(f"{root} holds devices of another run; give an empty --keep folder")
    udi.mkdir()
    rum.mkdir()
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    for n in range(count):
        pid, sn = PIDS[n % len(PIDS)], f"FOC{n:08d}"
        host = f"dev-{sn.lower()}"
        # The renderers write_device uses, without its per-call checks: same bytes, faster.
        (udi / f"{host}.udi.txt").write_bytes(
            render_udi_capture(pid=pid, sn=sn, hostname=host).encode()
        )
        (rum / f"{host}.rum.xml").write_bytes(
            render_rum_report(pid=pid, sn=sn, hostname=host, now=now).encode()
        )
    return udi, rum


def pack_baseline(root: Path, udi: Path, rum: Path, openssl: str) -> list[str]:
    """`tar -cf` of both folders, then `openssl dgst -sha256` of every file, as one shell job."""
    files = root / "files.txt"
    names = sorted(str(p) for folder in (udi, rum) for p in folder.iterdir())
    files.write_text("\n".join(names) + "\n")
    script = (
        f"tar -cf {root / 'baseline.tar'} -C {root} udi rum && "
        f"xargs {openssl} dgst -sha256 < {files} > /dev/null"
    )
    return ["sh", "-c", script]
