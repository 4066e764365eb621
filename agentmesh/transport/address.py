"""Broker addresses: ``mqtt://host:port`` or ``mqtts://host:port`` (DESIGN.md section 9)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from agentmesh.errors import ConfigError

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
BROKER_ENV = "AGENTMESH_BROKER"


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url.strip() if "://" in url else f"mqtt://{url.strip()}")
        try:
            secret = parts.password
        except ValueError:
            secret = None
        # Error messages end up in logs: never echo the password.
        url = url.strip().replace(f":{secret}@", ":***@") if secret else url.strip()
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ConfigError(f"broker URL {url!r} must start with mqtt:// or mqtts://", field="broker")
        if not parts.hostname:
            raise ConfigError(f"broker URL {url!r} has no host", field="broker")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port is None:
            port = 8883 if tls else 1883
        if not 0 < port < 65536:
            raise ConfigError(f"broker URL {url!r} has an invalid port", field="broker")
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    @classmethod
    def resolve(cls, url: str | None = None) -> BrokerAddress:
        """``--broker`` if given, else ``$AGENTMESH_BROKER``, else the local default."""
        return cls.parse(url or os.environ.get(BROKER_ENV) or DEFAULT_BROKER)

    @property
    def url(self) -> str:
        # An IPv6 literal needs brackets, or its colons read as the port separator.
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url
