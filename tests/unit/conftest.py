"""Fixtures shared by the unit tests: the shared real-format samples and a file factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

# /work/main/tests/unit -> /work/main -> /work/shared/samples
SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "samples"

Writer = Callable[..., Path]


@pytest.fixture
def sample() -> Callable[[str], Path]:
    """`sample("cisco/return-code.txt")` -> the path of a shared real-format sample."""

    def find(name: str) -> Path:
        path = (SAMPLES / name).resolve()
        assert path.is_file(), f"missing shared sample {path}"
        return path

    return find


@pytest.fixture
def write(tmp_path: Path) -> Writer:
    """`write("x/name.txt", text_or_bytes)` -> a file under tmp_path with exactly that content."""

    def make(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode("utf-8") if isinstance(content, str) else content
        path.write_bytes(data)
        return path

    return make
