"""The action catalogue: everything airgap knows about each action, declared once.

An action is one thing the outside asks a vendor to do for one device (or none): its vendor,
the plan fields it needs and allows, the shape of its request item, whether its vendor call
mutates and is polled, which files a response may carry for it and which one it cannot be
without, where those files land inside the gap, and the device commands that INSTRUCTIONS.md
shows. The plan loader, the JSON Schemas, the vendor clients, the processor, the importer and
the instructions all read this table; adding an action is adding an entry here and one client
method (and an emulator route to test it).

This module is data and lookups only: no parsing, no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from airgap.model.fields import FIELDS, PlanField

__all__ = [
    "ACTIONS",
    "Action",
    "ApplyKind",
    "DeviceGuide",
    "DeviceKind",
    "action",
    "actions_of",
    "catalogue_generation",
    "registered",
    "vendors",
]

DeviceKind = Literal["udi", "mac", "none"]
ApplyKind = Literal["ios-xe-import", "bigip-license"]
Dedupe = Literal["device", "files", "params"]


@dataclass(frozen=True)
class DeviceGuide:
    """What the operator does with an `ok` item's files, as INSTRUCTIONS.md words it.

    `intro` and `commands` apply when the item carries `file`; `note` is shown otherwise (or
    always, for actions with nothing to put on a device). Text may use `{path}` (the file as
    shown), `{name}` (its base name), `{shown}` (" (`path`)" or ""), `{shown_or_summary}` and the
    item's params by name (`{pool}`). `kept` says why other files are kept.
    """

    file: str | None = None
    intro: str = ""
    commands: tuple[str, ...] = ()
    note: str = "Done; nothing to do on a device."
    kept: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    """One action of the catalogue (see the module docstring)."""

    name: str  # `<vendor>.<verb>`
    summary: str
    device: DeviceKind
    required: tuple[str, ...] = ()  # plan fields an item must have
    optional: tuple[str, ...] = ()  # plan fields an item may have
    renames: Mapping[str, str] = field(default_factory=dict)  # plan field -> param name
    param_schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # overrides
    params_required: tuple[str, ...] | None = None  # default: the required fields' params
    defaults: Mapping[str, Any] = field(default_factory=dict)  # params set when absent
    mutating: bool = False  # the vendor call changes vendor state (at-most-once applies)
    polled: bool = False  # the vendor answers later: the processor polls
    files: tuple[str, ...] = ()  # response file names the outside may attach
    required_file: str | None = None  # the file an `ok` item cannot be without
    result_file: str | None = None  # with no file, the item's result is written under this name
    query: bool = False  # an account-wide question; its answer goes to queries/<item>.json
    folder_param: str | None = None  # device-less, non-query: output folder named by this param
    label: str | None = None  # how INSTRUCTIONS.md names a device-less item; params by name
    numbered_file: str | None = None  # written as `<stem>-<n><suffix>`, n per device folder
    dedupe: Dedupe | str | None = None  # what makes two items the same request (default: see)
    guide: DeviceGuide = field(default_factory=DeviceGuide)
    apply: ApplyKind | None = None  # how `inside apply` puts the guide's file on the device

    @property
    def vendor(self) -> str:
        """`cisco.reserve` → `cisco`."""
        return self.name.split(".", 1)[0]

    @property
    def fields(self) -> tuple[PlanField, ...]:
        """The plan fields this action takes, required first."""
        return tuple(FIELDS[name] for name in (*self.required, *self.optional))

    def param_of(self, plan_field: PlanField) -> str:
        """The params key a plan field's value goes under for this action."""
        return self.renames.get(plan_field.name, plan_field.param_name)

    def request_params(self) -> dict[str, Mapping[str, Any]]:
        """Param name → JSON Schema of the value, for this action's request items."""
        schemas: dict[str, Mapping[str, Any]] = {}
        for plan_field in self.fields:
            if plan_field.target == "params":
                name = self.param_of(plan_field)
                schemas[name] = self.param_schemas.get(name, plan_field.request_schema)
        for name, schema in self.param_schemas.items():
            schemas.setdefault(name, schema)
        return schemas

    def required_params(self) -> tuple[str, ...]:
        """The params a request item of this action must carry."""
        if self.params_required is not None:
            return self.params_required
        return tuple(
            self.param_of(FIELDS[name]) for name in self.required if FIELDS[name].target == "params"
        )

    @property
    def needs_files(self) -> bool:
        """Whether a request item carries attached files (a RUM report)."""
        return any(FIELDS[name].target == "files" for name in self.required)

    @property
    def dedupe_by(self) -> str:
        """`device`, `files`, `params`, or the name of the param that identifies the item.

        By default a device action is one request per device, a query one per parameters.
        """
        if self.dedupe is not None:
            return self.dedupe
        return "device" if self.device != "none" else "params"

    def file_named(self, files: Sequence[str], name: str | None) -> str | None:
        """The one of `files` (paths) whose base name is `name`, or a numbered copy of it
        (`ack-2.xml` for `ack.xml`); None when there is none."""
        if name is None:
            return None
        stem, dot, suffix = name.rpartition(".")
        for path in files:
            base = path.rsplit("/", 1)[-1]
            if base == name:
                return path
            numbered = self.numbered_file == name and base.startswith(f"{stem}-")
            if numbered and base.endswith(f"{dot}{suffix}"):
                return path
        return None

    def device_file(self, files: Sequence[str]) -> str | None:
        """The file of an `ok` item that goes onto the device (the guide's file), if any."""
        return self.file_named(files, self.guide.file)

    @property
    def response_files(self) -> frozenset[str]:
        """Every file name a response item of this action may carry."""
        return frozenset((*self.files, *([self.result_file] if self.result_file else [])))


_IMPORT_ON_CISCO: Final = ("copy usbflash0:{name} flash:", "license smart import flash:{name}")
_TO_USB: Final = "Copy it to the USB stick, then on the device:"

_CATALOGUE: Final = (
    Action(
        "cisco.reserve",
        "Reserve licenses for a device (Smart Licensing Using Policy offline authorization).",
        device="udi",
        required=("pid", "sn", "entitlements"),
        optional=("hostname", "virtual_account"),
        mutating=True,
        polled=True,
        files=("lic.txt",),
        required_file="lic.txt",
        guide=DeviceGuide(
            file="lic.txt",
            intro=f"Authorization code: `{{path}}`. {_TO_USB}",
            commands=_IMPORT_ON_CISCO,
        ),
        apply="ios-xe-import",
    ),
    Action(
        "cisco.report_usage",
        "Report a device's signed usage (RUM) and bring back Cisco's acknowledgement.",
        device="udi",
        required=("rum_file",),
        mutating=True,
        polled=True,
        files=("ack.xml",),
        required_file="ack.xml",
        numbered_file="ack.xml",
        dedupe="files",  # a device sends many reports; the same report twice is the repeat
        guide=DeviceGuide(
            file="ack.xml",
            intro=f"Usage acknowledgement: `{{path}}`. {_TO_USB}",
            commands=_IMPORT_ON_CISCO,
        ),
        apply="ios-xe-import",
    ),
    Action(
        "cisco.return",
        "Return a device's reserved licenses with the return code it printed.",
        device="udi",
        required=("pid", "sn", "return_code"),
        optional=("hostname", "virtual_account"),
        mutating=True,
        polled=True,
        files=("return.json",),
        result_file="return.json",
        guide=DeviceGuide(
            note="Return confirmed{shown}: Cisco accepted the device's return code and released "
            "its reserved licenses back to the virtual account. Nothing is imported on the "
            "device; it dropped its authorization when it printed the return code.",
        ),
    ),
    Action(
        "cisco.slr_reserve",
        "Specific or universal license reservation (SLR) for an older device.",
        device="udi",
        required=("request_code",),
        optional=("pid", "sn", "hostname", "reservation_type", "entitlements", "virtual_account"),
        param_schemas={"entitlements": MappingProxyType({"type": "array"})},
        params_required=("request_code", "reservation_type", "entitlements"),
        defaults={"reservation_type": "SPECIFIC", "entitlements": []},
        mutating=True,
        files=("slr-auth.txt",),
        required_file="slr-auth.txt",
        guide=DeviceGuide(
            file="slr-auth.txt",
            intro=f"SLR authorization code: `{{path}}`. {_TO_USB}",
            commands=(
                "copy usbflash0:{name} flash:",
                "license smart reservation install file flash:{name}",
            ),
        ),
    ),
    Action(
        "cisco.usage_summary",
        "Licenses in use and available, by entitlement tag.",
        device="none",
        required=("tags",),
        files=("result.json",),
        result_file="result.json",
        query=True,
        guide=DeviceGuide(note="Result of the query: {shown_or_summary}."),
    ),
    Action(
        "cisco.devices",
        "The devices of one or more virtual accounts.",
        device="none",
        required=("virtual_account",),
        renames={"virtual_account": "virtual_accounts"},
        param_schemas={
            "virtual_accounts": MappingProxyType({"type": "array", "items": {"type": "string"}})
        },
        params_required=(),
        files=("result.json",),
        result_file="result.json",
        query=True,
        guide=DeviceGuide(note="Result of the query: {shown_or_summary}."),
    ),
    Action(
        "bigiq.assign",
        "License a BIG-IP from a BIG-IQ utility pool (unreachable device: license text).",
        device="mac",
        required=("mac", "pool", "hypervisor"),
        optional=("sku_keyword1", "sku_keyword2", "unit_of_measure", "tenant", "chargeback_tag"),
        mutating=True,
        polled=True,
        files=("bigip.license",),
        required_file="bigip.license",
        guide=DeviceGuide(
            file="bigip.license",
            intro="License: `{path}`. Put its text in `/config/bigip.license` on the BIG-IP "
            "(for example `scp bigip.license root@BIG-IP:/config/bigip.license`), then on the "
            "BIG-IP run:",
            commands=("reloadlic",),
        ),
        apply="bigip-license",
    ),
    Action(
        "bigiq.revoke",
        "Release a BIG-IP's license back to its BIG-IQ pool.",
        device="mac",
        required=("mac", "pool"),
        mutating=True,
        polled=True,
        files=("revoke.json",),
        result_file="revoke.json",
        guide=DeviceGuide(
            note="Revocation confirmed{shown}: BIG-IQ released this MAC address's license back "
            "to the pool {pool}. The BIG-IP is no longer licensed.",
        ),
    ),
    Action(
        "bigiq.regkey_activate",
        "Activate a registration key in a BIG-IQ RegKey pool (automatic or with a dossier).",
        device="none",
        required=("pool", "regkey", "mode"),
        optional=("add_on_keys", "dossier_file", "accept_eula"),
        defaults={"accept_eula": False},
        mutating=True,
        polled=True,
        files=("license.txt", "eula.txt"),
        folder_param="regkey",
        label="registration key {regkey}",
        dedupe="regkey",
        guide=DeviceGuide(
            file="license.txt",
            intro="License text: `{path}`. On the BIG-IP that gave the dossier, put it in "
            "`/config/bigip.license`, then run:",
            commands=("reloadlic",),
            note="The registration key is active in its BIG-IQ pool.",
            kept={"eula.txt": "The EULA that was accepted is kept in `{path}` for the audit."},
        ),
        apply="bigip-license",
    ),
    Action(
        "bigiq.assignments",
        "The license assignments BIG-IQ holds (optionally of one pool).",
        device="none",
        optional=("pool",),
        files=("result.json",),
        result_file="result.json",
        query=True,
        guide=DeviceGuide(note="Result of the query: {shown_or_summary}."),
    ),
)

_lock = threading.Lock()
_registry: dict[str, Action] = {entry.name: entry for entry in _CATALOGUE}
_generation = 0

ACTIONS: Final[Mapping[str, Action]] = MappingProxyType(_registry)
"""Every action by name, in catalogue order (a live, read-only view)."""


def action(name: str) -> Action:
    """The catalogue entry of an action.

    Raises:
        KeyError: no such action (callers that read untrusted names check `name in ACTIONS`).
    """
    return _registry[name]


def actions_of(vendor: str) -> frozenset[str]:
    """The names of a vendor's actions (`cisco` → cisco.reserve, …)."""
    return frozenset(name for name, entry in _registry.items() if entry.vendor == vendor)


def vendors() -> tuple[str, ...]:
    """Every vendor with at least one action, in catalogue order."""
    return tuple(dict.fromkeys(entry.vendor for entry in _registry.values()))


def catalogue_generation() -> int:
    """A number that changes whenever the catalogue does (for caches derived from it)."""
    return _generation


@contextmanager
def registered(extra: Action) -> Iterator[Action]:
    """Add an action to the catalogue for the duration of a block (tests, plug-ins).

    Raises:
        ValueError: an action of that name exists, or it names an unknown plan field.
    """
    global _generation
    unknown = set(extra.required) | set(extra.optional)
    unknown -= set(FIELDS)
    if unknown:
        raise ValueError(f"action {extra.name} names unknown plan fields {sorted(unknown)}")
    with _lock:
        if extra.name in _registry:
            raise ValueError(f"action {extra.name} is already in the catalogue")
        _registry[extra.name] = extra
        _generation += 1
    try:
        yield extra
    finally:
        with _lock:
            _registry.pop(extra.name, None)
            _generation += 1
