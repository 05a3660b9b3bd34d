"""Looking at a bundle: verify it, inspect it without trust, or approve it with a co-signature.

Each operation records its event (or the refusal and its code) in the home's audit log.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from airgap.bundle import OpenedBundle, TrustPolicy, open_bundle, write_bundle_file
from airgap.bundle.manifest import MemberList, signing_role
from airgap.bundle.parts import bundle_parts, first_part, split_name
from airgap.bundle.reader import Limits
from airgap.errors import ConfigError, DecryptFailed, UntrustedKey, VerificationError, WrongRole
from airgap.home import Home
from airgap.keys import fp16
from airgap.trust import TrustStore


@contextlib.contextmanager
def audited_refusal(home: Home, action: str, path: Path) -> Iterator[None]:
    """Record a refused bundle (with its error code) in the audit log, then re-raise."""
    try:
        yield
    except VerificationError as exc:
        home.audit().append(
            "refusal",
            outcome="refused",
            details={"action": action, "file": path.name, "code": exc.code, "reason": exc.message},
        )
        raise


def identity_for(home: Home, path: Path) -> object | None:
    """This home's age identity when `path` is age-encrypted, else None (no passphrase asked).

    `path` may be the first part of a split bundle: its first bytes are the bundle's.
    """
    from airgap.bundle.crypt import is_age

    try:
        with first_part(path).open("rb") as handle:
            head = handle.read(64)
    except OSError:
        return None  # the reader reports the unreadable file with its own code
    return home.identity() if is_age(head) else None


def verify_without_home(path: Path, home_path: Path) -> OpenedBundle:
    """Verify where no home exists: nothing is trusted, so at best the bundle is refused as
    untrusted, and anything malformed is refused for what it is (exit 3 either way).

    Raises:
        VerificationError: always for a bundle from anyone; the hint points at the home.
    """
    policy = TrustPolicy(trust=TrustStore([]))
    try:
        with open_bundle(path, policy, limits=Limits()) as opened:
            return opened
    except VerificationError as exc:
        if isinstance(exc, UntrustedKey | DecryptFailed):
            exc.hint = (
                f"There is no airgap home at {home_path}, so no key is trusted. Point --home "
                "(or AIRGAP_HOME) at the receiving home, or create one with `airgap init`."
            )
        raise


def verify(home: Home, path: Path, *, expected_kind: str | None = None) -> OpenedBundle:
    """Fully verify a bundle against this home's trust store and log the outcome.

    Raises:
        VerificationError: the bundle is refused (the refusal is logged first).
    """
    with audited_refusal(home, "verify", path):
        opened = _open_verified(home, path, home.policy(expected_kind=expected_kind))
    manifest = opened.manifest
    home.audit().append(
        "verify",
        bundle_id=manifest.bundle_id,
        manifest_sha256=opened.manifest_sha256,
        details={
            "file": path.name,
            "kind": manifest.kind,
            "producer": dict(manifest.producer),
            "producer_audit_head": manifest.audit_head,
            "signers": [c.fingerprint for c in opened.signatures if c.status == "valid"],
        },
    )
    return opened


def _open_verified(
    home: Home,
    path: Path,
    policy: TrustPolicy,
    render_items: Callable[[list[Any]], bytes] | None = None,
) -> OpenedBundle:
    identity = identity_for(home, path)
    with open_bundle(
        path, policy, identity=identity, limits=home.limits(), render_items=render_items
    ) as opened:
        return opened


@dataclass(frozen=True)
class Inspection:
    """What `inspect` shows: the bundle as read, plus trust and time findings not enforced."""

    opened: OpenedBundle

    def to_json(self) -> dict[str, Any]:
        """The whole document (every item and member in memory: see `write_json`)."""
        return {
            **self.head_json(),
            "manifest": self.opened.manifest.to_json(),
            "items": self.opened.items,
        }

    def head_json(self) -> dict[str, Any]:
        """`to_json` without the manifest and the items, the parts that grow with the bundle."""
        return {
            "manifest_sha256": self.opened.manifest_sha256,
            "signatures": [c.to_json() for c in self.opened.signatures],
            "problems": [{"code": p.code, "message": p.message} for p in self.opened.problems],
        }

    def write_json(
        self,
        write: Callable[[str], object],
        /,
        *,
        write_ascii: Callable[[bytes], object] | None = None,
        **extra: Any,
    ) -> None:
        """Write `json.dumps({"ok": True, **to_json(), **extra}, indent=2, sort_keys=True)`
        and a newline, the exact bytes, a member and an item at a time (memory stays flat).

        Args:
            write: takes the text.
            write_ascii: if given, takes the large ASCII runs (the items' text) as bytes
                instead, in their place among what `write` is given (no decoding them).
            extra: more top-level keys.
        """
        head: dict[str, Any] = {"ok": True, **self.head_json(), **extra}
        manifest = self.opened.manifest
        members = manifest.members
        streamed: dict[str, Callable[[], None]] = {
            "items": lambda: self._write_items(write, write_ascii),
            "manifest": lambda: _write_object(
                write,
                manifest._head_json(),
                {
                    "members": lambda: (
                        _write_member_list(write, members)
                        if isinstance(members, MemberList) and len(members)
                        else _write_list(write, map(_member_text, members), 2)
                    )
                },
                1,
            ),
        }
        _write_object(write, head, streamed, 0)
        write("\n")

    def _write_items(
        self, write: Callable[[str], object], write_ascii: Callable[[bytes], object] | None
    ) -> None:
        rendered = self.opened.rendered_items()
        if rendered is None:
            _write_list(write, (_element_text(i, 2) for i in self.opened.iter_items()), 1)
            return
        # `items_text` of every batch, made while items.json was checked: the same bytes.
        first = True
        for chunk in rendered:
            if first:
                write("[")
                first = False
            if write_ascii is not None:
                write_ascii(chunk)
            else:
                write(chunk.decode("ascii"))
        write("[]" if first else "\n  ]")


_ITEM_INDENT = b"\n    "  # an item of the top-level "items" list: two levels deep


def items_text(items: list[Any]) -> bytes:
    """The items as `Inspection.write_json` lays out the elements of its "items" list, each
    after a newline and its indent, joined by commas (no brackets): for `open_bundle`'s
    `render_items`, so the text is made by the processes that check the items. The items
    are as orjson reads them: no infinities (orjson would write null)."""
    try:
        text = orjson.dumps(items, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits
        text = None
    if text is None or not text.isascii() or b"\x7f" in text or _has_float(text):
        # What `_element_text` decides item by item (json where orjson would differ).
        return b",".join(_ITEM_INDENT + _element_text(item, 2).encode("utf-8") for item in items)
    if not items:
        return b""
    # orjson indents a list's elements by two spaces; the document puts them two levels deeper.
    return text[1:-2].replace(b"\n", b"\n  ")


def _indented(value: Any, level: int) -> str:
    """`value` as `json.dumps(..., indent=2, sort_keys=True, default=str)` writes it `level`
    levels deep (a JSON string holds no raw newline, so re-indenting lines is exact)."""
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return text.replace("\n", "\n" + "  " * level)


# A float in orjson's indented output: a number after `": ` or at the start of a line (an
# array element, so the line before ends with `[` or `,`), with a fraction or an exponent
# (inside a string `": ` would have its quote escaped, and no string holds a raw newline).
# orjson and json write floats differently (1e-07 / 1e-7), so such elements go through json.
# Patterns that start with fixed text are searched far faster than one alternation; numbers
# in arrays are rare in items, so a quick look for any comes before the exact pattern.
_FLOAT_VALUE = re.compile(rb'": -?[0-9]+[.eE]')
_ELEMENT_NUMBER = (re.compile(rb"\[\n +[-0-9]"), re.compile(rb",\n +[-0-9]"))
_FLOAT_ELEMENT = re.compile(rb"[\[,]\n +-?[0-9]+[.eE]")


def _has_float(text: bytes) -> bool:
    if _FLOAT_VALUE.search(text):
        return True
    return any(p.search(text) for p in _ELEMENT_NUMBER) and bool(_FLOAT_ELEMENT.search(text))


def _element_text(value: Any, level: int) -> str:
    """`_indented(value, level)`, through orjson when that gives the same text (ASCII without
    DEL and no float: json escapes those differently), ~20x faster for a list of items."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits
        return _indented(value, level)
    # orjson writes an infinity (which json.loads reads from `Infinity`) as null
    if not text.isascii() or b"\x7f" in text or _has_float(text) or b"null" in text:
        return _indented(value, level)
    return text.decode("ascii").replace("\n", "\n" + "  " * level)


_PLAIN_PATH = re.compile(r"[A-Za-z0-9._/-]*")


def _member_text(member: Any) -> str:
    ind = "  " * 3
    if _PLAIN_PATH.fullmatch(member.path) and _PLAIN_PATH.fullmatch(member.sha256):
        return (
            f'{{\n{ind}  "path": "{member.path}",\n{ind}  "sha256": "{member.sha256}",\n'
            f'{ind}  "size": {member.size}\n{ind}}}'
        )
    return _indented(member.to_json(), 3)


_BETWEEN_ENTRIES = b'},{"path":"'
_MEMBER_CHUNK = 1 << 20  # bytes of the member list re-laid out per write


def _write_member_list(write: Callable[[str], object], members: MemberList) -> None:
    """`_write_list(write, map(_member_text, members), 2)` for a member list the manifest scan
    proved strict (`{"path":"P","sha256":"H","size":N}`, no field holding a quote): the
    canonical entries re-laid out by replacing the fixed text between their fields, a MiB of
    them at a time."""
    data, pos, end = members.data, members.start, members.end
    assert data.startswith(b'{"path":"', pos) and data[end - 1] == ord("}")
    write("[\n      {")
    pos += 1  # the `{` of the first entry is written; each piece starts at `"path":"`
    while pos < end:
        cut = data.find(_BETWEEN_ENTRIES, pos + _MEMBER_CHUNK, end)
        stop = end - 1 if cut < 0 else cut  # the `}` closing the piece's last entry
        text = (
            data[pos:stop]
            .replace(_BETWEEN_ENTRIES, b'\n      },\n      {\n        "path": "')
            .replace(b'","sha256":"', b'",\n        "sha256": "')
            .replace(b'","size":', b'",\n        "size": ')
        )
        # `"path":"` at the piece's start: the fixed text between entries does not cover it
        write('\n        "path": "' + text[8:].decode("ascii") + "\n      }")
        if cut >= 0:
            write(",\n      {")
        pos = stop + 3 if cut >= 0 else end  # past `},{`
    write("\n    ]")


def _write_list(write: Callable[[str], object], texts: Iterable[str], level: int) -> None:
    """A JSON array of already-indented element texts, as `json.dumps(indent=2)` lays it out."""
    inner = "\n" + "  " * (level + 1)
    first = True
    for text in texts:
        write(("[" if first else ",") + inner + text)
        first = False
    write("[]" if first else "\n" + "  " * level + "]")


def _write_object(
    write: Callable[[str], object],
    plain: dict[str, Any],
    streamed: dict[str, Callable[[], None]],
    level: int,
) -> None:
    """A JSON object with sorted keys: `plain` values written whole, `streamed` ones by their
    writer, as `json.dumps(indent=2, sort_keys=True)` lays it out."""
    keys = sorted([*plain, *streamed])
    if not keys:
        write("{}")
        return
    inner = "\n" + "  " * (level + 1)
    for n, key in enumerate(keys):
        write(("{" if n == 0 else ",") + inner + json.dumps(key) + ": ")
        if key in streamed:
            streamed[key]()
        else:
            write(_indented(plain[key], level + 1))
    write("\n" + "  " * level + "}")


def inspect(home: Home | None, path: Path, *, for_json: bool = False) -> Inspection:
    """Read a bundle without requiring trust: signatures are reported valid/untrusted/invalid.

    Structure (safe members, hashes, canonical manifest, schema) is still enforced: a bundle
    that breaks it is refused, because nothing in it could be shown faithfully.

    Args:
        home: the home whose trust store marks signatures; None: every one is untrusted.
        path: the bundle.
        for_json: `write_json` will be called: the items' text is made while they are checked.

    Raises:
        VerificationError: the bundle is structurally unsound.
    """
    render = items_text if for_json else None
    if home is None:
        policy = TrustPolicy(trust=TrustStore([]), enforce=False)
        with open_bundle(path, policy, limits=Limits(), render_items=render) as opened:
            return Inspection(opened)
    return Inspection(_open_verified(home, path, home.policy(enforce=False), render))


@dataclass(frozen=True)
class Approval:
    """The result of `approve`: the file written and the signatures it now carries."""

    path: Path
    bundle_id: str
    manifest_sha256: str
    signatures: int
    already: bool


def approve(home: Home, path: Path, output: Path | None = None) -> Approval:
    """Add this home's co-signature to a verified bundle without changing `manifest.json`.

    A bundle in parts (`NAME.001`, …) approved in place is written back as parts of the same
    size; with `output`, one whole file is written there.

    Raises:
        VerificationError: the bundle does not verify (the threshold is not demanded yet).
        WrongRole: this home's role cannot sign this kind of bundle.
        ConfigError: the signing key cannot be loaded.
    """
    policy = TrustPolicy(
        trust=home.trust_store(),
        required_signatures=home.config.required_signatures,
        require_threshold=False,
    )
    target = output or path
    split: int | None = None
    with audited_refusal(home, "approve", path):
        if output is None:
            parts = bundle_parts(path)
            named = split_name(parts[0])
            if named is not None:  # rewrite the parts in place, cut to the same size
                target, split = named[0], parts[0].stat().st_size
        identity = identity_for(home, path)
        with open_bundle(
            path,
            policy,
            identity=identity,
            limits=home.limits(),
            keep_files=True,
            temp_root=target.parent,
        ) as opened:
            manifest = opened.manifest
            role = signing_role(manifest.kind, manifest.producer["role"])
            if role != home.role:
                raise WrongRole(
                    f"an {home.role} site cannot approve a {manifest.kind}; {role} sites sign those"
                )
            signer = home.signer()
            key = fp16(signer.fingerprint)
            signatures = dict(opened.raw_signatures)
            already = key in signatures
            if not already:
                signatures[key] = signer.sign(opened.manifest_bytes)
            recipients = home.recipients() if opened.encrypted else []
            if not already or output is not None:
                write_bundle_file(
                    target,
                    manifest_bytes=opened.manifest_bytes,
                    signatures=signatures,
                    payload=[(m, opened.member_source(m.path)) for m in manifest.members],
                    mtime=int(manifest.created.timestamp()),
                    compress=opened.compressed,
                    encrypt_to=recipients,
                    split=split,
                )
    if not already:
        home.audit().append(
            "approve",
            bundle_id=manifest.bundle_id,
            manifest_sha256=opened.manifest_sha256,
            details={"file": target.name, "signatures": len(signatures)},
        )
    return Approval(
        path=target,
        bundle_id=manifest.bundle_id,
        manifest_sha256=opened.manifest_sha256,
        signatures=len(signatures),
        already=already,
    )


def require_home_role(home: Home, role: str) -> None:
    """Refuse to run a half's command in a home of the other role.

    Raises:
        ConfigError: the home's role differs.
    """
    if home.role != role:
        raise ConfigError(
            f"this is an {home.role} home; the command needs an {role} home",
            hint="Point --home (or AIRGAP_HOME) at the right home.",
        )
