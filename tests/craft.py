"""Hand-crafted bundles for refusal tests, written without the product's writer.

`BundleParts` holds a manifest, payload and signers; `entries()` lays them out the standard
way, tests then edit that list (add a symlink, drop a member, swap bytes) and `write_tar`
writes whatever they ask for, however hostile.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import rfc8785

from airgap.keys import Signer, fp16


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def reserve_item(n: int = 1) -> dict[str, Any]:
    return {
        "id": f"item-{n:04d}",
        "action": "cisco.reserve",
        "device": {"hostname": f"sw-{n}", "udi": {"pid": "C9300-24T", "sn": f"FOC{n:08d}"}},
        "params": {"entitlements": [{"tag": "regid.2017-03.com.cisco.advantagek9", "count": 1}]},
        "files": [],
    }


@dataclass
class Entry:
    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    mtime: int = 0


@dataclass
class BundleParts:
    producer: Signer
    kind: str = "request"
    items: list[dict[str, Any]] = field(default_factory=lambda: [reserve_item(1)])
    files: dict[str, bytes] = field(default_factory=lambda: {"files/a.txt": b"hello\n"})
    created: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    lifetime: timedelta = timedelta(days=7)
    manifest_overrides: dict[str, Any] = field(default_factory=dict)
    listed_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def payload(self) -> list[tuple[str, bytes]]:
        items = json.dumps({"items": self.items}, sort_keys=True, separators=(",", ":")).encode()
        body = [("items.json", items), *self.files.items()]
        sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in body).encode()
        return [("SHA256SUMS", sums), *body]

    def manifest(self) -> dict[str, Any]:
        members = []
        for name, data in self.payload():
            entry = {"path": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            entry.update(self.listed_overrides.get(name, {}))
            members.append(entry)
        by_action: dict[str, int] = {}
        for item in self.items:
            by_action[item["action"]] = by_action.get(item["action"], 0) + 1
        manifest = {
            "format": "airgap-bundle/1",
            "bundle_id": str(uuid.uuid4()),
            "kind": self.kind,
            "created": ts(self.created),
            "expires": ts(self.created + self.lifetime),
            "producer": {
                "name": self.producer.name,
                "role": self.producer.role,
                "fingerprint": self.producer.fingerprint,
            },
            "sequence": 1,
            "in_reply_to": None
            if self.kind == "request"
            else {"bundle_id": str(uuid.uuid4()), "manifest_sha256": "0" * 64},
            "audit_head": "0" * 64,
            "summary": {"items": len(self.items), "by_action": by_action},
            "members": members,
        }
        manifest.update(self.manifest_overrides)
        return manifest

    def manifest_bytes(self) -> bytes:
        data: bytes = rfc8785.dumps(self.manifest())
        return data

    def entries(
        self, *, signers: list[Signer] | None = None, manifest_bytes: bytes | None = None
    ) -> list[Entry]:
        body = manifest_bytes if manifest_bytes is not None else self.manifest_bytes()
        mtime = int(self.created.timestamp())
        out = [Entry("manifest.json", body, mtime=mtime)]
        for signer in sorted(signers or [self.producer], key=lambda s: fp16(s.fingerprint)):
            out.append(Entry(f"signatures/{fp16(signer.fingerprint)}.sig", signer.sign(body)))
        out += [Entry(name, data, mtime=mtime) for name, data in self.payload()]
        return out


def write_tar(path: Path, entries: list[Entry], *, gzip: bool = False) -> Path:
    """Write entries exactly as given (any type, any name), as a PAX tar."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.type
            info.linkname = entry.linkname
            info.mtime = entry.mtime
            info.mode = 0o644
            info.size = len(entry.data) if entry.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            tar.addfile(info, io.BytesIO(entry.data) if info.size else None)
    data = buffer.getvalue()
    if gzip:
        import gzip as gz

        data = gz.compress(data, mtime=0)
    path.write_bytes(data)
    return path
