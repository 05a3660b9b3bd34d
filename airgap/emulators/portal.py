"""The CSSM web portal's offline file operations, as plain HTTP endpoints of the Cisco emulator.

A site without API credentials does this by hand in Cisco Smart Software Manager: upload a usage
data file and download the ACK file; generate an authorization code for a product instance and
download it; enter a device's return code. The portal is a web UI, so these paths are the
emulator's own (marked "assumed" in docs/emulators.md); what goes in and out are the real files:

- `POST /portal/usage-upload` — body: a usage upload `UD_SA_<stamp>.tar.gz` (`manifest.mf` +
  `UD_VA_<stamp>.tar.gz` of `dev_<id>_<stamp>.txt`, as Cisco's IOS XE sample code writes it).
  Answer 200 `application/gzip`: the ACK download, a gzip tar holding `ACK_UD_VA_<stamp>.tar.gz`,
  which holds `ACK_dev_<id>_<stamp>.txt` per device file whose reports were accepted.
  Signatures are checked and duplicates refused exactly as `v2/devices/reportusage` does
  (same state: a report accepted here is a duplicate there). A device file that is refused
  gets no ACK file; `X-Portal-Refused` lists `<id>: <reason>` for each.
- `POST /portal/authorization` — JSON `{"udi_pid","udi_serial_number","hostname"?,
  "virtual_account"?,"entitlements":[{"tag","count"}]}`. Answer 200 `text/plain`: the
  authorization code file, the text a device imports (what the API returns base64-encoded).
- `POST /portal/return` — JSON `{"udi_pid","udi_serial_number","return_code",
  "virtual_account"?}`. Answer 200 JSON: the portal's confirmation.

Like the rest of the emulator it shares the account state with the API paths and counts every
mutation per device in `/_emulator/stats`. It reads uploads with `tarfile` into memory, never
extracting; it does not import airgap's own readers, so the client is not tested against itself.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
import tarfile
from collections import Counter
from typing import Any, Final, Protocol

from airgap.emulators.server import BadRequest, Request, Response

PREFIX: Final = "/portal/"
UPLOAD_LIMIT: Final = 64 * 1024 * 1024  # bytes of a decompressed usage upload
_DEV_FILE: Final = re.compile(r"dev_([0-9A-Za-z]{1,32})_([0-9A-Za-z_]{1,64})\.txt")
_VA_TAR: Final = re.compile(r"UD_VA_([0-9A-Za-z_]{1,64})(?:_py)?\.tar\.gz")
_REPORT: Final = re.compile(r"<RUMReport>\s*<!\[CDATA\[(.*?)\]\]>\s*</RUMReport>", re.S)


class Account(Protocol):
    """What the portal needs of the Cisco emulator's account state (its API does the same)."""

    virtual_accounts: dict[str, int]
    calls: Counter[str]

    def accept_usage(
        self, sudi: dict[str, str], usage: list[tuple[str, str]], virtual_account: str
    ) -> dict[str, Any]:
        """Accept one device's reports as `reportusage` does; its acknowledgement entry."""
        ...

    def reserve_licenses(
        self,
        pid: str,
        sn: str,
        hostname: str | None,
        keys: list[tuple[str, int]],
        virtual_account: str,
    ) -> dict[str, Any]:
        """Reserve as `authrequest` does; its authorization entry."""
        ...

    def return_licenses(
        self, pid: str, sn: str, return_code: str, virtual_account: str
    ) -> dict[str, Any]:
        """Return as `authrequest` with a remove_code does; its authorization entry."""
        ...


class Portal:
    """The portal's endpoints over one account's state (call under the emulator's lock)."""

    def __init__(self, cisco: Account) -> None:
        self.cisco = cisco

    def handle(self, request: Request) -> Response:
        """Answer one `/portal/…` request."""
        route = request.path[len(PREFIX) :].strip("/")
        handlers = {
            "usage-upload": self._usage_upload,
            "authorization": self._authorization,
            "return": self._return,
        }
        handler = handlers.get(route)
        if handler is None:
            return Response.json(404, {"error": f"Unknown path '{request.path}'"})
        self.cisco.calls[f"portal_{route}"] += 1
        if request.method != "POST":
            return Response.json(405, {"error": "Method not allowed; use POST"})
        return handler(request)

    # --- usage upload → ACK download ----------------------------------------------------------

    def _usage_upload(self, request: Request) -> Response:
        outer = _files(request.body, "the usage upload")
        manifest = outer.get("manifest.mf", b"").decode("utf-8", "replace")
        if not manifest.startswith("Manifest-Version:"):
            raise BadRequest("the usage upload has no manifest.mf")
        virtual_account = _manifest_value(manifest, "Specification-VA") or "Default"
        if virtual_account not in self.cisco.virtual_accounts:
            raise BadRequest(f"virtual account {virtual_account!r} is not in the smart account")
        inner_name = next((name for name in outer if _VA_TAR.fullmatch(name)), None)
        if inner_name is None:
            raise BadRequest("the usage upload holds no UD_VA_….tar.gz")
        stamp = _VA_TAR.fullmatch(inner_name).group(1)  # type: ignore[union-attr]
        acks: list[tuple[str, bytes]] = []
        refused: list[str] = []
        for name, document in sorted(_files(outer[inner_name], inner_name).items()):
            match = _DEV_FILE.fullmatch(name)
            if match is None:
                continue
            device_id = match.group(1)
            by_device: dict[tuple[str, str], list[tuple[str, str]]] = {}
            try:
                for text in _REPORT.findall(document.decode("utf-8")):
                    report = json.loads(text)
                    payload, signature = report["payload"], report["signature"]
                    sudi = signature.get("sudi") or {}
                    key = (str(sudi.get("udi_pid")), str(sudi.get("udi_serial_number")))
                    by_device.setdefault(key, []).append((str(payload), str(signature["value"])))
            except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
                refused.append(f"{device_id}: not a usage data file ({exc})")
                continue
            if not by_device:
                refused.append(f"{device_id}: holds no RUM report")
                continue
            results = [
                self.cisco.accept_usage(
                    {"udi_pid": pid, "udi_serial_number": sn}, usage, virtual_account
                )
                for (pid, sn), usage in by_device.items()
            ]
            failed = [r for r in results if r.get("status") != "SUCCESS"]
            if failed:
                refused.append(f"{device_id}: {failed[0].get('status_message')}")
                continue
            for index, result in enumerate(results):
                suffix = f"_{index}" if index else ""
                ack = base64.b64decode(result["smart_license"])
                acks.append((f"ACK_dev_{device_id}{suffix}_{stamp}.txt", ack))
        inner = _tar_gz(acks)
        body = _tar_gz([(f"ACK_UD_VA_{stamp}.tar.gz", inner)])
        headers = {"Content-Type": "application/gzip"}
        if refused:
            headers["X-Portal-Refused"] = "; ".join(refused)[:4000]
        return Response(200, body, headers)

    # --- authorization codes and returns ------------------------------------------------------

    def _authorization(self, request: Request) -> Response:
        body = _json_object(request)
        pid, sn, virtual_account = self._device(body)
        keys: list[tuple[str, int]] = []
        for entry in body.get("entitlements") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("tag"), str):
                raise BadRequest("entitlements must be a list of {tag, count}")
            count = entry.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise BadRequest("an entitlement count must be a whole number from 1")
            keys.append((entry["tag"], count))
        if not keys:
            raise BadRequest("choose at least one license to reserve")
        hostname = body.get("hostname") if isinstance(body.get("hostname"), str) else None
        result = self.cisco.reserve_licenses(pid, sn, hostname, keys, virtual_account)
        if result.get("status") != "SUCCESS":
            return Response.json(400, {"error": result.get("status_message")})
        code = base64.b64decode(result["smart_license"])
        return Response(200, code, {"Content-Type": "text/plain; charset=utf-8"})

    def _return(self, request: Request) -> Response:
        body = _json_object(request)
        pid, sn, virtual_account = self._device(body)
        code = body.get("return_code")
        if not isinstance(code, str) or not code.strip():
            raise BadRequest("return_code is missing")
        result = self.cisco.return_licenses(pid, sn, code, virtual_account)
        status = 200 if result.get("status") == "SUCCESS" else 400
        return Response.json(status, result)

    def _device(self, body: dict[str, Any]) -> tuple[str, str, str]:
        pid, sn = body.get("udi_pid"), body.get("udi_serial_number")
        if not isinstance(pid, str) or not pid or not isinstance(sn, str) or not sn:
            raise BadRequest("udi_pid and udi_serial_number are required")
        virtual_account = body.get("virtual_account") or "Default"
        if virtual_account not in self.cisco.virtual_accounts:
            raise BadRequest(f"virtual account {virtual_account!r} is not in the smart account")
        return pid, sn, str(virtual_account)


def _json_object(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object")
    return body


def _manifest_value(manifest: str, key: str) -> str | None:
    for line in manifest.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip() or None
    return None


def _files(data: bytes, what: str) -> dict[str, bytes]:
    """Regular files of a gzip tar, read into memory (names without folders); never extracted."""
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise BadRequest(f"{what} is not gzip ({exc})") from exc
    if len(raw) > UPLOAD_LIMIT:
        raise BadRequest(f"{what} is larger than {UPLOAD_LIMIT} bytes")
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                handle = tar.extractfile(member)
                if handle is not None:
                    found[member.name.rsplit("/", 1)[-1]] = handle.read()
    except tarfile.TarError as exc:
        raise BadRequest(f"{what} is not a tar ({exc})") from exc
    return found


def _tar_gz(members: list[tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())
