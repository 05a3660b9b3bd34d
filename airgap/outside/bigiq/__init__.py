"""F5 BIG-IQ License Manager client: UNREACHABLE assign/revoke, RegKey activation, assignments.

`BigIqClient` implements `airgap.outside.vendor.VendorClient` for the four `bigiq.*` actions:

- `bigiq.assign` / `bigiq.revoke` (`members`): one POST to member-management (`assignmentType`
  UNREACHABLE), then GET the task until FINISHED (`bigip.license` / `revoke.json`) or FAILED
  (BIG-IQ's `errorMessage` verbatim).
- `bigiq.regkey_activate` (`regkey`): add the registration key to a RegKey pool (one POST),
  then walk the offering to READY (`license.txt`, plus `eula.txt` when a EULA was shown); manual
  activation gets its license text from a `LicenseSource` such as `LicenseDirectory`.
- `bigiq.assignments` (`assignments`): the assignment list as `result.json`.

`session` holds the login, the token exchange and the logout (`BigIqSession`, on top of
`airgap.outside.session.TokenSession`); `settings` reads config (`BigIqSettings`); `client`
ties the jobs together (`BigIqClient`).

Not covered: MANAGED/UNMANAGED assignments, purchased pools, pool administration, partitions.
"""

from airgap.outside.bigiq._common import ASSIGN, ASSIGNMENTS, REGKEY_ACTIVATE, REVOKE
from airgap.outside.bigiq.client import ACTIONS, MIN_VERSION, BigIqClient
from airgap.outside.bigiq.regkey import LicenseDirectory, LicenseSource
from airgap.outside.bigiq.session import BigIqSession
from airgap.outside.bigiq.settings import BigIqSettings

__all__ = [
    "ACTIONS",
    "ASSIGN",
    "ASSIGNMENTS",
    "MIN_VERSION",
    "REGKEY_ACTIVATE",
    "REVOKE",
    "BigIqClient",
    "BigIqSession",
    "BigIqSettings",
    "LicenseDirectory",
    "LicenseSource",
]
