"""docs/format.md's worked example is real: the schemas accept it and airgap's writer makes it.

Every fenced block of docs/format.md whose info string carries `example=NAME` is read here.
The JSON blocks are validated against the package's schemas; the request example is rebuilt
with the product's writer from the doc's own items, attachment and manifest fields, compared
byte for byte with the doc (manifest, signature, SHA256SUMS, tar layout), and verified by the
product's reader and by the independent conformance checker. A response is built from the
doc's response items the same way. Any drift between the doc, the schemas and the code fails.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from conftest import CONFORMANCE, REPO
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from airgap.bundle import PayloadFile, TrustPolicy, WrittenBundle, build_bundle, open_bundle
from airgap.bundle.manifest import Manifest
from airgap.bundle.writer import items_bytes
from airgap.errors import SchemaError
from airgap.home import Home
from airgap.keys import Signer, fingerprint_of, fp16, load_public_pem, public_key_pem
from airgap.kit import _wheel_item
from airgap.schema import validate
from airgap.trust import SiteCard, TrustedKey, TrustStore
from airgap.units import parse_timestamp

DOC = REPO / "docs" / "format.md"
# A fenced block: ```LANG example=NAME, its lines, then a line of exactly ```.
_BLOCK = re.compile(r"^```[A-Za-z]+ example=([A-Za-z0-9-]+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
EXPECTED_BLOCKS = {
    "request-items",
    "attachment",
    "manifest",
    "manifest-pretty",
    "manifest-sha256",
    "public-key",
    "signature",
    "sha256sums",
    "layout",
    "response-items",
    "kit-items",
}
# The example's throwaway signing key. The doc gives only its public half; this seed is here so
# the test can make the signature the doc shows (Ed25519 signing is deterministic).
EXAMPLE_SEED = hashlib.sha256(b"airgap-bundle/1 example key: never trust it").digest()
ATTACHMENT = "files/i00002/rum-report-isr.xml"


@cache
def examples() -> dict[str, str]:
    """Each example block's text (every line ending in a newline), by name."""
    found: dict[str, str] = {}
    for match in _BLOCK.finditer(DOC.read_text(encoding="utf-8")):
        name, text = match.group(1), match.group(2)
        assert name not in found, f"docs/format.md has two blocks marked example={name}"
        found[name] = text
    return found


def block_json(name: str) -> Any:
    return json.loads(examples()[name])


def manifest_bytes() -> bytes:
    """The example manifest exactly as the doc gives it: one line, without its newline."""
    text = examples()["manifest"]
    assert text.endswith("\n") and text.count("\n") == 1, "the example manifest is one line"
    return text[:-1].encode("utf-8")


def example_signer() -> Signer:
    return Signer("secure-lab", "inside", Ed25519PrivateKey.from_private_bytes(EXAMPLE_SEED))


def trust_only(name: str, role: str, pem: str) -> TrustStore:
    card = SiteCard(name, role, load_public_pem(pem, source=name), "age1example")
    return TrustStore([TrustedKey(card)])


@pytest.fixture
def example_request(tmp_path: Path) -> WrittenBundle:
    """The doc's request, written by airgap's writer from the doc's own inputs."""
    document = json.loads(manifest_bytes())
    created = parse_timestamp(document["created"])
    return build_bundle(
        tmp_path / "req.airgap",
        kind="request",
        items=block_json("request-items")["items"],
        files=[PayloadFile(ATTACHMENT, examples()["attachment"].encode("utf-8"))],
        signers=[example_signer()],
        sequence=document["sequence"],
        created=created,
        expires=parse_timestamp(document["expires"]),
        audit_head=document["audit_head"],
        bundle_id=document["bundle_id"],
    )


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as archive:
        return {
            member.name: archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
        }


def conformance(bundle: Path, pem: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the independent checker on `bundle` with the signer's public key."""
    assert CONFORMANCE.exists(), f"the conformance checker {CONFORMANCE} is missing"
    key = tmp_path / f"{bundle.stem}.pub.pem"
    key.write_text(pem, encoding="ascii")
    return subprocess.run(
        [sys.executable, str(CONFORMANCE), str(bundle), "--pubkey", str(key)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- (1) the examples are what the schemas say ---------------------------------------------------


def test_every_example_block_is_in_the_doc() -> None:
    assert set(examples()) == EXPECTED_BLOCKS


@pytest.mark.parametrize(
    ("block", "schema"),
    [
        ("manifest", "manifest"),
        ("manifest-pretty", "manifest"),
        ("request-items", "request-items"),
        ("response-items", "response-items"),
        ("kit-items", "kit-items"),
    ],
)
def test_example_is_valid_against_its_schema(block: str, schema: str) -> None:
    validate(schema, block_json(block), what=f"docs/format.md example={block}")


def test_a_drifted_example_would_be_caught_by_the_schema() -> None:
    items = block_json("request-items")
    del items["items"][0]["files"]
    with pytest.raises(SchemaError):
        validate("request-items", items, what="drifted example")


def test_example_kit_wheel_items_are_what_the_kit_builder_derives_from_the_file_names() -> None:
    wheels = [item for item in block_json("kit-items")["items"] if item["action"] == "kit.wheel"]
    assert wheels
    for number, item in enumerate(wheels, start=1):
        assert item == _wheel_item(number, item["files"][0])


# --- (3) the example manifest is canonical and shaped as the writer writes it ---------------------


def test_example_manifest_is_byte_equal_to_its_canonical_form() -> None:
    data = manifest_bytes()
    assert rfc8785.dumps(json.loads(data)) == data
    Manifest.from_bytes(data)  # the reader's own parse: canonical and schema-valid
    assert json.loads(data) == block_json("manifest-pretty")


def test_example_manifest_identity_is_the_sha256_of_its_bytes() -> None:
    assert examples()["manifest-sha256"].strip() == hashlib.sha256(manifest_bytes()).hexdigest()


def test_example_manifest_members_have_the_shape_the_writer_writes(
    example_request: WrittenBundle,
) -> None:
    documented = json.loads(manifest_bytes())["members"]
    written = example_request.manifest.to_json()["members"]
    assert [sorted(entry) for entry in documented] == [sorted(entry) for entry in written]
    assert [entry["path"] for entry in documented] == ["SHA256SUMS", "items.json", ATTACHMENT]
    items = items_bytes(block_json("request-items")["items"])
    attachment = examples()["attachment"].encode("utf-8")
    sums = examples()["sha256sums"].encode("utf-8")
    assert [(entry["sha256"], entry["size"]) for entry in documented] == [
        (hashlib.sha256(data).hexdigest(), len(data)) for data in (sums, items, attachment)
    ]


def test_example_signature_verifies_with_the_example_public_key() -> None:
    key = load_public_pem(examples()["public-key"], source="example public key")
    signature = bytes.fromhex(examples()["signature"].strip())
    assert len(signature) == 64
    key.verify(signature, manifest_bytes())  # raises InvalidSignature if the doc drifted
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    fingerprint = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert fingerprint == json.loads(manifest_bytes())["producer"]["fingerprint"]
    assert fingerprint == fingerprint_of(key)


# --- (2) the writer makes the example, and both readers accept it ---------------------------------


def test_writer_reproduces_the_example_request_byte_for_byte(
    example_request: WrittenBundle,
) -> None:
    signer = example_signer()
    assert public_key_pem(signer.public_key) == examples()["public-key"]
    assert example_request.manifest_bytes == manifest_bytes()
    assert example_request.manifest_sha256 == examples()["manifest-sha256"].strip()
    members = tar_members(example_request.path)
    signature = members[f"signatures/{fp16(signer.fingerprint)}.sig"]
    assert signature.hex() == examples()["signature"].strip()
    assert members["SHA256SUMS"] == examples()["sha256sums"].encode("utf-8")


def test_example_tar_layout_is_where_the_writer_puts_each_member(
    example_request: WrittenBundle,
) -> None:
    rows = examples()["layout"].splitlines()[1:]
    documented = [
        (int(offset), name, int(size))
        for offset, size, name in (row.split(None, 2) for row in rows[:-1])
    ]
    end = re.fullmatch(r"\s*(\d+)\s+-\s+end of archive: zero blocks up to byte (\d+)", rows[-1])
    assert end is not None, rows[-1]
    data = example_request.path.read_bytes()
    actual: list[tuple[int, str, int]] = []
    offset = 0
    while data[offset : offset + 512] != bytes(512):
        header = tarfile.TarInfo.frombuf(data[offset : offset + 512], "utf-8", "strict")
        actual.append((offset, header.name, header.size))
        offset += 512 + header.size + (-header.size % 512)
    assert actual == documented
    assert (offset, len(data)) == (int(end.group(1)), int(end.group(2)))


def test_example_request_verifies_with_the_product_reader(example_request: WrittenBundle) -> None:
    manifest = example_request.manifest
    policy = TrustPolicy(
        trust=trust_only("secure-lab", "inside", examples()["public-key"]),
        expected_kind="request",
        now=manifest.created + timedelta(hours=1),
    )
    with open_bundle(example_request.path, policy, keep_files=True) as opened:
        assert opened.manifest_bytes == manifest_bytes()
        assert [c.status for c in opened.signatures] == ["valid"]
        assert opened.items == block_json("request-items")["items"]
        kept = opened.file_path(ATTACHMENT).read_bytes()
    assert kept == examples()["attachment"].encode("utf-8")


def test_example_request_passes_the_independent_conformance_check(
    example_request: WrittenBundle, tmp_path: Path
) -> None:
    result = conformance(example_request.path, examples()["public-key"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout


def test_response_built_from_the_example_items_verifies_with_both_readers(
    example_request: WrittenBundle, make_home: Callable[..., Path], tmp_path: Path
) -> None:
    home = Home.open(make_home("outside", name="dmz-licensing"))
    items = block_json("response-items")["items"]
    files = [
        PayloadFile(path, f"stand-in for {path}\n".encode())
        for item in items
        for path in item["files"]
    ]
    created = example_request.manifest.created + timedelta(hours=2)
    reply = {
        "bundle_id": example_request.manifest.bundle_id,
        "manifest_sha256": examples()["manifest-sha256"].strip(),
    }
    written = build_bundle(
        tmp_path / "resp.airgap",
        kind="response",
        items=items,
        files=files,
        signers=[home.signer()],
        sequence=1,
        created=created,
        expires=created + timedelta(days=7),
        audit_head=home.audit().head(),
        in_reply_to=reply,
    )
    assert [m.path for m in written.manifest.members] == [
        "SHA256SUMS",
        "items.json",
        "files/i00001/lic.txt",
        "files/i00002/ack.xml",
    ]
    pem = public_key_pem(home.signer().public_key)
    policy = TrustPolicy(
        trust=trust_only("dmz-licensing", "outside", pem),
        expected_kind="response",
        now=created + timedelta(hours=1),
    )
    with open_bundle(written.path, policy) as opened:
        assert opened.items == items
        assert opened.manifest.in_reply_to == reply
    result = conformance(written.path, pem, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout
