"""The writer: deterministic bytes, conformance with the independent checker, encryption."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyrage
import pytest
from conftest import CONFORMANCE
from craft import reserve_item
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from airgap.bundle import PayloadFile, TrustPolicy, build_bundle, open_bundle, verify_bundle
from airgap.errors import AirgapError, SchemaError, UnsafeMember
from airgap.keys import Signer, public_key_pem
from airgap.trust import SiteCard, TrustedKey, TrustStore

SIGNER = Signer("lab", "inside", Ed25519PrivateKey.generate())
POLICY = TrustPolicy(
    trust=TrustStore([TrustedKey(SiteCard("lab", "inside", SIGNER.public_key, "age1x"))])
)
CREATED = datetime.now(UTC).replace(microsecond=0)
BUNDLE_ID = "0b0e7c8e-4a51-4c1e-9d3a-2f6f6b1d2c3e"


def build(out: Path, **overrides: object) -> Path:
    source = out.parent / "rum.xml"
    source.write_bytes(b"<smartLicense>" + b"x" * 3000 + b"</smartLicense>\n")
    item = reserve_item(2)
    item.update(action="cisco.report_usage", params={}, files=["files/rum/sw-2.xml"])
    arguments: dict[str, object] = {
        "kind": "request",
        "items": [reserve_item(1), item],
        "files": [PayloadFile("files/rum/sw-2.xml", source)],
        "signers": [SIGNER],
        "sequence": 7,
        "created": CREATED,
        "expires": CREATED + timedelta(days=7),
        "audit_head": "a" * 64,
        "bundle_id": BUNDLE_ID,
    }
    arguments.update(overrides)
    build_bundle(out, **arguments)  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("compress", [False, True])
def test_same_inputs_and_clock_give_the_same_bytes(tmp_path: Path, compress: bool) -> None:
    first = build(tmp_path / "a.airgap", compress=compress).read_bytes()
    second = build(tmp_path / "b.airgap", compress=compress).read_bytes()
    assert first == second


@pytest.mark.parametrize("compress", [False, True])
def test_written_bundle_passes_the_independent_conformance_check(
    tmp_path: Path, compress: bool
) -> None:
    path = build(tmp_path / "req.airgap", compress=compress)
    pem = tmp_path / "lab.pub.pem"
    pem.write_text(public_key_pem(SIGNER.public_key))
    result = subprocess.run(
        [sys.executable, str(CONFORMANCE), str(path), "--pubkey", str(pem)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
    assert " 0 failed" in result.stdout


def test_attachments_come_back_byte_for_byte(tmp_path: Path) -> None:
    path = build(tmp_path / "req.airgap")
    with open_bundle(path, POLICY, keep_files=True) as opened:
        kept = opened.file_path("files/rum/sw-2.xml").read_bytes()
    assert kept == (tmp_path / "rum.xml").read_bytes()


def test_a_digest_given_with_the_bytes_is_used_as_given(tmp_path: Path) -> None:
    data = b"<smartLicense>usage</smartLicense>"
    right = hashlib.sha256(data).hexdigest()
    hashed = build(tmp_path / "a.airgap", files=[PayloadFile("files/rum/sw-2.xml", data)])
    given = build(
        tmp_path / "b.airgap", files=[PayloadFile("files/rum/sw-2.xml", data, sha256=right)]
    )
    assert given.read_bytes() == hashed.read_bytes()
    # Trusted, not checked: a wrong one makes a bundle that verify refuses.
    wrong = build(
        tmp_path / "c.airgap", files=[PayloadFile("files/rum/sw-2.xml", data, sha256="0" * 64)]
    )
    with pytest.raises(AirgapError) as info:
        verify_bundle(wrong, POLICY)
    assert info.value.code == "E_HASH_MISMATCH"


def test_encrypted_bundle_opens_only_with_a_recipient_identity(tmp_path: Path) -> None:
    identity = pyrage.x25519.Identity.generate()
    other = pyrage.x25519.Identity.generate()
    path = build(tmp_path / "enc.airgap", encrypt_to=[str(identity.to_public())])
    assert path.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert verify_bundle(path, POLICY, identity=identity).encrypted
    with pytest.raises(AirgapError) as info:
        verify_bundle(path, POLICY, identity=other)
    assert info.value.code == "E_DECRYPT"
    with pytest.raises(AirgapError) as info:
        verify_bundle(path, POLICY)
    assert info.value.code == "E_DECRYPT"


def test_unsafe_attachment_name_is_refused_and_nothing_written(tmp_path: Path) -> None:
    with pytest.raises(UnsafeMember):
        build(tmp_path / "x.airgap", files=[PayloadFile("files/../x", b"1")])
    assert not (tmp_path / "x.airgap").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["rum.xml"]


def test_items_that_break_the_schema_are_not_written(tmp_path: Path) -> None:
    with pytest.raises(SchemaError):
        build(tmp_path / "x.airgap", items=[{"id": "1", "action": "nope"}], files=[])
    assert not (tmp_path / "x.airgap").exists()


def test_missing_attachment_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(AirgapError) as info:
        build(tmp_path / "x.airgap", files=[PayloadFile("files/a", tmp_path / "absent")])
    assert info.value.code == "E_INPUT"
    assert not (tmp_path / "x.airgap").exists()


@pytest.mark.parametrize(
    "name", ["manifest.json", "files/i00001/sw-1.rum.xml", "a" * 100, "a" * 101]
)
@pytest.mark.parametrize("size", [0, 511, 10**9, 8**11 - 1, 8**11])
def test_fast_tar_header_is_byte_identical_to_tarfile(name: str, size: int) -> None:
    import tarfile

    from airgap.bundle.tarstream import header_bytes

    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 1_763_900_000, 0o644
    info.uname = info.gname = ""
    expected = info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")
    assert header_bytes(name, size, 1_763_900_000) == expected
