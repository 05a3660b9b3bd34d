"""The files of the CSSM portal's offline path, as Cisco's IOS XE sample code writes and reads
them for a manual upload: the usage upload and the ACK download.

Usage upload `UD_SA_<stamp>.tar.gz` (gzip tar) = `manifest.mf` (a JAR-style manifest) and
`UD_VA_<stamp>.tar.gz`, which holds one `dev_<id>_<stamp>.txt` per device: a `<smartLicense>`
document of `<RUMReport>` elements. The ACK download is a gzip tar holding
`ACK_UD_VA_….tar.gz`, which holds one `ACK_dev_<id>_…` file per device; `<id>` ties an ACK to
the device file it answers. An authorization code downloaded from the portal is the text a
device imports (the API's `smart_license`, decoded).

Reading follows the bundle format's rules: nothing is ever extracted, links, devices and `..`
are refused, and every size is bounded. This module knows files, not requests or journals.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from airgap.bundle.tarstream import CountingReader, TarReader
from airgap.errors import InputError, PortalFileError, VerificationError
from airgap.formats.smartlicense import ack_udis, is_ack
from airgap.fsutil import atomic_write_bytes

__all__ = [
    "DeviceUsage",
    "PortalAck",
    "read_ack_download",
    "stamp_for",
    "usage_document",
    "write_usage_upload",
]

DOWNLOAD_LIMIT: Final = 256 * 1024 * 1024  # bytes of decompressed tar, outer or inner
MEMBER_LIMIT: Final = 16 * 1024 * 1024  # bytes of one ACK file
_DEVICE_ID: Final = re.compile(r"[0-9A-Za-z]{1,32}")
_ACK_NAME: Final = re.compile(r"ACK_dev_([0-9A-Za-z]{1,32})_[^/]*")
_INNER_NAME: Final = re.compile(r"ACK_UD_VA_[^/]*\.tar\.gz")
_ROOT: Final = re.compile(r"\A\s*(?:<\?xml[^>]*\?>\s*)?<smartLicense[\s>]")


@dataclass(frozen=True)
class DeviceUsage:
    """One device file of a usage upload: its id (letters and digits) and its document."""

    device_id: str
    document: bytes


@dataclass(frozen=True)
class PortalAck:
    """One ACK file of an ACK download, as CSSM wrote it."""

    device_id: str
    name: str  # its member name, `ACK_dev_<id>_…`
    data: bytes


def stamp_for(moment: datetime) -> str:
    """A file-name stamp for a moment: `20261203T032936Z` (UTC)."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def usage_document(rum: bytes) -> bytes:
    """The content of a `dev_<id>_…` file for one saved RUM report file.

    A file the device saved is already a `<smartLicense>` document of `<RUMReport>` elements:
    it goes as it is, byte for byte (the signatures cover the payloads). Reports passed around
    as bare `<RUMReport>` elements are wrapped in `<smartLicense>…</smartLicense>`, their text
    untouched.
    """
    head = rum[:4096].decode("utf-8", "replace").lstrip("\ufeff")
    if _ROOT.match(head):
        return rum
    return b"<smartLicense>" + rum.strip() + b"</smartLicense>"


def _manifest(
    stamp: str,
    *,
    created_by: str,
    smart_account: str,
    smart_account_id: str,
    virtual_account: str,
    virtual_account_id: str,
) -> bytes:
    lines = [
        "Manifest-Version: 1.0",
        f"Created-By: {created_by}",
        f"Smart-Account: {smart_account}".rstrip(),
        f"Smart-Account-ID: {smart_account_id}".rstrip(),
        "",
        f"Name: /UD_VA_{stamp}.tar.gz",
        f"Specification-VA: {virtual_account}".rstrip(),
        f"Specification-VA-ID: {virtual_account_id}".rstrip(),
        "",
    ]
    return "\n".join(lines).encode("utf-8")


def _tar_gz(members: Sequence[tuple[str, bytes]], mtime: int) -> bytes:
    """A deterministic gzip tar of in-memory files (same input, same bytes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def write_usage_upload(
    folder: Path,
    devices: Sequence[DeviceUsage],
    *,
    stamp: str,
    mtime: int,
    created_by: str = "airgap",
    smart_account: str = "",
    smart_account_id: str = "",
    virtual_account: str = "",
    virtual_account_id: str = "",
) -> Path:
    """Write `UD_SA_<stamp>.tar.gz` into `folder` for the portal's usage upload.

    Args:
        folder: where to write it.
        devices: one entry per device file, in the order they go into the tar.
        stamp: the file-name stamp (letters, digits, `_`; see `stamp_for`).
        mtime: the tar members' modification time (seconds since the epoch).
        created_by: the manifest's `Created-By`.
        smart_account / smart_account_id / virtual_account / virtual_account_id: what the
            manifest names (empty: the portal asks, as it does for Cisco's own sample).

    Raises:
        PortalFileError: a device id that is not letters and digits, or a repeated one.
        OSError: the file cannot be written.

    Returns:
        The path written.
    """
    if not re.fullmatch(r"[0-9A-Za-z_]{1,64}", stamp):
        raise PortalFileError(f"{stamp!r} cannot stand in a usage file name")
    seen: set[str] = set()
    members: list[tuple[str, bytes]] = []
    for device in devices:
        if not _DEVICE_ID.fullmatch(device.device_id) or device.device_id in seen:
            raise PortalFileError(f"device id {device.device_id!r} is unusable or repeated")
        seen.add(device.device_id)
        members.append((f"dev_{device.device_id}_{stamp}.txt", device.document))
    inner = _tar_gz(members, mtime)
    manifest = _manifest(
        stamp,
        created_by=created_by,
        smart_account=smart_account,
        smart_account_id=smart_account_id,
        virtual_account=virtual_account,
        virtual_account_id=virtual_account_id,
    )
    outer = _tar_gz([("manifest.mf", manifest), (f"UD_VA_{stamp}.tar.gz", inner)], mtime)
    path = folder / f"UD_SA_{stamp}.tar.gz"
    # Whole or not at all: an operator must never upload half a file.
    atomic_write_bytes(path, outer)
    return path


# --- reading what the portal gave back ---------------------------------------------------------


def _members(data: bytes, *, source: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every regular file of a gzip tar held in memory; never extracted."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as unzipped:
            reader = TarReader(CountingReader(unzipped, DOWNLOAD_LIMIT))  # type: ignore[arg-type]
            for entry in reader:
                name = entry.name
                if name.startswith("/") or ".." in name.split("/") or "\\" in name:
                    raise PortalFileError(f"{source}: member {name!r} has an unsafe name")
                if entry.kind != "file":
                    continue
                if entry.size > MEMBER_LIMIT:
                    raise PortalFileError(
                        f"{source}: member {name!r} is {entry.size} bytes, more than an ACK "
                        f"file may be ({MEMBER_LIMIT})"
                    )
                yield name, reader.read_all(entry.size)
    except VerificationError as exc:
        raise PortalFileError(f"{source}: {exc.message}", hint=exc.hint) from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise PortalFileError(f"{source}: not a gzip tar file ({exc})") from exc


def read_ack_download(path: Path) -> list[PortalAck]:
    """Read an ACK file downloaded from the portal into its per-device ACKs.

    The outer gzip tar holds `ACK_UD_VA_….tar.gz`; that inner gzip tar holds the
    `ACK_dev_<id>_…` files. Each must be an ACK (`<smartLicenseRumAck>`). The same ACK twice is
    read once. A device file whose reports cover several devices (an HA pair saves both units'
    reports in one file) may get one ACK per device; two different ACKs for one device file
    that acknowledge the same device, or name none, are refused.

    Raises:
        PortalFileError: not a gzip tar or unreadable, an unsafe member, no inner ACK archive, a
            member that is not an ACK, or two different ACKs for one device of a device file.

    Returns:
        The ACKs in the order they appear.
    """
    source = path.name
    try:
        with path.open("rb") as handle:
            data = handle.read(DOWNLOAD_LIMIT + 1)
    except OSError as exc:
        raise PortalFileError(f"{path}: cannot read ({exc.strerror})") from exc
    if len(data) > DOWNLOAD_LIMIT:
        raise PortalFileError(f"{source}: larger than an ACK download may be ({DOWNLOAD_LIMIT})")
    inner = [(n, d) for n, d in _members(data, source=source) if _INNER_NAME.fullmatch(_base(n))]
    if not inner:
        raise PortalFileError(
            f"{source}: holds no ACK_UD_VA_….tar.gz; is it the ACK file the portal gave for "
            "the usage upload?"
        )
    found: list[PortalAck] = []
    for inner_name, inner_data in inner:
        for name, ack in _members(inner_data, source=f"{source}/{inner_name}"):
            match = _ACK_NAME.fullmatch(_base(name))
            if match is None:
                continue
            if not is_ack(ack):
                raise PortalFileError(f"{source}/{name}: not an ACK (no <smartLicenseRumAck>)")
            device_id = match.group(1)
            same_file = [a for a in found if a.device_id == device_id]
            if any(a.data == ack for a in same_file):
                continue
            devices = _acked(ack, f"{source}/{name}")
            for earlier in same_file:
                if not devices or devices & _acked(earlier.data, earlier.name):
                    raise PortalFileError(
                        f"{source}: two different ACKs for device file {device_id} "
                        f"({earlier.name} and {name})",
                        hint="Download the ACK file again; one report gets one acknowledgement.",
                    )
            found.append(PortalAck(device_id, _base(name), ack))
    return found


def _acked(ack: bytes, source: str) -> frozenset[tuple[str, str]]:
    try:
        return frozenset(ack_udis(ack))
    except InputError as exc:
        raise PortalFileError(f"{source}: {exc.message}") from exc


def _base(name: str) -> str:
    return name.rsplit("/", 1)[-1]
