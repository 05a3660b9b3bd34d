"""Talking to the devices inside the gap: inventories, credentials, and one transport per kind.

Transports (IOS XE's Smart Licensing REST API, IOS XE over SSH, BIG-IP iControl REST) know how
to read what `inside pack` needs from a device and how to put what `inside import` wrote back
onto it; they know nothing of bundles, state.db or the audit log (that is `airgap.inside`'s
collect and apply). Every failure is an `airgap.errors` device error carrying the device's own
words; no password or key ever reaches a message.
"""
