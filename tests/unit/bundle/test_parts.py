"""Media-sized parts: written atomically, joined by `cat`, read from the first part, and a
missing, cut or reordered part refused."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyrage
import pytest
from craft import reserve_item
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from airgap.bundle import PayloadFile, TrustPolicy, build_bundle, open_bundle, verify_bundle
from airgap.bundle.parts import (
    MIN_PART_SIZE,
    PartsReader,
    bundle_parts,
    parse_split,
    part_path,
    split_output,
)
from airgap.errors import ConfigError, MissingPart, VerificationError
from airgap.home import Home
from airgap.keys import Signer
from airgap.trust import SiteCard, TrustedKey, TrustStore

SIGNER = Signer("lab", "inside", Ed25519PrivateKey.generate())
POLICY = TrustPolicy(
    trust=TrustStore([TrustedKey(SiteCard("lab", "inside", SIGNER.public_key, "age1x"))])
)
CREATED = datetime.now(UTC).replace(microsecond=0)
BUNDLE_ID = "0b0e7c8e-4a51-4c1e-9d3a-2f6f6b1d2c3e"
PART = 64 * 1024  # bytes; small parts keep these tests fast (the CLI's minimum is 1 MiB)
PAYLOAD = os.urandom(PART * 3 + 1000)  # incompressible: gzip keeps it this size


def build(out: Path, *, split: int | None = PART, **overrides: object) -> Path:
    item = reserve_item(2)
    item.update(action="cisco.report_usage", params={}, files=["files/rum/big.xml"])
    arguments: dict[str, object] = {
        "kind": "request",
        "items": [reserve_item(1), item],
        "files": [PayloadFile("files/rum/big.xml", PAYLOAD)],
        "signers": [SIGNER],
        "sequence": 7,
        "created": CREATED,
        "expires": CREATED + timedelta(days=7),
        "audit_head": "a" * 64,
        "bundle_id": BUNDLE_ID,
        "split": split,
    }
    arguments.update(overrides)
    build_bundle(out, **arguments)  # type: ignore[arg-type]
    return out


def refusal(path: Path, policy: TrustPolicy = POLICY, identity: object | None = None) -> str:
    with pytest.raises(VerificationError) as caught:
        verify_bundle(path, policy, identity=identity)
    return caught.value.code


@pytest.mark.parametrize("compress", [False, True])
def test_parts_joined_by_cat_are_the_unsplit_bundle(tmp_path: Path, compress: bool) -> None:
    whole = build(tmp_path / "whole.airgap", split=None, compress=compress).read_bytes()
    base = tmp_path / "req.airgap"
    build(base, compress=compress)
    parts = sorted(tmp_path.glob("req.airgap.*"))
    assert [p.name for p in parts] == [f"req.airgap.{n:03d}" for n in range(1, len(parts) + 1)]
    assert len(parts) == -(-len(whole) // PART) >= 4
    assert all(p.stat().st_size == PART for p in parts[:-1])
    assert b"".join(p.read_bytes() for p in parts) == whole
    assert not base.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_written_bundle_lists_its_parts(tmp_path: Path) -> None:
    item = reserve_item(1)
    written = build_bundle(
        tmp_path / "req.airgap",
        kind="request",
        items=[item],
        files=[PayloadFile("files/big.bin", PAYLOAD)],
        signers=[SIGNER],
        sequence=1,
        created=CREATED,
        expires=CREATED + timedelta(days=1),
        audit_head="0" * 64,
        split=PART,
    )
    assert written.parts == tuple(sorted(tmp_path.glob("req.airgap.*")))
    assert sum(p.stat().st_size for p in written.parts) == written.size


@pytest.mark.parametrize("name", ["req.airgap.001", "req.airgap"])
def test_first_part_or_base_name_opens_the_whole_bundle(tmp_path: Path, name: str) -> None:
    build(tmp_path / "req.airgap")
    with open_bundle(tmp_path / name, POLICY, keep_files=True) as opened:
        assert opened.manifest.bundle_id == BUNDLE_ID
        assert opened.file_path("files/rum/big.xml").read_bytes() == PAYLOAD


def test_encrypted_bundle_in_parts_is_decrypted_across_them(tmp_path: Path) -> None:
    identity = pyrage.x25519.Identity.generate()
    build(tmp_path / "req.airgap", encrypt_to=[str(identity.to_public())], compress=True)
    assert len(list(tmp_path.glob("req.airgap.*"))) >= 4
    opened = verify_bundle(tmp_path / "req.airgap.001", POLICY, identity=identity)
    assert opened.encrypted and opened.compressed


def test_a_gap_in_the_numbering_is_a_missing_part(tmp_path: Path) -> None:
    build(tmp_path / "req.airgap")
    part_path(tmp_path / "req.airgap", 2).unlink()
    with pytest.raises(MissingPart) as caught:
        verify_bundle(tmp_path / "req.airgap.001", POLICY)
    assert caught.value.code == "E_MISSING_PART"
    assert "req.airgap.002" in caught.value.message
    assert caught.value.exit_code == 3


def test_a_later_part_given_first_is_refused_naming_the_first(tmp_path: Path) -> None:
    build(tmp_path / "req.airgap")
    with pytest.raises(MissingPart, match=r"give the first part req\.airgap\.001"):
        verify_bundle(tmp_path / "req.airgap.002", POLICY)


@pytest.mark.parametrize("variant", ["plain", "gzip", "age"])
def test_missing_last_part_is_a_missing_part(tmp_path: Path, variant: str) -> None:
    identity = pyrage.x25519.Identity.generate()
    extra: dict[str, object] = {
        "plain": {},
        "gzip": {"compress": True},
        "age": {"encrypt_to": [str(identity.to_public())]},
    }[variant]
    build(tmp_path / "req.airgap", **extra)
    parts = sorted(tmp_path.glob("req.airgap.*"))
    parts[-1].unlink()
    code = refusal(tmp_path / "req.airgap.001", identity=identity)
    assert code == "E_MISSING_PART"


def test_a_part_cut_short_is_a_missing_part(tmp_path: Path) -> None:
    build(tmp_path / "req.airgap")
    second = part_path(tmp_path / "req.airgap", 2)
    second.write_bytes(second.read_bytes()[:-100])
    with pytest.raises(MissingPart, match="cut short"):
        verify_bundle(tmp_path / "req.airgap.001", POLICY)


def test_reordered_parts_fail_the_bundles_own_checks(tmp_path: Path) -> None:
    build(tmp_path / "req.airgap")
    second, third = (part_path(tmp_path / "req.airgap", n) for n in (2, 3))
    data2, data3 = second.read_bytes(), third.read_bytes()
    second.write_bytes(data3)
    third.write_bytes(data2)
    code = refusal(tmp_path / "req.airgap.001")
    assert code in {"E_HASH_MISMATCH", "E_NOT_A_BUNDLE"}


def test_swapped_first_parts_are_not_a_bundle(tmp_path: Path) -> None:
    build(tmp_path / "req.airgap")
    first, second = (part_path(tmp_path / "req.airgap", n) for n in (1, 2))
    data1, data2 = first.read_bytes(), second.read_bytes()
    first.write_bytes(data2)
    second.write_bytes(data1)
    assert refusal(tmp_path / "req.airgap.001") == "E_NOT_A_BUNDLE"


def test_a_changed_byte_in_a_part_is_a_hash_mismatch(tmp_path: Path) -> None:
    build(tmp_path / "req.airgap")
    third = part_path(tmp_path / "req.airgap", 3)
    data = bytearray(third.read_bytes())
    data[100] ^= 0xFF
    third.write_bytes(bytes(data))
    assert refusal(tmp_path / "req.airgap.001") == "E_HASH_MISMATCH"


def test_a_whole_file_beside_its_parts_is_read_as_given(tmp_path: Path) -> None:
    build(tmp_path / "req.airgap")
    build(tmp_path / "req.airgap", split=None)
    assert bundle_parts(tmp_path / "req.airgap") == [tmp_path / "req.airgap"]
    assert len(bundle_parts(tmp_path / "req.airgap.001")) >= 4


def test_rewriting_with_fewer_parts_removes_the_stale_ones(tmp_path: Path) -> None:
    build(tmp_path / "req.airgap")
    before = sorted(tmp_path.glob("req.airgap.*"))
    build(tmp_path / "req.airgap", split=PART * 2)
    after = sorted(tmp_path.glob("req.airgap.*"))
    assert len(after) < len(before)
    verify_bundle(tmp_path / "req.airgap.001", POLICY)


def test_more_than_999_parts_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="999 parts"):
        build(tmp_path / "req.airgap", split=128)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_no_part(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), split_output(tmp_path / "x.airgap", 10) as target:
        target.write(b"a" * 35)
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_parts_appear_last_to_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renamed: list[str] = []
    real = os.replace

    def spy(source: str | Path, target: str | Path) -> None:
        renamed.append(Path(target).name)
        real(source, target)

    monkeypatch.setattr(os, "replace", spy)
    with split_output(tmp_path / "x.airgap", 10) as target:
        target.write(b"a" * 25)
    assert renamed == ["x.airgap.003", "x.airgap.002", "x.airgap.001"]


def test_parts_reader_reads_and_seeks_across_boundaries(tmp_path: Path) -> None:
    data = os.urandom(1000)
    paths = []
    for n, start in enumerate(range(0, 1000, 300), start=1):
        paths.append(tmp_path / f"x.{n:03d}")
        paths[-1].write_bytes(data[start : start + 300])
    reader = PartsReader(paths)
    assert reader.read(10) == data[:10]
    reader.seek(295)
    assert reader.read(10) == data[295:305]
    assert reader.read() == data[305:]
    assert reader.exhausted
    reader.seek(0)
    assert gzip.compress(reader.read(), mtime=0) == gzip.compress(data, mtime=0)
    reader.close()


@pytest.mark.parametrize(
    ("text", "size"), [("650MiB", 650 * 1024**2), ("4GiB", 4 * 1024**3), ("1MiB", 1024**2)]
)
def test_parse_split_sizes(text: str, size: int) -> None:
    assert parse_split(text) == size


@pytest.mark.parametrize("text", ["100KiB", "1000000", "lots"])
def test_parse_split_refuses_small_or_bad_sizes(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_split(text)
    assert MIN_PART_SIZE == 1024**2


# --- through the homes and the command line ------------------------------------------------


def _plan(tmp_path: Path) -> Path:
    plan = tmp_path / "plan.csv"
    rows = ["action,hostname,pid,sn,entitlements"]
    rows += [
        f"cisco.reserve,sw-{n},C9300-24T,FOC{n:08d},regid.2017-03.com.cisco.advantagek9:1"
        for n in range(1, 200)
    ]
    plan.write_text("\n".join(rows) + "\n")
    return plan


@pytest.fixture
def sites(
    make_home: Callable[..., Path], exchange_cards: Callable[[Path, Path], None]
) -> tuple[Path, Path]:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    return inside, outside


def test_pack_split_writes_parts_that_verify_and_approve_in_place(
    sites: tuple[Path, Path], tmp_path: Path, make_home: Callable[..., Path]
) -> None:
    from airgap.inside.pack import pack
    from airgap.review import approve, verify

    inside, outside = sites
    output = tmp_path / "req.airgap"
    result = pack(
        Home.open(inside),
        plans=[_plan(tmp_path)],
        udi_dir=None,
        entitlements=[],
        rum_dir=None,
        returns_dir=None,
        output=output,
        split=8192,
    )
    assert len(result.parts) >= 3
    assert result.parts == sorted(tmp_path.glob("req.airgap.*"))
    assert not output.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert verify(Home.open(outside), result.parts[0]).manifest.bundle_id == result.bundle_id

    # A second inside signer approves the parts in place: still parts of the same size.
    second = make_home("inside", name="lab2")
    Home.open(second).trust_store().add(Home.open(inside).card())
    Home.open(outside).trust_store().add(Home.open(second).card())
    approval = approve(Home.open(second), result.parts[0])
    assert approval.signatures == 2
    parts = sorted(tmp_path.glob("req.airgap.*"))
    assert parts[0].stat().st_size == 8192
    opened = verify(Home.open(outside), parts[0])
    assert sum(c.status == "valid" for c in opened.signatures) == 2


def test_pack_split_refuses_to_overwrite_an_existing_part(
    sites: tuple[Path, Path], tmp_path: Path
) -> None:
    from airgap.inside.pack import pack

    inside, _ = sites
    part_path(tmp_path / "req.airgap", 1).write_bytes(b"old")
    with pytest.raises(ConfigError, match="already exists"):
        pack(
            Home.open(inside),
            plans=[_plan(tmp_path)],
            udi_dir=None,
            entitlements=[],
            rum_dir=None,
            returns_dir=None,
            output=tmp_path / "req.airgap",
            split=8192,
        )
    assert part_path(tmp_path / "req.airgap", 1).read_bytes() == b"old"


def test_cli_pack_split_then_verify_inspect_from_the_first_part(
    sites: tuple[Path, Path], tmp_path: Path, cli_runner: Callable[..., object]
) -> None:
    import json

    inside, outside = sites
    output = tmp_path / "req.airgap"
    packed = cli_runner(
        "--home", str(inside), "--json", "inside", "pack", str(_plan(tmp_path)),
        "-o", str(output), "--split", "1MiB",
    )  # fmt: skip
    assert packed.exit_code == 0, packed.output  # type: ignore[attr-defined]
    document = json.loads(packed.output)  # type: ignore[attr-defined]
    assert document["parts"] == [str(part_path(output, 1))]
    for command in ("verify", "inspect"):
        result = cli_runner("--home", str(outside), command, str(part_path(output, 1)))
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    too_small = cli_runner(
        "--home", str(inside), "inside", "pack", str(_plan(tmp_path)),
        "-o", str(tmp_path / "other.airgap"), "--split", "64KiB",
    )  # fmt: skip
    assert too_small.exit_code == 1, too_small.output  # type: ignore[attr-defined]
    assert "minimum part size" in too_small.output  # type: ignore[attr-defined]


def test_cli_missing_part_exits_3_with_its_code(
    sites: tuple[Path, Path], tmp_path: Path, cli_runner: Callable[..., object]
) -> None:
    import json

    inside, outside = sites
    build_bundle(
        tmp_path / "req.airgap",
        kind="request",
        items=[reserve_item(1)],
        files=[PayloadFile("files/big.bin", PAYLOAD)],
        signers=[Home.open(inside).signer()],
        sequence=1,
        created=CREATED,
        expires=CREATED + timedelta(days=1),
        audit_head="0" * 64,
        split=PART,
    )
    part_path(tmp_path / "req.airgap", 2).unlink()
    result = cli_runner(
        "--home", str(outside), "--json", "verify", str(tmp_path / "req.airgap.001")
    )
    assert result.exit_code == 3, result.output  # type: ignore[attr-defined]
    error = json.loads(result.output)["error"]  # type: ignore[attr-defined]
    assert error["code"] == "E_MISSING_PART"
    assert "req.airgap.002" in error["message"]
