"""Local emulator of F5 BIG-IQ License Manager; see `app` for what it serves and leaves out.

The package re-exports the names other code imports from `airgap.emulators.bigiq`.
"""

from airgap.emulators.bigiq.app import (
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
    BigIqEmulator,
    MemberTask,
    Offering,
    Pool,
    RegKeyPool,
    RegKeySpec,
    Token,
    UtilityPool,
    license_text,
    normalize_mac,
    parse_pool_specs,
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
    "license_text",
    "normalize_mac",
    "parse_pool_specs",
]
