"""The bundle manifest: building, canonical (RFC 8785) bytes, and parsing with schema checks.

This module only de/serializes; it does no I/O, signing or trust decisions.

A manifest lists every member, so at 100,000 devices it is ~14 MB of JSON. Parsing it into
one dict per member would cost ~100 MB; `Manifest.from_bytes` instead proves the member list
canonical and schema-valid with one strict scan of the signed bytes and keeps it as those
bytes (`MemberList`). Anything the scan does not recognise is parsed the general way, which
decides every refusal.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from json.encoder import encode_basestring
from typing import Any, overload

import rfc8785

from airgap.errors import NonCanonical, SchemaError
from airgap.schema import validate
from airgap.units import format_timestamp, parse_timestamp

FORMAT = "airgap-bundle/1"
MANIFEST_NAME = "manifest.json"
SUMS_NAME = "SHA256SUMS"
ITEMS_NAME = "items.json"
MANIFEST_MAX = 16 * 1024 * 1024  # bytes
_SUMS_PATH = SUMS_NAME.encode()
KINDS = ("request", "response")
ROLE_FOR_KIND = {"request": "inside", "response": "outside"}
# An offline install kit (`airgap kit build`): signed by whichever home built it, never an
# exchange of the round trip, so it has no fixed role and never replies to anything.
KIT_KIND = "kit"


def signing_role(kind: str, producer_role: str) -> str:
    """The role every signer of a `kind` bundle must have: fixed for the round trip's kinds,
    the producer's own for a kit (the signed manifest names it, the trust store must agree)."""
    return ROLE_FOR_KIND.get(kind, producer_role)


_SAFE_INT = 2**53


def _plain(value: Any) -> bool:
    """True when `json.dumps` already gives RFC 8785 bytes for `value`.

    That holds for objects with ASCII keys (so code-point order equals UTF-16 order), strings
    (both escape the same characters, in the same way), safe integers, booleans and null.
    Floats and astral-plane keys need rfc8785's number formatting and key ordering.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str) or not key.isascii():
                    return False
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        elif isinstance(item, int):
            if not -_SAFE_INT < item < _SAFE_INT:
                return False
        else:
            return False
    return True


def canonical_bytes(document: Any) -> bytes:
    """RFC 8785 canonical JSON of `document`.

    A manifest lists every member, so for ten thousand attachments the pure-Python rfc8785
    serializer costs a noticeable share of pack and verify; plain documents take the
    C-accelerated `json` path, which a test holds byte-equal to rfc8785.
    """
    if _plain(document):
        text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: rfc8785 decides how (or whether) it can be written
    data: bytes = rfc8785.dumps(document)
    return data


def member_json(entry: MemberEntry) -> bytes:
    """Canonical JSON of one member entry, as it appears in the manifest's `members` list.

    The common case (ASCII path and hash, a size below 2**53) is every entry airgap writes; for
    it `encode_basestring` writes the same string escapes as RFC 8785. Canonical JSON is
    compositional (an array is its canonical elements joined by commas), so a writer may build
    the list one entry at a time.
    """
    if entry.path.isascii() and entry.sha256.isascii() and 0 <= entry.size < _SAFE_INT:
        return (
            f'{{"path":{encode_basestring(entry.path)},"sha256":{encode_basestring(entry.sha256)},'
            f'"size":{entry.size}}}'
        ).encode("ascii")
    return canonical_bytes(entry.to_json())


def members_json(members: Iterable[MemberEntry]) -> bytes:
    """Canonical JSON of a member list."""
    return b"[" + b",".join(map(member_json, members)) + b"]"


@dataclass(frozen=True)
class MemberEntry:
    """One listed payload member: its path, SHA-256 and size."""

    path: str
    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


# One member entry exactly as the canonical form writes it, restricted to what the schema
# allows with nothing to escape: a path of [A-Za-z0-9._/-]{1,200}, a lowercase SHA-256 and a
# size below 10**15 (so below 2**53, written without leading zeros). `_strict_entries` proves
# a run of them; the expressions below read entries the scan proved.
_ENTRY_PREFIX = b'{"path":"'
_AFTER_PATH = b'","sha256":"'
_AFTER_SHA256 = b'","size":'
_BETWEEN = b'},{"path":"'  # the end of an entry, its comma, and the start of the next
_PATH_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/-"
_HEX_BYTES = b"0123456789abcdef"
_DIGIT_BYTES = b"0123456789"
_PATH_MAX = 200
_SIZE_DIGITS_MAX = 15
_MEMBERS_KEY = b',"members":['
_PATH_OF_ENTRY = re.compile(rb'\{"path":"([A-Za-z0-9._/-]*)"')
_ENTRY_FIELDS = re.compile(
    rb'\{"path":"([A-Za-z0-9._/-]*)","sha256":"([0-9a-f]*)","size":([0-9]*)\}'
)
# Bytes of an entry besides its path and size, with the comma after it: `{"path":"`,
# `","sha256":"`, 64 digits, `","size":`, `}` and `,`.
_ENTRY_FIXED = len(_ENTRY_PREFIX) + len(_AFTER_PATH) + 64 + len(_AFTER_SHA256) + 1 + 1
_SCAN_CHUNK = 1 << 20  # bytes of the member list looked at per step (bounds transient memory)


def _split_entries(text: bytes) -> list[bytes]:
    """The fields of entries `{"path":"P","sha256":"H","size":N}` joined by commas (text
    without the first `{"path":"` and the last `}`): P, H, N, P, H, N, … (cut at the fixed
    text between them, so only right for entries whose fields hold no quote or newline)."""
    return (
        text.replace(_AFTER_PATH, b"\n")
        .replace(_AFTER_SHA256, b"\n")
        .replace(_BETWEEN, b"\n")
        .split(b"\n")
    )


def _strict_entries(text: bytes) -> tuple[list[bytes], list[bytes], list[bytes]] | None:
    """The paths, SHA-256 digests and sizes of `text` if it is one or more member entries in
    the strict canonical form, joined by commas; else None.

    Proof by construction: the text is cut into fields at the fixed text between them, each
    field is checked against its alphabet and length, and the entries written back from
    those fields must be `text`, byte for byte (so every cut was where the form puts it).
    """
    if not text.startswith(_ENTRY_PREFIX) or not text.endswith(b"}"):
        return None
    fields = _split_entries(text[len(_ENTRY_PREFIX) : -1])
    count, extra = divmod(len(fields), 3)
    if extra or not count:
        return None
    paths, digests, sizes = fields[0::3], fields[1::3], fields[2::3]
    if (
        min(map(len, paths)) < 1
        or max(map(len, paths)) > _PATH_MAX
        or b"".join(paths).translate(None, _PATH_BYTES)
        or set(map(len, digests)) != {64}
        or b"".join(digests).translate(None, _HEX_BYTES)
        or max(map(len, sizes)) > _SIZE_DIGITS_MAX
        or b"".join(sizes).translate(None, _DIGIT_BYTES)
    ):
        return None
    try:
        if b"".join(map(b"%d".__mod__, map(int, sizes))) != b"".join(sizes):
            return None  # a leading zero (an empty size makes int() refuse)
    except ValueError:
        return None
    written: list[bytes] = [_AFTER_PATH] * (6 * count)
    written[0::6] = paths
    written[2::6] = digests
    written[3::6] = repeat(_AFTER_SHA256, count)
    written[4::6] = sizes
    written[5::6] = repeat(_BETWEEN, count)
    written[-1] = b"}"
    if _ENTRY_PREFIX + b"".join(written) != text:
        return None
    return paths, digests, sizes


def _sums_lines(paths: list[bytes], digests: list[bytes]) -> bytes:
    """The lines of `sums_text` for these entries, the SHA256SUMS entry left out."""
    if _SUMS_PATH in paths:
        at = paths.index(_SUMS_PATH)
        paths, digests = paths[:at] + paths[at + 1 :], digests[:at] + digests[at + 1 :]
    lines: list[bytes] = [b"  "] * (4 * len(paths))
    lines[0::4] = digests
    lines[2::4] = paths
    lines[3::4] = repeat(b"\n", len(paths))
    return b"".join(lines)


class MemberList(Sequence[MemberEntry]):
    """The manifest's member entries, read on demand from the signed bytes.

    Built only by `Manifest.from_bytes` after a strict scan proved every entry canonical and
    schema-valid and no two paths equal once case-folded. Holds no per-member objects: an entry
    is parsed from the bytes when asked for. Random access builds an offset table (4 bytes a
    member) the first time.
    """

    def __init__(self, data: bytes, start: int, end: int, count: int, sums_sha256: str) -> None:
        self.data = data  # the whole manifest.json
        self.start = start  # offset of the first entry (just past "[")
        self.end = end  # offset of the closing "]"
        self._count = count
        self._offsets: Any = None
        # SHA-256 of `sums_text` of these entries less SHA256SUMS: what airgap writes as
        # SHA256SUMS for this listing (worked out by the scan, which reads every entry anyway)
        self.sums_sha256 = sums_sha256

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[MemberEntry]:
        for match in _ENTRY_FIELDS.finditer(self.data, self.start, self.end):
            yield _entry_of(match)

    @overload
    def __getitem__(self, index: int) -> MemberEntry: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[MemberEntry]: ...

    def __getitem__(self, index: int | slice) -> MemberEntry | Sequence[MemberEntry]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(self._count)))
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("member index out of range")
        if self._offsets is None:
            from array import array

            self._offsets = array(
                "I", (m.start() for m in _PATH_OF_ENTRY.finditer(self.data, self.start, self.end))
            )
        match = _ENTRY_FIELDS.match(self.data, self._offsets[index])
        assert match is not None  # the scan proved every entry
        return _entry_of(match)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MemberList | tuple | list):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"MemberList({self._count} members)"

    def raw_entries(self, offset: int, window: int) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """The entries that start at byte `offset` (an entry's start) and end within about
        `window` bytes of it (at least one, if any is left), as three lists of ASCII bytes:
        paths, SHA-256 hex digests and sizes. `skip_entries` gives the offset past some.
        """
        if offset >= self.end:
            return [], [], []
        end = self.data.find(_BETWEEN, offset + window, self.end)
        end = self.end - 1 if end < 0 else end  # the `}` closing the last entry taken
        # The scan proved every entry `{"path":"P","sha256":"H","size":N}` with P, H and N
        # free of quotes and newlines: cutting at the fixed text between them is exact.
        fields = _split_entries(self.data[offset + len(_ENTRY_PREFIX) : end])
        return fields[0::3], fields[1::3], fields[2::3]

    def find_entry(self, path: bytes) -> int:
        """The offset of the entry of `path` (ASCII bytes), or -1 if none lists it."""
        return self.data.find(b'{"path":"%s","' % path, self.start, self.end)

    def entry_at(self, offset: int) -> tuple[re.Match[bytes], int]:
        """The entry starting at byte `offset` and the offset of the next one (past the comma)."""
        match = _ENTRY_FIELDS.match(self.data, offset)
        assert match is not None
        return match, match.end() + 1


def skip_entries(offset: int, paths: Sequence[bytes], sizes: Sequence[bytes]) -> int:
    """The offset just past the entries of `MemberList.raw_entries` with these `paths` and
    `sizes` (and their commas), read from `offset`."""
    # Each entry is its fixed text, its path and its size (see `_ENTRY`), and a comma.
    return offset + sum(map(len, paths)) + sum(map(len, sizes)) + _ENTRY_FIXED * len(paths)


def _entry_of(match: re.Match[bytes]) -> MemberEntry:
    path, sha256, size = match.groups()
    return MemberEntry(path.decode("ascii"), sha256.decode("ascii"), int(size))


def _scan_members(data: bytes, at: int) -> MemberList | None:
    """The member list whose key starts at `at`, if every entry is in the strict form and no
    two paths fold to the same name; else None (the general parser decides)."""
    start = at + len(_MEMBERS_KEY) - 1  # the "["
    end = data.find(b"]", start)  # no strict entry holds a "]": the list's end, if strict
    if end < 0:
        return None
    # Paths that are equal once case-folded (ASCII here, so lower() is casefold()) are left to
    # the general parser and reader: a listed duplicate is a schema error, a case-folded one a
    # refusal when both arrive. Their hashes are kept, not the paths, to stay small.
    hashes: set[int] = set()
    sums = hashlib.sha256()
    count = 0
    pos = start + 1
    while pos < end:
        cut = data.find(_BETWEEN, pos + _SCAN_CHUNK, end)
        last = end - 1 if cut < 0 else cut  # the "}" of the last entry of this step
        entries = _strict_entries(data[pos : last + 1])
        if entries is None:
            return None
        paths, digests, _ = entries
        count += len(paths)
        hashes.update(map(hash, map(bytes.lower, paths)))
        sums.update(_sums_lines(paths, digests))
        pos = last + 2
    if pos != end + 1 and pos != end:
        return None
    if len(hashes) != count:
        return None  # a duplicate, a case-folded pair, or (rarely) two hashes alike
    return MemberList(data, start + 1, end, count, sums.hexdigest())


@dataclass(frozen=True)
class Manifest:
    """The signed description of a bundle (docs/format.md, "manifest.json")."""

    bundle_id: str
    kind: str
    created: datetime
    expires: datetime
    producer: Mapping[str, str]
    sequence: int
    in_reply_to: Mapping[str, str] | None
    audit_head: str
    summary: Mapping[str, Any]
    members: Sequence[MemberEntry]  # a tuple when built, a MemberList when parsed

    def to_json(self) -> dict[str, Any]:
        return {**self._head_json(), "members": [m.to_json() for m in self.members]}

    def _head_json(self) -> dict[str, Any]:
        """Everything of `to_json` but the member list."""
        return {
            "format": FORMAT,
            "bundle_id": self.bundle_id,
            "kind": self.kind,
            "created": format_timestamp(self.created),
            "expires": format_timestamp(self.expires),
            "producer": dict(self.producer),
            "sequence": self.sequence,
            "in_reply_to": dict(self.in_reply_to) if self.in_reply_to is not None else None,
            "audit_head": self.audit_head,
            "summary": {
                "items": self.summary["items"],
                "by_action": dict(self.summary["by_action"]),
            },
        }

    def to_canonical_bytes(self) -> bytes:
        """The exact bytes of `manifest.json`, the object every signature covers."""
        before, after = self.canonical_around_members()
        return b"".join((before, members_json(self.members), after))

    def canonical_around_members(self) -> tuple[bytes, bytes]:
        """The canonical bytes before and after the value of `members`.

        `to_canonical_bytes()` is `before + members_json(self.members) + after`: a writer that
        lists a hundred thousand members one at a time puts them between the two (`members`
        itself is not used), without holding them as entries.
        """
        # A canonical object is its members in key order (all keys here are ASCII), each value
        # canonical: the long `members` list is written directly, the rest goes through
        # canonical_bytes. Tests hold the result byte-equal to rfc8785.
        document: dict[str, Any] = {**self._head_json(), "members": None}
        keys = sorted(document)
        at = keys.index("members")

        def fields(names: list[str]) -> bytes:
            return b",".join(b'"%s":%s' % (k.encode(), canonical_bytes(document[k])) for k in names)

        before = b"{" + fields(keys[:at]) + (b"," if at else b"") + b'"members":'
        rest = keys[at + 1 :]
        return before, (b"," + fields(rest) if rest else b"") + b"}"

    @classmethod
    def _from_strict_bytes(cls, data: bytes) -> Manifest | None:
        """The manifest, when its bytes are canonical and valid in the way airgap writes them.

        The member list is proven canonical and schema-valid by `_scan_members`; everything
        else (a few hundred bytes) is parsed, and must be canonical with an empty list in its
        place: then the whole document is. Returns None whenever anything is unusual, so the
        general parser words the refusal (or accepts what this scan does not cover).
        """
        at = data.find(_MEMBERS_KEY)
        if at < 0:
            return None
        members = _scan_members(data, at)
        if members is None:
            return None
        head = data[:at] + b',"members":[]' + data[members.end + 1 :]
        try:
            document = json.loads(head.decode("utf-8"))
            if not isinstance(document, dict) or document.get("members") != []:
                return None
            if canonical_bytes(document) != head:
                return None
            # The key found must be the top-level one: its canonical offset is where the keys
            # sorting before it end.
            before = canonical_bytes({k: v for k, v in document.items() if k < "members"})
            if len(before) - 1 != at:
                return None
            validate("manifest", document, what="manifest.json")
            created = parse_timestamp(document["created"])
            expires = parse_timestamp(document["expires"])
        except Exception:  # any doubt: the general parser decides and words it
            return None
        if expires <= created:
            return None
        return cls(
            bundle_id=document["bundle_id"],
            kind=document["kind"],
            created=created,
            expires=expires,
            producer=document["producer"],
            sequence=document["sequence"],
            in_reply_to=document["in_reply_to"],
            audit_head=document["audit_head"],
            summary=document["summary"],
            members=members,
        )

    @property
    def producer_fingerprint(self) -> str:
        return self.producer["fingerprint"]

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse `manifest.json`, requiring canonical form and a schema-valid document.

        Raises:
            NonCanonical: the bytes are not JSON or not byte-equal to their canonical form.
            SchemaError: the document breaks the manifest schema or its own invariants.
        """
        quick = cls._from_strict_bytes(data)
        if quick is not None:
            return quick
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # Recursion: nested too deep
            raise NonCanonical("manifest.json is not UTF-8 JSON") from None
        try:
            canonical = canonical_bytes(document)
        except Exception:  # rfc8785 raises its own errors for unrepresentable numbers
            raise NonCanonical("manifest.json holds values canonical JSON cannot express") from None
        if canonical != data:
            raise NonCanonical(
                "manifest.json is not in RFC 8785 canonical form",
                hint="Bundles must be written by airgap; a re-formatted manifest is refused.",
            )
        validate("manifest", document, what="manifest.json")
        try:
            created = parse_timestamp(document["created"])
            expires = parse_timestamp(document["expires"])
        except ValueError:  # the schema checks the shape only: 2026-02-30 gets this far
            raise SchemaError("manifest.json: created or expires is not a real time") from None
        if expires <= created:
            raise SchemaError("manifest.json: expires is not after created")
        members = tuple(MemberEntry(**m) for m in document["members"])
        paths = [m.path for m in members]
        if len(set(paths)) != len(paths):
            raise SchemaError("manifest.json: a member is listed twice")
        return cls(
            bundle_id=document["bundle_id"],
            kind=document["kind"],
            created=created,
            expires=expires,
            producer=document["producer"],
            sequence=document["sequence"],
            in_reply_to=document["in_reply_to"],
            audit_head=document["audit_head"],
            summary=document["summary"],
            members=members,
        )


def summarize(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The manifest's `summary`: item count and count per action."""
    counts = Counter(str(item["action"]) for item in items)
    return {"items": len(items), "by_action": dict(sorted(counts.items()))}


def sums_text(entries: Sequence[MemberEntry]) -> bytes:
    """`SHA256SUMS` content for `sha256sum -c`: two spaces between hash and path."""
    return "".join(f"{e.sha256}  {e.path}\n" for e in entries).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()
