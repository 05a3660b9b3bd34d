"""The tests run this checkout's `airgap`, never one found earlier on PATH."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import airgap_command, run_airgap
from integration.conftest import emulator_process


@pytest.fixture
def stale_airgap_first_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `airgap` on PATH, ahead of everything, that is not this checkout's."""
    stale = tmp_path / "stale-bin"
    stale.mkdir()
    script = stale / "airgap"
    script.write_text("#!/bin/sh\necho 'stale airgap 0.0.1'\nexit 99\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stale}{os.pathsep}{os.environ.get('PATH', '')}")
    return script


def test_run_airgap_ignores_a_stale_airgap_earlier_on_path(
    stale_airgap_first_on_path: Path,
) -> None:
    assert str(stale_airgap_first_on_path) not in airgap_command()
    result = run_airgap("--version")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stale" not in result.stdout


def test_emulators_start_from_this_checkout_despite_a_stale_airgap_on_path(
    stale_airgap_first_on_path: Path,
) -> None:
    with emulator_process("cisco") as cisco:
        assert cisco.stats()["calls"] == {}
