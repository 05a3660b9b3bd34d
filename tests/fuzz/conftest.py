"""The hypothesis profile of CI, and a sandbox that notices stray writes.

With `CI` set the derandomized `ci` profile is loaded (before the test modules build their
settings from it), so a CI run is reproducible; otherwise examples are random each run. The
fuzz tests keep no example database, so nothing is written to the working directory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@dataclass
class Sandbox:
    """Folders a test watches: where bundles are put, the reader's temp root, the process-wide
    temp dir and the working directory; everything must look the same after each read."""

    bundles: Path
    temp_root: Path
    system_temp: Path
    cwd: Path

    def bundle_path(self, name: str = "fuzz.airgap") -> Path:
        return self.bundles / name

    def assert_untouched(self, *expected_bundles: Path) -> None:
        """Nothing but the given bundle files exists in any watched folder."""
        assert _listing(self.bundles) == {p.name for p in expected_bundles}
        assert _listing(self.temp_root) == set()
        assert _listing(self.system_temp) == set()
        assert _listing(self.cwd) == set()


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """Watched folders under tmp_path; the cwd and tempfile's default dir point into them."""
    box = Sandbox(
        bundles=tmp_path / "bundles",
        temp_root=tmp_path / "temp-root",
        system_temp=tmp_path / "system-temp",
        cwd=tmp_path / "cwd",
    )
    for folder in (box.bundles, box.temp_root, box.system_temp, box.cwd):
        folder.mkdir()
    monkeypatch.chdir(box.cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(box.system_temp))
    yield box
