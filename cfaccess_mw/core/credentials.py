"""The credentials configured besides the proxy's tokens: API keys (``CFACCESS_API_KEYS``, or a file of them),
kept as hashes, and the Cloudflare service tokens allowed in (``CFACCESS_SERVICE_TOKENS``)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from .environment import (
    _split,
)
from .errors import ConfigError

_HEX64 = re.compile(r"[0-9a-f]{64}")
_NO_SPACE = re.compile(r"[!-~]+")  # printable ASCII, no spaces or commas checked separately


_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True)
class ApiKey:
    """A named API key, kept only as the SHA-256 digest of the key."""

    name: str
    digest: bytes = field(repr=False)

    @classmethod
    def parse(cls, entry: str, variable: str = "CFACCESS_API_KEYS") -> ApiKey:
        """Parse ``name:sha256:<64 hex>``."""
        parts = entry.strip().split(":")
        if len(parts) != 3 or parts[1].lower() != "sha256":
            raise ConfigError(variable, "each entry must look like name:sha256:<64 hex digits>")
        name, _, hexdigest = parts
        if not _KEY_NAME.fullmatch(name):
            raise ConfigError(variable, f"API key name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-'")
        hexdigest = hexdigest.lower()
        if not _HEX64.fullmatch(hexdigest):
            raise ConfigError(variable, f"API key {name!r}: the SHA-256 digest must be 64 hex digits")
        return cls(name, bytes.fromhex(hexdigest))

    @classmethod
    def from_secret(cls, name: str, secret: str) -> ApiKey:
        """Hash a plaintext key (for code and tests; deployers pass the hash)."""
        return cls(name, hashlib.sha256(secret.encode()).digest())

    def line(self) -> str:
        """The ``name:sha256:<hex>`` form that goes into ``CFACCESS_API_KEYS``."""
        return f"{self.name}:sha256:{self.digest.hex()}"


@dataclass(frozen=True)
class ServiceToken:
    """A Cloudflare Access service token admitted by this app: a name and its client ID."""

    name: str
    client_id: str


def _read_api_keys(inline: str | None, path: str | None) -> list[ApiKey]:
    keys = [ApiKey.parse(entry) for entry in _split(inline)]
    if path is not None and path.strip():
        try:
            text = Path(path.strip()).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("CFACCESS_API_KEYS_FILE", f"cannot read {path.strip()!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError("CFACCESS_API_KEYS_FILE", f"{path.strip()!r} is not UTF-8 text") from None
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                try:
                    keys.append(ApiKey.parse(line, "CFACCESS_API_KEYS_FILE"))
                except ConfigError as exc:
                    raise ConfigError("CFACCESS_API_KEYS_FILE", f"line {number}: {exc.problem}") from None
    return keys


def _parse_service_tokens(value: str | None) -> list[ServiceToken]:
    tokens = []
    for entry in _split(value):
        name, sep, client_id = entry.partition("=")
        name, client_id = name.strip(), client_id.strip()
        if not sep or not _KEY_NAME.fullmatch(name) or not client_id or not _NO_SPACE.fullmatch(client_id):
            raise ConfigError(
                "CFACCESS_SERVICE_TOKENS",
                "each entry must look like name=<client id>, e.g. ci=0123abcd.access",
            )
        tokens.append(ServiceToken(name, client_id))
    return tokens
