"""Typed request and response items: the `items.json` entries as values with names.

A bundle's items are schema-checked JSON; these classes give them attribute access, the
catalogue entry of their action and their device key, and turn back into the same JSON. They
hold references to the parsed JSON's own dicts (no deep copies), so wrapping 100,000 items is
cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from airgap.model.actions import Action, action
from airgap.model.devices import device_key

__all__ = ["RequestItem", "ResponseItem", "Status"]

Status = Literal["ok", "failed", "pending", "needs_attention"]


@dataclass(frozen=True, slots=True)
class RequestItem:
    """One request item: an action for a device (or none), its params and attached files."""

    id: str
    action: str
    device: Mapping[str, Any] | None
    params: Mapping[str, Any]
    files: tuple[str, ...] = ()  # member paths, `files/<item>/<name>`

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> RequestItem:
        """Wrap a schema-checked request item."""
        return cls(
            id=str(item["id"]),
            action=str(item["action"]),
            device=item.get("device"),
            params=item.get("params") or {},
            files=tuple(item.get("files") or ()),
        )

    def to_json(self) -> dict[str, Any]:
        """The item as `items.json` holds it."""
        return {
            "id": self.id,
            "action": self.action,
            "device": None if self.device is None else dict(self.device),
            "params": dict(self.params),
            "files": list(self.files),
        }

    @property
    def entry(self) -> Action:
        """The action's catalogue entry."""
        return action(self.action)

    @property
    def device_key(self) -> str | None:
        """`PID:SN`, a MAC, or None for a device-less item."""
        return device_key({"device": self.device})

    @property
    def udi(self) -> tuple[str, str] | None:
        """(pid, sn) of a Cisco device item."""
        udi = (self.device or {}).get("udi")
        return (str(udi["pid"]), str(udi["sn"])) if isinstance(udi, Mapping) else None

    @property
    def mac(self) -> str | None:
        """`AA:BB:CC:DD:EE:FF` of a BIG-IP item."""
        mac = (self.device or {}).get("mac")
        return str(mac) if mac else None

    @property
    def hostname(self) -> str | None:
        """The device's hostname, when the item names one."""
        host = (self.device or {}).get("hostname")
        return str(host) if host else None


@dataclass(frozen=True, slots=True)
class ResponseItem:
    """One response item: what became of one request item at its vendor."""

    id: str
    request_item: str
    action: str
    status: Status
    result: Mapping[str, Any] = field(default_factory=dict)
    error: Mapping[str, Any] | None = None
    files: tuple[str, ...] = ()
    vendor_refs: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> ResponseItem:
        """Wrap a schema-checked response item."""
        return cls(
            id=str(item["id"]),
            request_item=str(item["request_item"]),
            action=str(item["action"]),
            status=item["status"],
            result=item.get("result") or {},
            error=item.get("error"),
            files=tuple(item.get("files") or ()),
            vendor_refs=item.get("vendor_refs") or {},
        )

    def to_json(self) -> dict[str, Any]:
        """The item as `items.json` holds it."""
        return {
            "id": self.id,
            "request_item": self.request_item,
            "action": self.action,
            "status": self.status,
            "result": dict(self.result),
            "error": None if self.error is None else dict(self.error),
            "files": list(self.files),
            "vendor_refs": dict(self.vendor_refs),
        }

    @property
    def entry(self) -> Action:
        """The action's catalogue entry."""
        return action(self.action)
