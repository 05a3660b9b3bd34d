"""The repository documents its own contract: nothing points at a design document it lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Spelled in two pieces so that this file does not match itself.
OUTSIDE_REFERENCES = ("DESIGN" + " §", "DESIGN" + ".md", "shared/" + "DESIGN")


def _documents() -> list[Path]:
    found = [ROOT / "README.md"]
    for folder in ("airgap", "tests", "docs", "benchmarks", "schemas"):
        found += [
            p
            for p in (ROOT / folder).rglob("*")
            if p.suffix in {".py", ".md", ".json", ".toml", ".txt", ".html"} and p.is_file()
        ]
    return found


def test_no_file_points_at_a_design_document_outside_the_repository() -> None:
    offending = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _documents()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if any(ref in line for ref in OUTSIDE_REFERENCES)
    ]
    assert offending == []


@pytest.mark.parametrize(
    "link", ["docs/format.md", "docs/architecture.md", "docs/security.md", "docs/performance.md"]
)
def test_readme_links_to_the_projects_own_documents(link: str) -> None:
    assert f"({link})" in (ROOT / "README.md").read_text()
    assert (ROOT / link).is_file()
