"""Fixtures for the inside parsers and plan tests: the shared samples and file factories."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from airgap.emulators.device import write_device
from airgap.inside.plan import CSV_COLUMNS

Writer = Callable[..., Path]


def csv_text(rows: list[Mapping[str, str]], columns: tuple[str, ...] = CSV_COLUMNS) -> str:
    """A CSV plan with a header of `columns` and one line per row (missing cells empty)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@pytest.fixture
def make_plan(write: Writer) -> Callable[..., Path]:
    """`make_plan([{"action": …}, …], name="plan.csv")` -> a CSV plan file with every column."""

    def make(
        rows: list[Mapping[str, str]],
        name: str = "plan.csv",
        columns: tuple[str, ...] = CSV_COLUMNS,
    ) -> Path:
        return write(name, csv_text(rows, columns))

    return make


DeviceFolders = Callable[[int, int], dict[str, Path]]


@pytest.fixture
def device_folders(tmp_path: Path) -> DeviceFolders:
    """`device_folders(devices, returns)` -> emulated devices' files sorted into folders.

    Keys `udi`, `rum` and `returns`: one UDI capture and one RUM report per device, and a
    return-code capture for the first `returns` devices.
    """

    def make(count: int, returns: int) -> dict[str, Path]:
        raw = tmp_path / "raw"
        for n in range(count):
            sn = f"FOC{n:08d}"
            write_device(pid="C9300-24T", sn=sn, hostname=None, out=raw, return_code=n < returns)
        folders = {kind: tmp_path / kind for kind in ("udi", "rum", "returns")}
        for kind, suffix in (("udi", ".udi.txt"), ("rum", ".rum.xml"), ("returns", ".return.txt")):
            folders[kind].mkdir()
            for path in sorted(raw.glob(f"*{suffix}")):
                shutil.move(path, folders[kind] / path.name)
        return folders

    return make
