"""README.md's devices section stays true: its inventory example loads, and its round trip with
devices, pasted into bash as it stands, licenses every emulated device."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, airgap_command

from airgap.devices.inventory import parse_inventory

README = REPO / "README.md"
KILL = "kill $(jobs -p)"


def fenced_block(heading: str, language: str) -> str:
    """The first ```language block after the line `heading` in the README."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    match = re.compile(rf"^```{language}\n(.*?)^```$", re.S | re.M).search(text, start)
    assert match is not None, f"no {language} block after {heading!r}"
    return match.group(1)


def test_readme_inventory_example_loads_with_the_documented_header(tmp_path: Path) -> None:
    text = fenced_block("## Devices inside the gap", "csv")
    assert text.splitlines()[0] == "host,port,platform,transport,credential,hostname,tags"
    inventory = parse_inventory(text, source="README.md", base=tmp_path)
    assert [(d.platform, d.transport) for d in inventory] == [
        ("ios-xe", "slp-rest"),
        ("ios-xe", "ssh"),
        ("bigip", "icontrol"),
    ]
    assert {d.credential for d in inventory} == {"lab", "f5"}
    variables = fenced_block("## Devices inside the gap", "sh")
    for name in ("LAB", "F5"):
        assert f"AIRGAP_DEVICE_{name}_USERNAME=" in variables
        assert f"AIRGAP_DEVICE_{name}_PASSWORD=" in variables


def _process_group_gone(pgid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_readme_round_trip_with_devices_runs_as_pasted(tmp_path: Path) -> None:
    block = fenced_block("### The round trip with devices", "sh")
    lines = block.rstrip("\n").splitlines()
    # Emulators on free ports: the block reads every address from the files the emulators
    # write, so nothing in it names a port.
    assert not re.search(r"--port|127\.0\.0\.1:\d", block)
    assert lines[-1].startswith(KILL) and block.count(KILL) == 1
    # Before the emulators stop, keep what the devices themselves say they received.
    stats = (
        f'"{sys.executable}" -c "import sys, requests; '
        'print(requests.get(sys.argv[1], verify=False, timeout=10).text)" '
        '"$(head -n1 {0}.url)" > {0}.stats.json'
    )
    script = "\n".join(
        ["set -euo pipefail", *lines[:-1], stats.format("ios-xe"), stats.format("bigip"), lines[-1]]
    )
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "airgap").write_text(
        "#!/bin/sh\nexec " + " ".join(f"'{part}'" for part in airgap_command()) + ' "$@"\n'
    )
    (shim / "airgap").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")}
    env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    lab = tmp_path / "lab"
    lab.mkdir()
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=lab,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        gone = _process_group_gone(proc.pid)
        if not gone:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    # The block's last line stopped every emulator it started.
    assert gone, "emulators outlived the README's block"
    assert "Files: 14 applied." in stdout, stdout[-3000:]
    iosxe = json.loads((lab / "ios-xe.stats.json").read_text())["devices"]
    bigip = json.loads((lab / "bigip.stats.json").read_text())["devices"]
    # Each IOS XE device imported its authorization code and its ACK; each BIG-IP installed one
    # license, counted by the emulated devices themselves.
    assert {name: counts["import"] for name, counts in iosxe.items()} == {
        f"iosxe-{n:04d}": 2 for n in range(1, 7)
    }
    assert {name: counts["install"] for name, counts in iosxe.items()} == {
        f"iosxe-{n:04d}": 1 for n in range(1, 7)
    }
    assert {name: counts["install"] for name, counts in bigip.items()} == {
        "bigip-0001": 1,
        "bigip-0002": 1,
    }
