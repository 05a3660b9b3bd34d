"""Every reading rule of docs/format.md against crafted bundles, plus what a good bundle yields."""

from __future__ import annotations

import gzip
import os
import tarfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from craft import BundleParts, Entry, reserve_item, write_tar
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from airgap.bundle import Limits, TrustPolicy, open_bundle, verify_bundle
from airgap.errors import VerificationError
from airgap.keys import Signer
from airgap.trust import SiteCard, TrustedKey, TrustStore


def signer(name: str, role: str) -> Signer:
    return Signer(name=name, role=role, private_key=Ed25519PrivateKey.generate())


INSIDE = signer("lab", "inside")
INSIDE_2 = signer("lab-officer", "inside")
OUTSIDE = signer("dmz", "outside")
STRANGER = signer("mallory", "inside")


def store(*signers: Signer) -> TrustStore:
    return TrustStore(
        TrustedKey(SiteCard(s.name, s.role, s.public_key, "age1unused")) for s in signers
    )


POLICY = TrustPolicy(trust=store(INSIDE, INSIDE_2, OUTSIDE))


def refusal(path: Path, policy: TrustPolicy = POLICY, limits: Limits | None = None) -> str:
    with pytest.raises(VerificationError) as info:
        verify_bundle(path, policy, limits=limits)
    return info.value.code


def test_good_bundle_verifies_and_keeps_files_only_in_temp(tmp_path: Path) -> None:
    parts = BundleParts(INSIDE)
    path = write_tar(tmp_path / "ok.airgap", parts.entries())
    before = set(tmp_path.iterdir())
    with open_bundle(path, POLICY, keep_files=True) as opened:
        kept = opened.file_path("files/a.txt")
        assert kept.read_bytes() == b"hello\n"
        assert kept.name != "a.txt"  # never written under its own name
        assert not kept.is_relative_to(tmp_path)
        assert opened.items == parts.items
        assert [c.status for c in opened.signatures] == ["valid"]
    assert not kept.exists()
    assert set(tmp_path.iterdir()) == before


def test_gzip_bundle_verifies(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "ok.airgap", BundleParts(INSIDE).entries(), gzip=True)
    assert verify_bundle(path, POLICY).compressed


def _with(entries: list[Entry], *extra: Entry) -> list[Entry]:
    return [*entries, *extra]


def _replace(entries: list[Entry], name: str, **changes: object) -> list[Entry]:
    out = []
    for entry in entries:
        if entry.name == name:
            entry = Entry(**{**entry.__dict__, **changes})  # type: ignore[arg-type]
        out.append(entry)
    return out


CASES: dict[str, tuple[Callable[[], list[Entry]], str]] = {
    "symlink": (
        lambda: _with(
            BundleParts(INSIDE).entries(),
            Entry("files/link", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
        ),
        "E_UNSAFE_MEMBER",
    ),
    "hardlink": (
        lambda: _with(
            BundleParts(INSIDE).entries(),
            Entry("files/hard", type=tarfile.LNKTYPE, linkname="files/a.txt"),
        ),
        "E_UNSAFE_MEMBER",
    ),
    "char-device": (
        lambda: _with(BundleParts(INSIDE).entries(), Entry("files/dev", type=tarfile.CHRTYPE)),
        "E_UNSAFE_MEMBER",
    ),
    "fifo": (
        lambda: _with(BundleParts(INSIDE).entries(), Entry("files/fifo", type=tarfile.FIFOTYPE)),
        "E_UNSAFE_MEMBER",
    ),
    "dotdot": (
        lambda: _with(BundleParts(INSIDE).entries(), Entry("files/../../escape", b"x")),
        "E_UNSAFE_MEMBER",
    ),
    "absolute": (
        lambda: _with(BundleParts(INSIDE).entries(), Entry("/tmp/escape", b"x")),
        "E_UNSAFE_MEMBER",
    ),
    "bad-characters": (
        lambda: _with(BundleParts(INSIDE).entries(), Entry("files/a b;rm", b"x")),
        "E_UNSAFE_MEMBER",
    ),
    "too-deep": (
        lambda: _with(BundleParts(INSIDE).entries(), Entry("files/1/2/3/4/5/6", b"x")),
        "E_UNSAFE_MEMBER",
    ),
    "too-long": (
        lambda: _with(BundleParts(INSIDE).entries(), Entry("files/" + "a" * 200, b"x")),
        "E_UNSAFE_MEMBER",
    ),
    "duplicate": (
        lambda: _with(BundleParts(INSIDE).entries(), Entry("files/a.txt", b"hello\n")),
        "E_UNSAFE_MEMBER",
    ),
    "casefold-duplicate": (
        lambda: _with(BundleParts(INSIDE).entries(), Entry("files/A.TXT", b"hello\n")),
        "E_UNSAFE_MEMBER",
    ),
    "unlisted": (
        lambda: _with(BundleParts(INSIDE).entries(), Entry("files/extra.txt", b"smuggled")),
        "E_UNLISTED_MEMBER",
    ),
    "late-signature": (
        lambda: _with(
            BundleParts(INSIDE).entries(), Entry("signatures/0000000000000000.sig", b"x" * 64)
        ),
        "E_UNLISTED_MEMBER",
    ),
    "missing": (
        lambda: [e for e in BundleParts(INSIDE).entries() if e.name != "files/a.txt"],
        "E_MISSING_MEMBER",
    ),
    "hash-mismatch": (
        lambda: _replace(BundleParts(INSIDE).entries(), "files/a.txt", data=b"HELLO\n"),
        "E_HASH_MISMATCH",
    ),
    "size-mismatch": (
        lambda: _replace(BundleParts(INSIDE).entries(), "files/a.txt", data=b"hello, world\n"),
        "E_HASH_MISMATCH",
    ),
    "sums-disagree": (
        lambda: BundleParts(
            INSIDE, listed_overrides={"files/a.txt": {"sha256": "f" * 64}}
        ).entries(),
        "E_HASH_MISMATCH",
    ),
    "non-canonical-manifest": (
        lambda: BundleParts(INSIDE).entries(
            manifest_bytes=(BundleParts(INSIDE).manifest_bytes().replace(b'","', b'", "', 1))
        ),
        "E_NONCANONICAL",
    ),
    "bad-signature": (
        lambda: _replace(
            BundleParts(INSIDE).entries(),
            next(e.name for e in BundleParts(INSIDE).entries() if e.name.startswith("sig")),
            data=bytes(64),
        ),
        "E_SIGNATURE",
    ),
    "missing-signature": (
        lambda: [e for e in BundleParts(INSIDE).entries() if not e.name.startswith("signatures")],
        "E_SIGNATURE",
    ),
    "short-signature": (
        lambda: [
            Entry(e.name, e.data[:10]) if e.name.startswith("signatures/") else e
            for e in BundleParts(INSIDE).entries()
        ],
        "E_SIGNATURE",
    ),
    "untrusted-key": (lambda: BundleParts(STRANGER).entries(), "E_UNTRUSTED_KEY"),
    "wrong-role": (lambda: BundleParts(OUTSIDE).entries(), "E_WRONG_ROLE"),
    "co-signer-of-wrong-role": (
        lambda: BundleParts(INSIDE).entries(signers=[INSIDE, OUTSIDE]),
        "E_WRONG_ROLE",
    ),
    "expired": (
        lambda: BundleParts(INSIDE, lifetime=timedelta(seconds=1)).entries(),
        "E_EXPIRED",
    ),
    "not-yet-valid": (
        lambda: BundleParts(
            INSIDE,
            created=BundleParts(INSIDE).created + timedelta(hours=1),
        ).entries(),
        "E_NOT_YET_VALID",
    ),
    "schema-bad-item": (
        lambda: BundleParts(INSIDE, items=[{**reserve_item(), "action": "cisco.steal"}]).entries(),
        "E_SCHEMA",
    ),
    "schema-manifest": (
        lambda: BundleParts(INSIDE, manifest_overrides={"format": "airgap-bundle/2"}).entries(),
        "E_SCHEMA",
    ),
    "summary-lies": (
        lambda: BundleParts(
            INSIDE, manifest_overrides={"summary": {"items": 5, "by_action": {}}}
        ).entries(),
        "E_SCHEMA",
    ),
    "manifest-not-first": (
        lambda: list(reversed(BundleParts(INSIDE).entries())),
        "E_NOT_A_BUNDLE",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_crafted_bundle_is_refused_with_its_code(case: str, tmp_path: Path) -> None:
    make, code = CASES[case]
    if case == "expired":
        path = write_tar(tmp_path / "b.airgap", make())
        import time

        time.sleep(1.1)
    else:
        path = write_tar(tmp_path / "b.airgap", make())
    before = set(tmp_path.iterdir())
    assert refusal(path) == code
    assert set(tmp_path.iterdir()) == before


def test_threshold_not_met_then_met_with_a_second_signature(tmp_path: Path) -> None:
    policy = TrustPolicy(trust=store(INSIDE, INSIDE_2), required_signatures=2)
    parts = BundleParts(INSIDE)
    body = parts.manifest_bytes()
    one = write_tar(tmp_path / "one.airgap", parts.entries(manifest_bytes=body))
    assert refusal(one, policy) == "E_THRESHOLD"
    two = write_tar(
        tmp_path / "two.airgap", parts.entries(manifest_bytes=body, signers=[INSIDE, INSIDE_2])
    )
    assert len(verify_bundle(two, policy).signatures) == 2


def test_same_key_twice_does_not_meet_a_threshold_of_two(tmp_path: Path) -> None:
    policy = TrustPolicy(trust=store(INSIDE), required_signatures=2)
    path = write_tar(tmp_path / "b.airgap", BundleParts(INSIDE).entries())
    assert refusal(path, policy) == "E_THRESHOLD"


def test_untrusted_extra_signature_is_tolerated(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "b.airgap", BundleParts(INSIDE).entries(signers=[INSIDE, STRANGER]))
    statuses = sorted(c.status for c in verify_bundle(path, POLICY).signatures)
    assert statuses == ["untrusted", "valid"]


def test_producer_without_signature_is_refused(tmp_path: Path) -> None:
    parts = BundleParts(INSIDE)
    path = write_tar(tmp_path / "b.airgap", parts.entries(signers=[INSIDE_2]))
    assert refusal(path) == "E_SIGNATURE"


def test_truncated_bundle_is_refused(tmp_path: Path) -> None:
    good = write_tar(tmp_path / "good.airgap", BundleParts(INSIDE).entries()).read_bytes()
    for cut in (100, 700, len(good) // 2, len(good) - 1024 * 9):
        path = tmp_path / f"cut-{cut}.airgap"
        path.write_bytes(good[:cut])
        assert refusal(path) == "E_NOT_A_BUNDLE", cut


def test_truncated_gzip_is_refused(tmp_path: Path) -> None:
    good = write_tar(tmp_path / "g.airgap", BundleParts(INSIDE).entries(), gzip=True)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    assert refusal(good) == "E_NOT_A_BUNDLE"


@pytest.mark.parametrize("size", [0, 1, 511, 512, 2048, 100_000])
def test_garbage_is_refused(size: int, tmp_path: Path) -> None:
    path = tmp_path / "junk.airgap"
    path.write_bytes(os.urandom(size))
    assert refusal(path) == "E_NOT_A_BUNDLE"


def test_data_after_end_of_archive_is_refused(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "b.airgap", BundleParts(INSIDE).entries())
    path.write_bytes(path.read_bytes() + b"smuggled payload")
    assert refusal(path) == "E_NOT_A_BUNDLE"


def test_gzip_bomb_beyond_the_size_limit_is_refused(tmp_path: Path) -> None:
    # 64 MiB of zeros in one listed member: ~64 KiB on disk, far above a 4 MiB limit.
    parts = BundleParts(INSIDE, files={"files/zeros.bin": bytes(64 * 1024 * 1024)})
    path = write_tar(tmp_path / "bomb.airgap", parts.entries(), gzip=True)
    assert path.stat().st_size < 1024 * 1024
    assert refusal(path, limits=Limits(max_bytes=4 * 1024 * 1024)) == "E_SIZE_LIMIT"


def test_streamed_total_beyond_the_limit_is_refused(tmp_path: Path) -> None:
    files = {f"files/part{i}.bin": bytes(600 * 1024) for i in range(4)}
    path = write_tar(tmp_path / "big.airgap", BundleParts(INSIDE, files=files).entries(), gzip=True)
    assert refusal(path, limits=Limits(max_bytes=2 * 1024 * 1024)) == "E_SIZE_LIMIT"


def test_oversized_manifest_is_refused(tmp_path: Path) -> None:
    entries = [Entry("manifest.json", b" " * (17 * 1024 * 1024))]
    path = write_tar(tmp_path / "b.airgap", entries)
    assert refusal(path) == "E_SIZE_LIMIT"


def test_pax_global_header_is_refused(tmp_path: Path) -> None:
    entries = BundleParts(INSIDE).entries()
    path = tmp_path / "g.airgap"
    import io

    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "x"}
    ) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.size = len(entry.data)
            tar.addfile(info, io.BytesIO(entry.data))
    path.write_bytes(buffer.getvalue())
    assert refusal(path) == "E_UNSAFE_MEMBER"


def test_gzip_plain_equivalence(tmp_path: Path) -> None:
    entries = BundleParts(INSIDE).entries()
    plain = write_tar(tmp_path / "p.airgap", entries)
    zipped = tmp_path / "z.airgap"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    assert verify_bundle(plain, POLICY).items == verify_bundle(zipped, POLICY).items
