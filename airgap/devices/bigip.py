"""F5 BIG-IP over iControl REST: read identity and dossiers, read and install licenses.

`BigIpTransport` makes the calls F5's own tools make (the Ansible module `bigip_device_license`,
f5-cloud-libs; docs/bigip.md lists each call and its source):

- token login `POST /mgmt/shared/authn/login` (`loginProviderName: tmos`), the token sent as
  `X-F5-Auth-Token`, renewed shortly before its `timeout` runs out and after any 401 (the call
  is then resent once: a 401 proves the box did not act); logout deletes the token.
- `GET /mgmt/shared/identified-devices/config/device-info`: hostname, base MAC, version, platform.
- `POST /mgmt/tm/util/get-dossier` `{"command": "run", "utilCmdArgs": "-b \\"<regkey>\\""}`.
- `GET /mgmt/tm/shared/licensing/registration`: the registration key (none when unlicensed).
- installing: `POST /mgmt/tm/util/bash` writes `/config/bigip.license` with a here-document, then
  runs `/usr/bin/reloadlic`; mcpd restarts, so `GET /mgmt/tm/sys/mcp-state` and the registration
  are polled (bounded) until the box runs again and reports the key of the new license.

While the box restarts it answers 503 (or 500 "The connection to mcpd has been lost"): such
answers are waited out with a capped backoff, up to `BigIpPolicy.ready_wait`. A call that cannot
change the box is resent after a network failure (`read_attempts`); a call that can (the license
write, reloadlic) never is: a line that drops after it was sent raises `DeviceUnreachable` with
`uncertain=True`, and the caller reads the registration again before doing anything else.

HTTPS is verified with the endpoint's `verify` (True, or the path of a CA bundle); False only
when the inventory says so, and then with a warning in the log. Proxy and CA environment
variables are ignored: devices are reached directly. The password and tokens never reach a
message or a log line.

Not thread-safe: use one instance per device, from one thread at a time (the session and the
token are not shared). Knows nothing of inventories, bundles or state.db.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import requests
import urllib3

from airgap.devices.base import Endpoint, Login
from airgap.errors import (
    ConfigError,
    DeviceAuthError,
    DeviceError,
    DeviceUnreachable,
    InputError,
)

__all__ = [
    "LICENSE_PATH",
    "BigIpPolicy",
    "BigIpTransport",
    "DeviceInfo",
    "Registration",
    "license_registration_key",
    "normalize_base_mac",
]

_log = logging.getLogger(__name__)

LICENSE_PATH: Final = "/config/bigip.license"
_LOGIN: Final = "/mgmt/shared/authn/login"
_TOKENS: Final = "/mgmt/shared/authz/tokens"
_DEVICE_INFO: Final = "/mgmt/shared/identified-devices/config/device-info"
_DOSSIER: Final = "/mgmt/tm/util/get-dossier"
_BASH: Final = "/mgmt/tm/util/bash"
_REGISTRATION: Final = "/mgmt/tm/shared/licensing/registration"
_MCP_STATE: Final = "/mgmt/tm/sys/mcp-state"

_DEFAULT_TOKEN_TIMEOUT: Final = 1200.0  # seconds; BIG-IP's, when the login answer omits it
_RENEW_MARGIN_MAX: Final = 30.0  # seconds before expiry at most that a token is renewed
_REGKEY_RE: Final = re.compile(r"^[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{7}$")
_ADDON_RE: Final = re.compile(r"^[A-Z0-9]{7}-[A-Z0-9]{7}$")
_LICENSE_KEY_RE: Final = re.compile(r"^Registration Key\s*:\s*(\S+)\s*$", re.MULTILINE)
_HEX_RE: Final = re.compile(r"^[0-9A-Fa-f]+$")
# bigip_device_license backslash-escapes these before it puts the license in a here-document.
_F5_ESCAPES: Final = re.compile(r"""([$"'])""")
# What that here-document cannot carry unchanged: `$` and backticks expand, backslashes are
# eaten, and an escaped `'` stays escaped. Real license files contain none of them.
_UNSAFE_IN_LICENSE: Final = re.compile(r"[$`'\\]|[^\x09\x0a\x20-\x7e]")
_HEREDOC_END: Final = "EOF"
_MCPD_LOST: Final = "connection to mcpd has been lost"


@dataclass(frozen=True)
class BigIpPolicy:
    """How long the transport waits and how often it resends. A value, passed in."""

    read_attempts: int = 3  # tries of a call that cannot change the box, after network errors
    backoff_factor: float = 0.25  # seconds; delay = factor * 2 ** (failures - 1)
    backoff_max: float = 5.0  # seconds
    retry_after_max: float = 30.0  # seconds; cap on a Retry-After the box sends
    ready_wait: float = 300.0  # seconds the box may keep answering "restarting" (503) per call
    install_wait: float = 600.0  # seconds after reloadlic until the registration must show the key
    settle: float = 10.0  # seconds mcpd must run with another key before the install is refused

    def delay(self, failures: int, *, retry_after: float | None = None) -> float:
        """Seconds to wait after `failures` consecutive failures. Pure: never sleeps.

        Args:
            failures: consecutive failures so far (1 for the first).
            retry_after: the box's Retry-After, if it sent one; honoured up to the cap.

        Returns:
            The delay in seconds.
        """
        if retry_after is not None:
            return max(0.0, min(retry_after, self.retry_after_max))
        return min(self.backoff_max, self.backoff_factor * 2.0 ** max(0, failures - 1))


@dataclass(frozen=True)
class DeviceInfo:
    """Who the box says it is (`device-info`)."""

    hostname: str
    base_mac: str  # AA:BB:CC:DD:EE:FF
    version: str  # e.g. 17.1.1.3
    platform: str  # e.g. Z100 for Virtual Edition
    machine_id: str | None = None


@dataclass(frozen=True)
class Registration:
    """The license the box runs with (`licensing/registration`)."""

    registration_key: str | None  # None: unlicensed
    licensed_version: str | None = None
    licensed_date: str | None = None  # licensedDateTime, as the box writes it
    expires_in_days: float | None = None  # only for licenses that end

    @property
    def licensed(self) -> bool:
        """True when the box reports a registration key."""
        return self.registration_key is not None


def normalize_base_mac(raw: str) -> str | None:
    """Return a MAC as `AA:BB:CC:DD:EE:FF`, or None if it is not one.

    BIG-IPs report `baseMac` in either case and, seen by F5's telemetry tests, even with unpadded
    octets (`00:01:2:a:B:d0`); 12 bare hex digits and `-` or `.` separators are read as well.

    Args:
        raw: the MAC as the device wrote it.

    Returns:
        The normalized MAC, or None.
    """
    text = raw.strip()
    parts = re.split(r"[:-]", text)
    if len(parts) == 6 and all(re.fullmatch(r"[0-9A-Fa-f]{1,2}", p) for p in parts):
        octets = [p.zfill(2) for p in parts]
    else:
        digits = text.replace(".", "")
        if not re.fullmatch(r"[0-9A-Fa-f]{12}", digits):
            return None
        octets = [digits[i : i + 2] for i in range(0, 12, 2)]
    return ":".join(octets).upper()


def license_registration_key(text: str) -> str:
    """The `Registration Key` a BIG-IP license file is for.

    Raises:
        InputError: no such line, more than one, or a key that is not a registration key.

    Returns:
        The key.
    """
    keys = _LICENSE_KEY_RE.findall(text)
    if len(keys) != 1 or not _REGKEY_RE.match(keys[0]):
        raise InputError(
            "the license text has no single valid 'Registration Key' line",
            hint="Use the license file exactly as activate.f5.com or BIG-IQ returned it.",
        )
    return str(keys[0])


class _NotReady(Exception):
    """The box answered that it is restarting; worth asking again later."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BigIpTransport:
    """iControl REST client for one BIG-IP. Not thread-safe: one instance per device and thread.

    Use as a context manager (logout on exit), or call `close()`.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        login: Login,
        *,
        policy: BigIpPolicy | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Prepare a client; nothing is sent until the first call.

        Args:
            endpoint: where the box is; `verify` is True, or the path of a CA bundle (PEM).
            login: user and password (iControl REST takes no keys).
            policy: waits and retries; the defaults suit real boxes.
            session: a requests session to use (tests); a fresh one by default.
            sleep: how to wait (tests pass a fake).
            clock: monotonic seconds (token renewal and deadlines).

        Raises:
            ConfigError: no password, or the CA bundle file does not exist.
        """
        if not login.password:
            raise ConfigError(
                f"{endpoint.hostname}: BIG-IP iControl REST needs a password",
                hint="Set the credential's _PASSWORD variable; key files are for SSH only.",
            )
        if isinstance(endpoint.verify, str) and not Path(endpoint.verify).is_file():
            raise ConfigError(
                f"{endpoint.hostname}: CA bundle {endpoint.verify} does not exist",
                hint="Point the inventory's ca_bundle at the PEM the device's certificate "
                "chains to.",
            )
        if endpoint.verify is False:
            _log.warning(
                "%s: TLS certificate verification is off (the inventory says verify=false)",
                endpoint.hostname,
            )
        self.endpoint = endpoint
        self.policy = policy or BigIpPolicy()
        self._login = login
        self._sleep = sleep
        self._clock = clock
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        self._base = f"https://{host}:{endpoint.port}"
        self._session = session or requests.Session()
        # Proxy variables and REQUESTS_CA_BUNDLE must not reroute a device call or replace its
        # CA bundle. See: <https://github.com/psf/requests/issues/3829>
        self._session.trust_env = False
        self._token: str | None = None
        self._token_renew_at = 0.0

    # --- public calls -----------------------------------------------------------------------

    def device_info(self) -> DeviceInfo:
        """Read the box's identity.

        Raises:
            DeviceUnreachable: the box could not be reached (or stayed unavailable).
            DeviceAuthError: the login was refused.
            DeviceError: the box answered with an error, or without a usable base MAC.

        Returns:
            Hostname, base MAC (`AA:BB:CC:DD:EE:FF`), version, platform and machine id.
        """
        body = self._call("GET", _DEVICE_INFO)
        raw_mac = body.get("baseMac")
        mac = normalize_base_mac(raw_mac) if isinstance(raw_mac, str) else None
        if mac is None:
            raise DeviceError(f"{self._name}: device-info has no usable baseMac ({raw_mac!r})")
        fields: dict[str, str] = {}
        for key in ("hostname", "version", "platform"):
            value = body.get(key)
            if not isinstance(value, str) or not value:
                raise DeviceError(f"{self._name}: device-info has no {key}")
            fields[key] = value
        machine_id = body.get("machineId")
        return DeviceInfo(
            hostname=fields["hostname"],
            base_mac=mac,
            version=fields["version"],
            platform=fields["platform"],
            machine_id=machine_id if isinstance(machine_id, str) else None,
        )

    def dossier(self, regkey: str, add_on_keys: Sequence[str] = ()) -> str:
        """Generate the box's dossier for a registration key (and add-on keys).

        The dossier changes nothing on the box, so it is asked again after a network failure.

        Args:
            regkey: the base registration key.
            add_on_keys: add-on keys, in order.

        Raises:
            InputError: a key is not shaped like a registration (or add-on) key; nothing sent.
            DeviceUnreachable: the box could not be reached.
            DeviceAuthError: the login was refused.
            DeviceError: the box answered with an error or with something that is not a dossier
                (its words verbatim).

        Returns:
            The dossier: one hex string.
        """
        key = regkey.strip().upper()
        add_ons = [k.strip().upper() for k in add_on_keys]
        if not _REGKEY_RE.match(key):
            raise InputError(
                f"{regkey!r} is not a registration key (XXXXX-XXXXX-XXXXX-XXXXX-XXXXXXX)"
            )
        for add_on in add_ons:
            if not _ADDON_RE.match(add_on):
                raise InputError(f"{add_on!r} is not an add-on key (XXXXXXX-XXXXXXX)")
        # As bigip_device_license builds it: add-ons first, joined by spaces, then the base key.
        args = f'-b "{key}"'
        if add_ons:
            args = f"-a {' '.join(add_ons)} " + args
        body = self._call("POST", _DOSSIER, {"command": "run", "utilCmdArgs": args}, safe=True)
        result = body.get("commandResult")
        dossier = "".join(result.split()) if isinstance(result, str) else ""
        if not _HEX_RE.match(dossier):
            said = result.strip() if isinstance(result, str) else "no commandResult"
            raise DeviceError(f"{self._name}: get_dossier did not return a dossier: {said}")
        return dossier

    def registration(self) -> Registration:
        """Read the license the box runs with.

        Raises:
            DeviceUnreachable: the box could not be reached (or stayed unavailable).
            DeviceAuthError: the login was refused.
            DeviceError: the box answered with an error.

        Returns:
            The registration; `registration_key` is None when the box is unlicensed.
        """
        body = self._call("GET", _REGISTRATION)
        key = body.get("registrationKey")
        version = body.get("licensedVersion")
        licensed = body.get("licensedDateTime")
        expires = body.get("expiresInDays")
        try:
            days = float(expires) if expires is not None else None
        except (TypeError, ValueError):
            days = None
        return Registration(
            registration_key=key if isinstance(key, str) and key else None,
            licensed_version=version if isinstance(version, str) else None,
            licensed_date=licensed if isinstance(licensed, str) else None,
            expires_in_days=days,
        )

    def install_license(self, text: str) -> Registration:
        """Install a license file and wait until the box runs with it.

        Writes `/config/bigip.license` and runs `/usr/bin/reloadlic` through `util/bash`, as
        bigip_device_license does; then waits (bounded by `policy.install_wait`) until mcpd runs
        again and the registration shows the key named in the text. Neither write nor reloadlic
        is ever resent by the transport.

        Args:
            text: the license file (`Registration Key : ...` among its lines).

        Raises:
            InputError: the text names no valid registration key, or holds characters the
                here-document would change (`$`, backtick, `'`, backslash, non-ASCII); nothing
                was sent.
            DeviceUnreachable: the line dropped or the box stayed unavailable; `uncertain` is
                True once the write was sent (read the registration before anything else).
            DeviceAuthError: the login was refused (before anything was written).
            DeviceError: the box refused a step (its words verbatim), or mcpd came back running
                another license than this one.

        Returns:
            The registration the box reports with the new license.
        """
        key = license_registration_key(text)
        payload = text.replace("\r\n", "\n").rstrip("\n")
        bad = _UNSAFE_IN_LICENSE.search(payload)
        if bad:
            raise InputError(
                f"the license text holds {bad.group()!r}, which the device's shell would change",
                hint="Use the license file exactly as activate.f5.com or BIG-IQ returned it.",
            )
        if _HEREDOC_END in payload.split("\n"):
            raise InputError(f"the license text has a line {_HEREDOC_END!r}")
        escaped = _F5_ESCAPES.sub(r"\\\1", payload)
        write = f"cat > {LICENSE_PATH} <<{_HEREDOC_END}\n{escaped}\n{_HEREDOC_END}"
        written = self._call("POST", _BASH, _bash_command(write), mutating=True)
        if written.get("commandResult"):
            # cat prints nothing when it can write the file.
            raise DeviceError(f"{self._name}: writing {LICENSE_PATH}: {written['commandResult']}")
        self._call("POST", _BASH, _bash_command("/usr/bin/reloadlic"), mutating=True)
        return self._await_license(key)

    def close(self) -> None:
        """Log out (delete the token) and close the connections; errors are ignored."""
        token, self._token = self._token, None
        if token is not None:
            try:
                self._session.delete(
                    f"{self._base}{_TOKENS}/{token}",
                    headers={"X-F5-Auth-Token": token},
                    timeout=self.endpoint.timeout,
                    verify=self.endpoint.verify,
                )
            except requests.RequestException:
                _log.debug("%s: logout failed", self._name, exc_info=False)
        self._session.close()

    def __enter__(self) -> BigIpTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- waiting for a license ----------------------------------------------------------------

    def _await_license(self, key: str) -> Registration:
        try:
            return self._poll_for_license(key)
        except DeviceUnreachable as exc:
            # reloadlic was sent: whatever the box does now, it may be running the new license.
            raise DeviceUnreachable(
                exc.message,
                hint="Read the device's registration again before installing again.",
                uncertain=True,
            ) from exc

    def _poll_for_license(self, key: str) -> Registration:
        deadline = self._clock() + self.policy.install_wait
        wrong_since: float | None = None
        polls = 0
        while True:
            polls += 1
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise DeviceUnreachable(
                    f"{self._name}: no answer with license {key} within "
                    f"{self.policy.install_wait:g} s of reloadlic"
                )
            running = self._mcp_running(min(remaining, self.policy.ready_wait))
            registration = self.registration() if running else None
            if registration is not None and registration.registration_key == key:
                return registration
            now = self._clock()
            if registration is None:
                wrong_since = None
            elif wrong_since is None:
                wrong_since = now
            elif now - wrong_since >= self.policy.settle:
                shown = registration.registration_key or "no license"
                raise DeviceError(
                    f"{self._name}: the device did not take license {key}: after reloadlic "
                    f"it runs with {shown}",
                    hint="Check that the license is for this device's dossier and platform.",
                )
            self._sleep(min(self.policy.delay(polls), max(0.0, deadline - now)))

    def _mcp_running(self, wait: float) -> bool:
        body = self._call("GET", _MCP_STATE, ready_wait=wait)
        entries = body.get("entries")
        if not isinstance(entries, Mapping) or not entries:
            return False
        for entry in entries.values():
            try:
                phase = entry["nestedStats"]["entries"]["phase"]["description"]
            except (KeyError, TypeError):
                return False
            if phase != "running":
                return False
        return True

    # --- the HTTP core ------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return self.endpoint.hostname or self.endpoint.host

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        mutating: bool = False,
        safe: bool = False,
        ready_wait: float | None = None,
    ) -> dict[str, Any]:
        """One authenticated call; returns the JSON object the box answered with.

        `mutating` calls are never resent after they may have reached the box; GETs and `safe`
        POSTs are (up to `read_attempts`). A 401 renews the token and resends once.
        """
        renewed = False
        while True:
            token = self._ensure_token()
            response = self._send(
                method,
                path,
                body,
                token=token,
                may_resend=(method == "GET" or safe) and not mutating,
                mutating=mutating,
                ready_wait=ready_wait,
            )
            if response.status_code == 401 and not renewed:
                # The box did not act on a request it refused; log in again and resend once.
                _log.debug("%s: %s %s answered 401; logging in again", self._name, method, path)
                self._token = None
                renewed = True
                continue
            if response.status_code == 401:
                raise DeviceAuthError(
                    f"{self._name}: the device refused the login's token: {_message(response)}"
                )
            if response.status_code >= 400:
                raise DeviceError(
                    f"{self._name}: {method} {path} failed ({response.status_code}): "
                    f"{_message(response)}"
                )
            return _json_object(response, self._name, path)

    def _ensure_token(self) -> str:
        if self._token is not None and self._clock() < self._token_renew_at:
            return self._token
        if self._token is not None:
            _log.debug("%s: token about to expire; logging in again", self._name)
        body = {
            "username": self._login.username,
            "password": self._login.password,
            "loginProviderName": "tmos",
        }
        started = self._clock()
        response = self._send("POST", _LOGIN, body, token=None, may_resend=True, mutating=False)
        if response.status_code in (400, 401, 403):
            raise DeviceAuthError(
                f"{self._name}: login as {self._login.username} refused: {_message(response)}",
                hint="Check the credential named in the inventory.",
            )
        if response.status_code >= 400:
            raise DeviceError(
                f"{self._name}: login failed ({response.status_code}): {_message(response)}"
            )
        answer = _json_object(response, self._name, _LOGIN)
        token_info = answer.get("token")
        token = token_info.get("token") if isinstance(token_info, Mapping) else None
        if not isinstance(token, str) or not token:
            raise DeviceError(f"{self._name}: the login answer carries no token")
        timeout = token_info.get("timeout") if isinstance(token_info, Mapping) else None
        lifetime = (
            float(timeout)
            if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0
            else _DEFAULT_TOKEN_TIMEOUT
        )
        self._token = token
        self._token_renew_at = started + lifetime - min(_RENEW_MARGIN_MAX, lifetime * 0.1)
        return token

    def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        token: str | None,
        may_resend: bool,
        mutating: bool,
        ready_wait: float | None = None,
    ) -> requests.Response:
        """Send until the box answers something other than "restarting"; network errors mapped.

        Returns the response (any status but the not-ready ones).
        """
        deadline = self._clock() + (self.policy.ready_wait if ready_wait is None else ready_wait)
        network_failures = 0
        not_ready = 0
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token is not None:
            headers["X-F5-Auth-Token"] = token
        while True:
            try:
                response = self._session.request(
                    method,
                    f"{self._base}{path}",
                    json=body,
                    headers=headers,
                    timeout=self.endpoint.timeout,
                    verify=self.endpoint.verify,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                network_failures += 1
                sent = not _never_sent(exc)
                if (not sent or may_resend) and network_failures < self.policy.read_attempts:
                    _log.debug(
                        "%s: %s %s: %s; trying again", self._name, method, path, type(exc).__name__
                    )
                    self._sleep(self.policy.delay(network_failures))
                    continue
                raise _unreachable(
                    self._name, method, path, exc, uncertain=sent and mutating
                ) from exc
            try:
                _check_ready(response)
            except _NotReady as exc:
                not_ready += 1
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise DeviceUnreachable(
                        f"{self._name}: still unavailable after waiting "
                        f"{self.policy.ready_wait if ready_wait is None else ready_wait:g} s "
                        f"({exc})",
                        hint="The device may be restarting; try again later.",
                    ) from None
                delay = self.policy.delay(not_ready, retry_after=exc.retry_after)
                self._sleep(min(delay, remaining))
                continue
            _log.debug("%s: %s %s -> %s", self._name, method, path, response.status_code)
            return response


# --- helpers ----------------------------------------------------------------------------------


def _bash_command(script: str) -> dict[str, str]:
    return {"command": "run", "utilCmdArgs": f'-c "{script}"'}


def _check_ready(response: requests.Response) -> None:
    """Raise `_NotReady` for the answers of a box that is restarting (it did not act)."""
    status = response.status_code
    if status in (429, 503):
        raise _NotReady(f"{status}: {_message(response)}", _retry_after(response))
    if status == 500 and _MCPD_LOST in _message(response).lower():
        raise _NotReady(f"{status}: {_message(response)}", None)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _message(response: requests.Response) -> str:
    """F5's error message verbatim, or the status and a preview of a body that is not JSON."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
        error = body.get("error")
        if isinstance(error, str) and error:
            return error
    text = " ".join(response.text.split())[:200]
    return f"HTTP {response.status_code} {response.reason or ''}".strip() + (
        f": {text}" if text else ""
    )


def _json_object(response: requests.Response, name: str, path: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise DeviceError(f"{name}: {path} answered with something that is not JSON") from None
    if not isinstance(body, dict):
        raise DeviceError(f"{name}: {path} answered with JSON that is not an object")
    return body


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the box (no connection, no TLS session)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    reason: Any = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(
        reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
    )


def _unreachable(
    name: str, method: str, path: str, exc: requests.RequestException, *, uncertain: bool
) -> DeviceUnreachable:
    if isinstance(exc, requests.exceptions.SSLError):
        what = "the TLS handshake failed (certificate not trusted?)"
        hint = "Check the inventory's ca_bundle for this device."
    elif isinstance(exc, requests.exceptions.Timeout):
        what = "no answer in time"
        hint = "Check the management address and port, and that the device is up."
    else:
        what = "the connection failed or dropped"
        hint = "Check the management address and port, and that the device is up."
    if uncertain:
        what += "; the device may have acted on it"
        hint = "Read the device's registration again before trying anything else."
    return DeviceUnreachable(f"{name}: {method} {path}: {what}", hint=hint, uncertain=uncertain)
