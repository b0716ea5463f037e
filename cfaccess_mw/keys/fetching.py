"""Fetching keys: one GET done async or sync, a fetch plan driven either way, one fetch at a time across threads
and event loops.

The key sources (:mod:`cfaccess_mw.keys`, :mod:`cfaccess_mw.keysources`) decide *what* to
fetch and what an answer means; this module only does the I/O, two ways:

* :func:`http_get` (``httpx.AsyncClient``, for ASGI apps) and :func:`http_get_sync`
  (``httpx.Client``, for WSGI apps and threads) make the same request with the same
  limits: no redirects, at most ``max_bytes``, about ``seconds`` in all.
* :func:`drive_async` and :func:`drive_sync` run a fetch plan (:mod:`cfaccess_mw.plans`):
  they do the GETs and the waits it asks for, and nothing else.
* :class:`SingleFlight` lets one caller fetch while every other caller, in whatever
  thread or event loop, waits for that fetch and then looks again. Nothing in it
  belongs to an event loop: its lock is a ``threading.Lock`` held for a few
  instructions and never across I/O, and a flight is a ``concurrent.futures.Future``.
  An ``anyio.Lock`` here (as before) belonged to the loop that first used it, so a
  threaded WSGI server, which runs async code in a new loop per request, hung on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from types import ModuleType
from typing import Any

import anyio
import httpcore
import httpx

from ..core.plans import Fetched, Get, JWKSFetchError, Plan, Step, T, Wait

__all__ = [  # JWKSFetchError and Fetched are importable from here as before they moved to the pure plans module
    "Counter",
    "Fetched",
    "JWKSFetchError",
    "SingleFlight",
    "drive_async",
    "drive_sync",
    "http_get",
    "http_get_sync",
    "in_event_loop",
    "response_age",
    "running_trio",
    "start_thread",
    "wait_async",
    "wait_sync",
]


def response_age(value: str | None) -> float:
    """The ``Age`` header as seconds: a non-negative whole number (RFC 9111 section 5.1), else 0."""
    if value is None or not value.strip().isdigit() or not value.strip().isascii():
        return 0.0
    return float(min(int(value.strip()), 10**9))


def _check_start(response: httpx.Response, max_bytes: int) -> None:
    if response.is_redirect:
        raise JWKSFetchError(f"HTTP {response.status_code} redirect refused (keys must be served directly)")
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise JWKSFetchError(f"body of {declared} bytes exceeds {max_bytes}")


def _add(chunks: list[bytes], chunk: bytes, size: int, max_bytes: int) -> int:
    size += len(chunk)
    if size > max_bytes:
        raise JWKSFetchError(f"body exceeds {max_bytes} bytes")
    chunks.append(chunk)
    return size


async def http_get(get: Get, transport: httpx.AsyncBaseTransport | None, seconds: float) -> Fetched:
    """One GET from async code: no redirects, at most ``get.max_bytes``, ``seconds`` in all.

    Raises :class:`JWKSFetchError` for a network failure, a timeout, a redirect or an oversized body.
    """
    try:
        with anyio.fail_after(seconds):
            async with (
                httpx.AsyncClient(
                    transport=transport, timeout=httpx.Timeout(seconds), follow_redirects=False
                ) as client,
                client.stream("GET", get.url, headers={"accept": get.accept}) as response,
            ):
                _check_start(response, get.max_bytes)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size = _add(chunks, chunk, size, get.max_bytes)
                return Fetched(response.status_code, b"".join(chunks), response_age(response.headers.get("age")))
    except TimeoutError:
        raise JWKSFetchError(f"no answer within {seconds:g}s") from None
    except httpx.HTTPError as exc:
        raise JWKSFetchError(f"{type(exc).__name__}: {exc}") from None


def http_get_sync(get: Get, transport: httpx.BaseTransport | None, seconds: float) -> Fetched:
    """:func:`http_get` from a thread. ``httpx.Timeout`` bounds each phase, and every connect, read and write gets
    at most the time left until the deadline (:func:`_within`), so a status line or headers that trickle in are cut
    off too; the check between chunks ends a body that trickles in once ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    if transport is None:
        transport = _within(deadline)
    try:
        with (
            httpx.Client(transport=transport, timeout=httpx.Timeout(seconds), follow_redirects=False) as client,
            client.stream("GET", get.url, headers={"accept": get.accept}) as response,
        ):
            _check_start(response, get.max_bytes)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size = _add(chunks, chunk, size, get.max_bytes)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("deadline passed")
            return Fetched(response.status_code, b"".join(chunks), response_age(response.headers.get("age")))
    except httpx.TimeoutException:
        raise JWKSFetchError(f"no answer within {seconds:g}s") from None
    except httpx.HTTPError as exc:
        raise JWKSFetchError(f"{type(exc).__name__}: {exc}") from None


async def drive_async(plan: Plan[T], transport: httpx.AsyncBaseTransport | None, seconds: float) -> T:
    """Run a fetch plan in the running event loop, with ``httpx.AsyncClient``; each GET takes ``seconds`` at most."""
    with contextlib.closing(plan):  # cancelled: the plan's finally clauses run now (its flight lands)
        step = Step(plan)
        while (need := step.need) is not None:
            if isinstance(need, Wait):
                await wait_async(need.flight, need.seconds)
                step.send(None)
                continue
            try:
                answer = await http_get(need, transport, seconds)
            except Exception as exc:  # raised in the plan, which decides what it means (a bug, too, is its to record)
                step.send(None, exc)
            else:
                step.send(answer)
        return step.result


def drive_sync(plan: Plan[T], transport: httpx.BaseTransport | None, seconds: float) -> T:
    """:func:`drive_async` in the calling thread, with ``httpx.Client``."""
    with contextlib.closing(plan):
        step = Step(plan)
        while (need := step.need) is not None:
            if isinstance(need, Wait):
                wait_sync(need.flight, need.seconds)
                step.send(None)
                continue
            try:
                answer = http_get_sync(need, transport, seconds)
            except Exception as exc:
                step.send(None, exc)
            else:
                step.send(answer)
        return step.result


def _within(deadline: float) -> httpx.HTTPTransport:
    """httpx's own transport, every socket operation of which ends by ``deadline`` (``time.monotonic()``).

    ``httpx.Timeout`` bounds each read, not the exchange: a server sending one byte of
    its headers a second is never timed out. The async driver has ``anyio.fail_after``;
    a thread has no such thing, so httpcore's network backend (its documented extension
    point, reached through the transport's pool) hands each read at most the time left.
    """
    transport = httpx.HTTPTransport()
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, httpcore.NetworkBackend):
        pool._network_backend = _DeadlineBackend(backend, deadline)  # type: ignore[union-attr]
    # else: an httpx/httpcore whose internals moved; each read is then bounded by the timeout, not the total
    return transport


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def left(self, timeout: float | None) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("deadline passed")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, self.left(timeout), local_address, socket_options)
        return _DeadlineStream(stream, self)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, self.left(timeout), socket_options), self)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, backend: _DeadlineBackend) -> None:
        self._stream = stream
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._backend.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._backend.left(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, self._backend.left(timeout))
        return _DeadlineStream(tls, self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def running_trio(trio: ModuleType) -> bool:
    """Whether this code runs inside ``trio.run`` (trio is imported by whoever uses it; we never import it)."""
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def in_event_loop() -> bool:
    """Whether the calling code runs in an asyncio or trio event loop (else: a plain thread)."""
    trio = sys.modules.get("trio")
    if trio is not None and running_trio(trio):
        return True
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, or ``None`` (a plain thread, or trio)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def wait_async(flight: Future[None], seconds: float | None = None) -> None:
    """Wait in the running event loop until ``flight`` is done (or ``seconds`` have passed: the caller then looks
    again), without blocking the loop or cancelling the flight.

    Under asyncio, a callback (run by whichever thread finishes the flight) wakes this
    loop thread-safely; a cancelled waiter leaves the flight alone for the others. Under
    trio, a worker thread waits (this is the rare path: a cold cache or a new key).
    """
    if flight.done():
        return
    trio = sys.modules.get("trio")
    if trio is not None and running_trio(trio):
        if seconds is None:
            await trio.to_thread.run_sync(flight.exception, abandon_on_cancel=True)
        else:
            await trio.to_thread.run_sync(wait_sync, flight, seconds, abandon_on_cancel=True)
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    def landed(_: Future[None]) -> None:
        with contextlib.suppress(RuntimeError):  # that loop has closed meanwhile: nobody is waiting there any more
            loop.call_soon_threadsafe(wake)

    flight.add_done_callback(landed)
    await asyncio.wait((waiter,), timeout=seconds)


class SingleFlight:
    """One fetch at a time across threads and event loops; the others wait for it, then look again.

    ``claim()`` answers ``(flight, mine)``: when ``mine``, the caller now fetches and must
    call ``land(flight)`` when done, whatever happens; else it waits for ``flight`` (bounded)
    and looks again. A flight claimed longer than ``stale_after`` seconds ago, or claimed
    in an asyncio loop that has been closed since, is taken for abandoned and the next
    claim takes over (its waiters wake): a fetch is bounded in time, but its owner may
    vanish without landing, e.g. a background task of an event loop closed without
    cancelling it, which stays pending for ever and would otherwise hold every later
    fetch, in every thread and loop, for ever.
    """

    def __init__(self, stale_after: float = math.inf) -> None:
        self.stale_after = stale_after
        self._lock = threading.Lock()
        self._current: Future[None] | None = None
        self._claimed_at = 0.0
        self._owner: asyncio.AbstractEventLoop | None = None  # the asyncio loop the current flight was claimed in

    @property
    def busy(self) -> bool:
        """Whether a fetch is under way."""
        return self._current is not None

    def claim(self) -> tuple[Future[None], bool]:
        with self._lock:
            current = self._current
            now = time.monotonic()
            alive = self._owner is None or not self._owner.is_closed()
            if current is not None and now - self._claimed_at < self.stale_after and alive:
                return current, False
            mine: Future[None] = Future()
            self._current, self._claimed_at, self._owner = mine, now, running_loop()
        if current is not None:  # abandoned by its owner: its waiters wake and look again
            _finish(current)
        return mine, True

    def land(self, flight: Future[None]) -> None:
        with self._lock:
            if self._current is flight:  # else it was taken for abandoned and taken over meanwhile
                self._current = None
        _finish(flight)


def _finish(flight: Future[None]) -> None:
    with contextlib.suppress(InvalidStateError):  # landed already (taken over, then its owner came back)
        flight.set_result(None)


class Counter:
    """Jobs running in the background, in any thread or loop, and a way to wait until none is (``settle``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self._idle: Future[None] | None = None

    def started(self) -> None:
        with self._lock:
            self.running += 1

    def ended(self) -> None:
        with self._lock:
            self.running -= 1
            idle = self._idle if not self.running else None
            if idle is not None:
                self._idle = None
        if idle is not None:
            idle.set_result(None)

    def _idle_future(self) -> Future[None] | None:
        with self._lock:
            if not self.running:
                return None
            if self._idle is None:
                self._idle = Future()
            return self._idle

    async def settle(self) -> None:
        while (idle := self._idle_future()) is not None:
            await wait_async(idle)

    def settle_sync(self, seconds: float) -> None:
        idle = self._idle_future()
        if idle is not None:
            wait_sync(idle, seconds)


def wait_sync(flight: Future[None], seconds: float) -> None:
    """Wait in this thread until ``flight`` is done, or ``seconds`` have passed (the caller then looks again)."""
    with contextlib.suppress(FutureTimeout):
        flight.exception(timeout=seconds)


def start_thread(job: Callable[[], None], name: str) -> None:
    """Run ``job`` in a daemon thread: a background refresh for code that has no event loop (WSGI)."""
    threading.Thread(target=job, name=name, daemon=True).start()
