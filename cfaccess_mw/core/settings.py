"""Configuration: one frozen object, validated once, read from ``CFACCESS_*`` variables.

Nothing else in the package reads ``os.environ``. Every check lives in
:meth:`Settings.__post_init__`, so ``Settings(...)`` built in code and
``Settings.from_env()`` are held to the same rules, and every error names the
environment variable a deployer would fix. The variables' names and parsers are in
:mod:`.environment`, the API keys and service tokens in :mod:`.credentials`, the presets' own settings in
:mod:`.preset_settings` and :class:`ExposureMode` in :mod:`.exposure`; all are importable from here as before.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .credentials import _HEX64, ApiKey, ServiceToken, _parse_service_tokens, _read_api_keys
from .environment import (
    CLIENT_PREFIX,
    ENV_NAMES,
    ENV_PREFIX,
    STRICT_VARIABLE,
    _boolean,
    _fail,
    _split,
    known_variables,
    nearest_name,
    unknown_variables,
)
from .errors import ConfigError
from .exposure import ExposureMode, is_loopback_url_host
from .keystate import DEFAULT_MAX_AGE_SECONDS
from .preset_settings import check_preset_settings, parse_provider
from .providers import Provider

__all__ = [
    "CLIENT_PREFIX",
    "ENV_NAMES",
    "ENV_PREFIX",
    "MAX_JWKS_MAX_AGE_SECONDS",
    "MAX_TOKEN_CACHE_SIZE",
    "MAX_USER_CACHE_SECONDS",
    "MAX_USER_CACHE_SIZE",
    "STRICT_VARIABLE",
    "ApiKey",
    "ExposureMode",
    "ServiceToken",
    "Settings",
    "known_variables",
    "nearest_name",
    "unknown_variables",
]


logger = logging.getLogger("cfaccess_mw")

#: A cached token costs about 3 KB (benchmarks/README.md): the cap keeps a typo from costing gigabytes.
MAX_TOKEN_CACHE_SIZE = 100_000
#: A deleted user stays admitted for up to this long; longer would make deleting a user mean little.
MAX_USER_CACHE_SECONDS = 3600
MAX_USER_CACHE_SIZE = 100_000
#: Longest CFACCESS_JWKS_MAX_AGE_SECONDS: a month of trusting keys no fetch has confirmed is already generous.
MAX_JWKS_MAX_AGE_SECONDS = 30 * 86400

_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _normalise_domain(value: str) -> str:
    domain = value.strip().lower()
    if domain.startswith("https://"):
        domain = domain[len("https://") :]
    elif "://" in domain:
        raise _fail("team_domain", "must be a host name such as myteam.cloudflareaccess.com, or https:// and that")
    domain = domain.removesuffix("/")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise _fail(
            "team_domain",
            f"{value!r} is not a host name; expected e.g. myteam.cloudflareaccess.com (no path, no port)",
        )
    return domain


@dataclass(frozen=True)
class Settings:
    """Everything the middleware needs to decide who a caller is.

    Build it with :meth:`from_env` (what deployers use) or directly in code; both
    are validated here. Derived values (``issuer``, ``certs_url`` when not given)
    are computed once.
    """

    exposure_mode: ExposureMode = ExposureMode.REVERSE_PROXY
    team_domain: str | None = None
    audiences: tuple[str, ...] = ()
    certs_url: str | None = None
    api_keys: tuple[ApiKey, ...] = ()
    service_tokens: tuple[ServiceToken, ...] = ()
    public_paths: tuple[str, ...] = ()
    leeway_seconds: float = 30.0
    jwks_cache_seconds: float = 300.0
    jwks_timeout_seconds: float = 5.0
    jwks_refresh_cooldown_seconds: float = 10.0
    jwks_max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
    token_cache_size: int = 4096
    allow_cookie: bool = False
    user_cache_seconds: float = 0.0
    user_cache_size: int = 4096
    local_hosts: tuple[str, ...] = ()
    # Another proxy than Cloudflare (providers.py): which, and the settings only its preset reads.
    provider: Provider = Provider.CLOUDFLARE
    issuers: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = ()
    token_header: str | None = None
    aws_alb_arns: tuple[str, ...] = ()
    aws_client_id: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        try:
            mode = ExposureMode(self.exposure_mode)
        except ValueError:
            raise _fail("exposure_mode", f"{self.exposure_mode!r} is not one of: local, reverse-proxy") from None
        set_(self, "exposure_mode", mode)
        provider = parse_provider(self.provider)
        set_(self, "provider", provider)
        cloudflare = provider is Provider.CLOUDFLARE  # the checks below marked so are Cloudflare's own
        for name, value in check_preset_settings(self).items():
            set_(self, name, value)

        if self.team_domain is not None:
            set_(self, "team_domain", _normalise_domain(self.team_domain))
        for name in ("audiences", "api_keys", "service_tokens", "public_paths", "local_hosts"):
            if isinstance(getattr(self, name), (str, bytes)):
                raise _fail(name, f"{name} must be a tuple, not a single string")
        audiences = tuple(aud.lower() if isinstance(aud, str) else aud for aud in self.audiences)
        for aud in audiences if cloudflare else ():
            if not isinstance(aud, str) or not _HEX64.fullmatch(aud):
                raise _fail(
                    "audiences",
                    f"{aud!r} is not an AUD tag: Cloudflare shows a 64-hex-digit tag in the Access application's "
                    "overview (Application Audience (AUD) Tag)",
                )
        if len(set(audiences)) != len(audiences):
            raise _fail("audiences", "lists the same AUD tag twice")
        set_(self, "audiences", audiences if cloudflare else self.audiences)

        if cloudflare and (self.team_domain is None) != (not audiences):
            missing = "audiences" if self.team_domain else "team_domain"
            raise _fail(missing, "CFACCESS_TEAM_DOMAIN and CFACCESS_AUD must be set together")
        if cloudflare and mode is ExposureMode.REVERSE_PROXY and self.team_domain is None:
            raise _fail(
                "team_domain",
                "required in reverse-proxy mode (with CFACCESS_AUD): behind a proxy only a verified "
                "Cloudflare Access token or an API key can identify a caller. Set CFACCESS_EXPOSURE_MODE=local "
                "if only this host can reach the app",
            )

        if self.certs_url is not None:
            set_(self, "certs_url", self._check_certs_url(self.certs_url))
        elif self.team_domain is not None:
            set_(self, "certs_url", f"https://{self.team_domain}/cdn-cgi/access/certs")
        if cloudflare and self.certs_url is not None and self.team_domain is None:
            raise _fail("certs_url", "only makes sense with CFACCESS_TEAM_DOMAIN and CFACCESS_AUD")
        if self.service_tokens and self.team_domain is None:
            raise _fail(
                "service_tokens", "service tokens arrive as Access tokens: set CFACCESS_TEAM_DOMAIN and CFACCESS_AUD"
            )

        self._check_unique(
            "api_keys",
            [k.name for k in self.api_keys],
            [k.digest for k in self.api_keys],
            "API key",
            "hash",
        )
        set_(self, "api_keys", tuple(self.api_keys))
        self._check_unique(
            "service_tokens",
            [t.name for t in self.service_tokens],
            [t.client_id for t in self.service_tokens],
            "service token",
            "client ID",
        )
        set_(self, "service_tokens", tuple(self.service_tokens))
        set_(self, "public_paths", tuple(self._check_path(p) for p in self.public_paths))
        set_(self, "local_hosts", tuple(self._check_local_host(h) for h in self.local_hosts))
        if self.local_hosts and mode is not ExposureMode.LOCAL:
            raise _fail(
                "local_hosts", "names hosts the local operator uses: only meaningful with CFACCESS_EXPOSURE_MODE=local"
            )

        # A cooldown of 0 refetches for every unknown key id: what a test wants right after rotating its local
        # issuer's key, and a load generator against a real certs endpoint. So 0 only for a loopback certs URL.
        loopback_certs = self.certs_url is not None and is_loopback_url_host(urlsplit(self.certs_url).hostname or "")
        for name, low, high in (
            ("leeway_seconds", 0, 300),
            ("jwks_cache_seconds", 10, 86400),
            ("jwks_timeout_seconds", 0.1, 60),
            ("jwks_refresh_cooldown_seconds", 0 if loopback_certs else 1, 60),
            ("jwks_max_age_seconds", 60, MAX_JWKS_MAX_AGE_SECONDS),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise _fail(name, f"must be a number, got {value!r}")
            if not low <= value <= high:
                hint = ""
                if name == "jwks_refresh_cooldown_seconds" and 0 <= value < low:
                    hint = " (below 1 only for tests, with a loopback CFACCESS_CERTS_URL)"
                raise _fail(name, f"must be between {low} and {high} seconds, got {value}{hint}")
            set_(self, name, float(value))
        if self.jwks_max_age_seconds < self.jwks_cache_seconds:
            raise _fail(
                "jwks_max_age_seconds",
                f"must be at least CFACCESS_JWKS_CACHE_SECONDS ({self.jwks_cache_seconds:g}), or keys would stop being "
                f"trusted before their routine refresh; got {self.jwks_max_age_seconds:g}",
            )
        size = self.token_cache_size
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_TOKEN_CACHE_SIZE:
            raise _fail("token_cache_size", f"must be a whole number from 0 to {MAX_TOKEN_CACHE_SIZE}, got {size!r}")
        self._check_user_cache()

    def _check_user_cache(self) -> None:
        seconds = self.user_cache_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise _fail("user_cache_seconds", f"must be a number, got {seconds!r}")
        if not 0 <= seconds <= MAX_USER_CACHE_SECONDS:
            raise _fail(
                "user_cache_seconds",
                f"must be between 0 (look every user up on every request) and {MAX_USER_CACHE_SECONDS} seconds "
                f"(a user deleted in the app stays admitted this long), got {seconds}",
            )
        object.__setattr__(self, "user_cache_seconds", float(seconds))
        size = self.user_cache_size
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_USER_CACHE_SIZE:
            raise _fail("user_cache_size", f"must be a whole number from 0 to {MAX_USER_CACHE_SIZE}, got {size!r}")

    @staticmethod
    def _check_certs_url(url: str) -> str:
        try:
            parts = urlsplit(url.strip())  # raises ValueError for a broken IPv6 host ("https://[::1/")
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            raise _fail("certs_url", "has an invalid host or port") from None
        host = parts.hostname or ""
        if parts.username is not None or parts.password is not None:
            raise _fail("certs_url", "must not carry a user name or password (it would be logged)")
        if parts.scheme == "https" and host:
            return url.strip()
        if parts.scheme == "http" and host and is_loopback_url_host(host):
            return url.strip()
        raise _fail("certs_url", "must be an https:// URL (plain http:// is allowed only for a loopback host)")

    @staticmethod
    def _check_path(path: str) -> str:
        if not path.startswith("/") or any(c.isspace() for c in path) or "?" in path or "#" in path:
            raise _fail("public_paths", f"{path!r} must be a path starting with '/', without spaces, '?' or '#'")
        segments = path.strip("/").split("/")
        if path.strip("/") == "":
            raise _fail("public_paths", "'/' would make every path public; list the paths that must be open")
        if any(s in ("", ".", "..") for s in segments):
            raise _fail("public_paths", f"{path!r} must not contain empty, '.' or '..' segments")
        return "/" + "/".join(segments)

    @staticmethod
    def _check_local_host(host: object) -> str:
        name = host.strip().lower() if isinstance(host, str) else ""
        labels = name.split(".")
        if not name or not all(_HOST_LABEL.fullmatch(label) for label in labels):
            raise _fail("local_hosts", f"{host!r} is not a host name (no scheme, port or path; e.g. devbox.lan)")
        return name

    @staticmethod
    def _check_unique(field_name: str, names: list[str], values: list[object], what: str, value_what: str) -> None:
        if len(set(names)) != len(names):
            raise _fail(field_name, f"two {what}s share a name; names must be unique")
        if len(set(values)) != len(values):
            raise _fail(field_name, f"two {what}s share a {value_what}")

    # --- derived -----------------------------------------------------------------------------

    @property
    def jwt_enabled(self) -> bool:
        """True when proxy tokens are verified (team domain and AUD set, or another provider's preset)."""
        return self.team_domain is not None or self.provider is not Provider.CLOUDFLARE

    @property
    def issuer(self) -> str | None:
        """The exact ``iss`` a token must carry: ``https://<team domain>`` (another preset: its first issuer)."""
        if self.provider is not Provider.CLOUDFLARE:
            return self.issuers[0]
        return f"https://{self.team_domain}" if self.team_domain else None

    @property
    def logout_url(self) -> str | None:
        """Cloudflare Access logout for this team, for a web UI's sign-out link."""
        return f"https://{self.team_domain}/cdn-cgi/access/logout" if self.team_domain else None

    def find_api_key(self, digest: bytes) -> ApiKey | None:
        """The API key whose digest equals ``digest``, comparing every entry in constant time."""
        found = None
        for key in self.api_keys:
            if hmac.compare_digest(key.digest, digest):
                found = key
        return found

    # --- from the environment -----------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, strict: bool | None = None) -> Settings:
        """Read and validate every ``CFACCESS_*`` variable; raise :class:`ConfigError` naming the bad one.

        An unknown ``CFACCESS_*`` name is usually a typo that silently drops a setting
        (``CFACCESS_PUBLIC_PATH`` leaves ``/healthz`` behind auth). It is logged as a warning, or,
        with ``strict`` (default: the ``CFACCESS_STRICT`` variable), refused like any bad value.

        The error is also logged (``cfaccess_mw`` ERROR), so it is the first thing an operator sees above the
        server's traceback when this runs at import, and it is raised from here, not from the validator deep
        inside, so the traceback ends with the caller's line and the message.
        """
        try:
            return cls._read_env(os.environ if environ is None else environ, strict)
        except ConfigError as err:
            logger.error("cfaccess_mw: configuration error: %s", err)
            err.logged = True
            raise err.with_traceback(None) from None

    @classmethod
    def _read_env(cls, env: Mapping[str, str], strict: bool | None) -> Settings:
        if strict is None:
            raw_strict = env.get(STRICT_VARIABLE, "").strip()
            strict = _boolean(STRICT_VARIABLE, raw_strict) if raw_strict else False
        unknown = unknown_variables(env)
        if unknown and strict:
            name, suggestion = unknown[0]
            others = f"; also unknown: {', '.join(n for n, _ in unknown[1:])}" if len(unknown) > 1 else ""
            guess = f"; did you mean {suggestion}?" if suggestion else ""
            raise ConfigError(
                name, f"not a setting cfaccess_mw reads{guess}{others} (unknown names are errors in strict mode)"
            )
        for name, suggestion in unknown:
            guess = f" did you mean {suggestion}?" if suggestion else ""
            logger.warning("cfaccess_mw: ignoring unknown setting %s (a typo?%s)", name, guess)

        def get(field_name: str) -> str | None:
            value = env.get(ENV_NAMES[field_name])
            if value is None or value.strip() == "":
                return None
            return value.strip()

        def number(field_name: str, default: float) -> float:
            raw = get(field_name)
            if raw is None:
                return default
            try:
                return float(raw)
            except ValueError:
                raise _fail(field_name, f"must be a number, got {raw!r}") from None

        kwargs: dict[str, object] = {}
        mode = get("exposure_mode")
        if mode is not None:
            kwargs["exposure_mode"] = mode.lower()
        kwargs["team_domain"] = get("team_domain")
        kwargs["audiences"] = tuple(_split(get("audiences")))
        kwargs["certs_url"] = get("certs_url")
        kwargs["api_keys"] = tuple(_read_api_keys(get("api_keys"), env.get("CFACCESS_API_KEYS_FILE")))
        kwargs["service_tokens"] = tuple(_parse_service_tokens(get("service_tokens")))
        kwargs["public_paths"] = tuple(_split(get("public_paths")))
        kwargs["local_hosts"] = tuple(_split(get("local_hosts")))
        kwargs["leeway_seconds"] = number("leeway_seconds", 30.0)
        kwargs["jwks_cache_seconds"] = number("jwks_cache_seconds", 300.0)
        kwargs["jwks_timeout_seconds"] = number("jwks_timeout_seconds", 5.0)
        kwargs["jwks_refresh_cooldown_seconds"] = number("jwks_refresh_cooldown_seconds", 10.0)
        kwargs["jwks_max_age_seconds"] = number("jwks_max_age_seconds", DEFAULT_MAX_AGE_SECONDS)
        raw_size = get("token_cache_size")
        if raw_size is not None:
            if not re.fullmatch(r"[0-9]{1,7}", raw_size):
                raise _fail("token_cache_size", f"must be a whole number, got {raw_size!r}")
            kwargs["token_cache_size"] = int(raw_size)
        kwargs["user_cache_seconds"] = number("user_cache_seconds", 0.0)
        raw_user_cache_size = get("user_cache_size")
        if raw_user_cache_size is not None:
            if not re.fullmatch(r"[0-9]{1,7}", raw_user_cache_size):
                raise _fail("user_cache_size", f"must be a whole number, got {raw_user_cache_size!r}")
            kwargs["user_cache_size"] = int(raw_user_cache_size)
        raw_cookie = get("allow_cookie")
        if raw_cookie is not None:
            kwargs["allow_cookie"] = _boolean("allow_cookie", raw_cookie)
        kwargs["provider"] = get("provider") or Provider.CLOUDFLARE
        for name in ("issuers", "algorithms", "aws_alb_arns"):
            kwargs[name] = tuple(_split(get(name)))
        kwargs["token_header"] = get("token_header")
        kwargs["aws_client_id"] = get("aws_client_id")
        return cls(**kwargs)  # type: ignore[arg-type]
