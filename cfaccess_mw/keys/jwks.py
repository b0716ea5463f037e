"""The team's signing keys: fetched from the certs endpoint, cached, refreshed with care (the I/O side).

What to fetch and what a miss means is decided in :mod:`cfaccess_mw.keystate`, a pure
function of the state and the clock; this module does the fetching around it:

* One fetch runs at a time in the whole process; every other request that needs its
  answer waits for it, in whatever thread or event loop, and then uses its result
  (single-flight, :class:`~cfaccess_mw.fetching.SingleFlight`). A fetch is one plan
  (:mod:`cfaccess_mw.plans`) driven by ``httpx.AsyncClient`` in async code and by
  ``httpx.Client`` in sync code (WSGI, threads); the bookkeeping is guarded by a
  thread lock held only between I/O.
* A background refresh runs outside any request's context and cancellation, and its
  failures are logged, never raised into a request. It is a task of the running event
  loop (asyncio or trio), held by this object until it ends, or a daemon thread (with
  the sync client) where there is no loop.
* An event loop may end before its task does: ``asyncio.run``, asgiref's
  ``AsyncToSync`` and Starlette's ``TestClient`` outside ``with`` run each request in
  a loop of its own and cancel what is left when it ends. A background refresh cut
  short that way, before its fetch concluded, is carried on in a daemon thread with
  the sync client, and from then on this object starts its background refreshes in
  threads (the process evidently runs loops that end with their request). Under one
  long-lived loop (uvicorn and the like) the refresh stays a task of that loop and
  nothing is fetched twice. A loop closed without cancelling its tasks leaves the task
  pending for ever: its flight is taken over at once (its loop is closed), and the
  next refresh, started by a later request, runs in a thread. (With only an async
  test transport, and no sync one, nothing moves to a thread, which would fetch
  elsewhere.)
* Fetches never follow redirects, never accept more than ``max_bytes``, and never
  take longer than ``timeout`` in total.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio.lowlevel
import httpx

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
from ..core.keystate import (
    ABSENT_KIDS_REMEMBERED,
    DEFAULT_MAX_AGE_SECONDS,
    MAX_JWKS_BYTES,
    CertsRead,
    KeySetState,
    human_seconds,
    read_certs,
)
from ..core.plans import Get, JWKSFetchError, Plan, Wait, fetch
from .fetching import (
    Counter,
    SingleFlight,
    drive_async,
    drive_sync,
    http_get,
    in_event_loop,
    running_trio,
    start_thread,
)

__all__ = [  # the key layer's names, importable from here as before the split into jwk, keystate, plans, fetching
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
        self._book = KeySetState(
            url,
            cache_seconds=cache_seconds,
            cooldown_seconds=cooldown_seconds,
            timeout=timeout,
            max_age_seconds=max_age_seconds,
        )
        self._parse = parse  # which keys this client adopts; anything else in the document is skipped
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._transport = transport
        self._sync_transport = sync_transport
        self._clock = clock
        #: Guards the bookkeeping when threads share this object; held between I/O only, never across it.
        self._lock = threading.RLock()
        #: The fetch under way, whichever thread or loop runs it; taken for abandoned past the longest a fetch can
        #: take (a plan of two GETs, each cut off about twice its timeout after it starts).
        self._flight = SingleFlight(stale_after=4 * timeout + 1)
        self._tasks: set[asyncio.Task[None]] = set()  # running asyncio background refreshes, held until they end
        self._background = Counter()  # background refreshes started and not yet ended (any loop or thread)
        #: Background refreshes go to a daemon thread: an event loop has ended under one (a loop per request).
        self._in_threads = False
        #: Number of HTTP fetches attempted (for tests, benchmarks and ``cfaccess-mw check``).
        self.fetch_count = 0

    def __repr__(self) -> str:
        return f"JWKSClient(url={self.url!r}, kids={self.kids!r})"

    @property
    def url(self) -> str:
        """The certs URL (for :class:`~cfaccess_mw.keysources.OidcJWKSClient`, once discovered, its ``jwks_uri``)."""
        return self._book.url

    @url.setter
    def url(self, url: str) -> None:
        self._book.url = url

    @property
    def cache_seconds(self) -> float:
        return self._book.cache_seconds

    @property
    def cooldown_seconds(self) -> float:
        return self._book.cooldown_seconds

    @property
    def max_age_seconds(self) -> float:
        """How long keys are trusted without a successful fetch confirming them."""
        return self._book.max_age_seconds

    @property
    def kids(self) -> list[str]:
        """Key ids currently cached."""
        return sorted(self._book.keys)

    @property
    def last_failure(self) -> str | None:
        """Why the most recent fetch failed, or ``None`` after a success."""
        return self._book.last_failure

    @property
    def age(self) -> float:
        """Seconds since a fetch last confirmed the key set (infinite before the first success)."""
        return self._clock() - self._book.fetched_at

    @property
    def expired(self) -> bool:
        """Whether the keys went unconfirmed past ``max_age_seconds`` and are no longer trusted."""
        return self._book.is_expired(self._clock())

    def has_kid(self, kid: str) -> bool:
        """Whether ``kid`` is in the cached key set (no I/O)."""
        return kid in self._book.keys

    def cached_key(self, kid: str) -> PublicKey | None:
        """The cached key object for ``kid``, or ``None``; never waits.

        Called for every token, cached or not: when the key set is due for a refresh,
        this starts one in the background (single-flight) and still answers from the
        cache. A cached token is valid only while this returns the very key object it
        was verified with.
        """
        book = self._book
        if self._clock() >= book.due_at:
            with self._lock:
                now = self._clock()
                if now >= book.due_at:  # another thread may have started it meanwhile
                    self._start_background(book.due(now))
        return book.keys.get(kid)

    async def get_key(self, kid: str) -> PublicKey:
        """The public key for ``kid``, fetching when the cache does not know it (see :mod:`cfaccess_mw.keystate`).

        A known key is returned at once, even when due for a refresh (which then runs
        in the background). Raises :class:`InvalidToken` (``unknown_key``) when a fetch
        made for this request does not list ``kid``, ``key_unusable`` when the key set
        lists it unusably, and :class:`AuthUnavailable` when there are no keys at all,
        the endpoint is failing, or ``kid`` is undecided because unknown kids have used
        up this cooldown's fetch.
        """
        return await drive_async(self._key_plan(kid), self._transport, self.timeout)

    def get_key_sync(self, kid: str) -> PublicKey:
        """:meth:`get_key` for a thread without an event loop (a WSGI worker): the same answers."""
        return drive_sync(self._key_plan(kid), self._sync_transport, self.timeout)

    async def refresh(self) -> bool:
        """Fetch the key set now (single-flight). Return whether keys are available afterwards."""
        return await drive_async(self._refresh_plan(self._book.generation), self._transport, self.timeout)

    def refresh_sync(self) -> bool:
        """:meth:`refresh` from a thread without an event loop."""
        return drive_sync(self._refresh_plan(self._book.generation), self._sync_transport, self.timeout)

    async def settle(self) -> None:
        """Wait until no background refresh is running (tests, and anyone who wants a quiet shutdown)."""
        self._reap()  # not for a task whose loop was closed under it: that one never ends
        await self._background.settle()

    def settle_sync(self) -> None:
        """:meth:`settle` from a thread (bounded by the fetch timeout)."""
        self._reap()
        self._background.settle_sync(2 * self.timeout + 1)

    # --- the plans: what to fetch, the same for both ways of fetching ---------------------------------

    def _key_plan(self, kid: str) -> Plan[PublicKey]:
        """The key for ``kid``: from the cache, or after the fetch this request waits for or causes."""
        key = self.cached_key(kid)
        if key is not None:
            return key
        with self._lock:
            now = self._clock()
            generation, needed = self._book.plan(
                now, flight_busy=self._flight.busy, background_running=bool(self._background.running)
            )
        if needed:
            yield from self._refresh_plan(generation)
        with self._lock:
            return self._book.conclude(kid, generation, now)

    def _refresh_plan(self, generation: int) -> Plan[bool]:
        """Fetch unless an attempt completed since ``generation`` was read (single-flight); whether keys are held."""
        while True:
            with self._lock:
                if self._book.generation != generation:
                    break
                flight, mine = self._flight.claim()
                sequence = self._book.claim() if mine else 0
            if not mine:
                # Bounded, so that a fetch whose owner vanished is taken over rather than waited for without end.
                yield Wait(flight, 2 * self.timeout + 1)
                continue
            try:
                read = yield from self._fetch_plan()
            except Exception as exc:
                self._record_error(exc, sequence)
            else:
                with self._lock:
                    self._book.succeeded(read, self._clock(), sequence)
            finally:
                # Also when the fetching request is cancelled (its driver closes this plan): the attempt did not
                # happen (nothing is recorded), and a waiter wakes to make its own.
                self._flight.land(flight)
            break
        return bool(self._book.keys)

    def _fetch_plan(self) -> Plan[CertsRead]:
        """One refresh: GET the certs URL, and what its document says (:func:`~cfaccess_mw.keystate.read_certs`)."""
        self.fetch_count += 1
        answer = yield from fetch(self.url, self.max_bytes)
        return read_certs(answer, self._book.max_age_seconds, self._parse)

    def _record_error(self, exc: Exception, sequence: int) -> None:
        if isinstance(exc, JWKSFetchError):
            failure, unusable = str(exc), exc.unusable
        else:  # a bug must cost a 503, not a 500 on every request
            logger.error("certs endpoint %s: unexpected error while fetching keys", self.url, exc_info=exc)
            failure, unusable = f"unexpected {type(exc).__name__}", None
        with self._lock:
            self._book.failed(failure, unusable, self._clock(), sequence)

    # --- background refresh --------------------------------------------------------------------

    def _start_background(self, generation: int) -> None:
        """Start a refresh for ``generation`` in the background; never raises, never waits."""
        self._background.started()
        try:
            self._spawn(generation)
        except RuntimeError:  # no thread (interpreter shutdown) or no loop: the next request starts the refresh
            self._background.ended()
            with self._lock:
                self._book.not_started(self._clock())

    def _spawn(self, generation: int) -> None:
        """Run a refresh outside the current request: a task of the running event loop, or a daemon thread.

        A fresh, empty ``contextvars`` context, so no request's context variables leak
        into it; not in the request's task group or cancel scope, so the request
        neither waits for it nor cancels it. Under asyncio the loop holds tasks only
        weakly, so this object holds it until it ends; under trio it is a system task,
        which trio holds and cancels when the run ends. Code with no event loop (a WSGI
        worker), and any code once a loop has ended under a refresh, gets a thread.
        """
        self._reap()
        if self._in_threads or not in_event_loop():
            start_thread(functools.partial(self._background_thread, generation), f"cfaccess-mw refresh {self.url}")
            return
        trio = sys.modules.get("trio")
        if trio is not None and running_trio(trio):
            trio.lowlevel.spawn_system_task(self._background_trio, generation, context=contextvars.Context())
            return
        job: Coroutine[Any, Any, None] = self._background_refresh(generation)
        task: asyncio.Task[None] = contextvars.Context().run(asyncio.get_running_loop().create_task, job)
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._task_done, generation))

    def _reap(self) -> None:
        """Forget the background tasks whose event loop was closed under them without cancelling them: such a task
        never runs again, nor ends (its flight is taken over, see SingleFlight). Loops here end with their request,
        so background refreshes go to threads from now on."""
        for task in list(self._tasks):  # a copy made at once: loops' done callbacks change the set meanwhile
            if task.get_loop().is_closed():
                self._tasks.discard(task)
                self._background.ended()
                self._in_threads = self._in_threads or self._threads_fetch_alike

    @property
    def _threads_fetch_alike(self) -> bool:
        """Whether a thread's fetch (the sync client) reaches what the loop's would: not when a test gave only an
        async transport."""
        return self._transport is None or self._sync_transport is not None

    async def _background_refresh(self, generation: int) -> None:
        # The request that started it goes first: a loop that ends with its request (asyncio.run) then cancels this
        # before any I/O, rather than in the middle of opening a connection (whose half-started tasks anyio leaves
        # to be garbage-collected, never awaited), and the thread that carries it on is the only fetch.
        await anyio.lowlevel.checkpoint()
        try:
            await drive_async(self._refresh_plan(generation), self._transport, self.timeout)
        except Exception:  # the plan records fetch errors itself; this is a bug, and no request may see it
            logger.exception("certs endpoint %s: background refresh failed", self.url)

    async def _background_trio(self, generation: int) -> None:
        finished = False
        try:
            await self._background_refresh(generation)
            finished = True
        finally:
            self._ended(generation, cut_short=not finished)  # trio cancels it when its run ends

    def _task_done(self, generation: int, task: asyncio.Task[None]) -> None:
        # A done callback, not a ``finally``: a task cancelled before its first step never runs its coroutine.
        self._tasks.discard(task)
        self._ended(generation, cut_short=task.cancelled())

    def _background_thread(self, generation: int) -> None:
        try:
            drive_sync(self._refresh_plan(generation), self._sync_transport, self.timeout)
        except Exception:
            logger.exception("certs endpoint %s: background refresh failed", self.url)
        finally:
            self._background.ended()

    def _ended(self, generation: int, *, cut_short: bool) -> None:
        """A background task ended. Cut short (cancelled: nothing else cancels it but its event loop ending) before
        any fetch concluded since it started, the refresh is carried on in a daemon thread with the sync client,
        unless that client would fetch elsewhere (a test that gave only an async transport)."""
        try:
            if cut_short and self._book.generation == generation and self._threads_fetch_alike:
                self._in_threads = True
                self._start_background(generation)
        finally:
            self._background.ended()
