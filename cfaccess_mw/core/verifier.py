"""The token verifier: a preset's rules for fresh tokens (:mod:`cfaccess_mw.profiles`), and a cache for the rest.

A browser session sends the same token until it expires, so a repeated token must
cost a dictionary hit, not an RSA verification; a fresh one is checked by the
configured preset's :class:`~cfaccess_mw.profiles.PresetProfile` (Cloudflare's by
default), with its key from the key source.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .jwk import PublicKey
from .profiles import cloudflare_profile
from .tokens import MAX_TOKEN_LENGTH, Signed, VerifiedToken


class KeySource(Protocol):
    """What the verifier needs from a key store (implemented by :class:`~cfaccess_mw.keys.JWKSClient`).

    ``cached_key`` answers without waiting (it runs for every cached token) and
    must return the same object for as long as the key material behind ``kid``
    is unchanged: a cached token is valid only while it returns the very object
    the token was verified with. ``get_key`` (async) and ``get_key_sync`` (a thread)
    may fetch.
    """

    async def get_key(self, kid: str) -> PublicKey: ...

    def get_key_sync(self, kid: str) -> PublicKey: ...

    def cached_key(self, kid: str) -> PublicKey | None: ...


class TokenProfile(Protocol):
    """Another proxy's rules for a fresh token (:class:`~cfaccess_mw.providers.PresetProfile`): header,
    encoding, key and claims. The verifier keeps the cache; the profile does everything the cache does not."""

    def check(self, token: str, now: float) -> Signed: ...

    def finish(self, signed: Signed, key: PublicKey) -> VerifiedToken: ...


class TokenVerifier:
    """Verifies tokens for one Access application; caches verified tokens until they expire.

    The cache is bounded and keyed by the exact token text. An entry is used only
    while the token has not expired and the key source still holds the very key
    object it was verified with, so a repeated token (a browser session sends the
    same one until it expires) costs no RSA work, while a withdrawn key stops its
    tokens and a key republished under the same ``kid`` with other material makes
    them verify again. The least recently used entry is evicted first, so a burst
    of one-off tokens (a crawler, a fleet of CI jobs) does not push out the
    sessions in use.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audiences: tuple[str, ...],
        keys: KeySource,
        leeway: float = 30.0,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.time,
        profile: TokenProfile | None = None,
    ) -> None:
        self.issuer = issuer
        if profile is None:  # Cloudflare's rules: a preset like the others
            profile = cloudflare_profile(issuer, audiences, leeway)
        self.profile = profile
        self.audiences = audiences
        self.keys = keys
        self.leeway = leeway
        self.cache_size = cache_size
        self._clock = clock
        self._cache: OrderedDict[str, VerifiedToken] = OrderedDict()

    def __repr__(self) -> str:
        return f"TokenVerifier(issuer={self.issuer!r}, audiences={list(self.audiences)!r})"

    async def verify(self, token: str) -> Mapping[str, Any]:
        """Verified claims of ``token`` (read-only), or :class:`InvalidToken` saying which check failed."""
        return (await self.verify_token(token)).claims

    def cached(self, token: str) -> VerifiedToken | None:
        """The cache entry for ``token`` while it is still good (not expired, its key unchanged), else ``None``.

        No ``await``: the middleware tries this first, so a repeated token costs no coroutine of ours here.
        An entry gone stale is dropped, and :meth:`verify_token` then verifies afresh for the precise reason.
        Threads share the cache under WSGI, with no lock on this path: each step is one operation on the
        dict, and an entry another thread evicted between them is simply no longer there to move or drop.
        """
        cached = self._cache.get(token)
        if cached is not None:
            if self._clock() <= cached.exp + self.leeway and self.keys.cached_key(cached.kid) is cached.key:
                try:  # noqa: SIM105 - try costs nothing here; contextlib.suppress costs a context manager per hit
                    self._cache.move_to_end(token)
                except KeyError:  # evicted by another thread just now: still a good answer for this request
                    pass
                return cached
            self._cache.pop(token, None)  # expired, or its key withdrawn or changed
        return None

    async def verify_token(self, token: str) -> VerifiedToken:
        """Like :meth:`verify`, returning the cache entry (with its ``memo`` slot). A token too large is refused
        without being looked up: the lookup would hash all of it first."""
        return (len(token) <= MAX_TOKEN_LENGTH and self.cached(token)) or await self.verify_fresh(token)

    def verify_token_sync(self, token: str) -> VerifiedToken:
        """:meth:`verify_token` from a thread without an event loop (a key it lacks is fetched with a sync client)."""
        return (len(token) <= MAX_TOKEN_LENGTH and self.cached(token)) or self.verify_fresh_sync(token)

    async def verify_fresh(self, token: str) -> VerifiedToken:
        """Verify ``token`` and remember it, for a caller that :meth:`cached` just answered ``None``: one cache
        lookup per miss, not two."""
        signed = self.check(token)
        return self.finish(signed, self.keys.cached_key(signed.kid) or await self.keys.get_key(signed.kid))

    def verify_fresh_sync(self, token: str) -> VerifiedToken:
        """:meth:`verify_fresh` from a thread without an event loop."""
        signed = self.check(token)
        return self.finish(signed, self.keys.cached_key(signed.kid) or self.keys.get_key_sync(signed.kid))

    def check(self, token: str) -> Signed:
        """Size, shape and header of a fresh token, by the preset's rules (Cloudflare's unless another's)."""
        return self.profile.check(token, self._clock())

    def finish(self, signed: Signed, key: PublicKey) -> VerifiedToken:
        """Signature, then (only then) the payload and its claims; the verified token, remembered."""
        return self._remember(signed.token, self.profile.finish(signed, key))

    def _remember(self, token: str, verified: VerifiedToken) -> VerifiedToken:
        """Cache a verified token (Cloudflare's or a preset's): bounded, the least recently used evicted first."""
        cache = self._cache
        if self.cache_size:
            if token not in cache and len(cache) >= self.cache_size:  # an overwrite needs no room
                with contextlib.suppress(KeyError):  # another thread emptied it meanwhile
                    cache.popitem(last=False)
            cache[token] = verified
        return verified

    @property
    def cached_tokens(self) -> int:
        """How many verified tokens are cached (bounded by ``cache_size``)."""
        return len(self._cache)
