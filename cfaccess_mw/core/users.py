"""Asking the app who a verified email is: its ``user_lookup`` called, its answer judged, found users remembered.

The token proves an email; only the app knows whether that email is one of its users. This module is the
one place that calls the app's ``user_lookup(email)``, so everything about that call lives here:

- **Sync or async.** An ``async def`` lookup (or an object whose ``__call__`` is one) is awaited on the
  event loop. A plain ``def`` (sqlite3, a SQLAlchemy session, the Django ORM) would block the loop, so it runs
  in Starlette's thread pool; if it hands back an awaitable (an async function behind a plain wrapper), that
  is awaited once.
- **The answer must be a value.** The user object means "admit", ``None`` (or the ``False``, ``0`` or ``""``
  of a yes/no lookup) means "not a user here" (403). Anything that is not a value is a programming error in the
  app, refused with 503 ``user_lookup_failed`` and one log line that names the mistake, never the email:
  a coroutine or other awaitable (an ``await`` forgotten inside the lookup: the coroutine is truthy, so taking
  it for a user would admit everyone), a generator or async generator (a ``yield`` function, such as a FastAPI
  dependency, passed as the lookup), any other iterator or async iterator (a query's cursor or result returned
  without fetching its row: ``conn.execute(...)`` without ``.fetchone()``, a SQLAlchemy ``Result`` without
  ``.first()``, a ``filter`` object; truthy whether or not a row matched), ``True`` (a yes/no answer in place of
  the user), and a result whose truth cannot be judged (``bool()`` raising, as a pandas DataFrame does). A
  lookup that raises is the same 503, and only the exception's type is logged: a database error's text can
  carry a connection string with a password.
- **The user cache** (``CFACCESS_USER_CACHE_SECONDS``, off by default). With a plain ``def`` lookup the thread
  hop costs far more than the rest of the middleware (benchmarks/README.md), so found users can be remembered
  for a few seconds, keyed by the normalised email. Only found users are kept: an unknown email (403) and a
  failure (503) are asked again on the next request, so a user added to the app gets in at once and an outage
  is not remembered. The price is the documented trade-off: a user deleted from the app stays admitted for at
  most that long, unless the app calls :meth:`UserDirectory.forget` when it deletes one.

Thread safety: the cache is read and written only on the event loop, after the lookup returned (the thread
pool runs the app's function, never touches the cache). ``forget`` and ``forget_all`` are meant to be called
from anywhere, including a plain ``def`` endpoint that Starlette runs in a worker thread, and ``cachetools``
caches are not thread-safe (even a read reorders the entries), so every cache access holds one
``threading.Lock``, which is never held across an ``await``. A lookup that was already running when ``forget``
was called could still return the deleted user a moment later; a generation counter, bumped by every
``forget``, keeps such an answer out of the cache (the request it answers is admitted, as it would have been
without a cache). Concurrent first requests for the same email may each call the lookup: the cache does not
make them wait for one another.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import anyio.to_thread
from cachetools import TTLCache

from .errors import AuthUnavailable, Reason

MISS: Any = object()  # no cached user: ask the lookup

logger = logging.getLogger("cfaccess_mw")
#: Set to DEBUG by name, this logger logs a failing lookup's whole exception (message and traceback, the email
#: replaced by ``<email>``): for development only, since a database error's text can carry a connection string.
#: DEBUG inherited from the root or the package does not: seeing that text takes this explicit opt-in.
debug_logger = logging.getLogger("cfaccess_mw.users")

UserLookup = Callable[[str], Any]
"""``lookup(email) -> user or None``, sync or async. Must only find existing users, never create one."""

_UNAVAILABLE = "The user directory is unavailable; try again shortly."
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def is_async_callable(fn: object) -> bool:
    """True for an ``async def`` function, or an object whose ``__call__`` is one (what must be awaited)."""
    call = type(fn).__call__ if not inspect.isroutine(fn) and callable(fn) else None
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _without_email(exc: BaseException, email: str) -> str:
    """The exception's traceback and message (chained causes included), every spelling of ``email`` replaced."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    return re.sub(re.escape(email), "<email>", text, flags=re.IGNORECASE) if email else text


def cache_key(email: str) -> str:
    """The key an app's email is remembered under: trimmed of ASCII space and tab, ASCII letters lower-cased,
    as :func:`cfaccess_mw.core.request.normalise_email` normalises a token's email (so
    ``forget("Alice@Example.com")`` drops what ``alice@example.com`` cached), but never refusing one."""
    email = email.strip(" \t")
    return email.lower() if email.isascii() else email.translate(_ASCII_LOWER)


def _lookup_failed(detail: str) -> AuthUnavailable:
    return AuthUnavailable(Reason.USER_LOOKUP_FAILED, _UNAVAILABLE, detail)


def _describe(result: object) -> tuple[str, str]:
    """What a result that is not a value is (a generator or an awaitable), and the likely mistake. Async
    generators first: to ``inspect`` they are neither awaitable nor generators; generators before coroutines,
    since a generator-based coroutine is both."""
    if inspect.isasyncgen(result):
        return "an async generator", "an 'async def' with 'yield' (a FastAPI dependency?) passed as the lookup"
    if inspect.isgenerator(result):
        return "a generator", "a function with 'yield' (a FastAPI dependency?) passed as the lookup"
    if inspect.iscoroutine(result):
        return "a coroutine", "an 'await' missing inside the lookup"
    if hasattr(type(result), "__await__"):
        return f"an awaitable ({type(result).__name__})", "an 'await' missing inside the lookup"
    fetch = "a query's cursor or result returned without fetching its row: fetchone(), first(), next()"
    if hasattr(type(result), "__anext__"):
        return f"an async iterator ({type(result).__name__})", fetch
    return f"an iterator ({type(result).__name__})", fetch


#: Types whose instances ``_is_value_type`` found to be values, so that the user object's type is judged once,
#: not on every request: three ``hasattr`` on a type each raise and clear an ``AttributeError`` on Python 3.10 and
#: 3.11 (about 0.45 µs together, a tenth of the same-token path). Bounded: an app returning instances of classes
#: made at run time must not grow it without end.
_VALUE_TYPES: set[type] = set()
_VALUE_TYPES_REMEMBERED = 256


def _is_value_type(kind: type) -> bool:
    """Whether instances of ``kind`` are values: not awaitables, iterators or async iterators (remembered if so).

    Looked up on the type: ``isinstance(result, Awaitable | Iterator)`` would cost ABC checks. ``__next__`` and
    ``__anext__`` cover generators and async generators, and every cursor or result set that is truthy whether or
    not a row matched; no user object is an iterator. Only a class that gains ``__await__``, ``__next__`` or
    ``__anext__`` after its first instance was judged would be misjudged, and no user class does that.
    """
    if hasattr(kind, "__await__") or hasattr(kind, "__next__") or hasattr(kind, "__anext__"):
        return False
    if len(_VALUE_TYPES) >= _VALUE_TYPES_REMEMBERED:
        _VALUE_TYPES.clear()
    _VALUE_TYPES.add(kind)
    return True


def _dispose(result: Any) -> None:
    """Close what a mistaken lookup handed back, so its code never runs later and Python does not warn that a
    coroutine was never awaited (the warning would point at the middleware, not at the lookup). No I/O and no
    event loop needed: an async generator nobody iterated closes in one step."""
    try:
        if inspect.isasyncgen(result):
            closing = result.aclose()
            with contextlib.suppress(StopIteration):
                closing.send(None)
            closing.close()
        elif isinstance(result, asyncio.Future):  # a Task or Future: the app's forgotten work
            result.cancel()
        elif (inspect.isgenerator(result) or hasattr(type(result), "__await__")) and callable(
            getattr(result, "close", None)
        ):  # coroutines and generators; a cursor is left alone (sqlite3's may belong to the worker thread)
            result.close()
    except Exception as exc:  # closing a started generator runs its code; that must not turn into a 500
        logger.error("cfaccess_mw: closing user_lookup's result raised %s", type(exc).__name__)


class UserDirectory:
    """The app's ``user_lookup``, called the one right way, with an optional cache of found users.

    ``cache_seconds`` 0 (the default) asks the lookup on every request; otherwise up to ``cache_size`` found
    users are remembered for ``cache_seconds`` each. ``timer`` is the cache's clock (monotonic seconds),
    a parameter so tests can expire entries without sleeping.
    """

    def __init__(
        self,
        lookup: UserLookup | None,
        *,
        cache_seconds: float = 0.0,
        cache_size: int = 4096,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.is_async = is_async_callable(lookup)
        self._cache: TTLCache[str, Any] | None = (
            TTLCache(maxsize=cache_size, ttl=cache_seconds, timer=timer)
            if cache_seconds > 0 and cache_size > 0
            else None
        )
        self._lock = threading.Lock()
        self.generation = 0

    async def find(self, email: str) -> Any:
        """The app's user for a normalised ``email``, or ``None`` when the app has no such user.

        Raises :class:`~cfaccess_mw.errors.AuthUnavailable` (503) when the lookup fails or answers with
        something that is not a value. A plain ``def`` lookup runs in Starlette's thread pool.
        :meth:`~cfaccess_mw.authenticator.Authenticator.identify` takes the same steps without this coroutine
        (:meth:`hit`, :meth:`ask`, :meth:`judge`): it runs on every request.
        """
        generation = self.generation
        found = self.hit(email)
        if found is MISS:
            try:
                result = await self.ask(email)
            except Exception as exc:
                raise self.failure(exc, email) from None
            found = self.judge(email, result, generation)
        return found

    def ask(self, email: str) -> Awaitable[Any]:
        """The lookup's answer to await: an ``async def`` lookup's own coroutine (no coroutine of ours around it),
        or a plain ``def`` lookup run in Starlette's thread pool."""
        if self.is_async:
            return self.lookup(email)  # type: ignore[misc,no-any-return]  # is_async: the lookup is set
        return self._in_thread(email)

    async def _in_thread(self, email: str) -> Any:
        result = await anyio.to_thread.run_sync(self._call, email)
        if inspect.isawaitable(result):
            result = await result  # a plain function handing back async work: awaited once, then judged
        return result

    def find_sync(self, email: str) -> Any:
        """:meth:`find` from a thread (a WSGI worker): a plain ``def`` lookup is called directly, no thread hop.

        An ``async def`` lookup cannot be awaited here: the sync adapters refuse one when they are built.
        """
        generation = self.generation
        found = self.hit(email)
        if found is MISS:
            try:
                result = self._call(email)
            except Exception as exc:
                raise self.failure(exc, email) from None
            found = self.judge(email, result, generation)
        return found

    def hit(self, email: str) -> Any:
        """The cached user, ``None`` without a lookup (no user is anyone), or :data:`MISS`: ask the lookup."""
        if self.lookup is None:
            return None
        cache = self._cache
        if cache is not None:
            with self._lock:
                try:
                    return cache[email]
                except KeyError:  # (try, not contextlib.suppress: this runs on every request)
                    pass
        return MISS

    def _call(self, email: str) -> Any:
        """Call the lookup in this thread: a plain ``def`` as it is, an ``async def`` through its ``sync`` twin.

        An async lookup can carry a sync twin as its ``sync`` attribute (the Django adapter's
        ``user_model_lookup`` does: the async ORM on ASGI, the sync ORM under WSGI). Without
        one, its coroutine is refused like any other non-value (503, closed, logged).
        """
        lookup = self.lookup
        assert lookup is not None  # hit() answered None without one
        if self.is_async:
            twin = getattr(lookup, "sync", None)
            if callable(twin):
                return twin(email)
        return lookup(email)

    @staticmethod
    def failure(exc: Exception, email: str) -> AuthUnavailable:
        """The 503 for a lookup that raised; the type logged, never the text (a database error's text can carry
        a connection string with its password), unless the lookup's own debug logger asks for it."""
        logger.error("cfaccess_mw: user_lookup raised %s", type(exc).__name__)
        if 0 < debug_logger.level <= logging.DEBUG and debug_logger.isEnabledFor(logging.DEBUG):
            debug_logger.debug("user_lookup raised:\n%s", _without_email(exc, email))
        return _lookup_failed(f"user_lookup raised {type(exc).__name__}")

    def judge(self, email: str, result: Any, generation: int) -> Any:
        """The lookup's answer as a user or ``None``, or a 503 for an answer that is not a value; found users
        are cached (unless a forget() ran while the lookup did)."""
        # Judged inline: this runs on every request without the cache, so the common case costs a few checks.
        # ``True`` is refused every time; the type's verdict is remembered (see _is_value_type).
        if result is None:
            return None
        if result is True or (type(result) not in _VALUE_TYPES and not _is_value_type(type(result))):
            self._refuse(result)
        try:
            unknown = not result
        except Exception as exc:  # a DataFrame, an ORM proxy: their truth is not a yes or no
            logger.error(
                "cfaccess_mw: user_lookup's result (a %s) cannot be tested for truth: bool() raised %s",
                type(result).__name__,
                type(exc).__name__,
            )
            raise _lookup_failed(f"bool() of user_lookup's result raised {type(exc).__name__}") from None
        if unknown:  # the False, 0 or "" of a yes/no lookup: no such user
            return None
        cache = self._cache
        if cache is not None:
            with self._lock:
                if generation == self.generation:
                    cache[email] = result
        return result

    @staticmethod
    def _refuse(result: Any) -> NoReturn:
        """A 503 for a result that is not a user: ``True``, an awaitable or an iterator (closed first)."""
        if result is True:
            logger.error("cfaccess_mw: user_lookup returned True; it must return the user object or None")
            raise _lookup_failed("user_lookup returned True instead of a user object")
        what, likely = _describe(result)
        _dispose(result)
        logger.error(
            "cfaccess_mw: user_lookup returned %s, not a user; it must return the user object or None (%s?)",
            what,
            likely,
        )
        raise _lookup_failed(f"user_lookup returned {what} instead of a user object or None")

    def forget(self, email: str) -> None:
        """Drop one remembered user (call it when the app deletes or disables that user); safe from any thread."""
        key = cache_key(email)
        with self._lock:
            self.generation += 1
            if self._cache is not None:
                with contextlib.suppress(KeyError):  # an entry expiring between pop's check and its delete
                    del self._cache[key]

    def forget_all(self) -> None:
        """Drop every remembered user (after a bulk change to the users); safe from any thread."""
        with self._lock:
            self.generation += 1
            if self._cache is not None:
                self._cache.clear()
