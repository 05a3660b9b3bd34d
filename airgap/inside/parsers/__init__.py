"""Parsers for what operators carry out of the secure network: captures, reports and keys.

Each parser takes text (or a path) and returns small frozen records, raising
`airgap.errors.InputError` with a `file:line:` message for anything it cannot read. They check
shapes only; vendors judge whether codes, keys and signatures are genuine.
"""

from airgap.formats.rum import RumFile, RumReport, parse_rum_bytes, parse_rum_file
from airgap.inside.parsers.codes import (
    ReturnCode,
    SlrRequest,
    capture_kind,
    parse_return_capture,
    parse_return_file,
    parse_slr_request,
    parse_slr_request_file,
)
from airgap.inside.parsers.f5 import (
    normalize_mac,
    parse_dossier,
    parse_dossier_file,
    parse_regkey_file,
)
from airgap.inside.parsers.udi import UdiRecord, parse_udi_capture, parse_udi_file

__all__ = [
    "ReturnCode",
    "RumFile",
    "RumReport",
    "SlrRequest",
    "UdiRecord",
    "capture_kind",
    "normalize_mac",
    "parse_dossier",
    "parse_dossier_file",
    "parse_regkey_file",
    "parse_return_capture",
    "parse_return_file",
    "parse_rum_bytes",
    "parse_rum_file",
    "parse_slr_request",
    "parse_slr_request_file",
    "parse_udi_capture",
    "parse_udi_file",
]
