"""The client's configuration: the ``CFACCESS_CLIENT_*`` variables, the ``[api]`` table of a TOML file, and the
``${VAR}`` expansion of header values and keys, which are kept redacted (:class:`_Secret`) from here on."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from ..core.errors import ConfigError
from ..core.exposure import is_loopback_url_host
from ..core.settings import CLIENT_PREFIX, nearest_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

logger = logging.getLogger("cfaccess_mw.client")


#: Environment variables read by :meth:`AccessAuth.from_env` (``Settings.from_env`` ignores this prefix).
ENV_CONFIG = "CFACCESS_CLIENT_CONFIG"


ENV_URL = "CFACCESS_CLIENT_URL"


ENV_API_KEY = "CFACCESS_CLIENT_API_KEY"


ENV_HEADERS = "CFACCESS_CLIENT_HEADERS"


ENV_CLOUDFLARED = "CFACCESS_CLIENT_CLOUDFLARED"


CLIENT_VARIABLES = frozenset({ENV_CONFIG, ENV_URL, ENV_API_KEY, ENV_HEADERS, ENV_CLOUDFLARED})


_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token


_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")  # visible ASCII, inner spaces only


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


#: Headers httpx computes itself; configuring them would break the request or smuggle a second one.
_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"})


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


class ClientConfigError(ConfigError):
    """The client configuration is unusable. Names the file, header or variable; never a value."""


class _Secret:
    """A header value or key: readable by this module, redacted everywhere else (repr, str, vars())."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


def expand_env(value: str, where: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace each ``${VAR}`` in ``value`` with the variable's value; ``$${`` stands for a literal ``${``.

    An unset or empty variable, an unclosed ``${`` or a bad name raises
    :class:`ClientConfigError` naming ``where`` and the variable, never the value.
    Expanded text is not expanded again.
    """
    env = os.environ if environ is None else environ
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith("$${", i):
            out.append("${")
            i += 3
        elif value.startswith("${", i):
            end = value.find("}", i + 2)
            if end < 0:
                raise ClientConfigError(where, "has '${' without a closing '}' (write '$${' for a literal '${')")
            name = value[i + 2 : end]
            if not _VAR_NAME.fullmatch(name):
                raise ClientConfigError(
                    where,
                    "has a '${...}' whose inside is not a variable name (letters, digits and '_';"
                    " write '$${' for a literal '${')",
                )
            if name not in env:
                raise ClientConfigError(where, f"environment variable {name} is not set")
            if env[name] == "":
                raise ClientConfigError(where, f"environment variable {name} is set but empty")
            out.append(env[name])
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _checked_value(raw: object, where: str, environ: Mapping[str, str] | None) -> _Secret:
    if not isinstance(raw, str):
        raise ClientConfigError(where, f"must be a string, got {type(raw).__name__}")
    value = expand_env(raw, where, environ)
    if not value:
        raise ClientConfigError(where, "is empty")
    if not _HEADER_VALUE.fullmatch(value):
        raise ClientConfigError(
            where,
            "must be visible ASCII characters, without line breaks or leading/trailing spaces (value not shown)",
        )
    return _Secret(value)


def _check_url(url: object, where: str, has_secrets: bool) -> httpx.URL:
    if not isinstance(url, str):
        raise ClientConfigError(where, f"must be a string, got {type(url).__name__}")
    try:
        parsed = httpx.URL(url.strip())
    except httpx.InvalidURL:
        raise ClientConfigError(where, "is not a URL; expected e.g. https://app.example.com") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ClientConfigError(where, "must be an http:// or https:// URL with a host")
    if parsed.scheme == "http" and has_secrets and not is_loopback_url_host(parsed.host):
        raise ClientConfigError(
            where, "must be https:// (plain http:// would send the configured secrets in clear text)"
        )
    return parsed


def _host_of(url: str) -> str:
    try:
        return httpx.URL(url).host or "?"
    except httpx.InvalidURL:
        return "?"


def _printable(text: str, limit: int = 300) -> str:
    text = _CONTROL.sub("", text)
    return text if len(text) <= limit else text[:limit] + "..."


def _warn_unknown_client_variables(env: Mapping[str, str]) -> None:
    """A misspelt ``CFACCESS_CLIENT_*`` name silently drops a setting: say so, as ``Settings.from_env`` does for
    the server's variables (which leave this prefix to the client)."""
    for name in sorted(n for n in env if n.startswith(CLIENT_PREFIX) and n not in CLIENT_VARIABLES):
        guess = nearest_name(name, CLIENT_VARIABLES)
        hint = f" did you mean {guess}?" if guess else ""
        logger.warning("cfaccess_mw.client: ignoring unknown setting %s (a typo?%s)", name, hint)


def _api_table(data: Mapping[str, Any], source: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``[api]`` table (with ``headers`` always a dict) and, per setting, where it came from."""
    api = data.get("api", {})
    if not isinstance(api, Mapping):
        raise ClientConfigError(f"{source} [api]", "must be a table")
    headers = api.get("headers", {})
    if not isinstance(headers, Mapping):
        raise ClientConfigError(f"{source} [api.headers]", "must be a table of header name = value")
    where = {key: f"{source} [api] {key}" for key in ("url", "key", "cloudflared")}
    where.update({name: f"{source} [api.headers] {name}" for name in headers})
    return {**api, "headers": dict(headers)}, where


def _read_toml(file: Path, *, missing_ok: bool, label: str) -> dict[str, Any]:
    try:
        text = file.expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ClientConfigError(label, "does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientConfigError(label, f"cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClientConfigError(label, f"is not valid TOML: {exc}") from None
