"""Key sources for the presets whose keys are not one plain JWK Set: OIDC discovery, and AWS ALB's PEM per kid.

Both keep the rules of :class:`~cfaccess_mw.keys.JWKSClient`: single-flight fetches,
no redirects, a size cap and a timeout on every fetch, a cooldown on refetching for
unknown ``kid`` values, keys kept through an outage, a 503 (never a 401) when the
answer depends on a fetch that failed.

* :class:`OidcJWKSClient` *is* a ``JWKSClient``: it reads the issuer's discovery
  document once (its ``issuer`` must equal the configured one exactly, OpenID Connect
  Discovery section 4.3) and then fetches ``jwks_uri`` like any key set.
* :class:`~cfaccess_mw.albkeys.AlbKeySource` (in :mod:`cfaccess_mw.albkeys`, importable
  from here too) fetches AWS ALB's one PEM per ``kid``.

:func:`build_key_source` picks the source the configured preset reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import httpx

from ..core.exposure import is_loopback_url_host
from ..core.jwk import JWKParser, PublicKey, parse_jwk
from ..core.keystate import DEFAULT_MAX_AGE_SECONDS, MAX_JWKS_BYTES, CertsRead
from ..core.plans import JWKSFetchError, Plan, fetch
from ..core.providers import PRESETS, KeyKind, Provider, jwk_parser
from .alb import ALB_FETCHES_PER_COOLDOWN, ALB_MAX_KEYS, AlbKeySource
from .jwks import JWKSClient

if TYPE_CHECKING:
    from ..core.settings import Settings

__all__ = [  # AlbKeySource and its bounds are importable from here as before they moved to albkeys
    "ALB_FETCHES_PER_COOLDOWN",
    "ALB_MAX_KEYS",
    "MAX_DISCOVERY_BYTES",
    "AlbKeySource",
    "KeyStore",
    "OidcJWKSClient",
    "build_key_source",
    "discovery_url",
]

MAX_DISCOVERY_BYTES = 256 * 1024


class KeyStore(Protocol):
    """What the middleware and the CLI use of a key source (``JWKSClient`` and :class:`AlbKeySource` have it)."""

    url: str
    fetch_count: int

    @property
    def kids(self) -> list[str]: ...

    @property
    def last_failure(self) -> str | None: ...

    @property
    def expired(self) -> bool: ...

    def has_kid(self, kid: str) -> bool: ...

    def cached_key(self, kid: str) -> PublicKey | None: ...

    async def settle(self) -> None: ...

    def settle_sync(self) -> None: ...

    async def get_key(self, kid: str) -> PublicKey: ...

    def get_key_sync(self, kid: str) -> PublicKey: ...

    async def refresh(self) -> bool: ...

    def refresh_sync(self) -> bool: ...


def discovery_url(issuer: str) -> str:
    """OpenID Connect Discovery section 4: the issuer without a trailing slash, then the well-known path."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _fetchable(url: object) -> bool:
    if not isinstance(url, str):
        return False
    try:
        parts = httpx.URL(url)  # InvalidURL (no HTTPError) for a broken host or port
    except httpx.InvalidURL:
        return False
    if parts.userinfo or not parts.host:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback_url_host(parts.host))


class OidcJWKSClient(JWKSClient):
    """A ``JWKSClient`` whose URL comes from the issuer's discovery document, read on the first fetch."""

    def __init__(
        self,
        issuer: str,
        *,
        parse: JWKParser,
        cache_seconds: float = 300.0,
        cooldown_seconds: float = 10.0,
        timeout: float = 5.0,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
        sync_transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            discovery_url(issuer),
            cache_seconds=cache_seconds,
            cooldown_seconds=cooldown_seconds,
            timeout=timeout,
            max_age_seconds=max_age_seconds,
            transport=transport,
            sync_transport=sync_transport,
            clock=clock,
            parse=parse,
        )
        self.issuer = issuer
        self.discovery_url = self.url
        self.jwks_uri: str | None = None

    def _fetch_plan(self) -> Plan[CertsRead]:
        """The discovery document first (once), then the key set it names."""
        if self.jwks_uri is None:
            self.fetch_count += 1
            status, body, _ = yield from fetch(self.discovery_url, MAX_DISCOVERY_BYTES)
            if status != 200:
                raise JWKSFetchError(f"discovery document {self.discovery_url}: HTTP {status}")
            try:
                document = json.loads(body)
            except (ValueError, RecursionError):
                raise JWKSFetchError(f"discovery document {self.discovery_url} is not JSON") from None
            if not isinstance(document, dict) or document.get("issuer") != self.issuer:
                found = document.get("issuer") if isinstance(document, dict) else None
                raise JWKSFetchError(f"discovery document names issuer {found!r}, not {self.issuer!r}")
            jwks_uri = document.get("jwks_uri")
            if not _fetchable(jwks_uri):
                raise JWKSFetchError(f"discovery document's jwks_uri {jwks_uri!r} is not an https:// URL")
            assert isinstance(jwks_uri, str)
            self.jwks_uri = self.url = jwks_uri
        return (yield from super()._fetch_plan())


def build_key_source(
    settings: Settings,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> KeyStore:
    """The key source the configured preset reads, from validated settings (``clock`` for tests).

    The one place a key source is built from settings: the middleware and the CLI
    both call it, so ``check`` fetches exactly as a request would.
    """
    preset = PRESETS[settings.provider]
    cooldown = settings.jwks_refresh_cooldown_seconds
    timeout = settings.jwks_timeout_seconds
    max_age = settings.jwks_max_age_seconds
    if preset.keys is KeyKind.PEM_PER_KID:
        assert settings.certs_url is not None
        return AlbKeySource(
            settings.certs_url,
            cooldown_seconds=cooldown,
            timeout=timeout,
            max_age_seconds=max_age,
            transport=transport,
            clock=clock,
        )
    parse = parse_jwk if settings.provider is Provider.CLOUDFLARE else jwk_parser(settings.algorithms)
    cache = settings.jwks_cache_seconds
    if preset.keys is KeyKind.OIDC_DISCOVERY and settings.certs_url is None:
        return OidcJWKSClient(
            settings.issuers[0],
            parse=parse,
            cache_seconds=cache,
            cooldown_seconds=cooldown,
            timeout=timeout,
            max_age_seconds=max_age,
            transport=transport,
            clock=clock,
        )
    assert settings.certs_url is not None
    return JWKSClient(
        settings.certs_url,
        cache_seconds=cache,
        cooldown_seconds=cooldown,
        timeout=timeout,
        max_bytes=MAX_JWKS_BYTES,
        max_age_seconds=max_age,
        transport=transport,
        clock=clock,
        parse=parse,
    )
