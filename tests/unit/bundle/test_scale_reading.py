"""The cheap paths of reading a large bundle give exactly what the general ones give.

Each fast path (the strict member-list scan of the manifest, the plain ustar header, items.json
a batch at a time, the listed-order member check, inspect's streamed JSON) is held against the
general code it stands in for, on hostile input too: whatever the bytes, the answer (value or
error code and message) is the same.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from craft import BundleParts, Entry, reserve_item, write_tar
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airgap import schema
from airgap.bundle import (
    TrustPolicy,
    itemcheck,
    itemstream,
    open_bundle,
    tarstream,
    verify_bundle,
)
from airgap.bundle import reader as reader_module
from airgap.bundle.manifest import Manifest, MemberList, sums_text
from airgap.bundle.names import check_member_name, plainly_safe_run
from airgap.errors import AirgapError, VerificationError
from airgap.keys import Signer
from airgap.review import Inspection, _element_text, _indented, items_text
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


# --- runs of members checked at once -------------------------------------------------------------

MTIME = 1_700_000_000


def plain_tar(files: list[tuple[str, bytes]]) -> bytes:
    """Members as airgap writes them (plain ustar headers, one mtime), then the end marker."""
    body = b"".join(
        tarstream.header_bytes(name, len(data), MTIME) + data + tarstream.padding(len(data))
        for name, data in files
    )
    return body + tarstream.end_of_archive(len(body))


def tar_reader(data: bytes) -> tarstream.TarReader:
    return tarstream.TarReader(tarstream.CountingReader(io.BytesIO(data), 10**9))


def read_members(reader: tarstream.TarReader) -> list[Any]:
    """What iterating and hashing yields, member by member, then the error if one stops it."""
    seen: list[Any] = []
    try:
        for entry in reader:
            seen.append(
                (entry.name, entry.kind, entry.size, entry.mtime, entry.mode, reader.digest())
            )
    except AirgapError as exc:
        seen.append(str(exc))
    return seen


FILES = st.lists(
    st.tuples(st.from_regex(r"files/[a-z0-9]{1,8}", fullmatch=True), st.binary(max_size=1500)),
    min_size=1,
    max_size=6,
)


@SETTINGS
@example(files=[("files/a", b"hello"), ("files/b", b"world")], flip=(1024 + 512 + 2, 1))
@example(files=[("files/a", b"hello"), ("files/b", b"world")], flip=(1024 + 3, 1))  # a name
@given(
    files=FILES, flip=st.one_of(st.none(), st.tuples(st.integers(0, 12_000), st.integers(1, 255)))
)
def test_a_run_taken_at_once_is_what_reading_one_at_a_time_yields(
    files: list[tuple[str, bytes]], flip: tuple[int, int] | None
) -> None:
    data = bytearray(plain_tar(files))
    if flip is not None:  # a byte of the members (headers, data, padding) changed
        members = sum(512 + len(body) + len(tarstream.padding(len(body))) for _, body in files)
        data[flip[0] % members] ^= flip[1]
    names = [name.encode() for name, _ in files]
    sizes = [len(body) for _, body in files]
    digests = b"".join(hashlib.sha256(body).digest() for _, body in files)
    reader = tar_reader(bytes(data))
    taken = reader.take_plain_files(names, sizes, digests)
    if flip is None:
        assert taken == len(files)
    if not taken:
        return
    expected = [
        (name, "file", len(body), MTIME, 0o644, hashlib.sha256(body).hexdigest())
        for name, body in files[:taken]
    ]
    whole = read_members(tar_reader(bytes(data)))
    assert whole[:taken] == expected
    assert read_members(reader) == whole[taken:]  # and it goes on where that reading would


def test_a_run_past_the_size_limit_is_left_to_one_at_a_time_reading() -> None:
    files = [(f"files/f{n}", b"x" * 600) for n in range(4)]
    data = plain_tar(files)
    reader = tarstream.TarReader(tarstream.CountingReader(io.BytesIO(data), 3000))
    digests = b"".join(hashlib.sha256(body).digest() for _, body in files)
    assert reader.take_plain_files([n.encode() for n, _ in files], [600] * 4, digests) is None


NAME_BYTES = st.binary(max_size=12).map(lambda b: bytes(c % 128 for c in b)) | st.sampled_from(
    [b"files/a.txt", b"a/b/c/d/e/f", b"a/b/c/d/e/f/g", b"x" * 200, b"x" * 201, b"./a", b"a/", b""]
)


@SETTINGS
@given(names=st.lists(NAME_BYTES, max_size=6), prefix=st.integers(0, 3))
def test_a_run_of_names_passes_at_a_glance_only_if_every_rule_accepts_them(
    names: list[bytes], prefix: int
) -> None:
    names = [b"files/ok%d.txt" % n for n in range(prefix)] + names
    count = plainly_safe_run(names)
    assert count >= prefix
    for name in names[:count]:
        check_member_name(name.decode("ascii"))  # raises if the run took a refused name


def test_the_member_list_knows_the_sha256sums_airgap_writes_for_it() -> None:
    members = [entry("SHA256SUMS"), entry("items.json"), *(entry(f"files/m{n}") for n in range(3))]
    manifest = Manifest.from_bytes(rfc8785.dumps(manifest_doc(members)))
    assert isinstance(manifest.members, MemberList)
    listed = [m for m in manifest.members if m.path != "SHA256SUMS"]
    assert manifest.members.sums_sha256 == hashlib.sha256(sums_text(listed)).hexdigest()


# --- items.json checked per action and in worker processes ---------------------------------------

ACTIONS = st.sampled_from(["cisco.reserve", "cisco.report_usage", "cisco.return", "bigiq.assign"])
ITEM_CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "action": ACTIONS | st.sampled_from(["nope", 3, None]),
        "device": st.sampled_from([None, {"mac": "00:11:22:33:44:55"}, {"udi": {}}]),
        "params": st.sampled_from([{}, {"return_code": "x"}, {"entitlements": []}, 3]),
        "files": st.sampled_from([[], ["files/a"], ["../x"]]),
    },
)


@SETTINGS
@given(changes=st.lists(ITEM_CHANGES, max_size=5), drop=st.sampled_from([None, "id", "action"]))
def test_items_checked_an_action_at_a_time_get_the_whole_schemas_answer(
    changes: list[dict[str, Any]], drop: str | None
) -> None:
    items: list[Any] = [{**reserve_item(n), **change} for n, change in enumerate(changes, 1)]
    if drop is not None and items:
        del items[0][drop]
    check = schema.elements_checker("request-items")
    assert check(items, None) == schema.elements_valid("request-items", items)


def many_items(count: int) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    files = {f"files/r{n:03d}.xml": b"<r/>" for n in range(count)}
    items = [
        {
            "id": f"item-{n:04d}",
            "action": "cisco.report_usage",
            "device": {"hostname": None, "udi": {"pid": "C9300-24T", "sn": f"FOC{n:08d}"}},
            "params": {},
            "files": [name],
        }
        for n, name in enumerate(files, 1)
    ]
    return items, files


def outcome(path: Path) -> Any:
    try:
        with open_bundle(path, POLICY) as opened:
            return opened.item_count, opened.checks, list(opened.iter_items())
    except VerificationError as exc:
        return exc.code, exc.message


def break_items(case: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Change the items the way `case` says; the manifest overrides it needs."""
    if case == "absent file":
        items[-5]["files"] = ["files/none.xml"]
    elif case == "schema":
        items[40]["device"] = {"udi": {"pid": "C9300-24T"}}
    elif case == "duplicate id":
        items[70]["id"] = items[3]["id"]
    elif case == "ids out of order":
        items[10]["id"], items[50]["id"] = items[50]["id"], items[10]["id"]
    elif case == "summary":
        return {"summary": {"items": len(items) + 1, "by_action": {"cisco.report_usage": 81}}}
    return {}


@pytest.mark.parametrize(
    "case", ["good", "absent file", "schema", "duplicate id", "ids out of order", "summary"]
)
def test_items_checked_in_workers_get_the_answer_of_one_general_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    items, files = many_items(80)
    overrides = break_items(case, items)
    parts = BundleParts(INSIDE, items=items, files=files, manifest_overrides=overrides)
    path = write_tar(tmp_path / "b.airgap", parts.entries())
    itemstream.WINDOW, saved = 2000, itemstream.WINDOW  # many batches per range
    try:
        monkeypatch.setattr(itemcheck, "worker_count", lambda size: 3)
        in_workers = outcome(path)
        monkeypatch.setattr(itemcheck, "worker_count", lambda size: 0)
        here = outcome(path)

        def unusual(*args: Any, **kwargs: Any) -> Any:
            raise itemstream.Unusual("test: read it the general way")

        monkeypatch.setattr(itemstream, "bounds", unusual)
        whole = outcome(path)
    finally:
        itemstream.WINDOW = saved
    assert in_workers == here == whole
    if case in ("good", "ids out of order"):
        assert in_workers[0] == 80


def test_a_range_whose_worker_dies_is_checked_again_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items, files = many_items(30)
    items[-1]["files"] = ["files/none.xml"]
    path = write_tar(tmp_path / "b.airgap", BundleParts(INSIDE, items=items, files=files).entries())
    parent, real = os.getpid(), itemcheck.tally

    def dying(*args: Any, **kwargs: Any) -> Any:
        if os.getpid() != parent:
            os._exit(3)
        return real(*args, **kwargs)

    monkeypatch.setattr(itemcheck, "worker_count", lambda size: 2)
    monkeypatch.setattr(itemcheck, "tally", dying)
    assert outcome(path) == (
        "E_MISSING_MEMBER",
        "item item-0030 refers to files/none.xml, not in the bundle",
    )


@SETTINGS
@given(items=st.lists(VALUES, max_size=5))
def test_items_text_is_each_elements_text_after_its_indent(items: list[Any]) -> None:
    if "Infinity" in json.dumps(items):
        return  # orjson reads no infinity, and items_text is only given what orjson read
    try:
        expected = [_indented(item, 2) for item in items]
    except (UnicodeEncodeError, ValueError):
        return
    assert items_text(items).decode("utf-8") == ",".join("\n    " + t for t in expected)


def test_inspection_rendered_by_the_workers_is_the_json_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items, files = many_items(40)
    items[7]["params"] = {"ratio": 0.5, "big": 2**70}
    items[9]["params"] = {"note": "café\x7f"}
    path = write_tar(tmp_path / "b.airgap", BundleParts(INSIDE, items=items, files=files).entries())
    monkeypatch.setattr(itemcheck, "worker_count", lambda size: 3)
    itemstream.WINDOW, saved = 1500, itemstream.WINDOW
    try:
        with open_bundle(path, POLICY, render_items=items_text) as opened:
            assert opened.rendered_items() is not None
            inspection = Inspection(opened)
            out = io.StringIO()
            inspection.write_json(out.write, write_ascii=lambda data: out.write(data.decode()))
            expected = {"ok": True, **inspection.to_json()}
    finally:
        itemstream.WINDOW = saved
    assert out.getvalue() == json.dumps(expected, indent=2, sort_keys=True, default=str) + "\n"


# --- the second half of the members verified by a forked reader --------------------------------


def with_member_worker(monkeypatch: pytest.MonkeyPatch, path: Path, worker: bool) -> Any:
    monkeypatch.setattr(reader_module, "SPLIT_MIN", 0 if worker else 1 << 62)
    monkeypatch.setattr(itemcheck, "can_fork", lambda: worker)
    return outcome(path)


@pytest.mark.parametrize(
    "change", ["none", "data", "name", "size", "early member", "extra member", "truncated"]
)
def test_members_verified_by_a_second_reader_get_the_answer_of_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    items, files = many_items(60)
    entries = BundleParts(INSIDE, items=items, files=files).entries()
    late = next(n for n, e in enumerate(entries) if e.name == "files/r050.xml")
    if change == "data":
        entries[late] = Entry(entries[late].name, b"<R/>")
    elif change == "name":
        entries[late] = Entry("files/r05O.xml", entries[late].data)
    elif change == "size":
        entries[late] = Entry(entries[late].name, b"<r/> ")
    elif change == "early member":
        entries[8] = Entry(entries[8].name, b"<R/>")
    elif change == "extra member":
        entries.insert(late, Entry("files/zz.xml", b"x"))
    elif change == "truncated":
        del entries[late:]
    path = write_tar(tmp_path / "b.airgap", entries)
    assert with_member_worker(monkeypatch, path, True) == with_member_worker(
        monkeypatch, path, False
    )
    if change == "none":
        assert with_member_worker(monkeypatch, path, True)[0] == 60


def test_members_whose_reader_dies_are_read_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items, files = many_items(40)
    path = write_tar(tmp_path / "b.airgap", BundleParts(INSIDE, items=items, files=files).entries())
    parent = os.getpid()
    real = reader_module._BundleReader.take_listed_run

    def dying(self: Any, *args: Any) -> Any:
        if os.getpid() != parent:
            os._exit(3)
        return real(self, *args)

    monkeypatch.setattr(reader_module._BundleReader, "take_listed_run", dying)
    assert with_member_worker(monkeypatch, path, True)[0] == 40
