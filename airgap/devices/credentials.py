"""Turn a credential name from an inventory into a `Login`, from the environment or a prompt.

A credential named `lab` is read from `AIRGAP_DEVICE_LAB_USERNAME` plus `..._PASSWORD` (or
`..._KEYFILE`, the path of an SSH private key) in the environment mapping the caller passes in;
what is missing is asked for through the prompt callback, if there is one. The core never reads
`os.environ` itself, and never stores, logs or prints a secret: errors name the variable, not
its value.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from airgap.devices.base import Login
from airgap.errors import ConfigError

__all__ = ["CredentialResolver", "Prompt", "env_prefix", "resolve_login"]

Prompt = Callable[[str, bool], str]
"""`prompt(question, secret) -> answer`; `secret` means do not echo (the CLI passes getpass)."""

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def env_prefix(name: str) -> str:
    """`AIRGAP_DEVICE_<NAME>_` for a credential name (upper case, `-` as `_`).

    Raises:
        ConfigError: the name is not letters, digits, `_` and `-`.
    """
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(
            f"credential name {name!r} must be letters, digits, '_' or '-'",
            hint="Rename the credential in the inventory.",
        )
    return f"AIRGAP_DEVICE_{name.upper().replace('-', '_')}_"


def resolve_login(name: str, env: Mapping[str, str], prompt: Prompt | None = None) -> Login:
    """Resolve one credential.

    Args:
        name: the credential name the inventory gives.
        env: the environment (the CLI passes `os.environ`).
        prompt: asks the operator for what the environment lacks; None: never ask.

    Raises:
        ConfigError: the username, or both password and key file, are missing and there is no
            prompt; a key file that does not exist; an empty answer. The message names the
            variable, never a value.

    Returns:
        The login; its password is kept out of `repr`.
    """
    prefix = env_prefix(name)
    user_var, password_var, key_var = (
        f"{prefix}USERNAME",
        f"{prefix}PASSWORD",
        f"{prefix}KEYFILE",
    )
    username = env.get(user_var, "")
    if not username:
        if prompt is None:
            raise ConfigError(
                f"credential {name!r}: {user_var} is not set",
                hint=f"Set {user_var} and {password_var} (or {key_var}), or run interactively.",
            )
        username = prompt(f"Username for credential {name!r}: ", False).strip()
        if not username:
            raise ConfigError(f"credential {name!r}: no username was given")
    key_file: Path | None = None
    key_value = env.get(key_var, "")
    if key_value:
        key_file = Path(key_value).expanduser()
        if not key_file.is_file():
            raise ConfigError(
                f"credential {name!r}: {key_var} names a file that does not exist",
                hint=f"Point {key_var} at an SSH private key file.",
            )
    password: str | None = env.get(password_var) or None
    if password is None and key_file is None:
        if prompt is None:
            raise ConfigError(
                f"credential {name!r}: neither {password_var} nor {key_var} is set",
                hint=f"Set {password_var} (or {key_var} for SSH keys), or run interactively.",
            )
        password = prompt(f"Password for {username} (credential {name!r}): ", True)
        if not password:
            raise ConfigError(f"credential {name!r}: no password was given")
    return Login(username=username, password=password, key_file=key_file)


class CredentialResolver:
    """Resolves each credential name once and keeps the answer in memory, for many threads.

    A run over a whole inventory asks the prompt at most once per credential name, however
    many devices share it and however many threads ask at once. Nothing is written anywhere.
    """

    def __init__(self, env: Mapping[str, str], prompt: Prompt | None = None) -> None:
        self._env = dict(env)
        self._prompt = prompt
        self._lock = threading.Lock()
        self._logins: dict[str, Login] = {}

    def login(self, name: str) -> Login:
        """The login for a credential name (resolved on first use).

        Raises:
            ConfigError: as `resolve_login`.
        """
        with self._lock:
            found = self._logins.get(name)
            if found is None:
                found = resolve_login(name, self._env, self._prompt)
                self._logins[name] = found
            return found
