"""Made-up BIG-IP license text, dossiers and keys that the BIG-IQ emulator and tests share."""

from __future__ import annotations

import re
from datetime import date

from airgap.emulators.bigiq import REGKEY_READY, BigIqEmulator, dossier_for, license_text
from airgap.emulators.bigiq.license import assignment_license_text, fake_addon_key, fake_regkey
from airgap.emulators.bigiq.records import RegKeyPool

KEY = "D7391-48205-61738-29406-5813720"


def field(text: str, name: str) -> list[str]:
    return re.findall(rf"^{re.escape(name)}\s*:\s*(.*)$", text, re.MULTILINE)


def test_dossier_is_hex_shaped_like_the_sample_and_depends_on_every_key() -> None:
    dossier = dossier_for(KEY)
    assert re.fullmatch(r"[0-9a-f]{462}", dossier)
    assert dossier_for(KEY, []) == dossier
    assert dossier_for(KEY, ["A123456-1234567"]) != dossier
    assert dossier_for("E2846-19375-08264-73915-4602817") != dossier


def test_dossier_for_matches_what_the_emulator_shows_for_a_preloaded_key() -> None:
    pool = BigIqEmulator().pools["demo-regkey"]
    assert isinstance(pool, RegKeyPool)
    offering = pool.offerings[REGKEY_READY[0]]
    assert offering.dossier == dossier_for(REGKEY_READY[0])
    assert offering.license_text is not None
    assert field(offering.license_text, "Dossier") == [offering.dossier[:128]]


def test_license_text_names_the_key_the_dossier_and_the_dates() -> None:
    day = date(2024, 10, 14)
    text = license_text(KEY, dossier="ab" * 231, licensed=day)
    assert field(text, "Registration Key") == [KEY]
    assert field(text, "Dossier") == ["ab" * 64]
    assert field(text, "Licensed date") == ["20241014"]
    assert field(text, "License start") == []  # written only with a start and an end
    assert text.endswith("#-----------------------------------------\n")
    assert text == license_text(KEY, dossier="ab" * 231, licensed=day)


def test_utility_assignment_license_carries_term_sku_and_pool_information() -> None:
    mac = "00:50:56:9A:3C:E1"

    def text(*, utility: bool, **sku: str) -> str:
        return assignment_license_text(
            KEY,
            mac,
            task_id="t-1",
            licensed=date(2024, 1, 31),
            licensed_version="8.3.0",
            manager_id="m-1",
            utility=utility,
            **sku,
        )

    utility = text(utility=True, sku_keyword2="10G", unit_of_measure="monthly")
    regkey = text(utility=False)

    assert field(utility, "License start") == ["20240130"]
    assert field(utility, "License end") == ["20240302"]  # monthly: 31 days
    assert field(utility, "active module")[0].startswith("F5-BIG-MSP-BT-10G-LIC|")
    assert len(field(utility, "pool_license_information")) == 1
    assert field(regkey, "License start") == field(regkey, "pool_license_information") == []
    for license_file in (utility, regkey):
        assert f"Assigned to the device with MAC address {mac}" in license_file
        assert field(license_file, "license_manager_key") == field(utility, "license_manager_key")


def test_fake_keys_have_f5s_shape_and_follow_the_seed() -> None:
    assert re.fullmatch(r"[A-Z]\d{4}-\d{5}-\d{5}-\d{5}-\d{7}", fake_regkey("x"))
    assert re.fullmatch(r"[A-Z]\d{6}-\d{7}", fake_addon_key("x"))
    assert fake_regkey("x") == fake_regkey("x") != fake_regkey("y")
