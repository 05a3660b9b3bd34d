"""`airgap inspect --html`: the printable handoff sheet, checked in a real headless browser."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bundles import make_request
from conftest import require_tool


def test_handoff_sheet_is_self_contained_and_lists_every_item(
    airgap, make_home, exchange_cards, tmp_path: Path
) -> None:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    written = make_request(inside, tmp_path / "req.airgap")
    sheet = tmp_path / "handoff.html"
    result = airgap("--home", str(outside), "inspect", str(written.path), "--html", str(sheet))
    assert result.returncode == 0, result.stderr
    html = sheet.read_text()
    assert written.manifest_sha256 in html
    assert written.manifest.bundle_id in html
    assert "Handed over by" in html and "Received by" in html
    # Self-contained: no scripts, no external references.
    assert "<script" not in html
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)


def test_handoff_sheet_renders_in_headless_chromium(
    airgap, make_home, exchange_cards, tmp_path: Path
) -> None:
    chromium = require_tool("chromium")
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    written = make_request(inside, tmp_path / "req.airgap")
    sheet = tmp_path / "handoff.html"
    airgap("--home", str(outside), "inspect", str(written.path), "--html", str(sheet))
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", sheet.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = re.findall(r'<tr class="device-row">(.*?)</tr>', dom.stdout, re.S)
    assert len(rows) == 2
    assert "sw-1 C9300-24T:FOC00000001" in rows[0]
    assert "cisco.report_usage" in rows[1]
    shot = tmp_path / "sheet.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1200,1400", sheet.as_uri()],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert shot.exists() and shot.stat().st_size > 10_000
