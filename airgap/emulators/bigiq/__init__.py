"""Local emulator of F5 BIG-IQ License Manager: tokens, utility and RegKey pools, license tasks.

`BigIqEmulator` (in `app`) is an `App` for `airgap.emulators.server.EmulatorServer`; `app`'s
docstring says what it serves and what it does not model. The other modules each do one job:

- `records`: the state dataclasses and constants (demo keys, statuses, EULA text, pool defaults).
- `tokens`: login check, token issue, expiry, refresh exchange and logout.
- `odata`: the `$filter`, `$orderby`, `$skip`, `$top` and `$select` query options.
- `license`: BIG-IP license text, dossiers and fake keys, also for other emulators and tests.

This package re-exports the names other code imports from `airgap.emulators.bigiq`. Nothing in it
imports `airgap.outside` or `airgap.inside`: the clients are tested against this emulator, not
against themselves.
"""

from airgap.emulators.bigiq.app import BigIqEmulator, parse_pool_specs
from airgap.emulators.bigiq.license import dossier_for, license_text
from airgap.emulators.bigiq.records import (
    DEFAULT_UTILITY_POOLS,
    DEMO_REGKEY_POOL,
    EULA_TEXT,
    HYPERVISORS,
    REGKEY_EULA,
    REGKEY_EULA_2,
    REGKEY_FAIL_ONCE,
    REGKEY_PLAIN,
    REGKEY_READY,
    UNITS_OF_MEASURE,
    Assignment,
    MemberTask,
    Offering,
    Pool,
    RegKeyPool,
    RegKeySpec,
    Token,
    UtilityPool,
    normalize_mac,
)

__all__ = [
    "DEFAULT_UTILITY_POOLS",
    "DEMO_REGKEY_POOL",
    "EULA_TEXT",
    "HYPERVISORS",
    "REGKEY_EULA",
    "REGKEY_EULA_2",
    "REGKEY_FAIL_ONCE",
    "REGKEY_PLAIN",
    "REGKEY_READY",
    "UNITS_OF_MEASURE",
    "Assignment",
    "BigIqEmulator",
    "MemberTask",
    "Offering",
    "Pool",
    "RegKeyPool",
    "RegKeySpec",
    "Token",
    "UtilityPool",
    "dossier_for",
    "license_text",
    "normalize_mac",
    "parse_pool_specs",
]
