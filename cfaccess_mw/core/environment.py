"""The ``CFACCESS_*`` environment: every variable's name, the ones nothing reads (a typo, said with the nearest
name), and the small parsers (lists, booleans) :meth:`Settings.from_env <cfaccess_mw.core.settings.Settings.from_env>`
applies to each value. Only :mod:`cfaccess_mw.core.settings` reads ``os.environ``; this module is handed it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from .errors import ConfigError
from .preset_settings import VARIABLES as PROVIDER_VARIABLES

ENV_PREFIX = "CFACCESS_"


#: Field name -> environment variable, so errors raised for ``Settings(...)`` still name what a deployer sets.
ENV_NAMES = {
    "exposure_mode": "CFACCESS_EXPOSURE_MODE",
    "team_domain": "CFACCESS_TEAM_DOMAIN",
    "audiences": "CFACCESS_AUD",
    "certs_url": "CFACCESS_CERTS_URL",
    "api_keys": "CFACCESS_API_KEYS",
    "service_tokens": "CFACCESS_SERVICE_TOKENS",
    "public_paths": "CFACCESS_PUBLIC_PATHS",
    "leeway_seconds": "CFACCESS_LEEWAY_SECONDS",
    "jwks_cache_seconds": "CFACCESS_JWKS_CACHE_SECONDS",
    "jwks_timeout_seconds": "CFACCESS_JWKS_TIMEOUT_SECONDS",
    "jwks_refresh_cooldown_seconds": "CFACCESS_JWKS_REFRESH_COOLDOWN_SECONDS",
    "jwks_max_age_seconds": "CFACCESS_JWKS_MAX_AGE_SECONDS",
    "token_cache_size": "CFACCESS_TOKEN_CACHE_SIZE",
    "allow_cookie": "CFACCESS_ALLOW_COOKIE",
    "user_cache_seconds": "CFACCESS_USER_CACHE_SECONDS",
    "user_cache_size": "CFACCESS_USER_CACHE_SIZE",
    "local_hosts": "CFACCESS_LOCAL_HOSTS",
    **PROVIDER_VARIABLES,  # CFACCESS_PROVIDER and the presets' own settings (preset_settings.py)
}


_FILE_VARS = {"CFACCESS_API_KEYS_FILE"}


#: Read by from_env itself: unknown CFACCESS_* names become errors instead of warnings.
STRICT_VARIABLE = "CFACCESS_STRICT"


#: The httpx client's variables (cfaccess_mw.client), not the middleware's.
CLIENT_PREFIX = "CFACCESS_CLIENT_"


def _fail(field_name: str, problem: str) -> ConfigError:
    return ConfigError(ENV_NAMES.get(field_name, field_name), problem)


def known_variables() -> frozenset[str]:
    """Every ``CFACCESS_*`` name the middleware reads (the client's ``CFACCESS_CLIENT_*`` are its own)."""
    return frozenset({*ENV_NAMES.values(), *_FILE_VARS, STRICT_VARIABLE})


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``CFACCESS_*`` names in ``environ`` that nothing reads, each with the known name it most resembles."""
    known = known_variables()
    unknown = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known and not name.startswith(CLIENT_PREFIX):
            unknown.append((name, nearest_name(name, known)))
    return unknown


def nearest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name ``name`` most likely misspells: close in spelling, else the only one it starts or ends.

    The shared ``CFACCESS_`` prefix is left out of the comparison, or every name would look alike.
    """
    typed = name[len(ENV_PREFIX) :]
    suffixes = {k[len(ENV_PREFIX) :]: k for k in known}
    close = difflib.get_close_matches(typed, suffixes, n=1, cutoff=0.7)
    if close:
        return suffixes[close[0]]
    stems = [k for s, k in suffixes.items() if len(typed) >= 3 and (s.startswith(typed) or typed.startswith(s))]
    return stems[0] if len(stems) == 1 else None


def _split(value: str | None) -> Iterable[str]:
    if value is None:
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def _boolean(field_name: str, raw: str) -> bool:
    """``true``/``false`` and friends; ``field_name`` is a Settings field or a variable name."""
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise _fail(field_name, f"must be true or false, got {raw!r}")
