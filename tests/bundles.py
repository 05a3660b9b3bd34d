"""Build real bundles from a test home with the product's own writer."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from craft import reserve_item

from airgap.bundle import PayloadFile, WrittenBundle, build_bundle
from airgap.home import Home
from airgap.units import utc_now


def make_request(
    home_path: Path,
    out: Path,
    *,
    items: list[dict[str, Any]] | None = None,
    files: dict[str, bytes] | None = None,
    encrypt: bool = False,
    compress: bool = False,
    lifetime: timedelta = timedelta(days=7),
    env: dict[str, str] | None = None,
) -> WrittenBundle:
    """A signed request from `home_path` (an inside home) with one reserve item by default."""
    home = Home.open(home_path, env or {}, passphrase=lambda: (env or {}).get("AIRGAP_PASSPHRASE"))
    now = utc_now()
    files = files if files is not None else {"files/rum/sw-1.xml": b"<smartLicense/>\n"}
    if items is None:
        items = [reserve_item(1)]
        if files:
            item = reserve_item(2)
            item.update(action="cisco.report_usage", params={}, files=sorted(files))
            items.append(item)
    return build_bundle(
        out,
        kind="request",
        items=items,
        files=[PayloadFile(path, data) for path, data in files.items()],
        signers=[home.signer()],
        sequence=1,
        created=now,
        expires=now + lifetime,
        audit_head=home.audit().head(),
        compress=compress,
        encrypt_to=home.recipients() if encrypt else (),
    )
