"""Client side: let a CLI or an agent pass the authenticating proxy, then the app.

A request to an app behind Cloudflare Access (or oauth2-proxy, Authelia, an mTLS
load balancer) meets two independent gates. The edge decides whether the request
reaches the origin at all: a browser satisfies it with an SSO login, a machine
with a service token (``CF-Access-Client-Id`` / ``CF-Access-Client-Secret``), a
person at a terminal with a ``cloudflared`` login (``cf-access-token``). Only then
does the app see its own ``Authorization: Bearer <key>``. :class:`AccessAuth` is
an ``httpx.Auth`` that sends both, and turns an edge refusal (a redirect to the
login page, or a ``Cloudflare-Access`` challenge) into an
:class:`AccessChallengeError` that says what to configure.

Header values and the key may be written as ``${VAR}`` so no secret has to sit in
a file; they are expanded once, when the auth is built, and an unset variable is
an error naming it. Values are kept in a wrapper whose ``repr`` is redacted, and
nothing in this module logs, raises or prints a value: only header names.

Configuration (see :meth:`AccessAuth.from_file` and :meth:`AccessAuth.from_env`)::

    [api]
    url = "https://app.example.com"
    key = "${APP_API_KEY}"

    [api.headers]
    CF-Access-Client-Id = "0123abcd.access"
    CF-Access-Client-Secret = "${CF_ACCESS_CLIENT_SECRET}"
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
import httpx

from ..core.errors import CfAccessError, ConfigError
from ..core.exposure import is_loopback_url_host
from ..core.settings import CLIENT_PREFIX, nearest_name
from ..core.tokens import decode_unverified

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

#: The header ``cloudflared access curl`` sends with a user's token (Cloudflare docs, "Authenticate agents").
CF_ACCESS_TOKEN_HEADER = "cf-access-token"
SERVICE_TOKEN_HEADERS = ("CF-Access-Client-Id", "CF-Access-Client-Secret")

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")  # visible ASCII, inner spaces only
_JWT_LIKE = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CHALLENGE_SCHEME = re.compile(r"(?:^|,)\s*Cloudflare-Access(?=\s|,|$)(?P<params>[^\n]*)", re.IGNORECASE)
_RESOURCE_METADATA = re.compile(r'resource_metadata\s*=\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s,]+))', re.IGNORECASE)
#: Headers httpx computes itself; configuring them would break the request or smuggle a second one.
_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"})
_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class ClientConfigError(ConfigError):
    """The client configuration is unusable. Names the file, header or variable; never a value."""


class CloudflaredError(CfAccessError):
    """``cloudflared`` is missing, failed, or printed no usable token."""


class AccessChallengeError(CfAccessError):
    """The edge stopped the request before it reached the app.

    ``host`` is the protected host that was called; ``resource_metadata`` the URL
    from a ``WWW-Authenticate: Cloudflare-Access resource_metadata="..."``
    challenge (``None`` for a redirect to the login page); ``login_url`` the
    redirect target, if that was the form; ``sent`` the names of the edge headers
    this client sent (empty when none were configured).
    """

    def __init__(
        self,
        host: str,
        resource_metadata: str | None = None,
        *,
        login_url: str | None = None,
        sent: Iterable[str] = (),
        app_url: str | None = None,
        configured_in: str | None = None,
    ) -> None:
        self.host = host
        self.resource_metadata = resource_metadata
        self.login_url = login_url
        self.sent = tuple(sent)
        #: The called origin, scheme and port kept (``https://app.example.com:8443``): what cloudflared signs in to.
        self.app_url = app_url or f"https://{host}"
        #: Where the caller's settings live: ``"environment"``, a config file's path, or ``None`` (code).
        self.configured_in = configured_in
        super().__init__(self._message())

    def _how_to_configure(self) -> str:
        """How to add a service token or cloudflared, said in the terms of wherever this client is configured."""
        login = f"`cloudflared access login {self.app_url}`"
        if self.configured_in == "environment":
            return (
                f" To pass it, set a service token: {ENV_HEADERS}='CF-Access-Client-Id=<id>.access,"
                "CF-Access-Client-Secret=${CF_ACCESS_CLIENT_SECRET}'; or, as a person, run"
                f" {login} and set {ENV_CLOUDFLARED}=true."
            )
        if self.configured_in is not None:
            return (
                f" To pass it, add a service token under [api.headers] in {self.configured_in}:"
                ' CF-Access-Client-Id = "<id>.access" and CF-Access-Client-Secret = "${CF_ACCESS_CLIENT_SECRET}";'
                f" or, as a person, run {login} and set cloudflared = true under [api]."
            )
        return (
            " To pass it, send a service token's CF-Access-Client-Id and CF-Access-Client-Secret headers"
            f" (AccessAuth(headers=...)); or, as a person, run {login} and use a CloudflaredToken."
        )

    def _message(self) -> str:
        if self.login_url is not None:
            how = f"answered with a redirect to its login page on {_host_of(self.login_url)}"
        else:
            how = "answered with a Cloudflare-Access challenge"
        text = f"Cloudflare Access in front of {self.host} {how}; the request never reached the app."
        if self.resource_metadata:
            text += f" Resource metadata: {self.resource_metadata}."
        if self.sent:
            text += (
                f" The edge did not accept the headers sent ({', '.join(self.sent)}): check their values, and that"
                " the Access application has a Service Auth policy for this service token, or sign in again"
                f" with `cloudflared access login {self.app_url}`."
            )
        else:
            text += self._how_to_configure()
        return text


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


# --- ${VAR} expansion ---------------------------------------------------------------------------------


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


# --- challenge detection -------------------------------------------------------------------------------


def _is_access_login(location: httpx.URL) -> bool:
    host = location.host.lower()
    on_team_domain = host == "cloudflareaccess.com" or host.endswith(".cloudflareaccess.com")
    # A custom team domain serves the same login path (Cloudflare docs, "Custom team domain").
    return on_team_domain or location.path.startswith("/cdn-cgi/access/login")


def detect_challenge(
    response: httpx.Response, sent: Iterable[str] = (), *, configured_in: str | None = None
) -> AccessChallengeError | None:
    """The :class:`AccessChallengeError` ``response`` amounts to, or ``None`` if it came from the app.

    Two signs (Cloudflare docs, "Authenticate agents" and its review): a redirect
    whose ``Location`` is the Access login page (``*.cloudflareaccess.com``, or
    ``/cdn-cgi/access/login`` on a custom team domain), or a
    ``WWW-Authenticate: Cloudflare-Access resource_metadata="..."`` header.
    """
    called = response.request.url
    host = called.host
    context: dict[str, Any] = {
        "sent": sent,
        "app_url": f"{called.scheme}://{called.netloc.decode('ascii')}",
        "configured_in": configured_in,
    }
    for value in response.headers.get_list("www-authenticate"):
        match = _CHALLENGE_SCHEME.search(value)
        if match:
            meta = _RESOURCE_METADATA.search(match.group("params"))
            metadata = (meta.group("quoted") or meta.group("bare")) if meta else None
            return AccessChallengeError(host, _printable(metadata) if metadata else None, **context)
    if response.status_code in _REDIRECTS and "location" in response.headers:
        try:
            location = response.request.url.join(response.headers["location"])
        except httpx.InvalidURL:
            return None
        if _is_access_login(location):
            return AccessChallengeError(host, None, login_url=_printable(str(location), 500), **context)
    return None


# --- token providers -----------------------------------------------------------------------------------


class TokenProvider(Protocol):
    """Something that can produce a per-user edge token (sent as ``cf-access-token``)."""

    def cached(self) -> str | None:
        """A still-valid token without blocking, or ``None``."""

    def token(self) -> str:
        """A valid token, fetching one if needed (may block)."""

    def invalidate(self) -> None:
        """Forget the cached token (the edge refused it)."""


class CloudflaredToken:
    """A person's Access token from ``cloudflared access token -app=<url>``, cached until its ``exp``.

    ``cloudflared access login <url>`` (run once, in a browser) stores the token;
    this provider only reads it, so it never opens a browser behind a CLI's back.
    ``executable`` is a name looked up on ``search_path`` (default ``PATH``) or a
    path; ``clock`` is injectable so tests need no sleeps.
    """

    def __init__(
        self,
        app_url: str,
        *,
        executable: str = "cloudflared",
        search_path: str | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 60.0,
        refresh_margin: float = 30.0,
    ) -> None:
        self.app_url = app_url
        self.executable = executable
        self.search_path = search_path
        self.clock = clock
        self.timeout = timeout
        self.refresh_margin = refresh_margin
        #: How many times ``cloudflared`` has been run (for tests and diagnostics).
        self.runs = 0
        self._token: _Secret | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "cached" if self._token is not None else "empty"
        return f"CloudflaredToken(app_url={self.app_url!r}, executable={self.executable!r}, {state})"

    def cached(self) -> str | None:
        token = self._token
        if token is not None and self.clock() < self._expires_at - self.refresh_margin:
            return token.reveal()
        return None

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def token(self) -> str:
        with self._lock:
            cached = self.cached()
            if cached is not None:
                return cached
            token, exp = self._fetch()
            self._token, self._expires_at = _Secret(token), exp
            return token

    def _login_hint(self) -> str:
        return f"sign in first with `cloudflared access login {self.app_url}`"

    def _fetch(self) -> tuple[str, float]:
        exe = shutil.which(self.executable, path=self.search_path)
        if exe is None:
            raise CloudflaredError(
                f"{self.executable!r} was not found on PATH; install cloudflared "
                "(https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/downloads/) "
                "or name its full path, or use a service token instead"
            )
        self.runs += 1
        logger.debug("cfaccess_mw.client: running %s access token -app=%s", exe, self.app_url)
        try:
            done = subprocess.run(  # noqa: S603 - fixed argument list, no shell; exe is the user's cloudflared
                [exe, "access", "token", f"-app={self.app_url}"],
                stdin=subprocess.DEVNULL,  # a prompt must fail, not hang a CLI
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CloudflaredError(f"cloudflared access token did not finish within {self.timeout:g} s") from None
        except OSError as exc:
            raise CloudflaredError(f"could not run {exe}: {exc.strerror or type(exc).__name__}") from None
        if done.returncode != 0:
            said = _first_line(done.stderr) or _first_line(done.stdout) or "no message"
            raise CloudflaredError(
                f"cloudflared access token failed (exit {done.returncode}): {said}; {self._login_hint()}"
            )
        token = done.stdout.strip()
        try:
            _, claims = decode_unverified(token)
        except CfAccessError:
            raise CloudflaredError(
                f"cloudflared printed no Access token for {self.app_url} ({len(token)} characters of other output);"
                f" {self._login_hint()}"
            ) from None
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise CloudflaredError("the token cloudflared printed has no numeric 'exp' claim")
        if exp - self.refresh_margin <= self.clock():
            raise CloudflaredError(f"the token cloudflared holds for {self.app_url} has expired; {self._login_hint()}")
        return token, float(exp)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return _printable(_JWT_LIKE.sub("<token>", line), 200)
    return ""


# --- the auth ------------------------------------------------------------------------------------------


class AccessAuth(httpx.Auth):
    """Attach edge headers and the origin's Bearer key to every request; refuse an edge challenge.

    ``headers``: extra headers for the edge (e.g. a service token's
    ``CF-Access-Client-Id`` and ``CF-Access-Client-Secret``); ``api_key``: sent as
    ``Authorization: Bearer <key>``. Both may use ``${VAR}``, expanded from
    ``environ`` (default ``os.environ``) now. ``token_provider`` adds a per-user
    ``cf-access-token`` (see :class:`CloudflaredToken`). With ``base_url`` set,
    nothing is attached to requests for any other origin.

    Use it with ``follow_redirects=False`` (httpx's default), or through
    :meth:`client` / :meth:`async_client`: when httpx follows a redirect to
    another host it forwards custom headers (it strips only ``Authorization``).
    """

    def __init__(
        self,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        token_provider: TokenProvider | None = None,
        environ: Mapping[str, str] | None = None,
        where: Mapping[str, str] | None = None,
        configured_in: str | None = None,
    ) -> None:
        labels = dict(where or {})
        #: ``"environment"``, a config file's path, or ``None``: what a challenge's advice talks about.
        self.configured_in = configured_in
        self._url_label = labels.get("url", "base_url")
        self._headers: dict[str, _Secret] = {}
        seen: set[str] = set()
        for name, raw in (headers or {}).items():
            label = labels.get(name, f"header {name}")
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise ClientConfigError(label, "is not a valid header name (letters, digits and -._~!#$%&'*+^`|)")
            if name.lower() in _RESERVED:
                raise ClientConfigError(label, "is set by the HTTP client itself and cannot be configured")
            if name.lower() in seen:
                raise ClientConfigError(label, "is configured twice (header names are case-insensitive)")
            seen.add(name.lower())
            self._headers[name] = _checked_value(raw, label, environ)
        self._api_key = None if api_key is None else _checked_value(api_key, labels.get("key", "api_key"), environ)
        if self._api_key is not None and "authorization" in seen:
            raise ClientConfigError(
                labels.get("key", "api_key"), "conflicts with a configured Authorization header; set one of them"
            )
        if token_provider is not None and CF_ACCESS_TOKEN_HEADER in seen:
            raise ClientConfigError(
                labels.get(CF_ACCESS_TOKEN_HEADER, f"header {CF_ACCESS_TOKEN_HEADER}"),
                "conflicts with the cloudflared token source; set one of them",
            )
        self.token_provider = token_provider
        has_secrets = bool(self._headers) or self._api_key is not None or token_provider is not None
        self.base_url = None if base_url is None else _check_url(base_url, labels.get("url", "base_url"), has_secrets)

    # --- construction from configuration ---------------------------------------------------------------

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        environ: Mapping[str, str] | None = None,
        source: str = "config",
    ) -> AccessAuth:
        """Build from a parsed config document: its ``[api]`` table (``url``, ``key``, ``headers``, ``cloudflared``).

        A document without ``[api]`` configures nothing. Other keys in ``[api]``
        belong to the application and are ignored.
        """
        api, where = _api_table(data, source)
        return cls._from_api(api, where, environ, source)

    @classmethod
    def _from_api(
        cls, api: Mapping[str, Any], where: dict[str, str], environ: Mapping[str, str] | None, configured_in: str
    ) -> AccessAuth:
        provider = _cloudflared_from(api.get("cloudflared", False), api.get("url"), where["cloudflared"])
        return cls(
            api["headers"],
            api.get("key"),
            base_url=api.get("url"),
            token_provider=provider,
            environ=environ,
            where=where,
            configured_in=configured_in,
        )

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        environ: Mapping[str, str] | None = None,
        missing_ok: bool = False,
    ) -> AccessAuth:
        """Read a TOML config file (e.g. ``~/.config/<app>/config.toml``).

        A missing file is an error unless ``missing_ok``, in which case nothing
        extra is sent (the behaviour without any configuration).
        """
        file = Path(path).expanduser()
        data = _read_toml(file, missing_ok=missing_ok, label=str(file))
        return cls.from_dict(data, environ=environ, source=str(file))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, app_name: str | None = None) -> AccessAuth:
        """Build from ``CFACCESS_CLIENT_*`` variables, over a config file.

        The file is ``$CFACCESS_CLIENT_CONFIG`` (which must exist) or, given
        ``app_name``, ``$XDG_CONFIG_HOME/<app_name>/config.toml`` (may be absent).
        Then ``CFACCESS_CLIENT_URL``, ``CFACCESS_CLIENT_API_KEY`` and
        ``CFACCESS_CLIENT_CLOUDFLARED`` (true/false or a path) replace the file's
        values, and ``CFACCESS_CLIENT_HEADERS`` (``Name=value,Name=value``) adds or
        replaces headers. ``${VAR}`` works in all of them.
        """
        env = os.environ if environ is None else environ
        _warn_unknown_client_variables(env)
        path = env.get(ENV_CONFIG, "").strip()
        file: Path | None = Path(path).expanduser() if path else None
        if file is None and app_name is not None:
            base = env.get("XDG_CONFIG_HOME", "").strip() or str(Path("~/.config").expanduser())
            file = Path(base) / app_name / "config.toml"
        configured_in = "environment"
        if file is not None:
            data = _read_toml(file, missing_ok=not path, label=f"{ENV_CONFIG} ({file})" if path else str(file))
            api, where = _api_table(data, str(file))
            if data:  # a file that exists: its [api] table is where to add things
                configured_in = str(file)
            else:
                where["url"] = ENV_URL
        else:
            api, where = {"headers": {}}, {"url": ENV_URL}
        for variable, key in ((ENV_URL, "url"), (ENV_API_KEY, "key")):
            if env.get(variable, "").strip():
                api[key] = env[variable].strip()
                where[key] = variable
        raw_headers = env.get(ENV_HEADERS, "").strip()
        for entry in raw_headers.split(",") if raw_headers else ():
            name, sep, value = entry.partition("=")
            name = name.strip()
            if not sep or not name:
                raise ClientConfigError(ENV_HEADERS, "each entry must look like Name=value, separated by commas")
            for existing in [h for h in api["headers"] if h.lower() == name.lower()]:
                del api["headers"][existing]
            api["headers"][name] = value.strip()
            where[name] = f"{ENV_HEADERS} {name}"
        raw_cf = env.get(ENV_CLOUDFLARED, "").strip()
        if raw_cf:
            api["cloudflared"] = _BOOLEANS.get(raw_cf.lower(), raw_cf)
            where["cloudflared"] = ENV_CLOUDFLARED
        where.setdefault("cloudflared", ENV_CLOUDFLARED)
        return cls._from_api(api, where, env, configured_in)

    # --- what it sends ---------------------------------------------------------------------------------

    @property
    def header_names(self) -> tuple[str, ...]:
        """Names of every header this auth attaches (values are never exposed)."""
        names = list(self._headers)
        if self.token_provider is not None:
            names.append(CF_ACCESS_TOKEN_HEADER)
        if self._api_key is not None:
            names.append("Authorization")
        return tuple(names)

    @property
    def configured(self) -> bool:
        """False when nothing is configured: requests go out exactly as without this auth."""
        return bool(self.header_names)

    def __repr__(self) -> str:
        return (
            f"AccessAuth(base_url={str(self.base_url) if self.base_url else None!r}, "
            f"headers={list(self._headers)!r}, api_key={'<set>' if self._api_key else None}, "
            f"token_provider={type(self.token_provider).__name__ if self.token_provider else None})"
        )

    __str__ = __repr__

    def _applies_to(self, request: httpx.Request) -> bool:
        if self.base_url is None:
            return True
        url = request.url
        return (url.scheme, url.host, url.port) == (self.base_url.scheme, self.base_url.host, self.base_url.port)

    def _attach(self, request: httpx.Request, token: str | None) -> tuple[str, ...]:
        for name, value in self._headers.items():
            request.headers[name] = value.reveal()
        if token is not None:
            request.headers[CF_ACCESS_TOKEN_HEADER] = token
        if self._api_key is not None:
            request.headers["Authorization"] = f"Bearer {self._api_key.reveal()}"
        sent = self.header_names
        if sent:
            logger.debug("cfaccess_mw.client: %s %s with headers %s", request.method, request.url, ", ".join(sent))
        return sent

    def _check(self, response: httpx.Response, sent: tuple[str, ...]) -> None:
        for hop in [*response.history, response]:
            self._raise_if_challenge(hop, sent)

    def _require_absolute(self, request: httpx.Request) -> None:
        """A relative URL with no base URL configured: say which setting is missing (httpx would raise
        ``UnsupportedProtocol``, which names neither the setting nor the fix)."""
        if not request.url.scheme and self.base_url is None:
            raise ClientConfigError(
                self._url_label,
                f"is not set, so {str(request.url)!r} has no host to go to: set it to the app's address, "
                "e.g. https://app.example.com",
            )

    def _raise_if_challenge(self, response: httpx.Response, sent: tuple[str, ...]) -> None:
        challenge = detect_challenge(
            response, tuple(name for name in sent if name != "Authorization"), configured_in=self.configured_in
        )
        if challenge is not None:
            if self.token_provider is not None:
                self.token_provider.invalidate()  # the edge refused it: fetch a fresh one next time
            logger.debug("cfaccess_mw.client: edge challenge from %s", challenge.host)
            raise challenge

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self._require_absolute(request)
        sent: tuple[str, ...] = ()
        if self._applies_to(request):
            token = self.token_provider.token() if self.token_provider is not None else None
            sent = self._attach(request, token)
        response = yield request
        self._check(response, sent)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        self._require_absolute(request)
        sent: tuple[str, ...] = ()
        if self._applies_to(request):
            token = None
            if self.token_provider is not None:
                # cloudflared is a subprocess: run it off the event loop, unless the cached token will do.
                token = self.token_provider.cached() or await anyio.to_thread.run_sync(self.token_provider.token)
            sent = self._attach(request, token)
        response = yield request
        self._check(response, sent)

    # --- ready-made clients ----------------------------------------------------------------------------

    def _client_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.setdefault("follow_redirects", False)
        kwargs.setdefault("timeout", 30.0)
        if self.base_url is not None:
            kwargs.setdefault("base_url", self.base_url)
        return kwargs

    def _strip_elsewhere(self, request: httpx.Request) -> None:
        # A redirect hop copies the previous request's headers; keep them from leaving the configured origin.
        if self.base_url is not None and not self._applies_to(request):
            for name in (*self._headers, CF_ACCESS_TOKEN_HEADER):
                request.headers.pop(name, None)

    def _stop_at_challenge(self, response: httpx.Response) -> None:
        # Runs for every hop, before httpx follows a redirect: the login page is never fetched.
        self._raise_if_challenge(response, self.header_names if self._applies_to(response.request) else ())

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` using this auth, ``base_url`` from the config, redirects off by default.

        If you turn redirects on, edge headers are still stripped from hops to
        other origins and a redirect to the Access login page raises before it is followed.
        """
        kwargs = self._client_kwargs(kwargs)
        hooks = kwargs.setdefault("event_hooks", {})
        hooks.setdefault("request", []).append(self._strip_elsewhere)
        hooks.setdefault("response", []).append(self._stop_at_challenge)
        return httpx.Client(auth=self, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` counterpart of :meth:`client`."""

        async def strip(request: httpx.Request) -> None:
            self._strip_elsewhere(request)

        async def stop(response: httpx.Response) -> None:
            self._stop_at_challenge(response)

        kwargs = self._client_kwargs(kwargs)
        hooks = kwargs.setdefault("event_hooks", {})
        hooks.setdefault("request", []).append(strip)
        hooks.setdefault("response", []).append(stop)
        return httpx.AsyncClient(auth=self, **kwargs)


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


def _cloudflared_from(value: object, url: object, where: str) -> CloudflaredToken | None:
    if value is False or value is None:
        return None
    if value is True:
        executable = "cloudflared"
    elif isinstance(value, str) and value.strip():
        executable = value.strip()
    else:
        raise ClientConfigError(where, "must be true, false, or the path of the cloudflared executable")
    if not isinstance(url, str) or not url.strip():
        raise ClientConfigError(where, "needs [api] url: cloudflared fetches a token for that application")
    return CloudflaredToken(url.strip(), executable=executable)
