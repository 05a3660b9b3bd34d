"""samples/run.sh, the README's round trip with real commands, runs from start to finish."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import REPO


def test_samples_round_trip_script(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")}
    result = subprocess.run(
        ["bash", str(REPO / "samples" / "run.sh"), str(tmp_path / "work")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (out,) = (tmp_path / "work" / "licences").iterdir()
    instructions = (out / "INSTRUCTIONS.md").read_text()
    assert "license smart import flash:lic.txt" in instructions
    assert "reloadlic" in instructions
    assert len(list(out.glob("cisco/*/lic.txt"))) == 4
    assert (tmp_path / "work" / "handoff.html").exists()
