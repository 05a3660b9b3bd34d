"""File formats both sides of the gap read: text inputs and Cisco RUM usage reports.

Neutral ground: `airgap.inside` and `airgap.outside` may import from here, never from each
other. Each parser checks shapes and raises `airgap.errors.InputError` with a `file:line:`
message; whether a report or code is genuine is for the vendor to decide.
"""
