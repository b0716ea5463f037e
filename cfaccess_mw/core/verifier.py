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

#: How much of a token's end keys the cache: the last characters of its signature. A dictionary lookup hashes
#: its whole key, about 0.25 µs for a 900-byte token that arrives as new bytes with every request, against
#: 0.03 µs for this tail; the entry then compares the whole token (a memcmp), so the cache still answers only
#: for the exact token it verified. Two tokens sharing a tail (only someone crafting them could) take turns in
#: one slot: each is verified again when the other displaced it, and neither is ever answered for the other.
KEY_TAIL = 32


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
    them verify again. An entry not used since it was last passed over is evicted first, so a burst
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
        self._cache: OrderedDict[str | bytes, VerifiedToken] = OrderedDict()

    def __repr__(self) -> str:
        return f"TokenVerifier(issuer={self.issuer!r}, audiences={list(self.audiences)!r})"

    async def verify(self, token: str) -> Mapping[str, Any]:
        """Verified claims of ``token`` (read-only), or :class:`InvalidToken` saying which check failed."""
        return (await self.verify_token(token)).claims

    def cached(self, token: str | bytes) -> VerifiedToken | None:
        """The cache entry for ``token`` while it is still good (not expired, its key unchanged), else ``None``.

        ``token`` is the text, or the header's bytes as the server received them (decoded only when verified
        afresh). No ``await``: the middleware tries this first, so a repeated token costs no coroutine of ours
        here. An entry gone stale is dropped, and :meth:`verify_token` then verifies afresh for the precise
        reason. Threads share the cache under WSGI, with no lock on this path: each step is one operation on
        the dict, and an entry another thread evicted between them is simply no longer there to move or drop.
        """
        tail = token[-KEY_TAIL:]
        cached = self._cache.get(tail)
        if cached is not None and cached.token == token:
            if self._clock() <= cached.exp + self.leeway and self.keys.cached_key(cached.kid) is cached.key:
                cached.used = True  # spared by the next eviction that reaches it (see _remember)
                return cached
            if self._cache.get(tail) is cached:  # expired, or its key withdrawn or changed (and not replaced)
                self._cache.pop(tail, None)
        return None

    async def verify_token(self, token: str) -> VerifiedToken:
        """Like :meth:`verify`, returning the cache entry (with its ``memo`` slot). A token too large is refused
        without being looked up: the lookup would hash all of it first."""
        return (len(token) <= MAX_TOKEN_LENGTH and self.cached(token)) or await self.verify_fresh(token)

    def verify_token_sync(self, token: str) -> VerifiedToken:
        """:meth:`verify_token` from a thread without an event loop (a key it lacks is fetched with a sync client)."""
        return (len(token) <= MAX_TOKEN_LENGTH and self.cached(token)) or self.verify_fresh_sync(token)

    async def verify_fresh(self, token: str | bytes) -> VerifiedToken:
        """Verify ``token`` and remember it, for a caller that :meth:`cached` just answered ``None``: one cache
        lookup per miss, not two."""
        signed = self.check(token)
        return self.finish(signed, self.keys.cached_key(signed.kid) or await self.keys.get_key(signed.kid))

    def verify_fresh_sync(self, token: str | bytes) -> VerifiedToken:
        """:meth:`verify_fresh` from a thread without an event loop."""
        signed = self.check(token)
        return self.finish(signed, self.keys.cached_key(signed.kid) or self.keys.get_key_sync(signed.kid))

    def check(self, token: str | bytes) -> Signed:
        """Size, shape and header of a fresh token, by the preset's rules (Cloudflare's unless another's).

        A token in bytes (a header as received; its size was checked before) is read as Latin-1, as ASGI
        servers decode headers; the verified token is remembered under what was given.
        """
        if type(token) is bytes:
            signed = self.profile.check(token.decode("latin-1"), self._clock())
            signed.token = token
            return signed
        return self.profile.check(token, self._clock())  # type: ignore[arg-type]  # str

    def finish(self, signed: Signed, key: PublicKey) -> VerifiedToken:
        """Signature, then (only then) the payload and its claims; the verified token, remembered."""
        return self._remember(signed.token, self.profile.finish(signed, key))

    def _remember(self, token: str | bytes, verified: VerifiedToken) -> VerifiedToken:
        """Cache a verified token (Cloudflare's or a preset's): bounded, an unused entry evicted first."""
        cache = self._cache
        if self.cache_size:
            tail = token[-KEY_TAIL:]
            if tail not in cache and len(cache) >= self.cache_size:  # an overwrite needs no room
                self._evict_one()
            verified.token = token
            cache[tail] = verified
        return verified

    def _evict_one(self) -> None:
        """Make room for one entry: the oldest entry not used since eviction last passed it (CLOCK, LRU's
        approximation). A hit only marks its entry, where LRU would move it to the end (a dict operation on
        every repeated request); an entry found marked is unmarked and moved to the end once, here, when a
        fresh token needs the room. The sessions in use survive a burst of one-off tokens either way.
        Bounded: after one pass over the cache the oldest entry goes, marked or not (threads may mark entries
        while it runs). Another thread emptying the cache meanwhile ends it.
        """
        cache = self._cache
        for _ in range(len(cache) + 1):
            try:
                tail, oldest = cache.popitem(last=False)
            except KeyError:
                return
            if not oldest.used:
                return
            oldest.used = False
            cache[tail] = oldest
        with contextlib.suppress(KeyError):
            cache.popitem(last=False)

    @property
    def cached_tokens(self) -> int:
        """How many verified tokens are cached (bounded by ``cache_size``)."""
        return len(self._cache)
