"""The outside (connected) side: journal, HTTP plumbing, vendor clients and the processor.

`http` holds the retry policy, the rate limiter and the at-most-once HTTP client; `journal` holds
the SQLite item journal of `state.db`. Nothing is imported here so that `airgap --help` stays
fast (docs/performance.md: start-up).
"""
