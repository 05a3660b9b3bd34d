"""Helpers for tests against the emulated IOS XE fleet: a plain SSH shell and Cisco's calls."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncssh
import requests

_PROMPT = re.compile(r"(?:^|\n)[A-Za-z0-9][A-Za-z0-9._-]*#$")


async def _read_to_prompt(proc: asyncssh.SSHClientProcess[str]) -> str:
    text = ""
    while not _PROMPT.search(text.replace("\r", "")):
        chunk = await asyncio.wait_for(proc.stdout.read(65536), 10)
        if not chunk:
            break
        text += chunk
    return text


async def _connect(port: int, **kwargs: Any) -> asyncssh.SSHClientConnection:
    options: dict[str, Any] = {
        "username": "admin",
        "password": "pw",
        "known_hosts": None,
        "client_keys": None,
        "agent_path": None,
        "config": None,
    }
    options.update(kwargs)
    return await asyncssh.connect("127.0.0.1", port, **options)


async def _shell(port: int, commands: Sequence[str], **kwargs: Any) -> str:
    async with await _connect(port, **kwargs) as conn:
        proc = await conn.create_process(term_type="vt100")
        transcript = await _read_to_prompt(proc)
        for command in commands:
            proc.stdin.write(command + "\r")
            transcript += await _read_to_prompt(proc)
        proc.close()
    return transcript.replace("\r\n", "\n")


def shell(port: int, *commands: str, **kwargs: Any) -> str:
    """Log in, run commands in an interactive shell, return the whole transcript (`\\n` ends)."""
    return asyncio.run(_shell(port, commands, **kwargs))


async def _scp_up(port: int, local: Path, remote: str) -> None:
    async with await _connect(port) as conn:
        await asyncssh.scp(local, (conn, remote))


async def _scp_down(port: int, remote: str, local: Path) -> None:
    async with await _connect(port) as conn:
        await asyncssh.scp((conn, remote), local)


def scp_up(port: int, local: Path, remote: str) -> None:
    """Copy a local file onto the device with asyncssh's own SCP client."""
    asyncio.run(_scp_up(port, local, remote))


def scp_down(port: int, remote: str, local: Path) -> None:
    """Copy a file off the device with asyncssh's own SCP client."""
    asyncio.run(_scp_down(port, remote, local))


def server_key(port: int) -> str:
    """The host key the device offers, in OpenSSH form."""

    async def run() -> str:
        async with await _connect(port) as conn:
            key = conn.get_server_host_key()
            assert key is not None
            return key.export_public_key().decode().strip()

    return asyncio.run(run())


class SampleDevice:
    """Calls the SLP REST API exactly as Cisco's IOS XE sample code does (`requests`)."""

    def __init__(self, ip: str, username: str, password: str, verify: str | bool) -> None:
        self.ip = ip
        self.username = username
        self.password = password
        self.verify = verify

    def get_list(self) -> requests.Response:
        url = "https://" + self.ip + "/smartlic-service/list"
        hdr = {
            "FOXY-API-VERSION": "1",
            "Accept": "application/yang-data+json",
            "Content-Type": "application/yang-data+json",
            "Cache-Control": "no-cache",
        }
        return requests.request(
            "GET",
            url,
            auth=(self.username, self.password),
            headers=hdr,
            verify=self.verify,
            timeout=5,
        )

    def get_all_reports(self) -> requests.Response:
        url = "https://" + self.ip + "/smartlic-service/all-reports"
        hdr = {"Content-Type": "application/json"}
        return requests.request(
            "GET",
            url,
            auth=(self.username, self.password),
            headers=hdr,
            verify=self.verify,
            timeout=5,
        )

    def close_reports(self) -> requests.Response:
        url = "https://" + self.ip + "/smartlic-service/close-reports"
        hdr = {"Content-Type": "application/json"}
        body = {"test": ""}
        return requests.request(
            "POST",
            url,
            auth=(self.username, self.password),
            headers=hdr,
            verify=self.verify,
            data=body,
            timeout=5,
        )

    def import_str(self, str_import: str) -> requests.Response:
        url = "https://" + self.ip + "/smartlic-service/import"
        hdr = {"Content-Type": "application/json"}
        my_json = str_import.encode().decode("utf8").replace("'", '"')
        return requests.request(
            "POST",
            url,
            auth=(self.username, self.password),
            headers=hdr,
            verify=self.verify,
            data=my_json,
            timeout=5,
        )
