"""Helpers shared by the benchmarks: timing child processes and reading their peak RSS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Run:
    seconds: float
    max_rss_mib: float


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


def run_child(
    command: Sequence[str], *, env: dict[str, str] | None = None, allowed: Sequence[int] = (0,)
) -> Run:
    """Run a command to completion; return its wall time and peak resident memory.

    An exit status outside `allowed` stops the benchmark with the command's error output.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(command), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in allowed:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}): {err}")
    if proc.stderr:
        proc.stderr.close()
    return Run(seconds=elapsed, max_rss_mib=usage.ru_maxrss / 1024)


def best_of(repeats: int, command: Sequence[str], *, env: dict[str, str] | None = None) -> Run:
    """The fastest of several runs (the least disturbed by a noisy machine) and the peak RSS."""
    runs = [run_child(command, env=env) for _ in range(repeats)]
    return Run(min(r.seconds for r in runs), max(r.max_rss_mib for r in runs))
