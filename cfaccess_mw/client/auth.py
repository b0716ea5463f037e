"""The ``httpx.Auth`` itself: :class:`AccessAuth` sends the edge's headers (or a cloudflared token) and the
app's key to the configured origin only, and stops at an edge refusal instead of following it."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator, Generator, Mapping
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx

from .challenge import detect_challenge
from .cloudflared import TokenProvider, _cloudflared_from
from .config import (
    _BOOLEANS,
    _HEADER_NAME,
    _RESERVED,
    ENV_API_KEY,
    ENV_CLOUDFLARED,
    ENV_CONFIG,
    ENV_HEADERS,
    ENV_URL,
    ClientConfigError,
    _api_table,
    _check_url,
    _checked_value,
    _read_toml,
    _Secret,
    _warn_unknown_client_variables,
)

logger = logging.getLogger("cfaccess_mw.client")


#: The header ``cloudflared access curl`` sends with a user's token (Cloudflare docs, "Authenticate agents").
CF_ACCESS_TOKEN_HEADER = "cf-access-token"


SERVICE_TOKEN_HEADERS = ("CF-Access-Client-Id", "CF-Access-Client-Secret")


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
