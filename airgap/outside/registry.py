"""Which client class serves which vendor: the one table to extend when adding a vendor.

Classes are named by module path and imported only when a run needs them, so importing this
module (or the CLI) does not import `requests` or any vendor client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final, cast

from airgap.errors import ConfigError

if TYPE_CHECKING:
    from airgap.config import Config
    from airgap.outside.vendor import ClientOptions, VendorClient, VendorClientClass

__all__ = ["CLIENTS", "build_client", "client_class", "vendors"]

CLIENTS: Final[dict[str, str]] = {
    "cisco": "airgap.outside.cisco:CiscoClient",
    "bigiq": "airgap.outside.bigiq:BigIqClient",
}
"""Vendor name (the action prefix, `cisco` in `cisco.reserve`) -> `module:Class`."""


def vendors() -> list[str]:
    """The vendors a client is registered for, sorted."""
    return sorted(CLIENTS)


def client_class(vendor: str) -> VendorClientClass:
    """Import and return the client class of `vendor`.

    Args:
        vendor: an action prefix such as `cisco`.

    Raises:
        ConfigError: (E_CONFIG) no client is registered for it.

    Returns:
        The class; its `vendor` attribute is `vendor`.
    """
    target = CLIENTS.get(vendor)
    if target is None:
        raise ConfigError(
            f"no client for vendor {vendor!r}",
            hint=f"Known vendors: {', '.join(vendors())}.",
        )
    module, _, name = target.partition(":")
    cls = cast("VendorClientClass", getattr(importlib.import_module(module), name))
    if cls.vendor != vendor:  # a wrong table entry, caught by the tests
        raise ConfigError(f"{target} serves vendor {cls.vendor!r}, not {vendor!r}")
    return cls


def build_client(vendor: str, config: Config, options: ClientOptions) -> VendorClient:
    """Build the client of `vendor` from the home's config and the run's options.

    Args:
        vendor: an action prefix such as `cisco`.
        config: the home's merged configuration, with the environment secrets.
        options: the run's retry policy, rate limiter and vendor extras.

    Raises:
        ConfigError: (E_CONFIG) no client for the vendor, or a setting or secret is missing.

    Returns:
        The client; nothing is sent until its `start()`.
    """
    return client_class(vendor).from_config(config, options)
