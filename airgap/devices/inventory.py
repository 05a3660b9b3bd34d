"""Read a device inventory: which devices to talk to, how, and with which named credential.

CSV with a header row (or JSON `{"devices": [{...}, ...]}`), one device a row:
`host,port,platform,transport,credential,hostname,tags`, plus optional `verify`, `ca_bundle`
(relative to the inventory's folder), `regkey` and `add_on_keys` (BIG-IP only). Every bad row is
reported with its line number in one `InventoryError`. Nothing is read from the environment
here: a credential is only a name, resolved later by `airgap.devices.credentials`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airgap.devices.base import Endpoint
from airgap.errors import InventoryError

__all__ = [
    "COLUMNS",
    "PLATFORMS",
    "TRANSPORTS",
    "DeviceEntry",
    "Inventory",
    "load_inventory",
    "parse_inventory",
]

PLATFORMS = ("ios-xe", "bigip")
# The transports each platform takes; the first is the default when the cell is empty.
TRANSPORTS: dict[str, tuple[str, ...]] = {"ios-xe": ("slp-rest", "ssh"), "bigip": ("icontrol",)}
DEFAULT_PORTS = {"slp-rest": 443, "icontrol": 443, "ssh": 22}
REQUIRED = ("host", "platform", "credential", "hostname")
COLUMNS = (
    "host",
    "port",
    "platform",
    "transport",
    "credential",
    "hostname",
    "tags",
    "verify",
    "ca_bundle",
    "regkey",
    "add_on_keys",
)
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_CREDENTIAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_HOST_RE = re.compile(r"[A-Za-z0-9._:-]{1,253}|\[[0-9A-Fa-f:.]+\]")
_TAG_RE = re.compile(r"[A-Za-z0-9._:/-]{1,64}")
_KEY_RE = re.compile(r"[A-Z0-9]{5,7}(?:-[A-Z0-9]{5,7}){1,4}")
_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
MAX_BYTES = 16 * 1024 * 1024  # an inventory larger than this is refused unread


@dataclass(frozen=True)
class DeviceEntry:
    """One device of an inventory, checked. `line` is where it is in the file (1-based)."""

    host: str
    port: int
    platform: str  # ios-xe | bigip
    transport: str  # slp-rest | ssh | icontrol
    credential: str  # a name, resolved by airgap.devices.credentials
    hostname: str
    tags: tuple[str, ...] = ()
    verify: bool | str = True  # True, False, or the path of a CA bundle (PEM)
    regkey: str | None = None  # BIG-IP base registration key
    add_on_keys: tuple[str, ...] = ()  # BIG-IP add-on keys
    line: int = 0

    def endpoint(self, *, timeout: float = 30.0) -> Endpoint:
        """The address a transport connects to.

        Args:
            timeout: seconds for connecting and for each read or command.

        Returns:
            The endpoint.
        """
        return Endpoint(
            host=self.host,
            port=self.port,
            hostname=self.hostname,
            verify=self.verify,
            timeout=timeout,
        )


@dataclass(frozen=True)
class Inventory:
    """A checked inventory: its devices in file order, and where it was read from."""

    devices: tuple[DeviceEntry, ...]
    source: str

    def __iter__(self) -> Iterator[DeviceEntry]:
        return iter(self.devices)

    def __len__(self) -> int:
        return len(self.devices)

    def by_hostname(self, hostname: str) -> DeviceEntry | None:
        """The device with this hostname (case-insensitive), if any."""
        wanted = hostname.lower()
        return next((d for d in self.devices if d.hostname.lower() == wanted), None)


def load_inventory(path: Path) -> Inventory:
    """Read and check an inventory file (`.json` is read as JSON, anything else as CSV).

    Args:
        path: the file; `ca_bundle` cells are relative to its folder.

    Raises:
        InventoryError: the file is missing, unreadable, too large, or has bad rows (every
            problem listed in `problems`, each with its line number).

    Returns:
        The inventory.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        message = f"cannot read the inventory {path}: {exc.strerror or exc}"
        raise InventoryError(message, problems=[message]) from exc
    if len(data) > MAX_BYTES:
        message = f"{path}: larger than {MAX_BYTES} bytes; not an inventory"
        raise InventoryError(message, problems=[message])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        message = f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise InventoryError(message, problems=[message]) from exc
    kind = "json" if path.suffix.lower() == ".json" else "csv"
    return parse_inventory(text, source=str(path), base=path.parent, kind=kind)


def parse_inventory(text: str, *, source: str, base: Path, kind: str = "csv") -> Inventory:
    """Check the text of an inventory.

    Args:
        text: the file's content.
        source: its name, for messages.
        base: the folder `ca_bundle` paths are relative to.
        kind: "csv" or "json".

    Raises:
        InventoryError: every bad row, each problem with its line number, in one error.

    Returns:
        The inventory.
    """
    problems: list[str] = []
    rows = (
        _json_rows(text, source, problems) if kind == "json" else _csv_rows(text, source, problems)
    )
    entries: list[DeviceEntry] = []
    for line, cells in rows:
        entry = _entry(cells, line=line, source=source, base=base, problems=problems)
        if entry is not None:
            entries.append(entry)
    if not entries and not problems:
        problems.append(f"{source}: the inventory lists no devices")
    _duplicates(entries, source, problems)
    if problems:
        count = len(problems)
        summary = problems[0] if count == 1 else f"{source}: {count} problems in the inventory"
        raise InventoryError(
            summary,
            problems=problems,
            hint="Fix the rows named and run again; nothing was contacted.",
        )
    return Inventory(tuple(entries), source)


def _csv_rows(text: str, source: str, problems: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    try:
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            if not any(cell.strip() for cell in cells) or cells[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in cells]
                bad = False
                for name in header:
                    if name not in COLUMNS:
                        problems.append(f"{source}:{start}: unknown column {name!r}")
                        bad = True
                    elif header.count(name) > 1:
                        problems.append(f"{source}:{start}: column {name!r} appears twice")
                        bad = True
                for name in REQUIRED:
                    if name not in header:
                        problems.append(f"{source}:{start}: the header has no {name!r} column")
                        bad = True
                if bad:
                    return
                continue
            if len(cells) > len(header):
                problems.append(
                    f"{source}:{start}: {len(cells)} cells but the header has {len(header)}"
                )
                continue
            yield start, {name: cells[i] if i < len(cells) else "" for i, name in enumerate(header)}
    except csv.Error as exc:
        problems.append(f"{source}:{reader.line_num}: not valid CSV ({exc})")
    if header is None:
        problems.append(f"{source}:1: no header row (expected {','.join(COLUMNS[:7])})")


def _json_rows(text: str, source: str, problems: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        problems.append(f"{source}:{getattr(exc, 'lineno', 1)}: not valid JSON ({exc})")
        return
    except RecursionError:
        problems.append(f"{source}:1: the JSON is nested too deeply to be an inventory")
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), list):
        problems.append(f'{source}:1: expected {{"devices": [...]}}')
        return
    extra = sorted(set(doc) - {"devices", "$schema"})
    if extra:
        problems.append(f"{source}:1: unknown key(s) {', '.join(map(repr, extra))}")
    lines = _object_lines(text)
    for index, item in enumerate(doc["devices"]):
        line = lines[index] if index < len(lines) else 1
        if not isinstance(item, dict):
            problems.append(f"{source}:{line}: devices[{index}] is not an object")
            continue
        cells: dict[str, Any] = {}
        for key, value in item.items():
            if key not in COLUMNS:
                problems.append(f"{source}:{line}: devices[{index}]: unknown key {key!r}")
                continue
            cells[key] = value
        yield line, cells


def _object_lines(text: str) -> list[int]:
    """The line where each element of the `devices` array starts (for messages)."""
    lines: list[int] = []
    start = text.find('"devices"')
    if start < 0:
        return lines
    depth = 0
    in_string = escaped = expect = False
    line = text.count("\n", 0, start) + 1
    for ch in text[start + len('"devices"') :]:
        if ch == "\n":
            line += 1
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if expect and depth == 1 and not ch.isspace() and ch != "]":
            lines.append(line)
            expect = False
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth == 1:
                expect = True
        elif ch in "]}":
            depth -= 1
            if depth <= 0:
                break
        elif ch == "," and depth == 1:
            expect = True
    return lines


def _text(value: Any, name: str, origin: str, problems: list[str]) -> str | None:
    """A cell as stripped text; JSON numbers and booleans are accepted where they fit."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    if (
        isinstance(value, list)
        and name in ("tags", "add_on_keys")
        and all(isinstance(v, str) for v in value)
    ):
        return ";".join(value)
    if not isinstance(value, str):
        problems.append(f"{origin}: {name} must be text")
        return None
    return value.strip()


def _entry(
    cells: dict[str, Any], *, line: int, source: str, base: Path, problems: list[str]
) -> DeviceEntry | None:
    origin = f"{source}:{line}"
    before = len(problems)
    values: dict[str, str] = {}
    for name in COLUMNS:
        value = _text(cells.get(name), name, origin, problems)
        values[name] = value or ""
    for name in REQUIRED:
        if not values[name]:
            problems.append(f"{origin}: {name} is empty")
    host = values["host"]
    if host and not _HOST_RE.fullmatch(host):
        problems.append(f"{origin}: host {host!r} is not a name or an IP address")
    platform = values["platform"].lower()
    transport = values["transport"].lower()
    if platform and platform not in PLATFORMS:
        problems.append(f"{origin}: platform {values['platform']!r} is not one of ios-xe, bigip")
    elif platform:
        allowed = TRANSPORTS[platform]
        if not transport:
            transport = allowed[0]
        elif transport not in allowed:
            problems.append(
                f"{origin}: transport {values['transport']!r} is not one of "
                f"{', '.join(allowed)} for {platform}"
            )
    port = 0
    if values["port"]:
        try:
            port = int(values["port"])
        except ValueError:
            port = -1
        if not 1 <= port <= 65535:
            problems.append(f"{origin}: port {values['port']!r} is not a number from 1 to 65535")
    elif transport in DEFAULT_PORTS:
        port = DEFAULT_PORTS[transport]
    credential = values["credential"]
    if credential and not _CREDENTIAL_RE.fullmatch(credential):
        problems.append(
            f"{origin}: credential {credential!r} must be letters, digits, '_' or '-' "
            "(it names AIRGAP_DEVICE_<NAME>_… variables)"
        )
    hostname = values["hostname"]
    if hostname and not _HOSTNAME_RE.fullmatch(hostname):
        problems.append(f"{origin}: hostname {hostname!r} is not a device hostname")
    tags = _split(values["tags"])
    for tag in tags:
        if not _TAG_RE.fullmatch(tag):
            problems.append(f"{origin}: tag {tag!r} is not a tag (letters, digits, . _ : / -)")
    verify: bool | str = True
    flag = values["verify"].lower()
    if flag and flag not in _TRUE + _FALSE:
        problems.append(f"{origin}: verify {values['verify']!r} is not true or false")
    ca_bundle = values["ca_bundle"]
    if flag in _FALSE:
        verify = False
        if ca_bundle:
            problems.append(f"{origin}: verify=false and a ca_bundle contradict each other")
    elif ca_bundle:
        verify = str((base / ca_bundle) if not Path(ca_bundle).is_absolute() else Path(ca_bundle))
    if transport == "ssh" and (ca_bundle or flag):
        problems.append(f"{origin}: verify and ca_bundle are for HTTPS transports, not ssh")
    regkey = values["regkey"] or None
    add_on_keys = _split(values["add_on_keys"])
    if platform == "ios-xe" and (regkey or add_on_keys):
        problems.append(f"{origin}: regkey and add_on_keys are for bigip rows")
    for key in ([regkey] if regkey else []) + list(add_on_keys):
        if not _KEY_RE.fullmatch(key):
            problems.append(f"{origin}: {key!r} is not an F5 registration key")
    if len(problems) > before:
        return None
    return DeviceEntry(
        host=host,
        port=port,
        platform=platform,
        transport=transport,
        credential=credential,
        hostname=hostname,
        tags=tags,
        verify=verify,
        regkey=regkey,
        add_on_keys=add_on_keys,
        line=line,
    )


def _split(cell: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in cell.split(";") if part.strip())


def _duplicates(entries: list[DeviceEntry], source: str, problems: list[str]) -> None:
    addresses: dict[tuple[str, int], int] = {}
    hostnames: dict[str, int] = {}
    for entry in entries:
        address = (entry.host.lower(), entry.port)
        first = addresses.setdefault(address, entry.line)
        if first != entry.line:
            problems.append(
                f"{source}:{entry.line}: {entry.host}:{entry.port} is already listed "
                f"on line {first}"
            )
        named = hostnames.setdefault(entry.hostname.lower(), entry.line)
        if named != entry.line:
            problems.append(
                f"{source}:{entry.line}: hostname {entry.hostname} is already listed "
                f"on line {named}"
            )
