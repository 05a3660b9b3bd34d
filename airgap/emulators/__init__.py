"""Local vendor emulators: real HTTP servers that stand in for Cisco and BIG-IQ in tests and demos.

`server` holds the shared HTTP plumbing (latency, fault injection, TLS, `/_emulator/stats`),
`cisco` the Smart Software Licensing API, `device` the files a Cisco device would write. Nothing
here imports `airgap.outside`: the clients are tested against these emulators, never against
themselves.
"""
