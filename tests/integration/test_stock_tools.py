"""Bundles verify by hand with stock tools, exactly as the README shows.

These need tar, openssl, sha256sum and age (Debian packages tar, openssl, coreutils, age).
They skip with a reason where a tool is missing, except under AIRGAP_REQUIRE_INTEROP=1 (CI).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
from pathlib import Path

from bundles import make_request
from conftest import require_tool

from airgap.home import Home
from airgap.keys import fp16


def run(*args: str, cwd: Path | None = None, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, check=False, **kw)  # type: ignore[call-overload]


def test_bundle_verifies_with_tar_openssl_and_sha256sum(make_home, tmp_path: Path) -> None:
    tar, openssl, sha256sum = (require_tool(t) for t in ("tar", "openssl", "sha256sum"))
    inside = make_home("inside", name="lab")
    written = make_request(inside, tmp_path / "req.airgap")
    fp = Home.open(inside).fingerprint
    pub = inside / "keys" / "signing.pub.pem"

    b = tmp_path / "b"
    b.mkdir()
    assert run(tar, "-xf", str(written.path), "-C", str(b)).returncode == 0
    sig = b / "signatures" / f"{fp16(fp)}.sig"
    verified = run(
        openssl,
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        str(pub),
        "-rawin",
        "-in",
        "manifest.json",
        "-sigfile",
        str(sig),
        cwd=b,
    )
    assert verified.returncode == 0, verified.stderr
    assert b"Signature Verified Successfully" in verified.stdout
    checked = run(sha256sum, "-c", "SHA256SUMS", cwd=b)
    assert checked.returncode == 0, checked.stdout
    sums_hash = run(sha256sum, "SHA256SUMS", cwd=b).stdout.split()[0].decode()
    manifest = json.loads((b / "manifest.json").read_bytes())
    listed = {m["path"]: m["sha256"] for m in manifest["members"]}
    assert re.fullmatch(r"[0-9a-f]{64}", sums_hash), sums_hash
    assert listed["SHA256SUMS"] == sums_hash
    # The manifest sha256sum computes is the bundle's identity the product reports.
    manifest_hash = run(sha256sum, "manifest.json", cwd=b).stdout.split()[0].decode()
    assert re.fullmatch(r"[0-9a-f]{64}", manifest_hash), manifest_hash
    assert manifest_hash == written.manifest_sha256

    # A changed manifest no longer verifies with openssl either.
    (b / "manifest.json").write_bytes(
        (b / "manifest.json").read_bytes().replace(b'"sequence":1', b'"sequence":2')
    )
    tampered = run(
        openssl,
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        str(pub),
        "-rawin",
        "-in",
        "manifest.json",
        "-sigfile",
        str(sig),
        cwd=b,
    )
    assert tampered.returncode != 0


def test_encrypted_bundle_decrypts_with_stock_age(
    make_home, exchange_cards, tmp_path: Path
) -> None:
    age = require_tool("age")
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    written = make_request(inside, tmp_path / "req.airgap", encrypt=True)
    assert written.path.read_bytes().startswith(b"age-encryption.org/v1\n")
    identity = outside / "keys" / "age-identity.txt"
    plain = tmp_path / "req.tar"
    result = run(age, "-d", "-i", str(identity), "-o", str(plain), str(written.path))
    assert result.returncode == 0, result.stderr
    # What age wrote is the signed tar: its manifest hashes to the product's manifest sha256.
    with tarfile.open(plain) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest_hash = hashlib.sha256(member.read()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", written.manifest_sha256), written.manifest_sha256
    assert manifest_hash == written.manifest_sha256
    from airgap.bundle import verify_bundle

    verified = verify_bundle(plain, Home.open(outside).policy())
    assert verified.manifest.bundle_id == written.manifest.bundle_id
    assert verified.manifest_sha256 == written.manifest_sha256
    # The inside home was added as a recipient too, so it can still inspect its own bundle.
    own = run(age, "-d", "-i", str(inside / "keys" / "age-identity.txt"), str(written.path))
    assert own.returncode == 0
