"""The fields of a plan row: what each column means, where it goes in a request item, and its
JSON shape in the plan and in the request.

A field belongs to no action; actions (`airgap.model.actions`) say which fields they need or
allow. How a cell's text is checked and converted (patterns, files read, keys normalized) is
the plan loader's job (`airgap.inside.plan`), keyed by the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

__all__ = [
    "CSV_COLUMNS",
    "FIELDS",
    "HYPERVISORS",
    "MODES",
    "RESERVATION_TYPES",
    "UNITS_OF_MEASURE",
    "PlanField",
]

HYPERVISORS: Final = ("aws", "azure", "gce", "vmware", "hyperv", "kvm", "xen", "alibaba")
UNITS_OF_MEASURE: Final = ("yearly", "monthly", "daily", "hourly")
RESERVATION_TYPES: Final = ("SPECIFIC", "UNIVERSAL")
MODES: Final = ("automatic", "manual")

Target = Literal["device", "params", "files"]
PlanType = Literal["text", "list", "entitlements", "bool"]

_STRING: Final[Mapping[str, Any]] = MappingProxyType({"type": "string"})


@dataclass(frozen=True)
class PlanField:
    """One plan column.

    `target` says where a checked value goes: the item's `device` (hostname, pid, sn, mac),
    its `params` (under `param`, which is the field's own name unless set), or its attached
    `files`. `request_schema` is the JSON Schema of the value in a request item's params.
    """

    name: str
    description: str
    target: Target = "params"
    plan_type: PlanType = "text"
    param: str | None = None
    request_schema: Mapping[str, Any] = field(default_factory=lambda: _STRING)

    @property
    def param_name(self) -> str:
        """The key the value has in the request item's `params`."""
        return self.param or self.name


def _f(name: str, description: str, **kwargs: Any) -> PlanField:
    return PlanField(name, description, **kwargs)


def _enum(values: tuple[str, ...]) -> Mapping[str, Any]:
    return MappingProxyType({"enum": list(values)})


_STRINGS: Final = MappingProxyType({"type": "array", "items": {"type": "string"}})

# In the order of the CSV header. Adding a field is adding a line here (and, if its text needs
# more than a plain check, a converter in airgap.inside.plan).
_ALL: Final = (
    _f(
        "hostname",
        "Device hostname (letters, digits, '.', '_', '-'). Cisco device actions; optional.",
        target="device",
    ),
    _f("pid", "UDI product id, e.g. C9300-24T or ISR4331/K9.", target="device"),
    _f("sn", "UDI serial number, e.g. FOC2437L1ZK.", target="device"),
    _f(
        "entitlements",
        "Entitlements to reserve: 'TAG:COUNT;TAG:COUNT' (':COUNT' defaults to 1), or an array "
        'of \'TAG[:COUNT]\' strings or {"tag", "count"} objects. COUNT is a whole number from 1.',
        plan_type="entitlements",
        request_schema=MappingProxyType({"$ref": "#/$defs/entitlements"}),
    ),
    _f(
        "return_code",
        "Return code from `license smart authorization return local offline`: C + 8 groups "
        "of 6 + 1 of 3, dash separated.",
        request_schema=MappingProxyType({"type": "string", "minLength": 1}),
    ),
    _f(
        "request_code",
        "SLR request code from `license smart reservation request local`.",
        request_schema=MappingProxyType({"type": "string", "minLength": 1}),
    ),
    _f(
        "reservation_type",
        "SPECIFIC (default) or UNIVERSAL; any case.",
        request_schema=_enum(RESERVATION_TYPES),
    ),
    _f(
        "rum_file",
        "Path of a RUM report file saved on the device; attached exactly as saved.",
        target="files",
    ),
    _f(
        "mac",
        "BIG-IP MAC address in any usual notation (aa:bb:cc:dd:ee:ff, AA-BB-…, aabb.ccdd.eeff, "
        "aabbccddeeff); sent as AA:BB:CC:DD:EE:FF.",
        target="device",
    ),
    _f(
        "hypervisor",
        f"One of {', '.join(HYPERVISORS)}; any case.",
        request_schema=_enum(HYPERVISORS),
    ),
    _f(
        "pool",
        "BIG-IQ license pool name.",
        request_schema=MappingProxyType({"type": "string", "minLength": 1}),
    ),
    _f("sku_keyword1", "BIG-IQ SKU keyword 1 (utility pools)."),
    _f("sku_keyword2", "BIG-IQ SKU keyword 2 (utility pools)."),
    _f(
        "unit_of_measure",
        f"One of {', '.join(UNITS_OF_MEASURE)}; any case.",
        request_schema=_enum(UNITS_OF_MEASURE),
    ),
    _f("tenant", "BIG-IQ tenant, for chargeback reports."),
    _f("chargeback_tag", "BIG-IQ chargeback tag."),
    _f("regkey", "Base registration key, XXXXX-XXXXX-XXXXX-XXXXX-XXXXXXX."),
    _f(
        "add_on_keys",
        "Add-on keys, XXXXXXX-XXXXXXX each.",
        plan_type="list",
        request_schema=_STRINGS,
    ),
    _f("mode", "automatic or manual; manual needs dossier_file.", request_schema=_enum(MODES)),
    _f(
        "dossier_file",
        "Path of a file holding the BIG-IP dossier (hex); mode manual only. Its hex text is "
        "carried in the item's params as `dossier`.",
        param="dossier",
    ),
    _f(
        "accept_eula",
        "Accept the EULA when BIG-IQ asks (default false). In CSV: true/false, yes/no, 1/0.",
        plan_type="bool",
        request_schema=MappingProxyType({"type": "boolean"}),
    ),
    _f(
        "virtual_account",
        "Cisco virtual account name; for cisco.devices one or more names.",
        plan_type="list",
    ),
    _f(
        "tags",
        "Entitlement tags for cisco.usage_summary.",
        plan_type="list",
        request_schema=MappingProxyType(
            {"type": "array", "minItems": 1, "items": {"type": "string"}}
        ),
    ),
)

FIELDS: Final[Mapping[str, PlanField]] = MappingProxyType({f.name: f for f in _ALL})
CSV_COLUMNS: Final[tuple[str, ...]] = ("action", *FIELDS)
"""The plan's CSV header, in order: `action` then every field."""
