"""`BundleBuilder`: the streaming writer gives the bytes of a plain in-memory writer, flat.

The reference writer below is what a bundle is by definition (docs: manifest.json first, then
signatures, SHA256SUMS, items.json, files/…), written the obvious way with `json`, `rfc8785`
and `tarfile`, holding everything in memory. The product's writer must give the same bytes for
the same items, files, keys and clock, however it gets there.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tracemalloc
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airgap.bundle import BundleBuilder, PayloadFile, TrustPolicy, build_bundle, open_bundle
from airgap.bundle import writer as writer_module
from airgap.errors import AirgapError, InputError, SchemaError
from airgap.keys import Signer, fp16
from airgap.schema import load_schema, validate
from airgap.trust import SiteCard, TrustedKey, TrustStore

INSIDE = Signer("lab", "inside", Ed25519PrivateKey.from_private_bytes(b"\1" * 32))
OUTSIDE = Signer("dmz", "outside", Ed25519PrivateKey.from_private_bytes(b"\2" * 32))
CREATED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BUNDLE_ID = "0b0e7c8e-4a51-4c1e-9d3a-2f6f6b1d2c3e"
TAG = "regid.2017-03.com.cisco.advantagek9,1.0_bd1da96e-ec1d-412b-a50e-53846b347d53"
CODE = "Cm01IB-cCt9Y6-JQ5Xlv-zS3GTE-L8ORTk-uTkMbV-ns6b1f-XlcTU1-0xZ"
SLR = "CB-ZC9300-24T:FOC2437L1ZK-AQ7fK2mZr-3C"
UDI = {"pid": "C9300-24T", "sn": "FOC2437L1ZK"}

# One request item per action of the catalogue: (action, device, params, attachments).
EVERY_ACTION: list[tuple[str, Any, dict[str, Any], int]] = [
    (
        "cisco.reserve",
        {"hostname": "sw-core-01", "udi": UDI},
        {"entitlements": [{"tag": TAG, "count": 2}, {"tag": "DNA_ADV", "count": 1}]},
        0,
    ),
    ("cisco.report_usage", {"hostname": "sw-core-01", "udi": UDI}, {}, 2),
    ("cisco.return", {"hostname": None, "udi": UDI}, {"return_code": CODE}, 0),
    (
        "cisco.slr_reserve",
        {"hostname": None, "udi": UDI},
        {
            "request_code": SLR,
            "reservation_type": "SPECIFIC",
            "entitlements": [{"tag": "HSEC", "count": 1}],
        },
        0,
    ),
    ("cisco.usage_summary", None, {"tags": [TAG, "DNA_ADV"]}, 0),
    ("cisco.devices", None, {"virtual_accounts": ["Default", "Lab"]}, 0),
    (
        "bigiq.assign",
        {"mac": "00:50:56:9A:3C:E1"},
        {"pool": "VE-UTILITY-POOL-1G", "hypervisor": "vmware", "tenant": "lab é"},
        0,
    ),
    ("bigiq.revoke", {"mac": "00:50:56:9A:3C:E2"}, {"pool": "VE-UTILITY-POOL-1G"}, 0),
    (
        "bigiq.regkey_activate",
        None,
        {"pool": "demo-regkey", "regkey": "Q4821-07395", "mode": "manual", "dossier": "d" * 90},
        0,
    ),
    ("bigiq.assignments", None, {"pool": "VE-UTILITY-POOL-1G"}, 0),
]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def reference_bundle(
    *,
    kind: str,
    items: list[dict[str, Any]],
    files: list[tuple[str, bytes]],
    signer: Signer,
    sequence: int,
    in_reply_to: dict[str, str] | None,
    compress: bool,
) -> bytes:
    """A bundle written the straightforward way, everything in memory."""
    text = json.dumps({"items": items}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    body = [("items.json", text.encode("utf-8")), *files]
    sums = "".join(f"{_sha(data)}  {name}\n" for name, data in body).encode()
    payload = [("SHA256SUMS", sums), *body]
    manifest = {
        "format": "airgap-bundle/1",
        "bundle_id": BUNDLE_ID,
        "kind": kind,
        "created": CREATED.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expires": (CREATED + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "producer": {"name": signer.name, "role": signer.role, "fingerprint": signer.fingerprint},
        "sequence": sequence,
        "in_reply_to": in_reply_to,
        "audit_head": "a" * 64,
        "summary": {
            "items": len(items),
            "by_action": dict(sorted(Counter(i["action"] for i in items).items())),
        },
        "members": [{"path": n, "sha256": _sha(d), "size": len(d)} for n, d in payload],
    }
    manifest_bytes: bytes = rfc8785.dumps(manifest)
    members = [
        ("manifest.json", manifest_bytes),
        (f"signatures/{fp16(signer.fingerprint)}.sig", signer.sign(manifest_bytes)),
        *payload,
    ]
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(CREATED.timestamp()), 0o644
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    if not compress:
        return plain.getvalue()
    zipped = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=zipped, mtime=0) as stream:
        stream.write(plain.getvalue())
    return zipped.getvalue()


def request_items(picks: list[tuple[int, str]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Items numbered in order from (catalogue entry, hostname) picks, and their files."""
    items: list[dict[str, Any]] = []
    members: list[str] = []
    for n, (which, hostname) in enumerate(picks, start=1):
        action, device, params, attachments = EVERY_ACTION[which]
        if device is not None and "udi" in device:
            device = {**device, "hostname": hostname or None}
        files = [f"files/i{n:05d}/report-{k}.xml" for k in range(attachments)]
        members += files
        items.append(
            {
                "id": f"i{n:05d}",
                "action": action,
                "device": device,
                "params": params,
                "files": files,
            }
        )
    return items, members


def write_with_builder(
    out: Path,
    items: list[dict[str, Any]],
    sources: list[tuple[str, bytes | Path, bool]],
    **options: Any,
) -> None:
    """Write through `BundleBuilder`, giving known hashes with some of the sources."""
    with BundleBuilder(options.pop("kind", "request"), tempdir=out.parent) as builder:
        for item in items:
            builder.add_item(item)
        for member, source, give_hash in sources:
            data = source if isinstance(source, bytes) else source.read_bytes()
            known = {"sha256": _sha(data), "size": len(data)} if give_hash else {}
            builder.add_file(member, source, **known)
        builder.write(
            out,
            signers=[options.pop("signer", INSIDE)],
            sequence=options.pop("sequence", 7),
            created=CREATED,
            expires=CREATED + timedelta(days=7),
            audit_head="a" * 64,
            bundle_id=BUNDLE_ID,
            **options,
        )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    picks=st.lists(
        st.tuples(st.integers(0, len(EVERY_ACTION) - 1), st.sampled_from(["", "sw-1", "ré-2"])),
        max_size=25,
    ),
    contents=st.lists(st.binary(max_size=2000), min_size=50, max_size=50),
    on_disk=st.lists(st.booleans(), min_size=50, max_size=50),
    compress=st.booleans(),
)
def test_the_streaming_writer_gives_the_reference_bytes(
    tmp_path_factory: pytest.TempPathFactory,
    picks: list[tuple[int, str]],
    contents: list[bytes],
    on_disk: list[bool],
    compress: bool,
) -> None:
    folder = tmp_path_factory.mktemp("stream")
    items, members = request_items(picks)
    files = list(zip(members, contents, strict=False))
    sources: list[tuple[str, bytes | Path, bool]] = []
    for n, (member, data) in enumerate(files):
        if on_disk[n]:
            path = folder / f"source-{n}.xml"
            path.write_bytes(data)
            sources.append((member, path, n % 2 == 0))
        else:
            sources.append((member, data, n % 3 == 0))
    expected = reference_bundle(
        kind="request",
        items=items,
        files=files,
        signer=INSIDE,
        sequence=7,
        in_reply_to=None,
        compress=compress,
    )
    write_with_builder(folder / "streamed.airgap", items, sources, compress=compress)
    assert (folder / "streamed.airgap").read_bytes() == expected
    build_bundle(
        folder / "built.airgap",
        kind="request",
        items=items,
        files=[PayloadFile(m, s) for m, s, _ in sources],
        signers=[INSIDE],
        sequence=7,
        created=CREATED,
        expires=CREATED + timedelta(days=7),
        audit_head="a" * 64,
        bundle_id=BUNDLE_ID,
        compress=compress,
    )
    assert (folder / "built.airgap").read_bytes() == expected


def test_a_mixed_request_with_every_action_and_several_attachments(tmp_path: Path) -> None:
    picks = [(n, f"sw-{n}") for n in range(len(EVERY_ACTION))] * 3
    items, members = request_items(picks)
    assert {i["action"] for i in items} == {entry[0] for entry in EVERY_ACTION}
    validate("request-items", {"items": items}, what="items.json")  # the examples are valid
    files = [(m, b"<smartLicense>%d</smartLicense>\n" % n * 300) for n, m in enumerate(members)]
    for n, (_, data) in enumerate(files):
        (tmp_path / f"{n}.xml").write_bytes(data)
    sources: list[tuple[str, bytes | Path, bool]] = [
        (m, tmp_path / f"{n}.xml", True) for n, (m, _) in enumerate(files)
    ]
    for compress in (False, True):
        out = tmp_path / f"req-{compress}.airgap"
        write_with_builder(out, items, sources, compress=compress)
        assert out.read_bytes() == reference_bundle(
            kind="request",
            items=items,
            files=files,
            signer=INSIDE,
            sequence=7,
            in_reply_to=None,
            compress=compress,
        )


def test_a_response_with_its_request_named_gives_the_reference_bytes(tmp_path: Path) -> None:
    items = [
        {
            "id": f"r{n:05d}",
            "request_item": f"i{n:05d}",
            "action": "cisco.reserve",
            "status": "ok",
            "result": {"authorization_code": "<xml/>"},
            "error": None,
            "files": [f"files/r{n:05d}/code.txt"],
            "vendor_refs": {"reservation": f"R{n}"},
        }
        for n in range(1, 4)
    ]
    files = [(i["files"][0], f"code {n}\n".encode()) for n, i in enumerate(items)]
    reply = {"bundle_id": "9c8f7a66-1111-4a51-9d3a-2f6f6b1d2c3e", "manifest_sha256": "b" * 64}
    out = tmp_path / "resp.airgap"
    write_with_builder(
        out,
        items,
        [(m, d, False) for m, d in files],
        kind="response",
        signer=OUTSIDE,
        sequence=3,
        in_reply_to=reply,
    )
    assert out.read_bytes() == reference_bundle(
        kind="response",
        items=items,
        files=files,
        signer=OUTSIDE,
        sequence=3,
        in_reply_to=reply,
        compress=False,
    )


def test_the_written_bundle_opens_and_lists_every_member(tmp_path: Path) -> None:
    items, members = request_items([(1, "sw-1"), (0, "sw-2")])
    out = tmp_path / "req.airgap"
    write_with_builder(out, items, [(m, b"report %s" % m.encode(), False) for m in members])
    trusted = TrustedKey(SiteCard("lab", "inside", INSIDE.public_key, "age1x"))
    policy = TrustPolicy(trust=TrustStore([trusted]), now=CREATED + timedelta(hours=1))
    with open_bundle(out, policy, keep_files=True) as opened:
        assert opened.items == items
        assert [m.path for m in opened.manifest.members] == ["SHA256SUMS", "items.json", *members]
        assert opened.file_path(members[1]).read_bytes() == b"report " + members[1].encode()


def test_an_item_the_schema_refuses_is_named_by_its_place(tmp_path: Path) -> None:
    items, _ = request_items([(0, "sw-1"), (2, "sw-2"), (4, "")])
    items[1]["params"] = {}  # cisco.return without its return_code
    with BundleBuilder("request", tempdir=tmp_path) as builder:
        builder.add_item(items[0])
        with pytest.raises(SchemaError) as caught:
            builder.add_item(items[1])
    assert caught.value.message.startswith("items.json: items/1/params: 'return_code'")
    # The same words the whole-document check uses.
    with pytest.raises(SchemaError) as whole:
        validate("request-items", {"items": items}, what="items.json")
    assert whole.value.message == caught.value.message


def test_the_items_schemas_constrain_the_document_only_through_each_item() -> None:
    # What makes checking one item at a time the same as checking the document.
    for name in ("request-items", "response-items"):
        schema = load_schema(name)
        top = {k: v for k, v in schema.items() if k not in ("$schema", "$id", "$defs")}
        top.pop("title", None), top.pop("description", None)
        assert top == {
            "type": "object",
            "additionalProperties": False,
            "required": ["items"],
            "properties": {
                "items": {"type": "array", "items": top["properties"]["items"]["items"]}
            },
        }, name


def test_attachment_names_are_unique_whatever_their_case(tmp_path: Path) -> None:
    with BundleBuilder("request", tempdir=tmp_path) as builder:
        builder.add_file("files/a/Report.xml", b"1")
        builder.add_file("files/a/other.xml", b"2")
        with pytest.raises(InputError, match="given twice"):
            builder.add_file("files/a/REPORT.xml", b"3")
        with pytest.raises(InputError, match="under files/"):
            builder.add_file("items.json", b"4")


def test_a_hash_collision_of_two_names_is_not_taken_for_a_repeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The builder holds a hash per name and confirms a repeated hash against its spool.
    monkeypatch.setattr(writer_module, "hash", lambda value: 0, raising=False)
    with BundleBuilder("request", tempdir=tmp_path) as builder:
        for n in range(5):
            builder.add_file(f"files/a/{n}.xml", b"%d" % n)
        with pytest.raises(InputError, match="given twice"):
            builder.add_file("files/a/3.XML", b"again")


def test_a_file_that_changed_after_it_was_hashed_is_refused_and_nothing_is_left(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    source = tmp_path / "report.xml"
    source.write_bytes(b"<smartLicense>1</smartLicense>")
    items, members = request_items([(1, "sw-1")])
    out = tmp_path / "out" / "req.airgap"
    with (
        pytest.raises(InputError, match="changed while it was being packed") as caught,
        BundleBuilder("request", tempdir=work) as builder,
    ):
        builder.add_item(items[0])
        builder.add_file(members[0], source, sha256=_sha(source.read_bytes()), size=30)
        builder.add_file(members[1], source, sha256=_sha(source.read_bytes()), size=30)
        source.write_bytes(b"<smartLicense>12</smartLicense>")  # one byte longer
        builder.write(
            out,
            signers=[INSIDE],
            sequence=1,
            created=CREATED,
            expires=CREATED + timedelta(days=7),
            audit_head="a" * 64,
        )
    assert caught.value.code == "E_INPUT"
    assert list(out.parent.iterdir()) == []
    assert list(work.iterdir()) == []  # its temporary files are unlinked from the start


def test_a_listing_no_reader_accepts_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items, members = request_items([(1, "sw-1")] * 40)
    files = [(m, b"x", False) for m in members]
    for limit, name in ((6_000, "SHA256SUMS"), (9_000, "manifest.json")):
        monkeypatch.setattr(writer_module, "MANIFEST_MAX", limit)  # the readers' limit
        with pytest.raises(InputError, match=f"need a {name} of") as caught:
            write_with_builder(tmp_path / "big.airgap", items, files)
        assert "several bundles" in (caught.value.hint or "")
        assert list(tmp_path.iterdir()) == []


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with (
        BundleBuilder("request", tempdir=tmp_path) as builder,
        pytest.raises(AirgapError) as caught,
    ):
        builder.add_file("files/a.xml", tmp_path / "absent.xml")
    assert caught.value.code == "E_INPUT"


def test_adding_items_does_not_hold_them(tmp_path: Path) -> None:
    item = request_items([(0, "sw-1")])[0][0]
    count = 20_000
    with BundleBuilder("request", tempdir=tmp_path) as builder:
        builder.add_item(item)  # the validators are built and cached on the first item
        tracemalloc.start()
        try:
            for n in range(1, count):
                builder.add_item({**item, "id": f"i{n:05d}"})
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        size = len(builder.items_json())
    # items.json is over 5 MiB; the builder holds at most its 1 MiB write buffer of it.
    assert size > 5 * 2**20
    assert held < 2 * 2**20
