"""The cheap paths of reading a large bundle give exactly what the general ones give.

Each fast path (the strict member-list scan of the manifest, the plain ustar header, items.json
a batch at a time, the listed-order member check, inspect's streamed JSON) is held against the
general code it stands in for, on hostile input too: whatever the bytes, the answer (value or
error code and message) is the same.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from craft import BundleParts, Entry, reserve_item, write_tar
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airgap.bundle import TrustPolicy, itemstream, open_bundle, tarstream, verify_bundle
from airgap.bundle.manifest import Manifest, MemberList
from airgap.errors import AirgapError, VerificationError
from airgap.keys import Signer
from airgap.review import Inspection, _element_text, _indented
from airgap.trust import SiteCard, TrustedKey, TrustStore

SETTINGS = settings(
    deadline=None, database=None, max_examples=150, suppress_health_check=list(HealthCheck)
)
INSIDE = Signer(name="lab", role="inside", private_key=Ed25519PrivateKey.generate())
POLICY = TrustPolicy(
    trust=TrustStore([TrustedKey(SiteCard("lab", "inside", INSIDE.public_key, "age1x"))])
)


def general(data: bytes) -> Manifest | str:
    """What the general parser makes of `data`: the manifest, or the error code and message."""
    original = Manifest._from_strict_bytes
    Manifest._from_strict_bytes = classmethod(lambda cls, data: None)  # type: ignore[method-assign,assignment]
    try:
        return Manifest.from_bytes(data)
    except AirgapError as exc:
        return f"{exc.code}: {exc.message}"
    finally:
        Manifest._from_strict_bytes = original  # type: ignore[method-assign]


def either(data: bytes) -> Manifest | str:
    try:
        return Manifest.from_bytes(data)
    except AirgapError as exc:
        return f"{exc.code}: {exc.message}"


def manifest_doc(members: list[dict[str, Any]]) -> dict[str, Any]:
    parts = BundleParts(INSIDE)
    document = parts.manifest()
    document["members"] = members
    return document


def entry(path: str, size: int = 6) -> dict[str, Any]:
    return {"path": path, "sha256": "ab" * 32, "size": size}


PATHS = st.one_of(
    st.from_regex(r"files/[A-Za-z0-9._-]{1,12}", fullmatch=True),
    st.sampled_from(["files/a.txt", "files/A.TXT", "SHA256SUMS", "items.json", "files/é", ""]),
    st.text(max_size=8),
)
SIZES = st.one_of(st.integers(0, 10**6), st.sampled_from([10**15 - 1, 10**15, 2**53, 2**64, -1]))


@SETTINGS
@given(members=st.lists(st.builds(entry, PATHS, SIZES), max_size=6))
@example(members=[entry("files/a.txt"), entry("files/a.txt")])
@example(members=[entry("files/a.txt"), entry("files/A.TXT")])
@example(members=[entry("files/a", 2**64)])
def test_strict_scan_reads_what_the_general_parser_reads(members: list[dict[str, Any]]) -> None:
    try:
        data = rfc8785.dumps(manifest_doc(members))
    except Exception:
        data = json.dumps(manifest_doc(members)).encode()
    fast, slow = either(data), general(data)
    assert fast == slow
    if isinstance(fast, Manifest):
        assert list(fast.members) == list(slow.members)  # type: ignore[union-attr]


def good_manifest_bytes(count: int = 5) -> bytes:
    return rfc8785.dumps(manifest_doc([entry(f"files/m{n}.txt", n) for n in range(count)]))


def test_strict_scan_keeps_the_member_list_as_bytes() -> None:
    data = good_manifest_bytes()
    manifest = Manifest.from_bytes(data)
    assert isinstance(manifest.members, MemberList)
    assert [m.path for m in manifest.members] == [f"files/m{n}.txt" for n in range(5)]
    assert manifest.members[3].size == 3 and manifest.members[-1].path == "files/m4.txt"
    assert manifest.to_canonical_bytes() == data
    assert manifest == general(data)


@pytest.mark.parametrize(
    "change",
    [
        (b'"size":1}', b'"size":01}'),  # a leading zero
        (b'"size":1}', b'"size":1.0}'),
        (b'"size":1}', b'"size": 1}'),  # whitespace
        (b'{"path":"files/m1.txt"', b'{"path":"files/m\\u0031.txt"'),  # an escape
        (b'{"path":"files/m1.txt","sha256"', b'{"sha256"'),  # keys out of order
        (b'"members":[', b'"members":[[[[['),  # nesting
        (b'"size":1}', b'"size":1,"extra":1}'),
    ],
)
def test_unusual_member_lists_get_the_general_parsers_answer(change: tuple[bytes, bytes]) -> None:
    data = good_manifest_bytes().replace(*change, 1)
    assert data != good_manifest_bytes()
    assert either(data) == general(data)
    assert not isinstance(either(data), Manifest)


def test_a_truncated_manifest_gets_the_general_parsers_answer_at_every_byte() -> None:
    data = good_manifest_bytes(3)
    for cut in range(len(data)):
        assert either(data[:cut]) == general(data[:cut]), cut


def test_deeply_nested_members_are_refused_as_noncanonical() -> None:
    data = good_manifest_bytes().replace(b'"members":[', b'"members":' + b"[" * 100_000, 1)
    assert str(either(data)).startswith("E_NONCANONICAL")


# --- tar headers ---------------------------------------------------------------------------------


@SETTINGS
@given(
    name=st.from_regex(r"[A-Za-z0-9._/-]{1,100}", fullmatch=True),
    size=st.integers(0, 8**11 - 1),
    mtime=st.integers(0, 8**11 - 1),
    flip=st.one_of(st.none(), st.tuples(st.integers(0, 511), st.integers(1, 255))),
)
def test_plain_headers_read_as_tarfile_reads_them(
    name: str, size: int, mtime: int, flip: tuple[int, int] | None
) -> None:
    header = bytearray(tarstream.header_bytes(name, size, mtime))
    if flip is not None:
        header[flip[0]] ^= flip[1]
    plain = tarstream._plain_header(bytes(header))
    try:
        info = tarfile.TarInfo.frombuf(bytes(header), "utf-8", "strict")
    except (tarfile.HeaderError, UnicodeDecodeError):
        assert plain is None
        return
    if plain is not None:
        assert info.type == tarfile.REGTYPE and info.mode == 0o644
        assert plain == (info.name, info.size, int(info.mtime))


# --- items.json ----------------------------------------------------------------------------------

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(['},{"action":', "\\", '"', "\ud800"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
ITEMS = st.lists(
    st.fixed_dictionaries({"action": st.text(max_size=6)}, optional={"x": VALUES}), max_size=8
)


def items_file(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


@SETTINGS
@given(items=ITEMS, piece=st.integers(1, 200))
def test_items_read_in_batches_are_the_items_json_reads(items: list[Any], piece: int) -> None:
    try:
        data = json.dumps({"items": items}, sort_keys=True, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return
    itemstream.WINDOW, saved = piece, itemstream.WINDOW  # tiny windows: many cuts
    try:
        read = [
            i for b in itemstream.batches(items_file(data), len(data), max_piece=10**6) for i in b
        ]
    except itemstream.Unusual:
        return  # the general reader decides
    finally:
        itemstream.WINDOW = saved
    assert read == json.loads(data)["items"]


@SETTINGS
@given(
    raw=st.binary(max_size=200),
    prefix=st.sampled_from([b"", b'{"items":[', b'{"items":[{"action":']),
)
def test_hostile_items_bytes_are_unusual_or_read_as_json_reads_them(
    raw: bytes, prefix: bytes
) -> None:
    data = prefix + raw + b"]}"
    try:
        read = [
            i for b in itemstream.batches(items_file(data), len(data), max_piece=10**6) for i in b
        ]
    except itemstream.Unusual:
        return
    assert read == json.loads(data.decode("utf-8"))["items"]


# --- the listed-order check in the reader ----------------------------------------------------


def reordered(entries: list[Entry]) -> list[Entry]:
    head = [e for e in entries if e.name == "manifest.json" or e.name.startswith("signatures/")]
    rest = [e for e in entries if e not in head]
    return head + list(reversed(rest))


def many_files(n: int = 6) -> dict[str, bytes]:
    return {f"files/f{k}.txt": f"data {k}\n".encode() for k in range(n)}


def test_members_in_another_order_verify(tmp_path: Path) -> None:
    parts = BundleParts(INSIDE, files=many_files())
    path = write_tar(tmp_path / "b.airgap", reordered(parts.entries()))
    assert verify_bundle(path, POLICY).item_count == 1


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (Entry("files/f2.txt", b"data 2\n"), "E_UNSAFE_MEMBER"),  # listed, then again
        (Entry("files/F2.TXT", b"data 2\n"), "E_UNSAFE_MEMBER"),  # case-folded
        (Entry("files/f2.txt", type=tarfile.DIRTYPE), "E_UNSAFE_MEMBER"),
        (Entry("files/new.txt", b"x"), "E_UNLISTED_MEMBER"),
    ],
)
def test_after_the_listed_members_a_repeat_or_stranger_is_refused(
    tmp_path: Path, extra: Entry, code: str
) -> None:
    path = write_tar(
        tmp_path / "b.airgap", [*BundleParts(INSIDE, files=many_files()).entries(), extra]
    )
    with pytest.raises(VerificationError) as info:
        verify_bundle(path, POLICY)
    assert info.value.code == code


def test_items_naming_files_out_of_order_verify(tmp_path: Path) -> None:
    files = many_files(3)
    items = [{**reserve_item(n), "files": [name]} for n, name in enumerate(reversed(files), 1)]
    path = write_tar(tmp_path / "b.airgap", BundleParts(INSIDE, items=items, files=files).entries())
    with open_bundle(path, POLICY) as opened:
        assert list(opened.iter_items()) == items == opened.items


def test_an_item_naming_an_absent_file_is_refused(tmp_path: Path) -> None:
    items = [
        {**reserve_item(1), "files": ["files/f0.txt"]},
        {**reserve_item(2), "files": ["files/zz"]},
    ]
    path = write_tar(
        tmp_path / "b.airgap", BundleParts(INSIDE, items=items, files=many_files(1)).entries()
    )
    with pytest.raises(VerificationError) as info:
        verify_bundle(path, POLICY)
    assert info.value.code == "E_MISSING_MEMBER"
    assert info.value.message == "item item-0002 refers to files/zz, not in the bundle"


def test_sha256sums_in_another_line_order_still_agrees(tmp_path: Path) -> None:
    parts = BundleParts(INSIDE, files=many_files(3))

    class Shuffled(BundleParts):
        def payload(self) -> list[tuple[str, bytes]]:
            sums, *body = BundleParts.payload(self)
            lines = sums[1].splitlines(keepends=True)
            return [("SHA256SUMS", b"".join(reversed(lines))), *body]

    shuffled = Shuffled(INSIDE, files=parts.files)
    opened = verify_bundle(write_tar(tmp_path / "b.airgap", shuffled.entries()), POLICY)
    assert "SHA256SUMS: agrees with the manifest" in opened.checks


def test_items_stay_readable_after_the_block(tmp_path: Path) -> None:
    parts = BundleParts(INSIDE, items=[reserve_item(n) for n in range(1, 4)])
    path = write_tar(tmp_path / "b.airgap", parts.entries())
    with open_bundle(path, POLICY) as opened:
        pass
    assert opened.item_count == 3
    assert list(opened.iter_items()) == parts.items == opened.items


# --- inspect's streamed JSON ---------------------------------------------------------------------


@SETTINGS
@given(value=VALUES, level=st.integers(0, 3))
def test_element_text_is_what_json_dumps_writes(value: Any, level: int) -> None:
    try:
        expected = _indented(value, level)
    except (UnicodeEncodeError, ValueError):
        return
    assert _element_text(value, level) == expected


def test_streamed_inspection_is_the_json_document(tmp_path: Path) -> None:
    items = [
        {
            **reserve_item(1),
            "params": {
                **reserve_item(1)["params"],
                "note": "café\x7f",
                "ratio": 0.5,
                "big": 2**70,
            },
        },
        reserve_item(2),
    ]
    path = write_tar(tmp_path / "b.airgap", BundleParts(INSIDE, items=items).entries())
    with open_bundle(path, POLICY) as opened:
        inspection = Inspection(opened)
        out = io.StringIO()
        inspection.write_json(out.write, html="sheet.html")
        expected = {"ok": True, **inspection.to_json(), "html": "sheet.html"}
    assert out.getvalue() == json.dumps(expected, indent=2, sort_keys=True, default=str) + "\n"
