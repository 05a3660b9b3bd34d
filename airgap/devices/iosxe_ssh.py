"""IOS XE over SSH: the licensing CLI in an interactive shell, files moved by SCP.

Commands run in one interactive session per transport (`terminal length 0` first, then each
command is written and its output read up to the next `hostname#` prompt); a line starting
with `% ` is the device refusing, raised as `DeviceError` with the text verbatim. Files move by
SCP (`ip scp server enable` on the device): a usage file is saved with `license smart save usage
unreported file bootflash:<f>` and copied off byte for byte; an ACK or code is copied onto
`bootflash:` and installed with `license smart import bootflash:<f>`.

The host key is checked against `<home>/known_hosts` (`airgap.devices.hostkeys`) during the
key exchange, before any password or key is offered; a changed key raises `HostKeyMismatch`,
an unknown one `HostKeyUnknown` unless new keys are accepted.

Threads: asyncssh is asyncio-based. Every transport runs its coroutines on one event loop that
a daemon thread runs for the whole process (`asyncio.run_coroutine_threadsafe`), so any number
of threads can each drive their own transport at once; a thread blocks only on its own device.
One transport is used by one thread at a time (calls on the same transport are serialized).
Every call is bounded by the endpoint's timeout.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import asyncssh

from airgap.devices.base import Endpoint, Login
from airgap.devices.hostkeys import HostKey, KnownHosts
from airgap.devices.iosxe import (
    LicenseStatus,
    parse_authorization_output,
    parse_rum_ids_output,
    parse_status_output,
    parse_udi_output,
    safe_file_name,
)
from airgap.errors import (
    AirgapError,
    DeviceAuthError,
    DeviceError,
    DeviceUnreachable,
    HostKeyMismatch,
    HostKeyUnknown,
)

__all__ = ["SshTransport", "event_loop"]

T = TypeVar("T")
_PROMPT_RE = re.compile(r"(?:^|\n)([A-Za-z0-9][A-Za-z0-9._-]{0,62})(?:\([^)\r\n]*\))?([#>])[ \t]*$")
_READ_CHUNK = 65536

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def event_loop() -> asyncio.AbstractEventLoop:
    """The event loop every SSH transport of this process shares (started on first use)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=run, name="airgap-ssh", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop


class _Client(asyncssh.SSHClient):
    """Checks the server's host key against known_hosts during the key exchange."""

    def __init__(self, known_hosts: KnownHosts, host: str, port: int, accept_new: bool) -> None:
        self.known_hosts = known_hosts
        self.host = host
        self.port = port
        self.accept_new = accept_new
        self.refusal: AirgapError | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        blob = key.public_data
        try:
            self.known_hosts.check(
                self.host,
                self.port,
                HostKey(key.get_algorithm(), blob),
                accept_new=self.accept_new,
            )
        except AirgapError as exc:  # HostKeyMismatch, HostKeyUnknown, ConfigError
            self.refusal = exc
            return False
        return True


_ENCRYPTION_PREFERENCE: Final = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "chacha20-poly1305@openssh.com",
    "aes128-cbc",
    "aes256-cbc",
)


class SshTransport:
    """One IOS XE device over SSH (see the module docstring for threads)."""

    def __init__(
        self, endpoint: Endpoint, login: Login, known_hosts: KnownHosts, *, accept_new: bool
    ) -> None:
        """Prepare; nothing is contacted until the first operation.

        Args:
            endpoint: host, port and the per-operation timeout.
            login: username with a password and/or a key file.
            known_hosts: where host keys are pinned.
            accept_new: pin the key of a device met for the first time.
        """
        self.endpoint = endpoint
        self.login = login
        self.known_hosts = known_hosts
        self.accept_new = accept_new
        self._conn: asyncssh.SSHClientConnection | None = None
        self._shell: asyncssh.SSHClientProcess[str] | None = None
        self._prompt: str | None = None
        # The UDIs `show license udi` printed in this session: a device's identity does not
        # change under a session (a switchover ends it), so a status read after the pushes
        # does not ask again; a new session asks anew.
        self._udis: tuple[tuple[str, str], ...] | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """How messages name the device."""
        return f"{self.endpoint.hostname} ({self.endpoint.host}:{self.endpoint.port})"

    # --- running coroutines on the shared loop ---------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], *, what: str, mutating: bool = False) -> T:
        timeout = self.endpoint.timeout
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), event_loop())
        try:
            return future.result(timeout + 10)
        except TimeoutError as exc:
            future.cancel()
            self._forget()
            raise DeviceUnreachable(
                f"{self.name}: {what} got no answer within {timeout:g} s"
                + ("; the device may have acted" if mutating else ""),
                reason="timeout",
                uncertain=mutating,
                hint="Read the device's status before trying again." if mutating else None,
            ) from exc
        except AirgapError:
            raise
        except (OSError, asyncssh.Error, EOFError) as exc:
            self._forget()
            raise DeviceUnreachable(
                f"{self.name}: the connection dropped during {what}"
                + ("; the device may have acted" if mutating else "")
                + f" ({_describe(exc)})",
                reason="dropped",
                uncertain=mutating,
                hint="Read the device's status before trying again." if mutating else None,
            ) from exc

    def _forget(self) -> None:
        conn, self._conn, self._shell, self._prompt = self._conn, None, None, None
        self._udis = None
        if conn is not None:
            event_loop().call_soon_threadsafe(conn.abort)

    # --- connecting -------------------------------------------------------------------------

    def _ensure(self) -> None:
        if self._conn is not None:
            return
        timeout = self.endpoint.timeout
        future = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(self._connect(), timeout), event_loop()
        )
        try:
            future.result(timeout + 10)
        except TimeoutError as exc:
            future.cancel()
            self._forget()
            raise DeviceUnreachable(
                f"{self.name}: no SSH session within {timeout:g} s", reason="timeout"
            ) from exc
        except AirgapError:
            raise
        except (OSError, asyncssh.Error, EOFError) as exc:
            # Dropped while the session was being set up (login done, no command of ours run):
            # nothing can have changed on the device.
            self._forget()
            raise DeviceUnreachable(
                f"{self.name}: the connection dropped while the session was set up "
                f"({_describe(exc)})",
                reason="dropped",
            ) from exc

    async def _connect(self) -> None:
        endpoint, login = self.endpoint, self.login
        client = _Client(self.known_hosts, endpoint.host, endpoint.port, self.accept_new)
        options: dict[str, Any] = {
            "username": login.username,
            "password": login.password,
            "client_keys": [str(login.key_file)] if login.key_file else None,
            "known_hosts": ([], [], []),  # nothing trusted up front: `client` decides
            "agent_path": None,
            "config": None,
            "connect_timeout": endpoint.timeout,
            "login_timeout": endpoint.timeout,
            "keepalive_interval": 0,
            # AES-GCM first (IOS XE 17 offers it): asyncssh's default, chacha20-poly1305, builds
            # a cipher object per packet and was most of a large collect's CPU. Everything else
            # asyncssh supports stays acceptable, so older devices still negotiate.
            "encryption_algs": _ENCRYPTION_PREFERENCE,
        }
        try:
            conn, _ = await asyncssh.create_connection(
                lambda: client, endpoint.host, endpoint.port, **options
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            if isinstance(client.refusal, HostKeyMismatch | HostKeyUnknown):
                raise client.refusal from None
            if client.refusal is not None:
                raise client.refusal from exc
            raise DeviceUnreachable(f"{self.name}: host key not verifiable ({exc})") from exc
        except asyncssh.PermissionDenied as exc:
            raise DeviceAuthError(f"{self.name}: the device refused the credentials") from exc
        except asyncssh.KeyImportError as exc:
            raise DeviceAuthError(f"{self.name}: the key file cannot be used ({exc})") from exc
        except (OSError, asyncssh.Error, EOFError) as exc:
            raise DeviceUnreachable(
                f"{self.name}: connection refused or reset before login ({_describe(exc)})",
                reason="refused",
            ) from exc
        try:
            shell = await conn.create_process(term_type="vt100", term_size=(511, 24))
            self._conn, self._shell = conn, shell
            self._prompt = await self._read_prompt(shell)
            if self._prompt.endswith(">"):
                raise DeviceError(
                    f"{self.name}: the session is not privileged (prompt {self._prompt})",
                    hint="Give the user privilege 15 on the device.",
                )
            await self._command("terminal length 0")
        except BaseException:
            conn.abort()
            self._conn = self._shell = None
            raise

    async def _read_prompt(self, shell: asyncssh.SSHClientProcess[str]) -> str:
        buffer = ""
        while True:
            chunk = await shell.stdout.read(_READ_CHUNK)
            if not chunk:
                raise ConnectionResetError("the session ended before a prompt")
            buffer += chunk.replace("\r", "")
            m = _PROMPT_RE.search(buffer)
            if m is not None:
                return m.group(1) + m.group(2)

    async def _command(self, command: str) -> str:
        """Run one command; its output (echo and prompt removed, `\\n` line ends)."""
        shell, prompt = self._shell, self._prompt
        assert shell is not None and prompt is not None
        shell.stdin.write(command + "\r")
        buffer = ""
        while True:
            chunk = await shell.stdout.read(_READ_CHUNK)
            if not chunk:
                raise ConnectionResetError("the session ended during the command")
            buffer += chunk
            text = buffer.replace("\r\n", "\n").replace("\r", "")
            if text.endswith("\n" + prompt) or text == prompt:
                break
        text = text[: -len(prompt)]
        first, _, rest = text.partition("\n")  # the echoed command line
        return rest if first.strip() == command.strip() or command in first else text

    def _cli(self, command: str, *, mutating: bool = False) -> str:
        with self._lock:
            self._ensure()
            output = self._run(self._command(command), what=f"`{command}`", mutating=mutating)
        error = _device_error(output)
        if error is not None:
            raise DeviceError(f"{self.name}: {error}")
        return output

    # --- SCP ------------------------------------------------------------------------------

    async def _scp_put(self, remote: str, data: bytes) -> None:
        assert self._conn is not None
        name = remote.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
        async with self._conn.create_process(f"scp -t {remote}", encoding=None) as proc:
            await _scp_ok(proc, self.name)
            proc.stdin.write(f"C0644 {len(data)} {name}\n".encode())
            await _scp_ok(proc, self.name)
            proc.stdin.write(data + b"\0")
            await _scp_ok(proc, self.name)
            proc.stdin.write_eof()

    async def _scp_get(self, remote: str) -> bytes:
        assert self._conn is not None
        async with self._conn.create_process(f"scp -f {remote}", encoding=None) as proc:
            proc.stdin.write(b"\0")
            header = await proc.stdout.readline()
            if header[:1] in (b"\x01", b"\x02"):
                raise DeviceError(
                    f"{self.name}: scp: {header[1:].decode(errors='replace').strip()}"
                )
            fields = header.decode("utf-8", errors="replace").split()
            if not header.startswith(b"C") or len(fields) < 3 or not fields[1].isdigit():
                raise DeviceError(f"{self.name}: scp: unexpected answer {header[:80]!r}")
            size = int(fields[1])
            proc.stdin.write(b"\0")
            data: bytes = await proc.stdout.readexactly(size)
            await _scp_ok(proc, self.name)
            proc.stdin.write(b"\0")
            proc.stdin.write_eof()
            return data

    def _put(self, remote: str, data: bytes) -> None:
        with self._lock:
            self._ensure()
            self._run(self._scp_put(remote, data), what=f"the copy to {remote}")

    def _get(self, remote: str) -> bytes:
        with self._lock:
            self._ensure()
            return self._run(self._scp_get(remote), what=f"the copy from {remote}")

    # --- the interface ----------------------------------------------------------------------

    def read_udi(self) -> str:
        """`show license udi`, as the device printed it.

        Raises:
            DeviceUnreachable, DeviceAuthError, DeviceError, HostKeyMismatch, HostKeyUnknown.
        """
        return self._cli("show license udi")

    def udis(self) -> tuple[tuple[str, str], ...]:
        """The device's UDIs, active unit first (one command: `show license udi`)."""
        output = self._cli("show license udi")
        udis = parse_udi_output(output)
        with self._lock:
            if self._conn is not None:
                self._udis = udis
        return udis

    def read_usage(self, close: bool = True) -> bytes:
        """Save unreported usage to bootflash and copy the file off, byte for byte.

        Args:
            close: ignored: saving usage closes the open reports on the device anyway.

        Raises:
            DeviceUnreachable, DeviceAuthError, DeviceError, HostKeyMismatch, HostKeyUnknown.
        """
        name = f"airgap-usage-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}.xml"
        self._cli(f"license smart save usage unreported file bootflash:{name}")
        return self._get(f"bootflash:{name}")

    def read_usage_and_udi(self) -> tuple[bytes, str]:
        """Save usage, then copy the file off while `show license udi` runs.

        The copy is a channel of its own on the same connection, so its round trips overlap
        the command's instead of following them.

        Raises:
            DeviceUnreachable, DeviceAuthError, DeviceError, HostKeyMismatch, HostKeyUnknown.
        """
        name = f"airgap-usage-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}.xml"
        self._cli(f"license smart save usage unreported file bootflash:{name}")
        with self._lock:
            self._ensure()
            data, output = self._run(
                self._get_during(f"bootflash:{name}", "show license udi"),
                what=f"the copy from bootflash:{name} and `show license udi`",
            )
        error = _device_error(output)
        if error is not None:
            raise DeviceError(f"{self.name}: {error}")
        return data, output

    async def _get_during(self, remote: str, command: str) -> tuple[bytes, str]:
        copy = asyncio.ensure_future(self._scp_get(remote))
        try:
            output = await self._command(command)
        except BaseException:
            copy.cancel()
            raise
        return await copy, output

    def import_file(self, name: str, data: bytes) -> str:
        """Copy a file to bootflash and `license smart import` it.

        Raises:
            DeviceUnreachable: `uncertain` when the import's answer was lost.
            DeviceAuthError, HostKeyMismatch, HostKeyUnknown: login refused.
            DeviceError: the device refused the file (its `% …` text).

        Returns:
            What the device printed.
        """
        target = f"bootflash:{safe_file_name(name)}"
        self._put(target, data)
        return self._cli(f"license smart import {target}", mutating=True)

    def status(self) -> LicenseStatus:
        """`show license udi`, `status`, `authorization` and `rum id all`, parsed.

        `show license udi` is not run again when `udis()` read it in this session. A device
        whose CLI lacks `show license rum id all` (older trains) gives None for the
        acknowledged report ids rather than failing.

        Raises:
            DeviceUnreachable, DeviceAuthError, DeviceError, HostKeyMismatch, HostKeyUnknown.
        """
        with self._lock:
            known = self._udis if self._conn is not None else None
        udis = known if known is not None else self.udis()
        last_ack = parse_status_output(self._cli("show license status"))
        auths = parse_authorization_output(self._cli("show license authorization"))
        try:
            acked = parse_rum_ids_output(self._cli("show license rum id all"))
        except DeviceError:
            acked = None
        return LicenseStatus(
            udis=udis,
            last_ack_received=last_ack,
            acknowledged_report_ids=acked,
            authorizations=auths,
        )

    def return_authorization(self) -> str:
        """`license smart authorization return local offline`: destructive, answer uncertain.

        Raises:
            DeviceUnreachable: `uncertain` when the answer (the return code) was lost.
            DeviceError: nothing to return, or the device refused.

        Returns:
            A capture the return-code parser reads: the command line and its output.
        """
        command = "license smart authorization return local offline"
        output = self._cli(command, mutating=True)
        return f"{self.endpoint.hostname}#{command}\n{output}{self.endpoint.hostname}#"

    def close(self) -> None:
        """Leave the session and close the connection (idempotent)."""
        with self._lock:
            conn, self._conn, self._shell, self._prompt = self._conn, None, None, None
            self._udis = None
        if conn is None:
            return
        # Sent, not waited for: the device has nothing more to say, and a device slot of a
        # fleet run should not wait on the goodbye (26 ms on average with 50 at once here).
        event_loop().call_soon_threadsafe(conn.close)


def _device_error(output: str) -> str | None:
    """The device's error text, if the output is one (lines from the first `% ` on)."""
    lines = output.split("\n")
    for index, line in enumerate(lines):
        if line.startswith("% ") or line.startswith("%Error"):
            start = index - 1 if index > 0 and lines[index - 1].strip() == "^" else index
            return "\n".join(lines[start:]).strip()
    return None


async def _scp_ok(proc: asyncssh.SSHClientProcess[bytes], name: str) -> None:
    status = await proc.stdout.readexactly(1)
    if status == b"\0":
        return
    message = (await proc.stdout.readline()).decode("utf-8", errors="replace").strip()
    raise DeviceError(f"{name}: scp: {message or 'refused'}")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
