"""F5 inputs: MAC notations, dossiers and registration-key files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from airgap.errors import InputError
from airgap.inside.parsers.f5 import (
    normalize_mac,
    parse_dossier,
    parse_dossier_file,
    parse_regkey_file,
)

Sample = Callable[[str], Path]
Writer = Callable[..., Path]


@pytest.mark.parametrize(
    "text",
    [
        "00:50:56:9a:3c:e1",
        "00-50-56-9A-3C-E1",
        "0050.569a.3ce1",
        "0050569A3CE1",
        "00:50:56:9A:3c:E1",
        "  00:50:56:9a:3c:e1\n",
        "0:50:56:9a:3c:e1",
    ],
)
def test_mac_notations_normalize(text: str) -> None:
    assert normalize_mac(text) == "00:50:56:9A:3C:E1"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "00:50:56:9a:3c",
        "00:50:56:9a:3c:e1:ff",
        "00:50-56:9a:3c:e1",
        "0050.569a3ce1",
        "0050569a3ce",
        "0050569a3ceg",
        "00:50:56:9a:3c:e1x",
        "000:50:56:9a:3c:e1",
    ],
)
def test_bad_macs_are_refused(text: str) -> None:
    with pytest.raises(InputError) as info:
        normalize_mac(text)
    assert info.value.code == "E_INPUT"
    assert "is not a MAC address" in info.value.message


def test_dossier_sample(sample: Sample) -> None:
    path = sample("f5/dossier.txt")
    dossier = parse_dossier_file(path)
    assert dossier == path.read_text().strip()
    assert len(dossier) == 462


def test_dossier_wrapped_across_lines_is_joined(sample: Sample) -> None:
    dossier = sample("f5/dossier.txt").read_text().strip()
    wrapped = "\r\n".join(dossier[i : i + 64] for i in range(0, len(dossier), 64)) + "\n\n"
    assert parse_dossier("  " + wrapped, source="d.txt") == dossier


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("abcdef\n0123zz\n", "d.txt:2: "),
        ("Dossier : abcdef", "d.txt:1: "),
        ("   \n", "d.txt:1: "),
    ],
)
def test_bad_dossiers_are_refused(text: str, where: str) -> None:
    with pytest.raises(InputError) as info:
        parse_dossier(text, source="d.txt")
    assert info.value.message.startswith(where)


def test_regkey_sample(sample: Sample) -> None:
    text = sample("f5/regkey.txt").read_text()
    assert parse_regkey_file(text) == ("Q4821-07395-61827-30546-9172843", ("T582617-4093851",))


def test_regkey_file_with_comments_commas_and_lower_case() -> None:
    text = (
        "# base key\r\n"
        "q4821-07395-61827-30546-9172843\r\n"
        "\r\n"
        "T582617-4093851, A000001-0000002  # add-ons\r\n"
    )
    assert parse_regkey_file(text) == (
        "Q4821-07395-61827-30546-9172843",
        ("T582617-4093851", "A000001-0000002"),
    )


def test_regkey_base_only() -> None:
    assert parse_regkey_file("Q4821-07395-61827-30546-9172843") == (
        "Q4821-07395-61827-30546-9172843",
        (),
    )


@pytest.mark.parametrize(
    ("text", "line", "phrase"),
    [
        ("Q4821-07395-61827-30546\n", 1, "not a registration key"),
        ("Q4821-07395-61827-30546-9172843\nT582617\n", 2, "not an add-on key"),
        ("Q4821-07395-61827-30546-9172843\nT582617-4093851\nT582617-4093851\n", 3, "twice"),
        ("# nothing\n\n", 1, "no registration key"),
    ],
)
def test_bad_regkey_files(text: str, line: int, phrase: str) -> None:
    with pytest.raises(InputError) as info:
        parse_regkey_file(text, source="regkey.txt")
    assert info.value.message.startswith(f"regkey.txt:{line}: ")
    assert phrase in info.value.message


def test_the_other_f5_samples_are_not_dossiers(sample: Sample) -> None:
    # bigip.license and the BIG-IQ task JSON must never pass as a dossier by accident.
    for name in (
        "f5/bigip.license",
        "f5/bigiq-assign-unreachable-response.json",
        "f5/bigiq-task-failed.json",
    ):
        with pytest.raises(InputError):
            parse_dossier_file(sample(name))
