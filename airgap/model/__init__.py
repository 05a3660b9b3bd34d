"""What airgap's items are: the action catalogue, plan fields, device keys and typed items.

Neutral ground like `airgap.formats`: both sides of the gap import it, and it imports neither.
"""

from airgap.model.actions import (
    ACTIONS,
    Action,
    DeviceGuide,
    action,
    actions_of,
    catalogue_generation,
    registered,
    vendors,
)
from airgap.model.devices import device_key, normalize_mac, udi_key
from airgap.model.fields import CSV_COLUMNS, FIELDS, PlanField
from airgap.model.items import RequestItem, ResponseItem

__all__ = [
    "ACTIONS",
    "CSV_COLUMNS",
    "FIELDS",
    "Action",
    "DeviceGuide",
    "PlanField",
    "RequestItem",
    "ResponseItem",
    "action",
    "actions_of",
    "catalogue_generation",
    "device_key",
    "normalize_mac",
    "registered",
    "udi_key",
    "vendors",
]
