"""Write the corpus of hostile bundles of tests/corpus (issue 8, item 2), the same bytes each run.

    python tests/corpus/make_corpus.py [OUT_DIR]      # default: the folder of this script

Every file is built here by hand, without airgap's writer: tar headers, PAX records, gzip and
age are laid out byte by byte, so a file can be as hostile as it needs to be. Keys come from
fixed seeds (Ed25519 private keys and age X25519 identities from 32 bytes of SHA-256 of a label),
bundle ids from labels, and times are fixed: `created` 2025-01-01, `expires` 2099-12-31, so
the files neither change nor expire. The age layer (used for one file) is written here too,
from fixed ephemeral keys and nonces, and checked against pyrage when it is installed.

Besides the bundles it writes `expected.json` (file → error code) and `README.md` (what each
file attacks). tests/corpus/test_corpus.py verifies them with the real CLI and checks that this
script still writes the committed files.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import io
import json
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HERE = Path(__file__).resolve().parent
CREATED = "2025-01-01T00:00:00Z"
EXPIRES = "2099-12-31T00:00:00Z"
MTIME = 1735689600  # CREATED as a Unix time
BLOCK = 512
RECORD = 20 * BLOCK
SIZE_LIMIT = "16MiB"  # bundle.max_bytes the test sets, so a bomb of < 1 MiB can exceed it


# --- fixed keys ----------------------------------------------------------------------------------


def seed(label: str) -> bytes:
    """32 bytes that stand for `label` in every run."""
    return hashlib.sha256(f"airgap-corpus/{label}".encode()).digest()


@dataclass(frozen=True)
class Site:
    """A signing site of the corpus: name, role, Ed25519 key and age identity from seeds."""

    label: str
    name: str
    role: str

    @property
    def key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(seed(f"ed25519/{self.label}"))

    @property
    def public_raw(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def fingerprint(self) -> str:
        return "sha256:" + hashlib.sha256(self.public_raw).hexdigest()

    @property
    def fp16(self) -> str:
        return self.fingerprint.removeprefix("sha256:")[:16]

    @property
    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    @property
    def age_secret(self) -> bytes:
        return seed(f"x25519/{self.label}")

    @property
    def age_recipient(self) -> str:
        public = X25519PrivateKey.from_private_bytes(self.age_secret).public_key()
        return bech32("age", public.public_bytes_raw())

    @property
    def age_identity(self) -> str:
        return bech32("age-secret-key-", self.age_secret).upper()

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


INSIDE = Site("inside", "corpus-lab", "inside")  # trusted by the test home
OUTSIDE = Site("outside", "corpus-dmz", "outside")  # trusted by the test home
REVOKED = Site("revoked", "corpus-old-lab", "inside")  # trusted once, then removed
STRANGER = Site("stranger", "corpus-mallory", "inside")  # never trusted
ELSEWHERE = Site("elsewhere", "corpus-other-dmz", "outside")  # owns the wrong age recipient
TRUSTED = (INSIDE, OUTSIDE)


# --- bech32 (age's key encoding) -----------------------------------------------------------------

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values: Iterable[int]) -> int:
    generator = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            checksum ^= generator[i] if (top >> i) & 1 else 0
    return checksum


def bech32(hrp: str, data: bytes) -> str:
    """BIP-173 bech32 of `data` under `hrp`, as age writes its keys."""
    bits, acc, five = 0, 0, []
    for byte in data:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            five.append((acc >> bits) & 31)
    if bits:
        five.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    polymod = _polymod([*expanded, *five, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in five + checksum)


# --- age v1, deterministic -----------------------------------------------------------------------


def _hkdf(key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def age_encrypt(plaintext: bytes, recipient: Site, label: str) -> bytes:
    """The age v1 file of `plaintext` for `recipient`'s X25519 key, from fixed randomness."""
    file_key = seed(f"age-file-key/{label}")[:16]
    ephemeral = X25519PrivateKey.from_private_bytes(seed(f"age-ephemeral/{label}"))
    share = ephemeral.public_key().public_bytes_raw()
    their = X25519PrivateKey.from_private_bytes(recipient.age_secret).public_key()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(their.public_bytes_raw()))
    wrap_key = _hkdf(shared, share + their.public_bytes_raw(), b"age-encryption.org/v1/X25519")
    body = ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None)
    header = f"age-encryption.org/v1\n-> X25519 {_b64(share)}\n{_b64(body)}\n---".encode()
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
    nonce = seed(f"age-nonce/{label}")[:16]
    payload_key = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    chunk = 64 * 1024
    pieces = [plaintext[i : i + chunk] for i in range(0, len(plaintext), chunk)] or [b""]
    sealed = b"".join(
        payload_key.encrypt(
            index.to_bytes(11, "big") + (b"\x01" if index == len(pieces) - 1 else b"\x00"),
            piece,
            None,
        )
        for index, piece in enumerate(pieces)
    )
    return header + f" {_b64(mac)}\n".encode() + nonce + sealed


# --- tar, by hand --------------------------------------------------------------------------------


def _octal(value: int, width: int) -> bytes:
    if value < 0 or value >= 8 ** (width - 1):  # GNU base-256 for what octal cannot hold
        return bytes([0xFF if value < 0 else 0x80]) + (value % 256 ** (width - 1)).to_bytes(
            width - 1, "big"
        )
    return b"%0*o\0" % (width - 1, value)


def header(
    name: bytes,
    size: int,
    kind: bytes = b"0",
    *,
    linkname: bytes = b"",
    prefix: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    magic: bytes = b"ustar\x0000",
) -> bytes:
    """One 512-byte tar header, fields as given (ownership and times as bundles write them)."""
    block = bytearray(BLOCK)

    def put(offset: int, value: bytes) -> None:
        block[offset : offset + len(value)] = value

    put(0, name[:100])
    put(100, _octal(0o644 if kind != b"5" else 0o755, 8))
    put(108, _octal(0, 8))
    put(116, _octal(0, 8))
    put(124, _octal(size, 12))
    put(136, _octal(MTIME, 12))
    put(148, b" " * 8)
    put(156, kind)
    put(157, linkname[:100])
    put(257, magic)
    put(329, _octal(devmajor, 8))
    put(337, _octal(devminor, 8))
    put(345, prefix[:155])
    put(148, b"%06o\0 " % sum(block))
    return bytes(block)


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def pax_records(records: Iterable[tuple[str, str | bytes]]) -> bytes:
    """PAX extended-header records, each `<length> <key>=<value>\\n`."""
    out = b""
    for key, value in records:
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        body = b" " + key.encode() + b"=" + raw + b"\n"
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length = len(str(length)) + len(body)
        out += str(length).encode() + body
    return out


def pax(records: Iterable[tuple[str, str | bytes]], kind: bytes = b"x") -> bytes:
    data = pax_records(records)
    return header(b"./PaxHeaders/x", len(data), kind) + _pad(data)


def reg(name: str | bytes, data: bytes, *, size: int | None = None) -> bytes:
    """A regular file: a PAX `path` record first when the name does not fit ustar's 100 bytes."""
    raw = name if isinstance(name, bytes) else name.encode("utf-8")
    lead = b""
    if len(raw) > 100 or not raw.isascii():
        lead = pax([("path", raw)])
        raw = raw.rsplit(b"/", 1)[-1][:100]
    return lead + header(raw, len(data) if size is None else size) + _pad(data)


def special(name: str, kind: bytes, **fields: Any) -> bytes:
    """A member without data: directory, link, device, FIFO."""
    return header(name.encode(), 0, kind, **fields)


def archive(*members: bytes) -> bytes:
    """Members, then the two zero blocks, padded to a whole 10 KiB record like tar(1)."""
    body = b"".join(members) + bytes(2 * BLOCK)
    return body + bytes(-len(body) % RECORD)


# --- bundles -------------------------------------------------------------------------------------


def bundle_id(label: str) -> str:
    return str(uuid.UUID(bytes=seed(f"bundle-id/{label}")[:16], version=4))


def reserve_item(n: int) -> dict[str, Any]:
    return {
        "id": f"item-{n:04d}",
        "action": "cisco.reserve",
        "device": {"hostname": f"sw-{n}", "udi": {"pid": "C9300-24T", "sn": f"FOC{n:08d}"}},
        "params": {"entitlements": [{"tag": "regid.2017-03.com.cisco.advantagek9", "count": 1}]},
        "files": [],
    }


def items_json(items: list[dict[str, Any]]) -> bytes:
    return json.dumps({"items": items}, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Bundle:
    """A bundle's parts; `members()` lays them out, each case then adds its poison."""

    label: str
    signer: Site = INSIDE
    kind: str = "request"
    items: bytes = items_json([reserve_item(1)])
    files: tuple[tuple[str, bytes], ...] = (("files/a.txt", b"hello\n"),)
    created: str = CREATED
    expires: str = EXPIRES

    def payload(self) -> list[tuple[str, bytes]]:
        body = [("items.json", self.items), *self.files]
        sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in body).encode()
        return [("SHA256SUMS", sums), *body]

    def manifest(self, **changes: Any) -> dict[str, Any]:
        try:
            actions = [item["action"] for item in json.loads(self.items)["items"]]
        except (ValueError, RecursionError, KeyError, TypeError):
            actions = ["cisco.reserve"]
        by_action = {a: actions.count(a) for a in sorted(set(actions))}
        document = {
            "format": "airgap-bundle/1",
            "bundle_id": bundle_id(self.label),
            "kind": self.kind,
            "created": self.created,
            "expires": self.expires,
            "producer": {
                "name": self.signer.name,
                "role": self.signer.role,
                "fingerprint": self.signer.fingerprint,
            },
            "sequence": 1,
            "in_reply_to": None,
            "audit_head": "0" * 64,
            "summary": {"items": len(actions), "by_action": by_action},
            "members": [
                {"path": n, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
                for n, d in self.payload()
            ],
        }
        document.update(changes)
        return document

    def manifest_bytes(self) -> bytes:
        data: bytes = rfc8785.dumps(self.manifest())
        return data

    def members(
        self, *, manifest: bytes | None = None, signers: tuple[Site, ...] | None = None
    ) -> list[bytes]:
        body = self.manifest_bytes() if manifest is None else manifest
        out = [reg("manifest.json", body)]
        for site in sorted(signers or (self.signer,), key=lambda s: s.fp16):
            out.append(reg(f"signatures/{site.fp16}.sig", site.sign(body)))
        return out + [reg(n, d) for n, d in self.payload()]

    def tar(self, *extra: bytes) -> bytes:
        return archive(*self.members(), *extra)


def stream_bomb(label: str) -> bytes:
    """A signed bundle listing 8 files of 8 MiB of zeros: 64 MiB of tar in ~64 KiB of gzip."""
    zeros = 8 * 1024 * 1024
    digest = hashlib.sha256(bytes(zeros)).hexdigest()
    names = [f"files/zeros-{i}.bin" for i in range(8)]
    items = items_json([reserve_item(1)])
    sums = f"{hashlib.sha256(items).hexdigest()}  items.json\n"
    sums += "".join(f"{digest}  {name}\n" for name in names)
    sums_bytes = sums.encode()
    listed = Bundle(label).manifest()
    listed["members"] = [
        {"path": "SHA256SUMS", "sha256": hashlib.sha256(sums_bytes).hexdigest(), "size": len(sums)},
        {"path": "items.json", "sha256": hashlib.sha256(items).hexdigest(), "size": len(items)},
        *({"path": name, "sha256": digest, "size": zeros} for name in names),
    ]
    body: bytes = rfc8785.dumps(listed)
    head = [reg("manifest.json", body), reg(f"signatures/{INSIDE.fp16}.sig", INSIDE.sign(body))]
    head += [reg("SHA256SUMS", sums_bytes), reg("items.json", items)]
    sink = io.BytesIO()
    with gzip.GzipFile(fileobj=sink, mode="wb", mtime=0, compresslevel=9) as out:
        out.write(b"".join(head))
        block = bytes(1024 * 1024)
        for name in names:
            out.write(header(name.encode(), zeros))
            for _ in range(zeros // len(block)):
                out.write(block)
        out.write(bytes(RECORD))
    return sink.getvalue()


def random_bytes(label: str, size: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


# --- the cases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    file: str
    code: str | None  # None: a control that must verify
    attacks: str
    build: Callable[[], bytes]


def _cases() -> list[Case]:
    b = Bundle
    good = b("good")
    cases: list[Case] = []

    def case(file: str, code: str | None, attacks: str) -> Callable[[Callable[[], bytes]], None]:
        def register(build: Callable[[], bytes]) -> None:
            cases.append(Case(file, code, attacks, build))

        return register

    unsafe = "E_UNSAFE_MEMBER"

    @case("control-good.airgap", None, "nothing: a genuine bundle, proves the test home trusts it")
    def _() -> bytes:
        return good.tar()

    @case(
        "control-long-name-200.airgap",
        None,
        "nothing: a listed member of exactly 200 characters and depth 6 is allowed",
    )
    def _() -> bytes:
        name = "files/a/b/c/d/" + "n" * (200 - len("files/a/b/c/d/"))
        return b("long-200", files=(("files/a.txt", b"hello\n"), (name, b"long\n"))).tar()

    # -- paths
    @case("traversal-dotdot.airgap", unsafe, "`files/../../../etc/cron.d/evil`: climbs out with ..")
    def _() -> bytes:
        return good.tar(reg("files/../../../etc/cron.d/evil", b"* * * * * root sh\n"))

    @case("traversal-directory.airgap", unsafe, "a directory entry `files/../..`")
    def _() -> bytes:
        return good.tar(special("files/../../", b"5"))

    @case("traversal-backslash.airgap", unsafe, "`files\\..\\..\\evil`: Windows separators")
    def _() -> bytes:
        return good.tar(reg("files\\..\\..\\evil.bat", b"x"))

    @case("absolute-path.airgap", unsafe, "`/etc/cron.d/evil`: an absolute path")
    def _() -> bytes:
        return good.tar(reg("/etc/cron.d/evil", b"* * * * * root sh\n"))

    @case(
        "ustar-prefix-traversal.airgap",
        unsafe,
        "ustar prefix field `../..` joined to a harmless name `evil`",
    )
    def _() -> bytes:
        return good.tar(header(b"evil", 2, prefix=b"../..") + _pad(b"x\n"))

    @case("too-deep.airgap", unsafe, "`files/1/2/3/4/5/6`: 7 levels, deeper than 6")
    def _() -> bytes:
        return good.tar(reg("files/1/2/3/4/5/6", b"x"))

    @case("long-name-201.airgap", unsafe, "a member name of 201 characters (PAX path)")
    def _() -> bytes:
        return good.tar(reg("files/" + "n" * 195, b"x"))

    # -- member types
    @case("symlink-escape.airgap", unsafe, "symlink `files/etc` → `/etc`, then `files/etc/passwd`")
    def _() -> bytes:
        return good.tar(special("files/etc", b"2", linkname=b"/etc"), reg("files/etc/passwd", b"x"))

    @case("hardlink-escape.airgap", unsafe, "hard link `files/shadow` → `../../../etc/shadow`")
    def _() -> bytes:
        return good.tar(special("files/shadow", b"1", linkname=b"../../../etc/shadow"))

    @case("char-device.airgap", unsafe, "character device `files/zero` (1, 5)")
    def _() -> bytes:
        return good.tar(special("files/zero", b"3", devmajor=1, devminor=5))

    @case("block-device.airgap", unsafe, "block device `files/sda` (8, 0)")
    def _() -> bytes:
        return good.tar(special("files/sda", b"4", devmajor=8, devminor=0))

    @case("fifo.airgap", unsafe, "FIFO `files/pipe` (a reader that opens it would hang)")
    def _() -> bytes:
        return good.tar(special("files/pipe", b"6"))

    @case("gnu-sparse.airgap", unsafe, "old GNU sparse member (type S) `files/sparse`")
    def _() -> bytes:
        return good.tar(header(b"files/sparse", 0, b"S", magic=b"ustar  \0"))

    @case("gnu-longname.airgap", unsafe, "GNU long-name header (type L) naming `../../evil`")
    def _() -> bytes:
        name = b"../../" + b"e" * 120 + b"\0"
        longname = header(b"././@LongLink", len(name), b"L", magic=b"ustar  \0") + _pad(name)
        return good.tar(longname + header(b"evil", 2, magic=b"ustar  \0") + _pad(b"x\n"))

    # -- PAX tricks
    @case(
        "pax-path-override.airgap",
        unsafe,
        "PAX `path=../x` overriding the safe ustar name `files/safe.txt`",
    )
    def _() -> bytes:
        return good.tar(pax([("path", "../x")]) + header(b"files/safe.txt", 2) + _pad(b"x\n"))

    @case(
        "pax-nul-in-path.airgap",
        unsafe,
        "PAX path `files/b.txt<NUL>../../etc/passwd`: C readers stop at the NUL",
    )
    def _() -> bytes:
        path = b"files/b.txt\x00../../etc/passwd"
        return good.tar(pax([("path", path)]) + header(b"files/b.txt", 2) + _pad(b"x\n"))

    @case(
        "pax-size-mismatch.airgap",
        "E_HASH_MISMATCH",
        "PAX `size=1030` on `files/a.txt` whose ustar size (6) and listing agree: readers "
        "honouring one or the other see different data",
    )
    def _() -> bytes:
        members = good.members()[:-1]
        data = b"hello\n" + bytes(506) + b"smuggled tail".ljust(512, b"\0")
        trick = pax([("size", "1030")]) + header(b"files/a.txt", 6) + data
        return archive(*members, trick)

    @case("pax-size-malformed.airgap", "E_NOT_A_BUNDLE", "PAX `size=6e3`: not a number")
    def _() -> bytes:
        members = good.members()[:-1]
        return archive(*members, pax([("size", "6e3")]) + reg("files/a.txt", b"hello\n"))

    @case("pax-size-negative.airgap", "E_NOT_A_BUNDLE", "PAX `size=-512`: a negative size")
    def _() -> bytes:
        members = good.members()[:-1]
        return archive(*members, pax([("size", "-512")]) + reg("files/a.txt", b"hello\n"))

    @case(
        "pax-global-header.airgap",
        unsafe,
        "PAX global header (type g) setting `path=../x` for every later member",
    )
    def _() -> bytes:
        members = good.members()
        return archive(members[0], pax([("path", "../x")], b"g"), *members[1:])

    @case(
        "pax-sparse-records.airgap",
        unsafe,
        "PAX `GNU.sparse.*` records that turn `files/a.txt` into a sparse file",
    )
    def _() -> bytes:
        members = good.members()[:-1]
        records = [("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"), ("GNU.sparse.name", "x")]
        return archive(*members, pax(records) + reg("files/a.txt", b"hello\n"))

    @case("pax-linkpath.airgap", unsafe, "PAX `linkpath=/etc/passwd` on a regular file")
    def _() -> bytes:
        return good.tar(pax([("linkpath", "/etc/passwd")]) + reg("files/b.txt", b"x"))

    # -- names that look right
    @case("confusable-division-slash.airgap", unsafe, "`files/a\u2215b`: U+2215 looks like `/`")
    def _() -> bytes:
        return good.tar(reg("files/a\u2215b", b"x"))

    @case(
        "confusable-fullwidth-dots.airgap",
        unsafe,
        "`files/\uff0e\uff0e/\uff0e\uff0e/evil`: U+FF0E fullwidth full stops look like `..`",
    )
    def _() -> bytes:
        return good.tar(reg("files/\uff0e\uff0e/\uff0e\uff0e/evil", b"x"))

    @case(
        "rtl-override.airgap",
        unsafe,
        "`files/invoice\u202efdp.exe`: U+202E shows it as `files/invoiceexe.pdf`",
    )
    def _() -> bytes:
        return good.tar(reg("files/invoice\u202efdp.exe", b"x"))

    @case(
        "newline-in-name.airgap",
        unsafe,
        "once wrongly E_UNLISTED_MEMBER: `files/a.txt<LF>`, a newline that breaks SHA256SUMS",
    )
    def _() -> bytes:
        return good.tar(reg("files/a.txt\n", b"x"))

    @case("non-utf8-name.airgap", unsafe, "a ustar name with bytes that are not UTF-8")
    def _() -> bytes:
        return good.tar(header(b"files/\xff\xfe.txt", 1) + _pad(b"x"))

    @case(
        "casefold-duplicate.airgap",
        unsafe,
        "`files/a.txt` and `files/A.TXT`, both listed and signed: one file on Windows/macOS",
    )
    def _() -> bytes:
        files = (("files/a.txt", b"hello\n"), ("files/A.TXT", b"HELLO\n"))
        return b("casefold", files=files).tar()

    @case(
        "duplicate-member.airgap",
        unsafe,
        "`files/a.txt` twice, the second different: extraction keeps the last",
    )
    def _() -> bytes:
        return good.tar(reg("files/a.txt", b"evil!\n"))

    # -- sizes
    @case(
        "gzip-bomb.airgap",
        "E_SIZE_LIMIT",
        f"~64 KiB of gzip expanding to 64 MiB of signed, listed zeros (verified with "
        f"bundle.max_bytes = {SIZE_LIMIT})",
    )
    def _() -> bytes:
        return stream_bomb("bomb")

    @case("size-claim.airgap", "E_SIZE_LIMIT", "a member header claiming 1 TiB (base-256 size)")
    def _() -> bytes:
        return good.tar(header(b"files/huge.bin", 1 << 40))

    # -- encryption, keys, signatures
    @case(
        "age-wrong-recipient.airgap",
        "E_DECRYPT",
        "a genuine bundle age-encrypted to another site's recipient",
    )
    def _() -> bytes:
        return age_encrypt(good.tar(), ELSEWHERE, "wrong-recipient")

    @case(
        "revoked-key.airgap",
        "E_UNTRUSTED_KEY",
        "signed by a key the home trusted and then removed (`trust remove`)",
    )
    def _() -> bytes:
        return b("revoked", signer=REVOKED).tar()

    @case("untrusted-key.airgap", "E_UNTRUSTED_KEY", "signed by a key the home never trusted")
    def _() -> bytes:
        return b("stranger", signer=STRANGER).tar()

    @case("wrong-role.airgap", "E_WRONG_ROLE", "a request signed by a trusted outside site")
    def _() -> bytes:
        return b("wrong-role", signer=OUTSIDE).tar()

    @case("tampered-manifest.airgap", "E_SIGNATURE", "manifest changed after signing")
    def _() -> bytes:
        parts = b("tampered-manifest")
        body = parts.manifest_bytes()
        signature = INSIDE.sign(body)
        body = body.replace(b'"sequence":1', b'"sequence":9')
        members = parts.members(manifest=body)
        members[1] = reg(f"signatures/{INSIDE.fp16}.sig", signature)
        return archive(*members)

    @case("no-signature.airgap", "E_SIGNATURE", "no signatures/ member at all")
    def _() -> bytes:
        members = good.members()
        return archive(members[0], *members[2:])

    @case("non-canonical-manifest.airgap", "E_NONCANONICAL", "a pretty-printed, signed manifest")
    def _() -> bytes:
        parts = b("non-canonical")
        body = json.dumps(parts.manifest(), indent=1, sort_keys=True).encode()
        return archive(*parts.members(manifest=body))

    # -- listing and content
    @case("unlisted-member.airgap", "E_UNLISTED_MEMBER", "a safe-looking file nobody signed")
    def _() -> bytes:
        return good.tar(reg("files/extra.txt", b"smuggled\n"))

    @case("missing-member.airgap", "E_MISSING_MEMBER", "`files/a.txt` listed but absent")
    def _() -> bytes:
        return archive(*good.members()[:-1])

    @case("tampered-member.airgap", "E_HASH_MISMATCH", "`files/a.txt` changed, same size")
    def _() -> bytes:
        return archive(*good.members()[:-1], reg("files/a.txt", b"HELLO\n"))

    # -- time
    @case("expired.airgap", "E_EXPIRED", "expired on 2001-01-01")
    def _() -> bytes:
        return b("expired", created="2000-01-01T00:00:00Z", expires="2001-01-01T00:00:00Z").tar()

    @case("not-yet-valid.airgap", "E_NOT_YET_VALID", "created in 2098")
    def _() -> bytes:
        return b("future", created="2098-01-01T00:00:00Z").tar()

    # -- inputs that once crashed the reader (found by tests/fuzz)
    @case(
        "manifest-deep-nesting.airgap",
        "E_NONCANONICAL",
        "once crashed: a signed manifest.json of 10,000 nested arrays (RecursionError)",
    )
    def _() -> bytes:
        body = b"[" * 10_000 + b"]" * 10_000
        return archive(*good.members(manifest=body))

    @case(
        "manifest-impossible-date.airgap",
        "E_SCHEMA",
        "once crashed: a signed manifest created 2025-02-30 (right shape, no such day)",
    )
    def _() -> bytes:
        parts = b("impossible-date")
        body: bytes = rfc8785.dumps(parts.manifest(created="2025-02-30T00:00:00Z"))
        return archive(*parts.members(manifest=body))

    @case(
        "items-deep-nesting.airgap",
        "E_SCHEMA",
        "once crashed: a listed, signed items.json of 10,000 nested arrays",
    )
    def _() -> bytes:
        return b("deep-items", items=b'{"items":' + b"[" * 10_000 + b"]" * 10_000 + b"}").tar()

    # -- not a bundle
    @case("manifest-not-first.airgap", "E_NOT_A_BUNDLE", "members in reverse order")
    def _() -> bytes:
        return archive(*reversed(good.members()))

    @case("trailing-data.airgap", "E_NOT_A_BUNDLE", "data after the end-of-archive marker")
    def _() -> bytes:
        return good.tar() + b"smuggled after the end of the archive\n"

    @case("truncated.airgap", "E_NOT_A_BUNDLE", "cut in the middle of `items.json`")
    def _() -> bytes:
        data = good.tar()
        return data[: data.index(b'{"items"') + 40]

    @case("truncated-gzip.airgap", "E_NOT_A_BUNDLE", "a gzip bundle (stored blocks) cut in half")
    def _() -> bytes:
        data = gzip.compress(good.tar(), compresslevel=0, mtime=0)
        return data[: len(data) // 2]

    @case("empty.airgap", "E_NOT_A_BUNDLE", "an empty file")
    def _() -> bytes:
        return b""

    @case("random-bytes.airgap", "E_NOT_A_BUNDLE", "4 KiB of (seeded) random bytes")
    def _() -> bytes:
        return random_bytes("random", 4096)

    return cases


CASES = _cases()


def expected() -> dict[str, str]:
    """file → the error code `airgap verify` must refuse it with (controls left out)."""
    return {c.file: c.code for c in CASES if c.code is not None}


def readme() -> str:
    rows = "\n".join(
        f"| `{c.file}` | {c.attacks} | {c.code or 'verifies (exit 0)'} |" for c in CASES
    )
    keys = "\n".join(
        f"| {s.name} | {s.role} | `{s.fingerprint}` | {note} |"
        for s, note in (
            (INSIDE, "trusted: signs every bundle unless a row says otherwise"),
            (OUTSIDE, "trusted: signs `wrong-role.airgap`"),
            (REVOKED, "trusted, then removed with `trust remove`: signs `revoked-key.airgap`"),
            (STRANGER, "never trusted: signs `untrusted-key.airgap`"),
            (ELSEWHERE, "never trusted: its age recipient gets `age-wrong-recipient.airgap`"),
        )
    )
    return f"""# Hostile bundles

Generated by `python tests/corpus/make_corpus.py` (deterministic; do not edit the files by
hand) and verified by `tests/corpus/test_corpus.py`, which runs the real `airgap verify` on
every file in an outside home that trusts the corpus's fixed keys, with
`AIRGAP_BUNDLE_MAX_BYTES={SIZE_LIMIT}`, and checks exit code 3, the exact error code of
`expected.json`, and that nothing was written next to the file. It also re-runs the script and
checks that it still writes these bytes (gzip files compared decompressed, as zlib versions
differ).

Every bundle is a `request` unless its row says otherwise, created {CREATED} and expiring
{EXPIRES}. Poison is added to a genuine, signed bundle, so each file fails for the one
reason given and no other. Rows marked "once crashed" are inputs the fuzz tests (tests/fuzz)
found crashing the reader; they stay here as regressions.

| file | attacks | expected |
|---|---|---|
{rows}

Keys (Ed25519 private keys and age identities are SHA-256 of fixed labels, see the script):

| site | role | fingerprint | use |
|---|---|---|---|
{keys}
"""


def write(folder: Path) -> list[Path]:
    """Write every corpus file, expected.json and README.md into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for c in CASES:
        path = folder / c.file
        path.write_bytes(c.build())
        written.append(path)
    (folder / "expected.json").write_text(json.dumps(expected(), indent=2, sort_keys=True) + "\n")
    (folder / "README.md").write_text(readme())
    return written


def _self_check(folder: Path) -> None:
    """The hand-written age file opens with stock age code (pyrage) for its real recipient."""
    try:
        import pyrage
    except ImportError:
        return
    plain = pyrage.decrypt(
        age_encrypt(b"check", ELSEWHERE, "self-check"),
        [pyrage.x25519.Identity.from_str(ELSEWHERE.age_identity)],
    )
    assert plain == b"check", "age_encrypt does not write what age reads"
    recipient = str(pyrage.x25519.Identity.from_str(ELSEWHERE.age_identity).to_public())
    assert recipient == ELSEWHERE.age_recipient, "bech32 of the recipient is wrong"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    _self_check(target)
    files = write(target)
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} bundles ({total / 1024:.0f} KiB) to {target}")
