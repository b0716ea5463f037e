"""The app's user_lookup: sync or async, its answer judged (issue 10, findings 2 and 3), and the user cache.

Each mistake is shown twice: on :class:`UserDirectory` alone, and through a real Starlette app behind the
middleware, where it must be a 503 ``user_lookup_failed`` (never a 200 for everyone, never a 500).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from cfaccess_mw import AuthUnavailable, CloudflareAccessMiddleware, Settings
from cfaccess_mw.core import users
from cfaccess_mw.core.users import UserDirectory, cache_key
from cfaccess_mw.testing import LocalIssuer

from .conftest import REMOTE_PEER, USERS, ClientFactory, Clock, error_of, jwt_header

ALICE = "alice@example.com"


class Unjudgeable:
    """A result whose truth cannot be tested, like a pandas DataFrame or an ORM proxy."""

    def __bool__(self) -> bool:
        raise ValueError("The truth value of a DataFrame is ambiguous.")


class CountingLookup:
    """A plain ``def`` lookup over a dict the test edits, counting its calls."""

    def __init__(self, users: dict[str, Any] | None = None) -> None:
        self.users = dict(USERS) if users is None else users
        self.calls = 0

    def __call__(self, email: str) -> Any:
        self.calls += 1
        return self.users.get(email)


def lookup_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cfaccess_mw" and r.levelno >= logging.ERROR]


def middleware_of(client: TestClient) -> CloudflareAccessMiddleware:
    """The middleware instance Starlette built for the app (add_middleware builds it on first use)."""
    layer: Any = client.app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(layer, CloudflareAccessMiddleware):
        layer = layer.app
    return layer


def cached_settings(issuer: LocalIssuer, seconds: float = 30, size: int = 100) -> Settings:
    return issuer.settings(user_cache_seconds=seconds, user_cache_size=size)


# --- lookups that do not return a value: 503 through a real app ----------------------------------


async def _find(email: str) -> dict[str, str] | None:
    return USERS.get(email)


async def forgot_await(email: str) -> Any:
    return _find(email)  # the bug: a coroutine, truthy, returned in place of the user


async def returns_task(email: str) -> Any:
    return asyncio.ensure_future(_find(email))


def generator_lookup(email: str) -> Iterator[Any]:
    yield USERS.get(email)  # a FastAPI yield-dependency passed as the lookup


async def async_generator_lookup(email: str) -> AsyncIterator[Any]:
    yield USERS.get(email)


def sync_returning_forgetful_coroutine(email: str) -> Any:
    return forgot_await(email)  # awaited once (a wrapped async function), and what that gives is a coroutine


MISTAKES: dict[str, tuple[Callable[[str], Any], str]] = {
    "async-forgot-await": (forgot_await, "a coroutine"),
    "async-returns-task": (returns_task, "an awaitable (Task)"),
    "generator": (generator_lookup, "a generator"),
    "async-generator": (async_generator_lookup, "an async generator"),
    "sync-wrapper-of-forgot-await": (sync_returning_forgetful_coroutine, "a coroutine"),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_lookup_result_that_is_not_a_value_is_503_with_one_log_line(
    shared_issuer: LocalIssuer, make_client: ClientFactory, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    lookup, what = MISTAKES[name]
    client = make_client(shared_issuer.settings(), user_lookup=lookup)
    with caplog.at_level(logging.DEBUG):
        response = client.get("/", headers=jwt_header(shared_issuer.identity_token(ALICE)))
    assert response.status_code == 503
    assert error_of(response)["reason"] == "user_lookup_failed"
    (line,) = lookup_errors(caplog)
    assert f"user_lookup returned {what}, not a user" in line
    assert "alice" not in line


def test_a_forgotten_await_answers_no_one_with_200(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    """Issue 10 finding 2 as the attacker saw it: with the bug, every identity got in, even strangers."""
    client = make_client(shared_issuer.settings(), user_lookup=forgot_await)
    for email in (ALICE, "stranger@example.com"):
        assert client.get("/", headers=jwt_header(shared_issuer.identity_token(email))).status_code == 503


def test_a_result_whose_truth_test_raises_is_503_not_500(
    shared_issuer: LocalIssuer, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(shared_issuer.settings(), user_lookup=lambda email: Unjudgeable())
    with caplog.at_level(logging.DEBUG):
        response = client.get("/", headers=jwt_header(shared_issuer.identity_token(ALICE)))
    assert response.status_code == 503
    assert error_of(response)["reason"] == "user_lookup_failed"
    (line,) = lookup_errors(caplog)
    assert "ValueError" in line
    assert "ambiguous" not in line  # the type only, never the text


# --- UserDirectory on its own --------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(MISTAKES))
async def test_directory_refuses_and_closes_what_is_not_a_value(name: str) -> None:
    lookup, what = MISTAKES[name]
    with pytest.raises(AuthUnavailable) as caught:
        await UserDirectory(lookup).find(ALICE)
    assert caught.value.reason.value == "user_lookup_failed"
    assert caught.value.detail == f"user_lookup returned {what} instead of a user object or None"
    # The suite turns warnings into errors: a coroutine left unclosed would warn "never awaited" when collected.
    gc.collect()


@pytest.mark.anyio
async def test_directory_cancels_a_returned_task() -> None:
    tasks: list[asyncio.Future[Any]] = []

    async def lookup(email: str) -> Any:
        task = asyncio.ensure_future(_find(email))
        tasks.append(task)
        return task

    with pytest.raises(AuthUnavailable):
        await UserDirectory(lookup).find(ALICE)
    (task,) = tasks
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


@pytest.mark.anyio
async def test_directory_closes_a_generator_without_running_it() -> None:
    ran: list[str] = []

    def lookup(email: str) -> Iterator[Any]:
        ran.append("body")
        yield USERS.get(email)

    with pytest.raises(AuthUnavailable):
        await UserDirectory(lookup).find(ALICE)
    assert ran == []


@pytest.mark.anyio
@pytest.mark.parametrize("answer", [None, False, 0, "", {}, []])
async def test_directory_reads_falsy_answers_as_no_such_user(answer: object) -> None:
    assert await UserDirectory(lambda email: answer).find(ALICE) is None


@pytest.mark.anyio
async def test_directory_without_a_lookup_finds_no_one() -> None:
    assert await UserDirectory(None, cache_seconds=30).find(ALICE) is None


@pytest.mark.anyio
async def test_directory_awaits_async_lookups_and_what_a_plain_function_hands_back() -> None:
    class AsyncCallable:
        async def __call__(self, email: str) -> Any:
            return USERS.get(email)

    for lookup in (_find, AsyncCallable(), lambda email: _find(email)):
        assert await UserDirectory(lookup).find(ALICE) == USERS[ALICE]


@pytest.mark.anyio
async def test_directory_runs_a_plain_function_off_the_event_loop() -> None:
    threads: list[int] = []

    def lookup(email: str) -> Any:
        threads.append(threading.get_ident())
        return USERS.get(email)

    assert await UserDirectory(lookup).find(ALICE) == USERS[ALICE]
    assert threads != [threading.get_ident()]


@pytest.mark.anyio
async def test_a_failing_lookup_is_503_and_logs_only_the_type(caplog: pytest.LogCaptureFixture) -> None:
    def broken(email: str) -> Any:
        raise ConnectionError("postgres://app:hunter2@db/app refused")

    with caplog.at_level(logging.DEBUG), pytest.raises(AuthUnavailable) as caught:
        await UserDirectory(broken).find(ALICE)
    assert caught.value.detail == "user_lookup raised ConnectionError"
    assert lookup_errors(caplog) == ["cfaccess_mw: user_lookup raised ConnectionError"]


@pytest.mark.anyio
async def test_an_awaitable_whose_close_raises_is_still_a_503(caplog: pytest.LogCaptureFixture) -> None:
    class Stubborn:
        def __await__(self) -> Generator[Any, None, Any]:
            yield from ()
            return USERS[ALICE]

        def close(self) -> None:
            raise RuntimeError("cannot close")

    async def lookup(email: str) -> Any:
        return Stubborn()

    with caplog.at_level(logging.DEBUG), pytest.raises(AuthUnavailable):
        await UserDirectory(lookup).find(ALICE)
    assert lookup_errors(caplog) == [
        "cfaccess_mw: closing user_lookup's result raised RuntimeError",
        "cfaccess_mw: user_lookup returned an awaitable (Stubborn), not a user; it must return the user object or "
        "None (an 'await' missing inside the lookup?)",
    ]


@pytest.mark.anyio
async def test_true_and_a_bare_awaitable_are_refused_and_forget_without_a_cache_is_harmless() -> None:
    class Bare:
        def __await__(self) -> Generator[Any, None, Any]:
            yield from ()
            return USERS[ALICE]

    async def bare(email: str) -> Any:
        return Bare()

    for lookup in (lambda email: True, bare):
        directory = UserDirectory(lookup)
        with pytest.raises(AuthUnavailable):
            await directory.find(ALICE)
        directory.forget(ALICE)
        directory.forget_all()


@pytest.mark.anyio
async def test_a_types_verdict_is_remembered_for_values_only_true_is_refused_every_time_and_the_memory_is_bounded() -> (
    None
):
    answers = iter([False, True, iter([USERS[ALICE]])])
    directory = UserDirectory(lambda email: next(answers))
    assert await directory.find(ALICE) is None  # False: no such user, and bool is remembered as a value type
    for _ in range(2):  # True after False, then an iterator: each refused although a bool was judged before
        with pytest.raises(AuthUnavailable):
            await directory.find(ALICE)
    for i in range(users._VALUE_TYPES_REMEMBERED * 2):  # classes made at run time: each judged, none kept forever
        kind: type = type(f"User{i}", (), {})

        def lookup(email: str, kind: type = kind) -> object:
            return kind()

        assert isinstance(await UserDirectory(lookup).find(ALICE), kind)
    assert len(users._VALUE_TYPES) <= users._VALUE_TYPES_REMEMBERED


# --- the user cache ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cache_off_by_default_asks_every_time() -> None:
    lookup = CountingLookup()
    directory = UserDirectory(lookup)
    for _ in range(3):
        await directory.find(ALICE)
    assert lookup.calls == 3


@pytest.mark.anyio
async def test_cache_remembers_found_users_until_they_expire() -> None:
    clock = Clock()
    lookup = CountingLookup()
    directory = UserDirectory(lookup, cache_seconds=30, timer=clock)
    assert await directory.find(ALICE) is USERS[ALICE]
    clock.now += 29.9
    assert await directory.find(ALICE) is USERS[ALICE]
    assert lookup.calls == 1
    clock.now += 0.1
    await directory.find(ALICE)
    assert lookup.calls == 2


@pytest.mark.anyio
async def test_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    lookup = CountingLookup({f"u{i}@example.com": {"n": i} for i in range(3)})
    directory = UserDirectory(lookup, cache_seconds=30, cache_size=2, timer=Clock())
    for email in ("u0@example.com", "u1@example.com", "u0@example.com", "u2@example.com"):
        await directory.find(email)
    assert lookup.calls == 3
    await directory.find("u0@example.com")  # kept: used more recently than u1
    assert lookup.calls == 3
    await directory.find("u1@example.com")  # dropped for u2
    assert lookup.calls == 4


@pytest.mark.anyio
async def test_cache_keeps_neither_unknown_users_nor_failures() -> None:
    answers: list[Any] = [None, ConnectionError("down"), USERS[ALICE]]

    def lookup(email: str) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    directory = UserDirectory(lookup, cache_seconds=30, timer=Clock())
    assert await directory.find(ALICE) is None
    with pytest.raises(AuthUnavailable):
        await directory.find(ALICE)
    assert await directory.find(ALICE) is USERS[ALICE]
    assert answers == []


@pytest.mark.anyio
async def test_forget_drops_one_user_by_its_normalised_email_and_forget_all_drops_all() -> None:
    lookup = CountingLookup()
    directory = UserDirectory(lookup, cache_seconds=30, timer=Clock())
    await directory.find(ALICE)
    await directory.find("bob@example.com")
    directory.forget("  Alice@Example.COM ")
    await directory.find(ALICE)
    await directory.find("bob@example.com")
    assert lookup.calls == 3
    directory.forget_all()
    await directory.find(ALICE)
    await directory.find("bob@example.com")
    assert lookup.calls == 5
    directory.forget("nobody@example.com")  # not cached: nothing to do, no error


@pytest.mark.anyio
async def test_an_answer_that_raced_a_forget_is_not_cached() -> None:
    """The app deletes the user while a lookup for it is under way: that lookup's answer must not be kept."""
    lookup = CountingLookup()
    directory = UserDirectory(lookup, cache_seconds=30, timer=Clock())

    def racing(email: str) -> Any:
        user = lookup(email)
        directory.forget(email)  # from the worker thread, as a plain-def admin endpoint would
        return user

    directory.lookup = racing
    assert await directory.find(ALICE) is USERS[ALICE]  # this request was already being answered
    directory.lookup = lookup
    await directory.find(ALICE)
    assert lookup.calls == 2


def test_forget_from_other_threads_while_the_loop_reads() -> None:
    """cachetools caches are not thread-safe; forget() from worker threads must not corrupt the cache."""
    users = {f"u{i}@example.com": {"n": i} for i in range(50)}
    directory = UserDirectory(users.get, cache_seconds=30, cache_size=20, timer=Clock())
    stop = threading.Event()

    def forgetter() -> None:
        while not stop.is_set():
            for email in users:
                directory.forget(email)

    async def reader() -> None:
        for _ in range(40):
            for email in users:
                assert await directory.find(email) == users[email]

    threads = [threading.Thread(target=forgetter) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        asyncio.run(reader())
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)


def test_cache_key_is_the_middlewares_normalisation() -> None:
    assert cache_key(" Alice@Example.COM\t") == ALICE
    assert cache_key("\u212aate@example.com") == "\u212aate@example.com"  # only ASCII letters are folded


# --- the user cache through a real app -----------------------------------------------------------


def test_cached_user_is_admitted_without_asking_the_lookup_again(
    shared_issuer: LocalIssuer, make_client: ClientFactory
) -> None:
    lookup = CountingLookup()
    client = make_client(cached_settings(shared_issuer), user_lookup=lookup, user_cache_clock=Clock())
    token = jwt_header(shared_issuer.identity_token(ALICE))
    assert client.get("/", headers=token).json()["email"] == ALICE
    assert client.get("/", headers=token).json()["email"] == ALICE
    assert lookup.calls == 1


def test_without_the_setting_every_request_asks(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    lookup = CountingLookup()
    client = make_client(shared_issuer.settings(), user_lookup=lookup)
    token = jwt_header(shared_issuer.identity_token(ALICE))
    for _ in range(2):
        assert client.get("/", headers=token).status_code == 200
    assert lookup.calls == 2


def test_unknown_users_and_failures_are_not_cached_through_the_app(
    shared_issuer: LocalIssuer, make_client: ClientFactory
) -> None:
    lookup = CountingLookup(users={})
    failing = [True]

    def flaky(email: str) -> Any:
        if failing.pop() if failing else False:
            raise ConnectionError("down")
        return lookup(email)

    client = make_client(cached_settings(shared_issuer), user_lookup=flaky, user_cache_clock=Clock())
    token = jwt_header(shared_issuer.identity_token(ALICE))
    assert client.get("/", headers=token).status_code == 503
    assert client.get("/", headers=token).status_code == 403
    lookup.users[ALICE] = USERS[ALICE]  # the app adds alice: she gets in at once, no stale 403
    assert client.get("/", headers=token).status_code == 200
    assert client.get("/", headers=token).status_code == 200
    assert lookup.calls == 2


def test_a_deleted_user_is_admitted_until_the_entry_expires(
    shared_issuer: LocalIssuer, make_client: ClientFactory
) -> None:
    """The documented trade-off, bounded by CFACCESS_USER_CACHE_SECONDS on the injected clock."""
    clock = Clock()
    lookup = CountingLookup()
    client = make_client(cached_settings(shared_issuer, seconds=10), user_lookup=lookup, user_cache_clock=clock)
    token = jwt_header(shared_issuer.identity_token(ALICE))
    assert client.get("/", headers=token).status_code == 200
    del lookup.users[ALICE]
    clock.now += 9
    assert client.get("/", headers=token).status_code == 200
    clock.now += 1
    response = client.get("/", headers=token)
    assert response.status_code == 403
    assert error_of(response)["reason"] == "unknown_user"


def test_forget_user_on_the_middleware_refuses_a_deleted_user_at_once(
    shared_issuer: LocalIssuer, make_client: ClientFactory
) -> None:
    lookup = CountingLookup()
    client = make_client(cached_settings(shared_issuer), user_lookup=lookup, user_cache_clock=Clock())
    alice = jwt_header(shared_issuer.identity_token(ALICE))
    bob = jwt_header(shared_issuer.identity_token("bob@example.com"))
    assert client.get("/", headers=alice).status_code == 200
    assert client.get("/", headers=bob).status_code == 200
    del lookup.users[ALICE]
    middleware_of(client).forget_user("Alice@example.com")
    assert client.get("/", headers=alice).status_code == 403
    assert client.get("/", headers=bob).status_code == 200  # bob is still remembered
    assert lookup.calls == 3
    del lookup.users["bob@example.com"]
    middleware_of(client).forget_all_users()
    assert client.get("/", headers=bob).status_code == 403


def test_an_app_that_keeps_its_authenticator_can_forget_a_user(shared_issuer: LocalIssuer) -> None:
    """What the README shows: build the Authenticator, hand it to the middleware, call forget_user on it."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from cfaccess_mw import Authenticator

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.user.display_name)

    lookup = CountingLookup()
    auth = Authenticator(cached_settings(shared_issuer), user_lookup=lookup, user_cache_clock=Clock())
    app = Starlette(routes=[Route("/", home)])
    app.add_middleware(CloudflareAccessMiddleware, authenticator=auth)
    token = jwt_header(shared_issuer.identity_token(ALICE))
    with TestClient(app, client=REMOTE_PEER) as client:
        assert client.get("/", headers=token).status_code == 200
        del lookup.users[ALICE]
        assert client.get("/", headers=token).status_code == 200  # remembered
        auth.forget_user(ALICE)
        assert client.get("/", headers=token).status_code == 403
