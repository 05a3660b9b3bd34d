"""The `airgap-bundle/1` format: build, sign, verify and read bundles (public API).

Both halves of airgap use only what is exported here:

    written = build_bundle(out, kind="request", items=items, files=files, signers=[signer], ...)
    with BundleBuilder("request") as builder:  # one item at a time, for 100,000 of them
        builder.add_item(item); builder.add_file("files/…", path, sha256=…, size=…)
        streamed = builder.write(out, signers=[signer], ...)
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
from airgap.bundle.writer import (
    BundleBuilder,
    PayloadFile,
    StreamedBundle,
    WrittenBundle,
    build_bundle,
    write_bundle_file,
)

__all__ = [
    "FORMAT",
    "BundleBuilder",
    "Limits",
    "Manifest",
    "MemberEntry",
    "OpenedBundle",
    "PayloadFile",
    "SignatureCheck",
    "StreamedBundle",
    "TrustPolicy",
    "WrittenBundle",
    "build_bundle",
    "open_bundle",
    "verify_bundle",
    "write_bundle_file",
]
