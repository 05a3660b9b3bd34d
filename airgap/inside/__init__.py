"""The inside half of airgap: read device captures and plans, pack requests, import responses.

`airgap.inside.parsers` reads captures, `airgap.inside.plan` turns plans and folders into items.
This package imports nothing on its own, so `airgap --help` stays fast.
"""
