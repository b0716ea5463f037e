"""The team's signing keys: fetched from the certs endpoint, cached, refreshed with care.

Rules, and why:

* Keys are cached for ``cache_seconds`` and fetched once at start-up, so requests
  do not pay for the network.
* A token naming an unknown ``kid`` triggers a refetch (Cloudflare rotates keys
  and publishes the new one before using it), but at most one attempt per
  ``cooldown`` seconds, so a flood of made-up ``kid`` values cannot turn the
  middleware into a load generator against the certs endpoint.
* One coroutine fetches at a time; every other request that needs keys waits for
  that fetch and then uses its result (single-flight).
* A failed refresh keeps the last good key set (a short outage must not become
  refused logins); only with no keys at all does the caller get a 503.
* Fetches never follow redirects, never accept more than ``max_bytes``, and never
  take longer than ``timeout`` in total.
* Failures are logged when the state changes, not once per request.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping

import anyio
import httpx
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from .errors import AuthUnavailable, InvalidToken, Reason

logger = logging.getLogger("cfaccess_mw.keys")

MAX_JWKS_BYTES = 1 << 20  # Cloudflare's document is about 3 KB; 1 MiB is generous.
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192  # bounds the work one verification can cost
_B64URL = re.compile(r"[A-Za-z0-9_-]+")

#: A key a token can be verified with: RSA (RS256) for Cloudflare, or P-256 (ES256) for the other presets.
PublicKey = RSAPublicKey | EllipticCurvePublicKey
#: One JWK to ``(kid, key)``, or ``ValueError`` saying why it is unusable (:func:`parse_jwk` is Cloudflare's).
JWKParser = Callable[[object], tuple[str, PublicKey]]


class JWKSFetchError(Exception):
    """A fetch of the certs endpoint failed; the message says how (no secrets involved)."""


def _b64_uint(value: object, what: str) -> int:
    if not isinstance(value, str) or not _B64URL.fullmatch(value):
        raise ValueError(f"{what} is not base64url")
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    return int.from_bytes(raw, "big")


def parse_jwk(jwk: object) -> tuple[str, RSAPublicKey]:
    """One JWK to ``(kid, key)``; raise ``ValueError`` saying why it is unusable."""
    if not isinstance(jwk, dict):
        raise ValueError("entry is not an object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("no kid")
    if jwk.get("kty") != "RSA":
        raise ValueError(f"kid {kid!r}: kty is {jwk.get('kty')!r}, not 'RSA'")
    if "alg" in jwk and jwk["alg"] != "RS256":
        raise ValueError(f"kid {kid!r}: alg is {jwk['alg']!r}, not 'RS256'")
    if "use" in jwk and jwk["use"] != "sig":
        raise ValueError(f"kid {kid!r}: use is {jwk['use']!r}, not 'sig'")
    if any(private in jwk for private in ("d", "p", "q")):
        raise ValueError(f"kid {kid!r}: contains private key material")
    n = _b64_uint(jwk.get("n"), f"kid {kid!r}: n")
    e = _b64_uint(jwk.get("e"), f"kid {kid!r}: e")
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
        raise ValueError(f"kid {kid!r}: RSA key of {n.bit_length()} bits is not {MIN_RSA_BITS}-{MAX_RSA_BITS} bits")
    if e < 3 or e % 2 == 0:
        raise ValueError(f"kid {kid!r}: bad RSA exponent")
    return kid, RSAPublicNumbers(e, n).public_key()


def parse_jwks(document: object, parse: JWKParser = parse_jwk) -> tuple[dict[str, PublicKey], list[str]]:
    """A certs document to ``({kid: key}, [problems])``; unusable keys are skipped, not fatal.

    A ``kid`` that appears twice is dropped altogether: with two keys under one
    name there is no safe way to pick, and Cloudflare never publishes that.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JWKSFetchError("document has no 'keys' list")
    keys: dict[str, PublicKey] = {}
    problems: list[str] = []
    seen: set[str] = set()
    duplicates: set[str] = set()
    for jwk in document["keys"]:
        try:
            kid, key = parse(jwk)
        except (ValueError, TypeError) as exc:
            problems.append(str(exc))
            continue
        if kid in seen:
            duplicates.add(kid)
        seen.add(kid)
        keys[kid] = key
    for kid in duplicates:
        del keys[kid]
        problems.append(f"kid {kid!r} appears more than once; ignoring it")
    if not keys:
        usable = "no usable RS256 keys" if parse is parse_jwk else "no usable keys"
        raise JWKSFetchError(usable + (f" ({'; '.join(problems)})" if problems else ""))
    return keys, problems


class JWKSClient:
    """Async, cached, single-flight access to one certs endpoint.

    ``transport`` and ``clock`` exist so tests can run against a local server and
    move time without sleeping.
    """

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float = 300.0,
        cooldown_seconds: float = 10.0,
        timeout: float = 5.0,
        max_bytes: int = MAX_JWKS_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        parse: JWKParser = parse_jwk,
    ) -> None:
        self.url = url
        self._parse = parse  # which keys this client adopts; anything else in the document is skipped
        self.cache_seconds = cache_seconds
        self.cooldown_seconds = cooldown_seconds
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._transport = transport
        self._clock = clock
        self._keys: Mapping[str, PublicKey] = {}
        self._fetched_at = -math.inf  # last success
        self._attempted_at = -math.inf  # last attempt, success or not
        self._generation = 0  # bumped after every attempt; waiters use it to skip a second fetch
        self._lock: anyio.Lock | None = None
        self._last_failure: str | None = None
        self._last_problems: list[str] = []
        #: Number of HTTP fetches attempted (for tests, benchmarks and ``cfaccess-mw check``).
        self.fetch_count = 0

    def __repr__(self) -> str:
        return f"JWKSClient(url={self.url!r}, kids={sorted(self._keys)!r})"

    @property
    def kids(self) -> list[str]:
        """Key ids currently cached."""
        return sorted(self._keys)

    @property
    def last_failure(self) -> str | None:
        """Why the most recent fetch failed, or ``None`` after a success."""
        return self._last_failure

    def has_kid(self, kid: str) -> bool:
        """Whether ``kid`` is in the cached key set (no I/O; used to expire cached tokens of removed keys)."""
        return kid in self._keys

    async def get_key(self, kid: str) -> PublicKey:
        """The public key for ``kid``, fetching if the cache is stale or does not know it.

        Raises :class:`InvalidToken` (``unknown_key``) when the endpoint does not list
        ``kid``, and :class:`AuthUnavailable` when there are no keys at all.
        """
        now = self._clock()
        key = self._keys.get(kid)
        if key is not None and now - self._fetched_at < self.cache_seconds:
            return key
        if key is not None and self._lock is not None and self._lock.locked():
            return key  # cached but due for refresh, which another request is doing: don't queue behind it
        if now - self._attempted_at >= self.cooldown_seconds:
            await self.refresh()
            key = self._keys.get(kid)
        if key is not None:
            return key
        if not self._keys or self._last_failure is not None:
            # No keys at all, or the endpoint is failing and so cannot say whether ``kid`` is a key Cloudflare
            # just rotated in: the request cannot be decided, which is a 503 ("try again"), not a 401.
            why = f"key id {kid!r} is not cached and" if self._keys else "no signing keys:"
            raise AuthUnavailable(
                Reason.KEYS_UNAVAILABLE,
                "The signing keys for this application cannot be fetched right now; try again shortly.",
                f"{why} {self.url} is failing: {self._last_failure or 'not fetched yet'}",
                retry_after=max(1, math.ceil(self.cooldown_seconds)),
            )
        raise InvalidToken(
            Reason.UNKNOWN_KEY,
            "The token was signed with a key this application does not know.",
            f"key id {kid!r} is not among the {len(self._keys)} keys at {self.url} ({', '.join(self.kids)})",
        )

    async def refresh(self) -> bool:
        """Fetch the key set now (single-flight). Return whether keys are available afterwards."""
        generation = self._generation
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._generation != generation:
                return bool(self._keys)  # another coroutine fetched while we waited
            try:
                keys, problems, listed = await self._fetch()
            except JWKSFetchError as exc:
                self._record_failure(str(exc))
            except Exception as exc:  # a bug must cost a 503, not a 500 on every request
                logger.exception("certs endpoint %s: unexpected error while fetching keys", self.url)
                self._record_failure(f"unexpected {type(exc).__name__}")
            else:
                self._record_success(keys, problems, listed)
            # Not in a finally: when the fetching request is cancelled, the attempt did not happen, and a
            # waiter must make its own rather than find the generation moved and the cooldown running.
            self._attempted_at = self._clock()
            self._generation += 1
        return bool(self._keys)

    def _record_success(self, keys: dict[str, PublicKey], problems: list[str], listed: set[str]) -> None:
        # A cached key whose kid the document still lists, but in a form we cannot use (a wrong kty, alg or use,
        # listed twice), has not been withdrawn: keep the last good copy rather than refuse its tokens.
        kept = sorted(kid for kid in self._keys if kid in listed and kid not in keys)
        if kept:
            keys = {**keys, **{kid: self._keys[kid] for kid in kept}}
            problems = [*problems, f"keeping the cached copy of {', '.join(map(repr, kept))}"]
        added = sorted(set(keys) - set(self._keys))
        removed = sorted(set(self._keys) - set(keys))
        self._keys = keys
        self._fetched_at = self._clock()
        if self._last_failure is not None:
            logger.warning("certs endpoint %s recovered; %d keys", self.url, len(keys))
        self._last_failure = None
        if added or removed:
            logger.info("signing keys from %s: added %s, removed %s", self.url, added, removed)
        if problems != self._last_problems:  # said once, not again on every refresh that finds the same
            for problem in problems:
                logger.warning("certs endpoint %s: %s", self.url, problem)
        self._last_problems = problems

    def _record_failure(self, why: str) -> None:
        if why != self._last_failure:
            kept = f"keeping {len(self._keys)} cached keys" if self._keys else "no keys cached: requests get 503"
            logger.warning("certs endpoint %s failed: %s; %s", self.url, why, kept)
        else:
            logger.debug("certs endpoint %s still failing: %s", self.url, why)
        self._last_failure = why

    async def _fetch(self) -> tuple[dict[str, PublicKey], list[str], set[str]]:
        """The usable keys, the problems with the rest, and every kid the document lists (usable or not)."""
        self.fetch_count += 1
        try:
            with anyio.fail_after(self.timeout):
                body = await self._download()
        except TimeoutError:
            raise JWKSFetchError(f"no answer within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise JWKSFetchError(f"{type(exc).__name__}: {exc}") from None
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise JWKSFetchError("response is not JSON") from None
        keys, problems = parse_jwks(document, self._parse)
        listed = {jwk["kid"] for jwk in document["keys"] if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str)}
        return keys, problems, listed

    async def _download(self) -> bytes:
        timeout = httpx.Timeout(self.timeout)
        async with (
            httpx.AsyncClient(transport=self._transport, timeout=timeout, follow_redirects=False) as client,
            client.stream("GET", self.url, headers={"accept": "application/json"}) as response,
        ):
            if response.is_redirect:
                raise JWKSFetchError(f"HTTP {response.status_code} redirect refused (certs must be served directly)")
            if response.status_code != 200:
                raise JWKSFetchError(f"HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                raise JWKSFetchError(f"body of {declared} bytes exceeds {self.max_bytes}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise JWKSFetchError(f"body exceeds {self.max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
