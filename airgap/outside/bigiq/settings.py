"""`BigIqSettings`: where BIG-IQ is and how to log in, from config and the environment."""

from __future__ import annotations

from dataclasses import dataclass, field

from airgap.config import Config, env_name
from airgap.errors import ConfigError
from airgap.outside.http import TlsSettings


@dataclass(frozen=True)
class BigIqSettings:
    """Where BIG-IQ is and how to log in. The password never shows in `repr`."""

    url: str  # e.g. https://bigiq.example.net
    username: str
    password: str = field(repr=False)
    login_provider: str = "tmos"
    verify_tls: bool | str = True  # True, False, or the path of a CA bundle (PEM)

    @classmethod
    def from_config(cls, config: Config) -> BigIqSettings:
        """Build settings from config.toml / `AIRGAP_BIGIQ_*` and the environment secrets.

        Args:
            config: the outside home's merged configuration.

        Raises:
            ConfigError: (E_CONFIG) `bigiq.url`, the username or the password is missing; the
                message names every missing `AIRGAP_BIGIQ_*` variable at once.

        Returns:
            The settings.
        """
        url = config.get("bigiq.url")
        username = config.secret("bigiq.username")
        password = config.secret("bigiq.password")
        missing = [
            env_name(key)
            for key, value in (
                ("bigiq.url", url),
                ("bigiq.username", username),
                ("bigiq.password", password),
            )
            if not value
        ]
        if missing or not url or not username or not password:
            raise ConfigError(
                f"BIG-IQ is not configured: set {', '.join(missing)}",
                hint="Set the URL with `airgap config set bigiq.url https://bigiq.example.net` "
                "(or AIRGAP_BIGIQ_URL); the username and password come only from the "
                "environment, as AIRGAP_BIGIQ_USERNAME and AIRGAP_BIGIQ_PASSWORD.",
            )
        provider = config.get("bigiq.login_provider") or "tmos"
        return cls(
            url=str(url),
            username=username,
            password=password,
            login_provider=str(provider),
            verify_tls=TlsSettings.from_config(config, "bigiq").verify,
        )
