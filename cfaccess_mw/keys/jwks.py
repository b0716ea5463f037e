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
* One fetch runs at a time in the whole process; every other request that needs
  its answer waits for it, in whatever thread or event loop, and then uses its
  result (single-flight, :class:`~cfaccess_mw.fetching.SingleFlight`). Async code
  fetches with ``httpx.AsyncClient``, sync code (WSGI, threads) with
  ``httpx.Client``; the bookkeeping is the same code, guarded by a thread lock held
  only between I/O. A background refresh is a task of the running event loop
  (asyncio or trio), or a daemon thread where there is none, held by this object
  until it ends, run outside any request's context and cancellation, and its
  failures are logged, never raised into a request.
* A failed refresh keeps the last good key set (a short outage must not become
  refused logins) and is retried at most once per ``cooldown``; only with no
  keys at all does the caller get a 503.
* Fetches never follow redirects, never accept more than ``max_bytes``, and never
  take longer than ``timeout`` in total.
* Failures are logged when the state changes, not once per request.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Generator, Mapping
from concurrent.futures import Future
from typing import Any, NamedTuple

import httpx

from ..core.errors import AuthUnavailable, InvalidToken, Reason
from ..core.jwk import (
    MAX_RSA_BITS,
    MIN_RSA_BITS,
    JWKParser,
    KeySet,
    PublicKey,
    has_roca_fingerprint,
    jwk_kid,
    parse_jwk,
    parse_jwks,
)
from .fetching import (
    Counter,
    Fetched,
    JWKSFetchError,
    SingleFlight,
    http_get,
    http_get_sync,
    in_event_loop,
    running_trio,
    start_thread,
    wait_async,
    wait_sync,
)

__all__ = [  # the key layer's names, importable from here as before the split into jwk and fetching
    "ABSENT_KIDS_REMEMBERED",
    "DEFAULT_MAX_AGE_SECONDS",
    "MAX_JWKS_BYTES",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "Get",
    "JWKParser",
    "JWKSClient",
    "JWKSFetchError",
    "KeySet",
    "Plan",
    "PublicKey",
    "drive_async",
    "drive_sync",
    "has_roca_fingerprint",
    "http_get",
    "human_seconds",
    "jwk_kid",
    "parse_jwk",
    "parse_jwks",
]

logger = logging.getLogger("cfaccess_mw.keys")

MAX_JWKS_BYTES = 1 << 20  # Cloudflare's document is about 3 KB; 1 MiB is generous.
#: How long keys stay trusted with no fetch confirming them (CFACCESS_JWKS_MAX_AGE_SECONDS): a day rides out any
#: certs outage seen so far, and bounds how long a withdrawn key works while the endpoint cannot be reached.
DEFAULT_MAX_AGE_SECONDS = 86400.0
#: Kids that a fetch made for them did not list, remembered so that they stay 401 (not "undecided", 503) for the
#: rest of the cooldown. A bound, because an attacker chooses them.
ABSENT_KIDS_REMEMBERED = 256


class Get(NamedTuple):
    """One GET a fetch plan asks for."""

    url: str
    max_bytes: int
    accept: str = "application/json"


#: A fetch plan: yields the GETs it needs, is sent each answer, returns what they mean (h11's shape: the plan does
#: no I/O; :func:`drive_async` and :func:`drive_sync` do it).
Plan = Generator[Get, Fetched, Any]


def _step(plan: Plan, answer: Fetched | None) -> tuple[Get | None, Any]:
    try:
        return plan.send(answer), None  # type: ignore[arg-type]  # the first send is None, as generators require
    except StopIteration as done:
        return None, done.value


async def drive_async(plan: Plan, transport: httpx.AsyncBaseTransport | None, seconds: float) -> Any:
    """Run a fetch plan with ``httpx.AsyncClient``."""
    get, result = _step(plan, None)
    while get is not None:
        get, result = _step(
            plan,
            await http_get(get.url, transport=transport, seconds=seconds, max_bytes=get.max_bytes, accept=get.accept),
        )
    return result


def drive_sync(plan: Plan, transport: httpx.BaseTransport | None, seconds: float) -> Any:
    """Run a fetch plan with ``httpx.Client``, in the calling thread."""
    get, result = _step(plan, None)
    while get is not None:
        get, result = _step(
            plan,
            http_get_sync(get.url, transport=transport, seconds=seconds, max_bytes=get.max_bytes, accept=get.accept),
        )
    return result


class JWKSClient:
    """Cached, single-flight access to one certs endpoint, from async code (``get_key``) or threads
    (``get_key_sync``).

    ``transport``/``sync_transport`` and ``clock`` exist so tests can run against a
    local server and move time without sleeping.
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
        sync_transport: httpx.BaseTransport | None = None,
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
        self._sync_transport = sync_transport
        self._clock = clock
        self._keys: Mapping[str, PublicKey] = {}
        self._unusable: Mapping[str, str] = {}  # kid -> why, for the kids the last key set read lists unusably
        self._fetched_at = -math.inf  # last success
        #: kid -> when a fetch last served its key, for the cached keys the document now lists only unusably (kept,
        #: see _record_success): no fetch confirms those, so they age on their own towards ``max_age_seconds``.
        self._kept_since: dict[str, float] = {}
        self._expired = False  # the keys outlived max_age_seconds unconfirmed and were dropped (said once)
        self._attempted_at = -math.inf  # end of the last attempt, success or not
        self._kid_fetch_at = -math.inf  # last fetch caused by an unknown kid (the cooldown's allowance)
        self._kid_waiting = False  # an unknown kid was left undecided since the last fetch started
        self._due_at = -math.inf  # when a request should start a background refresh (see _schedule)
        self._absent: OrderedDict[str, None] = OrderedDict()  # kids a fetch made for them did not list
        self._generation = 0  # bumped after every attempt; waiters use it to skip a second fetch
        #: Guards the bookkeeping when threads share this object; held between I/O only, never across it.
        self._state = threading.RLock()
        #: The fetch under way, whichever thread or loop runs it; taken for abandoned past the longest a fetch can
        #: take (a plan of two GETs, each cut off about twice its timeout after it starts).
        self._flight = SingleFlight(stale_after=4 * timeout + 1)
        self._last_failure: str | None = None
        self._last_problems: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()  # running asyncio background refreshes, held until they end
        self._background = Counter()  # background refreshes started and not yet ended (any loop or thread)
        self._background_generation = -1  # the generation the latest one will fetch for (none since, if current)
        self._kid_fetch_generation = -1  # the generation the latest fetch for an unknown kid was started from
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
            with self._state:
                if self._clock() >= self._due_at:  # another thread may have started it meanwhile
                    if self._keys and self.age >= self.max_age_seconds:
                        self._expire()
                    else:
                        self._drop_kept(self._clock())
                    self._refresh_in_background()
        return self._keys.get(kid)

    async def get_key(self, kid: str) -> PublicKey:
        """The public key for ``kid``, fetching when the cache does not know it (see the module's rules).

        A known key is returned at once, even when due for a refresh (which then runs
        in the background). Raises :class:`InvalidToken` (``unknown_key``) when a fetch
        made for this request does not list ``kid``, ``key_unusable`` when the key set
        lists it unusably, and :class:`AuthUnavailable` when there are no keys at all,
        the endpoint is failing, or ``kid`` is undecided because unknown kids have used
        up this cooldown's fetch.
        """
        key = self.cached_key(kid)
        if key is not None:
            return key
        generation, now, fetch = self._plan(kid)
        if fetch:
            await self._refresh(generation)
        return self._conclude(kid, generation, now)

    def get_key_sync(self, kid: str) -> PublicKey:
        """:meth:`get_key` for a thread without an event loop (a WSGI worker): the same answers."""
        key = self.cached_key(kid)
        if key is not None:
            return key
        generation, now, fetch = self._plan(kid)
        if fetch:
            self._refresh_sync(generation)
        return self._conclude(kid, generation, now)

    async def refresh(self) -> bool:
        """Fetch the key set now (single-flight). Return whether keys are available afterwards."""
        return await self._refresh(self._generation)

    def refresh_sync(self) -> bool:
        """:meth:`refresh` from a thread without an event loop."""
        return self._refresh_sync(self._generation)

    async def settle(self) -> None:
        """Wait until no background refresh is running (tests, and anyone who wants a quiet shutdown)."""
        await self._background.settle()

    def settle_sync(self) -> None:
        """:meth:`settle` from a thread (bounded by the fetch timeout)."""
        self._background.settle_sync(2 * self.timeout + 1)

    # --- the decision around a fetch (the same for both ways of fetching) --------------------------

    def _plan(self, kid: str) -> tuple[int, float, bool]:
        """``(generation, now, fetch)``: whether this request for an uncached ``kid`` waits for, or causes, a fetch."""
        with self._state:
            generation = self._generation
            now = self._clock()
            if self._flight.busy:
                return generation, now, True  # a fetch is under way: its answer is worth the wait
            if self._background.running and self._background_generation == generation:
                return generation, now, True  # a background fetch is about to start: run it now, or wait for it
            if self._kid_fetch_generation == generation:
                # Another request's fetch for an unknown kid is about to start (its request is between deciding
                # and claiming the flight): wait for its answer rather than take this kid for undecided.
                return generation, now, True
            if now >= self._next_kid_fetch_at():
                self._kid_fetch_at = now
                self._kid_fetch_generation = generation
                return generation, now, True
            return generation, now, False

    def _conclude(self, kid: str, generation: int, now: float) -> PublicKey:
        """After the fetch (if any): the key, or the refusal that says why not."""
        with self._state:
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
            # Unknown kids have used this cooldown's fetch: ``kid`` may be a key Cloudflare rotated in since.
            # Undecided until the next fetch, which the first request after the cooldown starts (see _schedule).
            self._kid_waiting = True
            self._schedule()
            retry = max(1, math.ceil(self._next_kid_fetch_at() - now))
            raise AuthUnavailable(
                Reason.KEYS_UNAVAILABLE,
                "The token names a signing key this application has not fetched yet; try again shortly.",
                f"key id {kid!r} is not among the {len(self._keys)} cached keys, and unknown key ids already caused "
                f"a fetch {now - self._kid_fetch_at:.1f}s ago; the next may run in {retry}s "
                f"(refetch cooldown {self.cooldown_seconds:g}s)",
                retry_after=retry,
            )

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
        unknown kid must not make every request retry); when an unknown kid is
        waiting, as soon as the cooldown allows a fetch for it; and never after the
        keys reach their maximum age.
        """
        due = self._fetched_at + self.cache_seconds
        if self._last_failure is not None or due <= self._attempted_at:
            # Failing, or served a copy a cache held past the lifetime (Age): retry no sooner than the cooldown.
            due = max(due, self._attempted_at + self.cooldown_seconds)
        if self._kid_waiting:
            due = min(due, self._next_kid_fetch_at())
        self._due_at = min(due, self._expires_at())

    def _expires_at(self) -> float:
        """When cached keys stop being trusted unless a fetch confirms them (never, with none cached)."""
        if not self._keys:
            return math.inf
        return min(self._fetched_at, min(self._kept_since.values(), default=math.inf)) + self.max_age_seconds

    def _drop_kept(self, now: float) -> None:
        """Stop trusting the kept copies (see :meth:`_record_success`) that no fetch has served for
        ``max_age_seconds``; the document lists their kids unusably, so their tokens then get 401 key_unusable."""
        stale = [kid for kid, since in self._kept_since.items() if now - since >= self.max_age_seconds]
        if stale:
            logger.error(
                "certs endpoint %s: key id(s) %s have been listed only in an unusable form for %s (the maximum "
                "age, CFACCESS_JWKS_MAX_AGE_SECONDS); their cached copies are no longer trusted",
                self.url,
                stale,
                human_seconds(self.max_age_seconds),
            )
            self._keys = {kid: key for kid, key in self._keys.items() if kid not in stale}
            for kid in stale:
                del self._kept_since[kid]

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

    # --- background refresh --------------------------------------------------------------------

    def _refresh_in_background(self) -> None:
        """Start a refresh in the background (the state lock held); never raises, never waits.

        Single-flight: the job fetches only if no fetch completed since it was started,
        and while it runs ``_due_at`` is pushed past the longest a fetch can take, so
        requests do not start more. Should the job vanish without a word (its event
        loop closed under it), the next request after that starts another.
        """
        now = self._clock()
        self._due_at = min(now + self.timeout + self.cooldown_seconds, self._expires_at())
        if self._kid_waiting:  # this is the fetch the waiting kid was promised: it uses the cooldown's allowance
            self._kid_fetch_at = now
        generation = self._background_generation = self._generation
        try:
            self._spawn(generation)
        except RuntimeError:  # could not start one: the next request starts the refresh
            self._due_at = now

    def _spawn(self, generation: int) -> None:
        """Run a refresh outside the current request: a task of the running event loop, or a daemon thread.

        A fresh, empty ``contextvars`` context, so no request's context variables leak
        into it; not in the request's task group or cancel scope, so the request
        neither waits for it nor cancels it. Under asyncio the loop holds tasks only
        weakly, so this object holds it until it ends; under trio it is a system task,
        which trio holds and cancels when the run ends. Code with no event loop (a WSGI
        worker) gets a thread, which fetches with the sync client.
        """
        trio = sys.modules.get("trio")
        if trio is not None and running_trio(trio):
            trio.lowlevel.spawn_system_task(self._background_refresh, generation, context=contextvars.Context())
        elif in_event_loop():
            loop = asyncio.get_running_loop()
            job: Coroutine[Any, Any, None] = self._background_refresh(generation)
            task: asyncio.Task[None] = contextvars.Context().run(loop.create_task, job)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            start_thread(lambda: self._background_refresh_sync(generation), f"cfaccess-mw refresh {self.url}")
        self._background.started()

    async def _background_refresh(self, generation: int) -> None:
        try:
            await self._refresh(generation)
        except Exception:  # _refresh records fetch errors itself; this is a bug, and no request may see it
            logger.exception("certs endpoint %s: background refresh failed", self.url)
        finally:
            self._background.ended()

    def _background_refresh_sync(self, generation: int) -> None:
        try:
            self._refresh_sync(generation)
        except Exception:
            logger.exception("certs endpoint %s: background refresh failed", self.url)
        finally:
            self._background.ended()

    # --- one fetch at a time, async or sync ------------------------------------------------------

    def _claim(self, generation: int) -> tuple[Future[None] | None, bool]:
        """``(None, False)`` when an attempt completed since ``generation``; ``(flight, True)`` when this caller now
        fetches (and lands ``flight``); else ``(flight, False)``: the fetch under way, to wait for and look again."""
        with self._state:
            if self._generation != generation:
                return None, False
            flight, mine = self._flight.claim()
            if mine:
                self._kid_waiting = False  # this fetch starts after every waiting kid arrived: it decides them
            return flight, mine

    async def _refresh(self, generation: int) -> bool:
        """Fetch unless an attempt completed since ``generation`` was read (single-flight)."""
        while True:
            flight, mine = self._claim(generation)
            if flight is None:
                break
            if not mine:
                await wait_async(flight, self._wait_seconds)
                continue
            try:
                self._record(await drive_async(self._fetch_plan(), self._transport, self.timeout))
            except Exception as exc:
                self._record_error(exc)
            finally:
                # Also when the fetching request is cancelled: the attempt did not happen (nothing is recorded),
                # and a waiter wakes to make its own rather than find the generation moved and the cooldown running.
                self._flight.land(flight)
            break
        return bool(self._keys)

    def _refresh_sync(self, generation: int) -> bool:
        """:meth:`_refresh` from a thread: the same single flight, fetched with the sync client."""
        while True:
            flight, mine = self._claim(generation)
            if flight is None:
                break
            if not mine:
                wait_sync(flight, self._wait_seconds)
                continue
            try:
                self._record(drive_sync(self._fetch_plan(), self._sync_transport, self.timeout))
            except Exception as exc:
                self._record_error(exc)
            finally:
                self._flight.land(flight)
            break
        return bool(self._keys)

    @property
    def _wait_seconds(self) -> float:
        """How long a waiter waits for another's fetch before it looks again (a fetch is bounded; so is the wait,
        so that a fetch whose owner vanished is taken over rather than waited for without end)."""
        return 2 * self.timeout + 1

    def _record(self, read: tuple[dict[str, PublicKey], list[str], set[str], float]) -> None:
        with self._state:
            self._attempted_at = self._clock()
            self._record_success(*read)
            self._generation += 1
            self._schedule()

    def _record_error(self, exc: Exception) -> None:
        if isinstance(exc, JWKSFetchError):
            failure = str(exc)
        else:  # a bug must cost a 503, not a 500 on every request
            logger.error("certs endpoint %s: unexpected error while fetching keys", self.url, exc_info=exc)
            failure = f"unexpected {type(exc).__name__}"
        with self._state:
            if isinstance(exc, JWKSFetchError) and exc.unusable is not None:
                self._unusable = exc.unusable  # a key set was read, and none of its keys is usable
            self._attempted_at = self._clock()
            self._record_failure(failure)
            self._generation += 1
            self._schedule()

    def _record_success(self, keys: dict[str, PublicKey], problems: list[str], listed: set[str], age: float) -> None:
        # A cached key whose kid the document still lists, but in a form we cannot use (a wrong kty, alg or use,
        # listed twice), has not been withdrawn: keep the last good copy rather than refuse its tokens.
        # Only until the maximum age, though: the document does not serve that key, so no fetch confirms it.
        self._kept_since = {
            kid: self._kept_since.get(kid, self._fetched_at) for kid in self._keys if kid in listed and kid not in keys
        }
        self._drop_kept(self._clock())
        kept = sorted(self._kept_since)
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

    def _fetch_plan(self) -> Plan:
        """One refresh: GET the certs URL; the usable keys, the problems with the rest, every kid the document lists
        (usable or not), and how long a cache on the way held it (``Age``, RFC 9111 section 5.1)."""
        self.fetch_count += 1
        status, body, age = yield Get(self.url, self.max_bytes)
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


def human_seconds(seconds: float) -> str:
    """``2 days``, ``5 hours``, ``90 s``: an age or a bound, for the log and ``cfaccess-mw check``."""
    if not math.isfinite(seconds):
        return "ever"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}s"
    return f"{seconds:.0f} s"
