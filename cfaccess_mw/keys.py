"""The team's signing keys: fetched from the certs endpoint, cached, refreshed with care.

Rules, and why:

* Keys are fetched once at start-up and cached for ``cache_seconds``, so requests
  do not pay for the network. When the key set is older than that, the next
  request that uses a key, cached token or not, starts a refresh in the
  background and goes on with the cached key: no request waits for a routine
  refresh, and traffic that only hits the token cache still keeps the key set
  fresh (a key Cloudflare withdrew stops working within one lifetime).
* A refresh keeps the very key object of every ``kid`` whose key material did not
  change, so what was verified with it stays valid; a ``kid`` republished with
  other material gets a new object, and a verified token remembered with the old
  one is checked again (see :mod:`cfaccess_mw.tokens`).
* A token naming an unknown ``kid`` causes a refetch (Cloudflare rotates keys and
  publishes the new one before using it), but unknown kids cause at most one
  fetch per ``cooldown`` seconds, so a flood of made-up kids cannot turn the
  middleware into a load generator against the certs endpoint. Fetches for other
  reasons (start-up, the routine refresh) do not use up that allowance, so a key
  rotated in just after one of them is picked up at once.
* A flood must not delay a real rotation either. No fetch can tell a made-up kid
  from a genuine new one: only the certs endpoint knows, and it may be asked once
  per cooldown. So an unknown kid is refused as unknown (401) only when a fetch
  made after its request arrived, or one it waited for, does not list it (such
  kids are remembered for the rest of the cooldown). A kid that arrives while
  the allowance is spent is *undecided*: it gets 503 with ``Retry-After`` (the
  seconds until the next fetch may run), not 401, and it moves the next refresh
  forward to the end of the cooldown, started in the background by whichever
  request comes first. A genuine new key is therefore accepted within one
  cooldown of its first token, however many made-up kids arrive meanwhile, and
  its tokens are never told they are invalid; the flood still causes at most one
  fetch per cooldown. No design can do better under that allowance: a fetch only
  sees keys published before it starts.
* One fetch runs at a time; every other request that needs its answer waits for
  it and then uses its result (single-flight). A background refresh is a task of
  the running event loop (asyncio or trio), held by this object until it ends,
  run outside any request's context and cancellation, and its failures are
  logged, never raised into a request.
* A failed refresh keeps the last good key set (a short outage must not become
  refused logins) and is retried at most once per ``cooldown``; only with no
  keys at all does the caller get a 503.
* Fetches never follow redirects, never accept more than ``max_bytes``, and never
  take longer than ``timeout`` in total.
* Failures are logged when the state changes, not once per request.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import logging
import math
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from types import ModuleType
from typing import Any, NamedTuple

import anyio
import httpx
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from .errors import AuthUnavailable, InvalidToken, Reason

logger = logging.getLogger("cfaccess_mw.keys")

MAX_JWKS_BYTES = 1 << 20  # Cloudflare's document is about 3 KB; 1 MiB is generous.
#: How long keys stay trusted with no fetch confirming them (CFACCESS_JWKS_MAX_AGE_SECONDS): a day rides out any
#: certs outage seen so far, and bounds how long a withdrawn key works while the endpoint cannot be reached.
DEFAULT_MAX_AGE_SECONDS = 86400.0
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192  # bounds the work one verification can cost
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
#: Kids that a fetch made for them did not list, remembered so that they stay 401 (not "undecided", 503) for the
#: rest of the cooldown. A bound, because an attacker chooses them.
ABSENT_KIDS_REMEMBERED = 256


def _running_trio(trio: ModuleType) -> bool:
    """Whether this code runs inside ``trio.run`` (trio is imported by whoever uses it; we never import it)."""
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


#: A key a token can be verified with: RSA (RS256) for Cloudflare, or P-256 (ES256) for the other presets.
PublicKey = RSAPublicKey | EllipticCurvePublicKey
#: One JWK to ``(kid, key)``, or ``ValueError`` saying why it is unusable (:func:`parse_jwk` is Cloudflare's).
JWKParser = Callable[[object], tuple[str, PublicKey]]


class JWKSFetchError(Exception):
    """A fetch of the certs endpoint failed; the message says how (no secrets involved).

    ``unusable`` is set when the document was a key set whose every key was unusable:
    kid -> why, so that tokens naming those kids are told so (401) rather than to retry.
    """

    def __init__(self, message: str, unusable: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.unusable = unusable  # None: no key set was read (the network, the status, the body failed)


def _b64_uint(value: object, what: str) -> int:
    if not isinstance(value, str) or not _B64URL.fullmatch(value):
        raise ValueError(f"{what} is not base64url")
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    return int.from_bytes(raw, "big")


def jwk_kid(jwk: object) -> str:
    """The ``kid`` of a JWK that may verify signatures; ``ValueError`` when it has none, or is for something else.

    RFC 7517 section 4: ``use`` (when present) must be ``sig``, and ``key_ops`` (when
    present) must list ``verify``; a key published for encryption, or for signing only,
    is not one to verify with (Wycheproof's ``rejectWrongKeyOps``). Every key parser
    starts here, so no key type skips the rule.
    """
    if not isinstance(jwk, dict):
        raise ValueError("entry is not an object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("no kid")
    if "use" in jwk and jwk["use"] != "sig":
        raise ValueError(f"kid {kid!r}: use is {jwk['use']!r}, not 'sig'")
    if "key_ops" in jwk:
        ops = jwk["key_ops"]
        if not isinstance(ops, list) or "verify" not in ops or any(not isinstance(op, str) for op in ops):
            raise ValueError(f"kid {kid!r}: key_ops {ops!r} does not include 'verify'")
    return kid


def _roca_masks() -> tuple[tuple[int, int], ...]:
    """For each small prime ``p``: the bit mask of the residues ``65537**k mod p`` (the subgroup 65537 generates).

    A modulus made by the Infineon library of CVE-2017-15361 (ROCA) is ``k * M + (65537**a mod M)``
    with ``M`` the product of these primes, so ``n mod p`` lies in that subgroup for every one of
    them; a random modulus does so with a probability of about 2**-150. This is the published
    detector's test (Nemec et al., CCS 2017), its table computed here rather than copied.
    """
    primes = [p for p in range(3, 168) if all(p % d for d in range(2, int(p**0.5) + 1))]
    return tuple((p, sum(1 << r for r in {pow(65537, k, p) for k in range(p)})) for p in primes)


_ROCA = _roca_masks()


def has_roca_fingerprint(n: int) -> bool:
    """Whether an RSA modulus has the ROCA fingerprint (CVE-2017-15361): such keys can be factored."""
    return all((mask >> (n % p)) & 1 for p, mask in _ROCA)


def parse_jwk(jwk: object) -> tuple[str, RSAPublicKey]:
    """One JWK to ``(kid, key)``; raise ``ValueError`` saying why it is unusable."""
    kid = jwk_kid(jwk)
    assert isinstance(jwk, dict)
    if jwk.get("kty") != "RSA":
        raise ValueError(f"kid {kid!r}: kty is {jwk.get('kty')!r}, not 'RSA'")
    if "alg" in jwk and jwk["alg"] != "RS256":
        raise ValueError(f"kid {kid!r}: alg is {jwk['alg']!r}, not 'RS256'")
    if any(private in jwk for private in ("d", "p", "q")):
        raise ValueError(f"kid {kid!r}: contains private key material")
    n = _b64_uint(jwk.get("n"), f"kid {kid!r}: n")
    e = _b64_uint(jwk.get("e"), f"kid {kid!r}: e")
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
        raise ValueError(f"kid {kid!r}: RSA key of {n.bit_length()} bits is not {MIN_RSA_BITS}-{MAX_RSA_BITS} bits")
    if e < 3 or e % 2 == 0:
        raise ValueError(f"kid {kid!r}: bad RSA exponent")
    if has_roca_fingerprint(n):
        raise ValueError(f"kid {kid!r}: the RSA key has the ROCA weakness (CVE-2017-15361) and can be factored")
    return kid, RSAPublicNumbers(e, n).public_key()


class KeySet(NamedTuple):
    """A parsed certs document: the usable keys, the problems with the rest, and why each listed kid is unusable."""

    keys: dict[str, PublicKey]
    problems: list[str]
    #: kid -> why it cannot be used (wrong type, curve, ``use``/``key_ops``, a weak key, listed twice). The
    #: document proves these unusable: a token naming one is refused (401), not asked to wait for a fetch.
    unusable: dict[str, str]


def parse_jwks(document: object, parse: JWKParser = parse_jwk) -> KeySet:
    """A certs document to a :class:`KeySet`; unusable keys are skipped, not fatal.

    A ``kid`` that appears twice is dropped altogether: with two keys under one
    name there is no safe way to pick, and Cloudflare never publishes that.
    Raises :class:`JWKSFetchError` when the document is not a key set, or holds no
    usable key (its ``unusable`` then says which kids it did list).
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JWKSFetchError("document has no 'keys' list")
    keys: dict[str, PublicKey] = {}
    problems: list[str] = []
    unusable: dict[str, str] = {}
    seen: set[str] = set()
    duplicates: set[str] = set()
    for jwk in document["keys"]:
        try:
            kid, key = parse(jwk)
        except (ValueError, TypeError) as exc:
            problems.append(str(exc))
            listed = jwk.get("kid") if isinstance(jwk, dict) else None
            if isinstance(listed, str) and listed:
                unusable.setdefault(listed, str(exc))
            continue
        if kid in seen:
            duplicates.add(kid)
        seen.add(kid)
        keys[kid] = key
    for kid in duplicates:
        del keys[kid]
        problems.append(f"kid {kid!r} appears more than once; ignoring it")
        unusable[kid] = f"kid {kid!r} is published more than once, with no way to tell which key is meant"
    for kid in keys:
        unusable.pop(kid, None)  # listed once unusably and once usably: the usable entry stands
    if not keys:
        usable = "no usable RS256 keys" if parse is parse_jwk else "no usable keys"
        raise JWKSFetchError(usable + (f" ({'; '.join(problems)})" if problems else ""), unusable)
    return KeySet(keys, problems, unusable)


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
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        parse: JWKParser = parse_jwk,
    ) -> None:
        self.url = url
        self._parse = parse  # which keys this client adopts; anything else in the document is skipped
        self.cache_seconds = cache_seconds
        #: How long keys are trusted without a successful fetch confirming them (see :meth:`_expire`).
        self.max_age_seconds = max(max_age_seconds, cache_seconds)
        self.cooldown_seconds = cooldown_seconds
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._transport = transport
        self._clock = clock
        self._keys: Mapping[str, PublicKey] = {}
        self._unusable: Mapping[str, str] = {}  # kid -> why, for the kids the last key set read lists unusably
        self._fetched_at = -math.inf  # last success
        self._expired = False  # the keys outlived max_age_seconds unconfirmed and were dropped (said once)
        self._attempted_at = -math.inf  # end of the last attempt, success or not
        self._kid_fetch_at = -math.inf  # last fetch caused by an unknown kid (the cooldown's allowance)
        self._kid_waiting = False  # an unknown kid was left undecided since the last fetch started
        self._due_at = -math.inf  # when a request should start a background refresh (see _schedule)
        self._absent: OrderedDict[str, None] = OrderedDict()  # kids a fetch made for them did not list
        self._generation = 0  # bumped after every attempt; waiters use it to skip a second fetch
        self._lock: anyio.Lock | None = None
        self._in_flight = False  # a fetch is under way (not merely a coroutine holding the lock)
        self._last_failure: str | None = None
        self._last_problems: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()  # running asyncio background refreshes, held until they end
        self._running = 0  # background refreshes started and not yet ended (asyncio or trio)
        self._background_generation = -1  # the generation the latest one will fetch for (none since, if current)
        self._kid_fetch_generation = -1  # the generation the latest fetch for an unknown kid was started from
        self._idle: anyio.Event | None = None  # set when _running drops to 0 (for settle())
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

    @property
    def age(self) -> float:
        """Seconds since a fetch last confirmed the key set (infinite before the first success)."""
        return self._clock() - self._fetched_at

    @property
    def expired(self) -> bool:
        """Whether the keys went unconfirmed past ``max_age_seconds`` and are no longer trusted."""
        return self._expired or (bool(self._keys) and self.age >= self.max_age_seconds)

    def has_kid(self, kid: str) -> bool:
        """Whether ``kid`` is in the cached key set (no I/O)."""
        return kid in self._keys

    def cached_key(self, kid: str) -> PublicKey | None:
        """The cached key object for ``kid``, or ``None``; never waits.

        Called for every token, cached or not: when the key set is due for a refresh,
        this starts one in the background (single-flight) and still answers from the
        cache. A cached token is valid only while this returns the very key object it
        was verified with.
        """
        if self._clock() >= self._due_at:
            if self._keys and self.age >= self.max_age_seconds:
                self._expire()
            self._refresh_in_background()
        return self._keys.get(kid)

    async def get_key(self, kid: str) -> PublicKey:
        """The public key for ``kid``, fetching when the cache does not know it (see the module's rules).

        A known key is returned at once, even when due for a refresh (which then runs
        in the background). Raises :class:`InvalidToken` (``unknown_key``) when a fetch
        made for this request does not list ``kid``, and :class:`AuthUnavailable` when
        there are no keys at all, the endpoint is failing, or ``kid`` is undecided
        because unknown kids have used up this cooldown's fetch.
        """
        key = self.cached_key(kid)
        if key is not None:
            return key
        generation = self._generation
        now = self._clock()
        if self._in_flight:
            await self._refresh(generation)  # a fetch is under way: its answer is worth the wait
        elif self._running and self._background_generation == generation:
            await self._refresh(generation)  # a background fetch is about to start: run it now, or wait for it
        elif self._kid_fetch_generation == generation:
            # Another request's fetch for an unknown kid is about to start (its request is waiting for the lock,
            # before the fetch is under way): wait for its answer rather than take this kid for undecided.
            await self._refresh(generation)
        elif now >= self._next_kid_fetch_at():
            self._kid_fetch_at = now
            self._kid_fetch_generation = generation
            await self._refresh(generation)
        key = self._keys.get(kid)
        if key is not None:
            return key
        unusable = self._unusable.get(kid)
        if unusable is not None:
            # The key set lists this kid, in a form that cannot verify this token: no fetch will change that.
            raise InvalidToken(
                Reason.KEY_UNUSABLE,
                "The token was signed with a key this application cannot use.",
                f"{unusable} (published at {self.url})",
            )
        if not self._keys or self._last_failure is not None:
            # No keys at all, or the endpoint is failing and so cannot say whether ``kid`` is a key Cloudflare
            # just rotated in: the request cannot be decided, which is a 503 ("try again"), not a 401.
            why = f"key id {kid!r} is not cached and" if self._keys else "no signing keys:"
            if self._expired:
                why = f"no signing keys (none confirmed for over {human_seconds(self.max_age_seconds)}):"
            raise AuthUnavailable(
                Reason.KEYS_UNAVAILABLE,
                "The signing keys for this application cannot be fetched right now; try again shortly.",
                f"{why} {self.url} is failing: {self._last_failure or 'not fetched yet'}",
                retry_after=max(1, math.ceil(self.cooldown_seconds)),
            )
        if self._generation != generation or kid in self._absent:
            # A fetch made for this request (or for an earlier one with this kid) does not list it: unknown.
            self._absent[kid] = None
            self._absent.move_to_end(kid)
            if len(self._absent) > ABSENT_KIDS_REMEMBERED:
                self._absent.popitem(last=False)
            raise InvalidToken(
                Reason.UNKNOWN_KEY,
                "The token was signed with a key this application does not know.",
                f"key id {kid!r} is not among the {len(self._keys)} keys at {self.url} ({', '.join(self.kids)})",
            )
        # Unknown kids have used this cooldown's fetch: ``kid`` may be a key Cloudflare rotated in since. Undecided
        # until the next fetch, which the first request after the cooldown starts (see _schedule).
        self._kid_waiting = True
        self._schedule()
        retry = max(1, math.ceil(self._next_kid_fetch_at() - now))
        raise AuthUnavailable(
            Reason.KEYS_UNAVAILABLE,
            "The token names a signing key this application has not fetched yet; try again shortly.",
            f"key id {kid!r} is not among the {len(self._keys)} cached keys, and unknown key ids already caused a "
            f"fetch {now - self._kid_fetch_at:.1f}s ago; the next may run in {retry}s "
            f"(refetch cooldown {self.cooldown_seconds:g}s)",
            retry_after=retry,
        )

    async def refresh(self) -> bool:
        """Fetch the key set now (single-flight). Return whether keys are available afterwards."""
        return await self._refresh(self._generation)

    async def settle(self) -> None:
        """Wait until no background refresh is running (tests, and anyone who wants a quiet shutdown)."""
        while self._running:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    def _next_kid_fetch_at(self) -> float:
        """When an unknown kid may next cause a fetch: a cooldown after the last such fetch and the last failure."""
        at = self._kid_fetch_at + self.cooldown_seconds
        if self._last_failure is not None:
            at = max(at, self._attempted_at + self.cooldown_seconds)
        return at

    def _schedule(self) -> None:
        """When the next request should start a background refresh.

        A lifetime after the last success; while the endpoint fails, a cooldown after
        the last attempt (but not before the lifetime ends: a failed fetch for an
        unknown kid must not make every request retry); and, when an unknown kid is
        waiting, as soon as the cooldown allows a fetch for it.
        """
        due = self._fetched_at + self.cache_seconds
        if self._last_failure is not None:
            due = max(due, self._attempted_at + self.cooldown_seconds)
        if self._kid_waiting:
            due = min(due, self._next_kid_fetch_at())
        self._due_at = min(due, self._expires_at())

    def _expires_at(self) -> float:
        """When the cached keys stop being trusted unless a fetch confirms them (never, with none cached)."""
        return self._fetched_at + self.max_age_seconds if self._keys else math.inf

    def _expire(self) -> None:
        """Stop trusting keys that no fetch has confirmed for ``max_age_seconds``.

        Keeping the last good keys through an outage is right, within a bound: a key
        the issuer withdrew (rotated out after a compromise, say) must not stay
        trusted for as long as the certs endpoint stays unreachable, which an
        attacker may be able to arrange. Past the bound every token gets 503 until a
        fetch succeeds; said once, as an error.
        """
        logger.error(
            "certs endpoint %s: no fetch has confirmed the %d signing keys for %s (the maximum age, "
            "CFACCESS_JWKS_MAX_AGE_SECONDS); they are no longer trusted and tokens get 503 until a fetch succeeds "
            "(last failure: %s)",
            self.url,
            len(self._keys),
            human_seconds(self.age),
            self._last_failure or "none",
        )
        self._keys = {}
        self._expired = True

    def _refresh_in_background(self) -> None:
        """Start a refresh as a background task of the running event loop; never raises, never waits.

        Single-flight: the task fetches only if no fetch completed since it was
        started, and while it runs ``_due_at`` is pushed past the longest a fetch can
        take, so requests do not start more. Should the task vanish without a word
        (its event loop closed under it), the next request after that starts another.
        """
        now = self._clock()
        self._due_at = min(now + self.timeout + self.cooldown_seconds, self._expires_at())
        if self._kid_waiting:  # this is the fetch the waiting kid was promised: it uses the cooldown's allowance
            self._kid_fetch_at = now
        generation = self._background_generation = self._generation
        try:
            self._spawn(lambda: self._background_refresh(generation))
        except RuntimeError:  # no event loop running here: the next request on one starts the refresh
            self._due_at = now

    def _spawn(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``job()`` as a task of the running event loop, outside the current request.

        A fresh, empty ``contextvars`` context, so no request's context variables
        leak into it; not in the request's task group or cancel scope, so the
        request neither waits for it nor cancels it. Under asyncio the loop holds
        tasks only weakly, so this object holds it until it ends; under trio it is a
        system task, which trio holds and cancels when the run ends.
        """
        trio = sys.modules.get("trio")
        if trio is not None and _running_trio(trio):
            trio.lowlevel.spawn_system_task(job, context=contextvars.Context())
        else:
            loop = asyncio.get_running_loop()  # RuntimeError when there is none
            task: asyncio.Task[None] = contextvars.Context().run(loop.create_task, job())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._running += 1

    async def _background_refresh(self, generation: int) -> None:
        try:
            await self._refresh(generation)
        except Exception:  # _refresh records fetch errors itself; this is a bug, and no request may see it
            logger.exception("certs endpoint %s: background refresh failed", self.url)
        finally:
            self._running -= 1
            if not self._running and self._idle is not None:
                self._idle.set()
                self._idle = None

    async def _refresh(self, generation: int) -> bool:
        """Fetch unless an attempt completed since ``generation`` was read (single-flight)."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._generation != generation:
                return bool(self._keys)  # another coroutine fetched while we waited
            self._kid_waiting = False  # this fetch starts after every waiting kid arrived: it decides them
            self._in_flight = True
            try:
                keys, problems, listed, age = await self._fetch()
            except JWKSFetchError as exc:
                failure: str | None = str(exc)
                if exc.unusable is not None:  # a key set was read, and none of its keys is usable
                    self._unusable = exc.unusable
            except Exception as exc:  # a bug must cost a 503, not a 500 on every request
                logger.exception("certs endpoint %s: unexpected error while fetching keys", self.url)
                failure = f"unexpected {type(exc).__name__}"
            else:
                failure = None
            finally:
                self._in_flight = False
            # Not in a finally: when the fetching request is cancelled, the attempt did not happen, and a
            # waiter must make its own rather than find the generation moved and the cooldown running.
            self._attempted_at = self._clock()
            if failure is None:
                self._record_success(keys, problems, listed, age)
            else:
                self._record_failure(failure)
            self._generation += 1
            self._schedule()
        return bool(self._keys)

    def _record_success(self, keys: dict[str, PublicKey], problems: list[str], listed: set[str], age: float) -> None:
        # A cached key whose kid the document still lists, but in a form we cannot use (a wrong kty, alg or use,
        # listed twice), has not been withdrawn: keep the last good copy rather than refuse its tokens.
        kept = sorted(kid for kid in self._keys if kid in listed and kid not in keys)
        if kept:
            keys = {**keys, **{kid: self._keys[kid] for kid in kept}}
            problems = [*problems, f"keeping the cached copy of {', '.join(map(repr, kept))}"]
        # The same material under the same kid keeps its key object, so tokens verified with it stay cached; a kid
        # republished with other material gets the new object, and its cached tokens are verified again.
        replaced = []
        for kid, old in self._keys.items():
            new = keys.get(kid)
            if new is not None and new is not old:
                if new.public_numbers() == old.public_numbers():
                    keys[kid] = old
                else:
                    replaced.append(kid)
        added = sorted(set(keys) - set(self._keys))
        removed = sorted(set(self._keys) - set(keys))
        self._keys = keys
        self._fetched_at = self._clock() - age  # a copy a cache held for a while confirms the keys only as of then
        if self._expired:
            logger.warning("certs endpoint %s: %d signing keys confirmed again and trusted", self.url, len(keys))
        self._expired = False
        if self._last_failure is not None:
            logger.warning("certs endpoint %s recovered; %d keys", self.url, len(keys))
        self._last_failure = None
        if added or removed:
            logger.info("signing keys from %s: added %s, removed %s", self.url, added, removed)
        if replaced:
            logger.warning(
                "certs endpoint %s: key id(s) %s now carry different key material; tokens verified with the old "
                "key are checked again",
                self.url,
                sorted(replaced),
            )
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

    async def _fetch(self) -> tuple[dict[str, PublicKey], list[str], set[str], float]:
        """The usable keys, the problems with the rest, every kid the document lists (usable or not), and how
        long a cache on the way held the document (its ``Age``, RFC 9111 section 5.1)."""
        self.fetch_count += 1
        status, body, age = await http_get(
            self.url, transport=self._transport, seconds=self.timeout, max_bytes=self.max_bytes
        )
        if status != 200:
            raise JWKSFetchError(f"HTTP {status}")
        if age >= self.max_age_seconds:
            raise JWKSFetchError(
                f"the key set was served from a cache {human_seconds(age)} old (its Age header), past the maximum "
                f"age of {human_seconds(self.max_age_seconds)} (CFACCESS_JWKS_MAX_AGE_SECONDS)"
            )
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise JWKSFetchError("response is not JSON") from None
        keys, problems, unusable = parse_jwks(document, self._parse)
        self._unusable = unusable
        listed = {jwk["kid"] for jwk in document["keys"] if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str)}
        return keys, problems, listed, age


class Fetched(NamedTuple):
    """One GET's answer: the status, the body, and the seconds a cache held it (``Age``; 0 when fresh)."""

    status: int
    body: bytes
    age: float


def response_age(value: str | None) -> float:
    """The ``Age`` header as seconds: a non-negative whole number (RFC 9111 section 5.1), else 0."""
    if value is None or not value.strip().isdigit() or not value.strip().isascii():
        return 0.0
    return float(min(int(value.strip()), 10**9))


async def http_get(
    url: str,
    *,
    transport: httpx.AsyncBaseTransport | None,
    seconds: float,
    max_bytes: int,
    accept: str = "application/json",
) -> Fetched:
    """One GET: no redirects, at most ``max_bytes``, ``seconds`` in all.

    Every key source fetches through this. Raises :class:`JWKSFetchError` for a
    network failure, a timeout, a redirect or an oversized body.
    """
    try:
        with anyio.fail_after(seconds):
            async with (
                httpx.AsyncClient(
                    transport=transport, timeout=httpx.Timeout(seconds), follow_redirects=False
                ) as client,
                client.stream("GET", url, headers={"accept": accept}) as response,
            ):
                if response.is_redirect:
                    raise JWKSFetchError(f"HTTP {response.status_code} redirect refused (keys must be served directly)")
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise JWKSFetchError(f"body of {declared} bytes exceeds {max_bytes}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise JWKSFetchError(f"body exceeds {max_bytes} bytes")
                    chunks.append(chunk)
                return Fetched(response.status_code, b"".join(chunks), response_age(response.headers.get("age")))
    except TimeoutError:
        raise JWKSFetchError(f"no answer within {seconds:g}s") from None
    except httpx.HTTPError as exc:
        raise JWKSFetchError(f"{type(exc).__name__}: {exc}") from None


def human_seconds(seconds: float) -> str:
    """``2 days``, ``5 hours``, ``90 s``: an age or a bound, for the log and ``cfaccess-mw check``."""
    if not math.isfinite(seconds):
        return "ever"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}s"
    return f"{seconds:.0f} s"
