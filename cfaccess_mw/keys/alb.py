"""AWS ALB's signing keys: one PEM per ``kid`` at ``<base>/<kid>``, with no key set to list.

:class:`AlbKeySource` keeps the rules of :class:`~cfaccess_mw.keys.JWKSClient`
(single-flight fetches, no redirects, a size cap and a timeout on every fetch, a 503,
never a 401, when the answer depends on a fetch that failed). It fetches
``<base>/<kid>`` for a ``kid`` it has not seen, only once the kid is a UUID (so no
token can steer the URL), keeps each key until it is ``max_age_seconds`` old and then
fetches it again before trusting it (AWS never changes a kid's key, but may stop
publishing it), remembers a kid AWS does not know for the cooldown, and fetches at
most :data:`ALB_FETCHES_PER_COOLDOWN` new kids per cooldown, so a flood of made-up
kids cannot make the app a load generator against AWS.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future

import httpx

from ..core.ec import parse_p256_pem
from ..core.errors import AuthUnavailable, InvalidToken, Reason
from ..core.jwk import PublicKey
from ..core.keystate import DEFAULT_MAX_AGE_SECONDS, human_seconds, too_old
from ..core.plans import JWKSFetchError, Plan, Wait, fetch
from ..core.providers import ALB_KID
from .fetching import SingleFlight, drive_async, drive_sync

logger = logging.getLogger("cfaccess_mw.keys")

#: Most new ALB kids fetched per cooldown period; past it an unknown kid gets 503 until the period ends.
ALB_FETCHES_PER_COOLDOWN = 3
#: ALB keys kept at once (a region's ALBs share a few; more only serves someone making kids up).
ALB_MAX_KEYS = 64


class AlbKeySource:
    """AWS ALB's keys: ``GET <base>/<kid>`` returns one PEM key; there is no key set to list."""

    def __init__(
        self,
        base_url: str,
        *,
        cooldown_seconds: float = 10.0,
        timeout: float = 5.0,
        max_keys: int = ALB_MAX_KEYS,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
        sync_transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = base_url.rstrip("/")
        self._sync_transport = sync_transport
        self.cooldown_seconds = cooldown_seconds
        self.timeout = timeout
        self.max_keys = max_keys
        self.max_age_seconds = max_age_seconds
        self._transport = transport
        self._clock = clock
        self._keys: OrderedDict[str, PublicKey] = OrderedDict()
        self._confirmed: dict[str, float] = {}  # kid -> when a fetch last served its key
        self._oldest = math.inf  # when the least recently confirmed key was confirmed (the next to go stale)
        self._unknown: OrderedDict[str, float] = OrderedDict()  # kid -> when AWS said it has no such (usable) key
        self._unusable: dict[str, str] = {}  # kid -> why the key AWS serves for it is unusable (kept with _unknown)
        self._attempts: deque[float] = deque()  # when each recent fetch started
        self._state = threading.RLock()  # the bookkeeping, when threads share this object; never held across I/O
        self._flight = SingleFlight(stale_after=4 * timeout + 1)  # one fetch at a time, in any thread or loop
        self._last_failure: str | None = None
        self.fetch_count = 0

    def __repr__(self) -> str:
        return f"AlbKeySource(url={self.url!r}, kids={self.kids!r})"

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)

    @property
    def last_failure(self) -> str | None:
        return self._last_failure

    @property
    def expired(self) -> bool:
        """Whether some kept key is past ``max_age_seconds`` (it is fetched again before its next use)."""
        return self._clock() - self._oldest >= self.max_age_seconds

    def has_kid(self, kid: str) -> bool:
        return kid in self._keys

    def cached_key(self, kid: str) -> PublicKey | None:
        """The kept key object for ``kid`` while a fetch confirmed it within ``max_age_seconds``, else ``None``."""
        if self._clock() - self._oldest >= self.max_age_seconds:
            self._drop_stale()
        return self._keys.get(kid)

    def _drop_stale(self) -> None:
        """Forget keys no fetch confirmed for ``max_age_seconds``: their next token fetches them again."""
        with self._state:
            self._drop_stale_locked()

    def _drop_stale_locked(self) -> None:
        limit = self._clock() - self.max_age_seconds
        for kid in [kid for kid, at in self._confirmed.items() if at <= limit]:
            del self._keys[kid], self._confirmed[kid]
            logger.info(
                "ALB signing key %s is %s old; it is fetched again before its next use",
                kid,
                human_seconds(self.max_age_seconds),
            )
        self._oldest = min(self._confirmed.values(), default=math.inf)

    async def settle(self) -> None:
        """Nothing runs in the background here: fetches happen inside requests."""

    def settle_sync(self) -> None:
        """Nothing runs in the background here."""

    async def refresh(self) -> bool:
        """Nothing to prefetch: ALB keys are fetched per kid, when a token first names one."""
        return True

    def refresh_sync(self) -> bool:
        return True

    async def get_key(self, kid: str) -> PublicKey:
        return await drive_async(self._key_plan(kid), self._transport, self.timeout)

    def get_key_sync(self, kid: str) -> PublicKey:
        """:meth:`get_key` from a thread without an event loop (a WSGI worker)."""
        return drive_sync(self._key_plan(kid), self._sync_transport, self.timeout)

    def _key_plan(self, kid: str) -> Plan[PublicKey]:
        """The kept key; or, after waiting for another request's fetch, a look again; or this request's fetch."""
        while not isinstance(claimed := self._claim(kid), tuple):
            if not isinstance(claimed, Future):
                return claimed
            yield Wait(claimed, 2 * self.timeout + 1)  # another request's fetch: then look again
        try:
            return (yield from self._fetch_plan(kid))
        except JWKSFetchError as exc:
            raise self._failed(f"{self.url}/{kid}: {exc}") from None
        finally:
            self._flight.land(claimed[0])

    def _claim(self, kid: str) -> PublicKey | Future[None] | tuple[Future[None]]:
        """The kept key; or the fetch under way, to wait for; or ``(flight,)``: this caller now fetches ``kid``, and
        lands ``flight`` when done.

        Raises for a kid that cannot be fetched: not a UUID, not found moments ago, or
        past the allowance of new kids per cooldown.
        """
        key = self.cached_key(kid)
        if key is not None:
            return key
        if not ALB_KID.fullmatch(kid):  # the profile checked already; the URL depends on it, so again here
            raise self._unknown_kid(kid, "is not a UUID")
        with self._state:
            key = self._keys.get(kid)
            if key is not None:
                return key
            now = self._clock()
            seen = self._unknown.get(kid)
            if seen is not None and now - seen < self.cooldown_seconds:
                if kid in self._unusable:
                    raise self._unusable_key(kid)
                raise self._unknown_kid(kid, "was not found at the key endpoint moments ago")
            flight, mine = self._flight.claim()
            if not mine:
                return flight
            while self._attempts and now - self._attempts[0] >= self.cooldown_seconds:
                self._attempts.popleft()
            if len(self._attempts) >= ALB_FETCHES_PER_COOLDOWN:
                self._flight.land(flight)
                raise AuthUnavailable(
                    Reason.KEYS_UNAVAILABLE,
                    "The signing keys for this application cannot be fetched right now; try again shortly.",
                    f"key id {kid!r} is not cached, and {ALB_FETCHES_PER_COOLDOWN} new key ids were fetched in the "
                    f"last {self.cooldown_seconds:g}s (a flood of made-up key ids?)",
                    retry_after=max(1, math.ceil(self.cooldown_seconds)),
                )
            self._attempts.append(now)
            return (flight,)

    def _fetch_plan(self, kid: str) -> Plan[PublicKey]:
        """GET ``<base>/<kid>``; the key, or the refusal its answer means."""
        url = f"{self.url}/{kid}"
        self.fetch_count += 1
        status, body, age = yield from fetch(url, 8192, "application/x-pem-file")
        with self._state:
            if status in (403, 404):  # S3-backed endpoints answer 403 for an object that does not exist
                self._remember_unknown(kid)
                raise self._unknown_kid(kid, f"is not published at {self.url} (HTTP {status})")
            if status != 200:
                raise self._failed(f"{url}: HTTP {status}")
            old = too_old(age, self.max_age_seconds)
            if old is not None:
                raise self._failed(f"{url}: {old}")
            try:
                key = parse_p256_pem(body, kid)
            except ValueError as exc:
                # Published but unusable (another curve or key type): proven so by the fetch, never adopted. A 401
                # that says so, not a 503: no retry will make it usable.
                self._unusable[kid] = str(exc)
                self._remember_unknown(kid)
                logger.warning("ALB key endpoint %s: %s; skipping it", self.url, exc)
                raise self._unusable_key(kid) from None
            if self._last_failure is not None:
                logger.warning("ALB key endpoint %s recovered", self.url)
            self._last_failure = None
            if len(self._keys) >= self.max_keys:
                oldest, _ = self._keys.popitem(last=False)
                del self._confirmed[oldest]
            self._keys[kid] = key
            self._unusable.pop(kid, None)
            self._confirmed[kid] = self._clock() - age
            self._oldest = min(self._confirmed.values())
        logger.info("ALB signing key %s fetched from %s", kid, self.url)
        return key

    def _remember_unknown(self, kid: str) -> None:
        self._unknown[kid] = self._clock()
        while len(self._unknown) > 4 * self.max_keys:
            forgotten, _ = self._unknown.popitem(last=False)
            self._unusable.pop(forgotten, None)

    def _unusable_key(self, kid: str) -> InvalidToken:
        return InvalidToken(
            Reason.KEY_UNUSABLE,
            "The token was signed with a key this application cannot use.",
            f"{self._unusable.get(kid, 'the key is unusable')} (published at {self.url}/{kid})",
        )

    def _unknown_kid(self, kid: str, why: str) -> InvalidToken:
        return InvalidToken(
            Reason.UNKNOWN_KEY,
            "The token was signed with a key this application does not know.",
            f"key id {kid[:64]!r} {why}",
        )

    def _failed(self, why: str) -> AuthUnavailable:
        if why != self._last_failure:
            logger.warning("ALB key endpoint failed: %s; %d keys cached", why, len(self._keys))
        self._last_failure = why
        return AuthUnavailable(
            Reason.KEYS_UNAVAILABLE,
            "The signing keys for this application cannot be fetched right now; try again shortly.",
            why,
            retry_after=max(1, math.ceil(self.cooldown_seconds)),
        )
