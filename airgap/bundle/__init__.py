"""The `airgap-bundle/1` format: build, sign, verify and read bundles (public API).

Both halves of airgap use only what is exported here:

    written = build_bundle(out, kind="request", items=items, files=files, signers=[signer], ...)
    with open_bundle(path, TrustPolicy(trust=store), keep_files=True) as opened:
        opened.items, opened.file_path("files/…")
"""

from airgap.bundle.manifest import FORMAT, Manifest, MemberEntry
from airgap.bundle.reader import (
    Limits,
    OpenedBundle,
    SignatureCheck,
    TrustPolicy,
    open_bundle,
    verify_bundle,
)
from airgap.bundle.writer import PayloadFile, WrittenBundle, build_bundle, write_bundle_file

__all__ = [
    "FORMAT",
    "Limits",
    "Manifest",
    "MemberEntry",
    "OpenedBundle",
    "PayloadFile",
    "SignatureCheck",
    "TrustPolicy",
    "WrittenBundle",
    "build_bundle",
    "open_bundle",
    "verify_bundle",
    "write_bundle_file",
]
