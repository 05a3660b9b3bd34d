"""Open a transport to one device by the inventory's platform and transport names.

The one place that knows which module implements which transport; each is imported only when
a device needs it (asyncssh and requests are not loaded for a run that does not use them).
"""

from __future__ import annotations

from airgap.devices.base import Endpoint, Login
from airgap.devices.hostkeys import KnownHosts
from airgap.devices.iosxe import IosXeTransport
from airgap.errors import ConfigError

__all__ = ["open_iosxe"]


def open_iosxe(
    endpoint: Endpoint,
    login: Login,
    transport: str,
    *,
    known_hosts: KnownHosts | None = None,
    accept_new_host_keys: bool = False,
) -> IosXeTransport:
    """A transport to one IOS XE device; nothing is contacted until the first operation.

    Args:
        endpoint: where the device is (from the inventory row).
        login: who to log in as (from the named credential).
        transport: "slp-rest" or "ssh".
        known_hosts: the pinned SSH host keys (required for ssh).
        accept_new_host_keys: pin the key of a device met for the first time.

    Raises:
        ConfigError: an unknown transport, or ssh without `known_hosts`.

    Returns:
        The transport; call `close()` when done.
    """
    if transport == "slp-rest":
        from airgap.devices.iosxe_rest import RestTransport

        return RestTransport(endpoint, login)
    if transport == "ssh":
        if known_hosts is None:
            raise ConfigError("the ssh transport needs a known_hosts file to check host keys")
        from airgap.devices.iosxe_ssh import SshTransport

        return SshTransport(endpoint, login, known_hosts, accept_new=accept_new_host_keys)
    raise ConfigError(f"unknown IOS XE transport {transport!r}; use slp-rest or ssh")
