"""Local vendor emulators: real HTTP servers that stand in for Cisco and BIG-IQ in tests and demos.

`server` holds the shared HTTP plumbing (latency, fault injection, TLS, `/_emulator/stats`),
`cisco` the Smart Software Licensing API, `device` the files a Cisco device would write, and the
`bigiq` package F5 BIG-IQ License Manager (one module per job: records, tokens, OData query
options, license text, and the app). Nothing here imports `airgap.outside`: the clients are
tested against these emulators, never against themselves.
"""
