"""Where a device is and who to log in as: the two values every transport takes.

Built from an inventory row (`airgap.devices.inventory`) and a resolved credential
(`airgap.devices.credentials`); transports take these values and never read the inventory,
the environment or a prompt themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Endpoint:
    """One device's management address, as one inventory row gives it."""

    host: str  # name or IP address
    port: int
    hostname: str  # the device's own name (what its prompt and files show)
    verify: bool | str = True  # HTTPS: True, False, or the path of a CA bundle (PEM)
    timeout: float = 30.0  # seconds for connecting and for each read or command


@dataclass(frozen=True)
class Login:
    """Credentials for one device. Never printed: the password stays out of `repr`."""

    username: str
    password: str | None = field(default=None, repr=False)
    key_file: Path | None = None  # SSH private key, instead of or beside a password
