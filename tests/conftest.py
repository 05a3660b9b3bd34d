"""Shared fixtures: an isolated environment, homes made on demand, and CLI runners."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLES = SHARED / "samples"
CONFORMANCE = SHARED / "conformance" / "check_bundle.py"


@pytest.fixture(autouse=True)
def isolate_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AIRGAP_* setting of the developer's leaks in; the default home is inside tmp_path."""
    for name in list(os.environ):
        if name.startswith("AIRGAP_") and name != "AIRGAP_REQUIRE_INTEROP":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRGAP_HOME", str(tmp_path / "default-home"))
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def make_home(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `make_home("inside", name="lab")` creates a home (no passphrase) and returns it."""
    from airgap.home import init_home

    def make(role: str, *, name: str | None = None, passphrase: str | None = None) -> Path:
        root = tmp_path / f"home-{name or role}"
        init_home(root, role=role, name=name or f"{role}-site", passphrase=passphrase)
        return root

    return make


@pytest.fixture
def exchange_cards() -> Callable[[Path, Path], None]:
    """Make two homes trust each other, as `key export` + `trust add` would."""
    from airgap.home import Home

    def exchange(a: Path, b: Path) -> None:
        home_a, home_b = Home.open(a), Home.open(b)
        home_a.trust_store().add(home_b.card())
        home_b.trust_store().add(home_a.card())

    return exchange


def airgap_command() -> list[str]:
    """The `airgap` command of the environment running the tests, as an argv prefix.

    The console script beside this interpreter, else `python -m airgap` with it; never a
    `shutil.which` look-up, which can find a stale install earlier on PATH and test that
    instead of this checkout.
    """
    script = Path(sys.executable).parent / "airgap"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "airgap"]


def run_airgap(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run this environment's `airgap` command in a subprocess (the real CLI, nothing mocked)."""
    command = [*airgap_command(), *args]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")}
    if os.environ.get("AIRGAP_REQUIRE_INTEROP"):
        full_env["AIRGAP_REQUIRE_INTEROP"] = os.environ["AIRGAP_REQUIRE_INTEROP"]
    full_env.update(env or {})
    return subprocess.run(
        command, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
    )


@pytest.fixture
def airgap() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Fixture form of run_airgap."""
    return run_airgap


def require_tool(name: str) -> str:
    """The path of a stock tool, or skip (a failure when AIRGAP_REQUIRE_INTEROP=1, as in CI)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("AIRGAP_REQUIRE_INTEROP") == "1":
            pytest.fail(f"{name} is required for interop tests (AIRGAP_REQUIRE_INTEROP=1)")
        pytest.skip(f"{name} is not installed (Debian package {name}); interop test skipped")
    return path


@pytest.fixture
def cli_runner() -> Iterator[Callable[..., object]]:
    """Invoke the typer app in-process (fast) with hoisted global options."""
    from typer.testing import CliRunner

    from airgap.cli.app import app, hoist_global_options

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> object:
        return runner.invoke(app, hoist_global_options(list(args)), input=input)

    yield invoke
