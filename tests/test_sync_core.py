"""One decision, two ways of doing I/O (issue 19): the async driver and the sync one agree, and key fetching is
single-flight across threads and event loops.

The sync path is what WSGI servers and threaded servers (``manage.py runserver``, gunicorn's gthread) run; the
async one is what ASGI servers run. Both drive the same pure steps (``credential``, ``identified``, ``admit``)
and differ only in how a missing key and the user are fetched. Everything here uses a real certs endpoint on
127.0.0.1 (LocalIssuer) and real threads; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import jwt
import pytest

from cfaccess_mw.core.authenticator import Authenticator
from cfaccess_mw.core.errors import AuthError
from cfaccess_mw.keys.jwks import JWKSClient
from cfaccess_mw.testing import LocalIssuer, new_rsa_key, public_jwk

from .conftest import REMOTE_PEER, Clock, find_user
from .hostile import HeldCerts

API_KEY = "sk_" + "Hq2Wd8Nf4Lp6Zr1Tx9Cv3Bm7Gk5Js0Ya"
THREADS = 32
BOUND = 20.0  # seconds any burst may take at most; a hang fails the test instead of holding CI


def scope(headers: dict[str, str] | None = None, peer: tuple[str, int] | None = REMOTE_PEER) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()],
        "client": peer,
        "server": ("app.example.com", 443),
        "scheme": "https",
    }


def verdict(run: Callable[[], Any]) -> tuple[str, str]:
    """``("accepted", who)`` or ``("refused", reason)``: what a request gets, comparable across drivers."""
    try:
        principal = run()
    except AuthError as err:
        return "refused", f"{err.status_code} {err.reason.value}"
    return "accepted", f"{principal.kind} {principal.display_name}"


@pytest.fixture(scope="module")
def certs() -> Iterator[LocalIssuer]:
    with LocalIssuer() as issuer:
        yield issuer


def authenticator(issuer: LocalIssuer, **settings: Any) -> Authenticator:
    values: dict[str, Any] = {"api_keys": {"operator": API_KEY}, "service_tokens": {"ci": "ci.access"}}
    values.update(settings)
    return Authenticator(issuer.settings(**values), user_lookup=find_user)


def requests(issuer: LocalIssuer) -> dict[str, dict[str, str]]:
    header = "Cf-Access-Jwt-Assertion"
    return {
        "user": {header: issuer.identity_token("alice@example.com")},
        "user-upper-case": {header: issuer.identity_token("Alice@Example.COM")},
        "unknown-user": {header: issuer.identity_token("mallory@example.com")},
        "service": {header: issuer.service_token("ci.access")},
        "service-not-allowed": {header: issuer.service_token("other.access")},
        "expired": {header: issuer.identity_token("alice@example.com", lifetime=-120)},
        "bad-signature": {header: issuer.identity_token("alice@example.com")[:-4] + "AAAA"},
        "malformed": {header: "e30.e30.c2ln"},
        "unknown-kid": {
            header: issuer.mint({**issuer.base_claims(), "email": "alice@example.com"}, headers={"kid": "x"})
        },
        "api-key": {"Authorization": f"Bearer {API_KEY}"},
        "wrong-api-key": {"Authorization": "Bearer sk_wrong"},
        "nothing": {},
    }


def test_the_sync_and_async_drivers_give_every_request_the_same_answer(certs: LocalIssuer) -> None:
    auth_async = authenticator(certs)
    auth_sync = authenticator(certs)
    asyncio.run(auth_async.startup())
    auth_sync.startup_sync()
    table = requests(certs)
    for name, headers in table.items():
        request = scope(headers)
        by_async = verdict(lambda request=request: asyncio.run(auth_async.identify(request)))  # type: ignore[misc]
        by_sync = verdict(lambda request=request: auth_sync.identify_sync(request))  # type: ignore[misc]
        assert by_async == by_sync, name
    assert verdict(lambda: auth_sync.identify_sync(scope(table["user"])))[0] == "accepted"
    assert verdict(lambda: auth_sync.identify_sync(scope(table["unknown-user"]))) == ("refused", "403 unknown_user")


def test_a_plain_def_lookup_is_called_in_the_calling_thread_on_the_sync_path(certs: LocalIssuer) -> None:
    threads: list[int] = []

    def lookup(email: str) -> dict[str, str] | None:
        threads.append(threading.get_ident())
        return find_user(email)

    auth = Authenticator(certs.settings(), user_lookup=lookup)
    auth.startup_sync()
    auth.identify_sync(scope({"Cf-Access-Jwt-Assertion": certs.identity_token("alice@example.com")}))
    assert threads == [threading.get_ident()], "no hop to a thread pool"


def test_an_async_lookup_on_the_sync_path_is_a_503_not_a_hang_or_a_warning(certs: LocalIssuer) -> None:
    async def lookup(email: str) -> dict[str, str] | None:
        return find_user(email)

    auth = Authenticator(certs.settings(), user_lookup=lookup)
    auth.startup_sync()
    token = certs.identity_token("alice@example.com")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the coroutine it returned is closed, never left for a "never awaited"
        outcome = verdict(lambda: auth.identify_sync(scope({"Cf-Access-Jwt-Assertion": token})))
    assert outcome == ("refused", "503 user_lookup_failed")


# --- single-flight across threads and event loops ------------------------------------------------------


def test_a_cold_burst_from_32_threads_causes_one_fetch_and_no_false_refusal() -> None:
    with LocalIssuer() as issuer:
        auth = authenticator(issuer, jwks_refresh_cooldown_seconds=0.0)
        endpoint = HeldCerts(issuer, bound=BOUND)
        issuer.responder = endpoint
        token = {"Cf-Access-Jwt-Assertion": issuer.identity_token("alice@example.com")}
        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(verdict, lambda: auth.identify_sync(scope(token))) for _ in range(THREADS)]
            threading.Timer(0.5, endpoint.release.set).start()  # all 32 are waiting on the one fetch by then
            results = [future.result(timeout=BOUND) for future in futures]
        assert results == [("accepted", "user alice@example.com")] * THREADS
        assert issuer.fetch_count == 1


def test_a_rotation_mid_burst_is_fetched_once_for_threads_and_two_event_loops() -> None:
    """Before: the lock belonged to one event loop, and requests in another loop (a threaded server runs a new
    loop per request) waited on it for ever."""
    with LocalIssuer() as issuer:
        auth = authenticator(issuer, jwks_refresh_cooldown_seconds=0.0)
        auth.startup_sync()
        assert issuer.fetch_count == 1
        new_kid = issuer.rotate()
        endpoint = HeldCerts(issuer, bound=BOUND)
        issuer.responder = endpoint
        token = {"Cf-Access-Jwt-Assertion": issuer.identity_token("alice@example.com", kid=new_kid)}

        def in_a_loop() -> list[tuple[str, str]]:
            async def burst() -> list[tuple[str, str]]:
                async def one() -> tuple[str, str]:
                    try:
                        principal = await auth.identify(scope(token))
                    except AuthError as err:
                        return "refused", f"{err.status_code} {err.reason.value}"
                    return "accepted", f"{principal.kind} {principal.display_name}"

                return list(await asyncio.gather(*(one() for _ in range(8))))

            return asyncio.run(asyncio.wait_for(burst(), BOUND))

        with ThreadPoolExecutor(THREADS + 2) as pool:
            loops = [pool.submit(in_a_loop) for _ in range(2)]
            threads = [pool.submit(verdict, lambda: auth.identify_sync(scope(token))) for _ in range(THREADS)]
            threading.Timer(0.5, endpoint.release.set).start()
            results = [r for future in loops for r in future.result(timeout=BOUND)]
            results += [future.result(timeout=BOUND) for future in threads]
        assert results == [("accepted", "user alice@example.com")] * (THREADS + 16)
        assert issuer.fetch_count == 2, "one fetch for the whole burst, across threads and loops"


def test_a_certs_endpoint_that_goes_down_mid_burst_costs_503s_not_a_hang() -> None:
    with LocalIssuer() as issuer:
        auth = authenticator(issuer, jwks_refresh_cooldown_seconds=0.0, jwks_timeout_seconds=1.0)
        auth.startup_sync()
        old = {"Cf-Access-Jwt-Assertion": issuer.identity_token("alice@example.com")}
        new_kid = issuer.rotate()
        endpoint = HeldCerts(issuer, bound=BOUND)
        endpoint.down = True
        issuer.responder = endpoint
        new = {"Cf-Access-Jwt-Assertion": issuer.identity_token("alice@example.com", kid=new_kid)}
        with ThreadPoolExecutor(THREADS) as pool:
            fresh = [pool.submit(verdict, lambda: auth.identify_sync(scope(new))) for _ in range(THREADS // 2)]
            cached = [pool.submit(verdict, lambda: auth.identify_sync(scope(old))) for _ in range(THREADS // 2)]
            threading.Timer(0.2, endpoint.release.set).start()
            fresh_results = {future.result(timeout=BOUND) for future in fresh}
            cached_results = {future.result(timeout=BOUND) for future in cached}
        assert fresh_results == {("refused", "503 keys_unavailable")}, "undecidable while the endpoint is down"
        assert cached_results == {("accepted", "user alice@example.com")}, "the cached key keeps working"


def test_a_refresh_whose_event_loop_closed_under_it_does_not_hold_the_flight_for_ever() -> None:
    """A background refresh is a task of the loop that started it. A loop closed without cancelling its tasks (a
    server or bridge that runs a loop per request and just closes it) leaves that task pending for ever, holding
    the flight: every later request for a new key waited on it, in a thread or in another loop, without end."""
    with LocalIssuer() as issuer:
        auth = authenticator(issuer, jwks_refresh_cooldown_seconds=0.0, jwks_timeout_seconds=1.0)
        auth.startup_sync()
        jwks = auth.jwks
        assert jwks is not None
        new_kid = issuer.rotate()
        endpoint = HeldCerts(issuer, bound=BOUND)
        issuer.responder = endpoint
        loop = asyncio.new_event_loop()
        task = loop.create_task(jwks.refresh())
        loop.run_until_complete(asyncio.sleep(0.3))  # the task holds the flight, its GET under way
        # The loop runs no more (as if closed without cancelling its tasks): the task is neither done nor cancelled.
        endpoint.release.set()
        token = {"Cf-Access-Jwt-Assertion": issuer.identity_token("alice@example.com", kid=new_kid)}

        async def in_another_loop() -> tuple[str, str]:
            try:
                principal = await auth.identify(scope(token))
            except AuthError as err:
                return "refused", f"{err.status_code} {err.reason.value}"
            return "accepted", f"{principal.kind} {principal.display_name}"

        by_thread = in_daemon_thread(lambda: verdict(lambda: auth.identify_sync(scope(token))))
        by_loop = in_daemon_thread(lambda: asyncio.run(in_another_loop()))
        results = [by_thread.result(timeout=BOUND), by_loop.result(timeout=BOUND)]
        assert results == [("accepted", "user alice@example.com")] * 2
        loop.run_until_complete(asyncio.wait_for(task, BOUND))  # the owner comes back late: it lands nothing new
        loop.close()
        assert jwks.refresh_sync(), "and the next fetch runs as usual"


def in_daemon_thread(run: Callable[[], Any]) -> Future[Any]:
    """``run()`` in a daemon thread: a test that finds a hang fails after its bound, and the thread is left behind
    rather than joined (a pool would wait for it on exit, turning the failure into the hang)."""
    future: Future[Any] = Future()

    def target() -> None:
        try:
            future.set_result(run())
        except BaseException as exc:  # handed to the test, which raises it
            future.set_exception(exc)

    threading.Thread(target=target, daemon=True).start()
    return future


def test_the_drivers_agree_on_cookies_repeated_headers_odd_tokens_and_unusable_keys() -> None:
    """The differential table again, for what reads headers (cookies, a header sent twice, a bound) and for the
    key rules of issue 17 (a kid the certs list unusably, a token past its key's use), with raw header lists."""
    with LocalIssuer() as issuer:
        unusable_kid = "signing-only"
        spare = issuer.private_key()
        document = issuer.certs_document()
        document["keys"].append({**document["keys"][0], "kid": unusable_kid, "key_ops": ["sign"]})
        body = json.dumps(document).encode()
        issuer.responder = lambda: (200, {"Content-Type": "application/json"}, body)
        header = "cf-access-jwt-assertion"
        good = issuer.identity_token("alice@example.com")
        claims = {**issuer.base_claims(), "email": "alice@example.com"}
        rows: dict[str, list[tuple[str, str]]] = {
            "cookie": [("cookie", f"a=1; CF_Authorization={good}")],
            "cookie-split-over-headers": [("cookie", "a=1"), ("cookie", f"CF_Authorization={good}")],
            "cookie-twice": [("cookie", f"CF_Authorization={good}"), ("cookie", f"CF_Authorization={good}")],
            "cookie-too-large": [("cookie", "a=" + "b" * 70_000), ("cookie", f"CF_Authorization={good}")],
            "many-small-cookies": [("cookie", "a=1")] * 5000 + [("cookie", f"CF_Authorization={good}")],
            "header-and-cookie": [(header, good), ("cookie", "CF_Authorization=e30.e30.c2ln")],
            "header-twice": [(header, good), (header, good)],
            "authorization-twice": [("authorization", f"Bearer {API_KEY}")] * 2,
            "header-empty": [(header, "")],
            "header-spaces": [(header, f" {good} ")],
            "alg-none": [(header, "eyJhbGciOiJub25lIiwia2lkIjoiayJ9.e30.")],
            "wrong-audience": [(header, issuer.mint({**claims, "aud": ["other"]}))],
            "wrong-issuer": [(header, issuer.mint({**claims, "iss": "https://evil.cloudflareaccess.com"}))],
            "key-unusable": [(header, jwt_with_kid(spare, claims, unusable_kid))],
            "not-yet-valid": [(header, issuer.mint({**claims, "nbf": claims["nbf"] + 3600}))],
        }
        auth_async = authenticator(issuer, allow_cookie=True)
        auth_sync = authenticator(issuer, allow_cookie=True)
        asyncio.run(auth_async.startup())
        auth_sync.startup_sync()
        for name, headers in rows.items():
            request = raw_scope(headers)
            by_async = verdict(lambda request=request: asyncio.run(auth_async.identify(request)))  # type: ignore[misc]
            by_sync = verdict(lambda request=request: auth_sync.identify_sync(request))  # type: ignore[misc]
            assert by_async == by_sync, name
            if name not in ("cookie", "cookie-split-over-headers", "header-and-cookie", "many-small-cookies"):
                assert by_sync[0] == "refused", name
        assert verdict(lambda: auth_sync.identify_sync(raw_scope(rows["key-unusable"]))) == (
            "refused",
            "401 key_unusable",
        )


def test_the_drivers_agree_on_what_a_lookup_answers() -> None:
    """A lookup's odd answers are judged once, for both drivers: raising, True, an unfetched cursor, a value."""
    answers: dict[str, Callable[[str], Any]] = {
        "raises": lambda email: 1 / 0,
        "true": lambda email: True,
        "iterator": lambda email: iter([{"email": email}]),
        "false": lambda email: False,
        "dict": lambda email: {"email": email},
        "empty-dict": lambda email: {},
    }
    with LocalIssuer() as issuer:
        token = {"Cf-Access-Jwt-Assertion": issuer.identity_token("alice@example.com")}
        for name, lookup in answers.items():
            auth_async = Authenticator(issuer.settings(), user_lookup=lookup)
            auth_sync = Authenticator(issuer.settings(), user_lookup=lookup)
            by_async = verdict(lambda auth=auth_async: asyncio.run(auth.identify(scope(token))))  # type: ignore[misc]
            by_sync = verdict(lambda auth=auth_sync: auth.identify_sync(scope(token)))  # type: ignore[misc]
            assert by_async == by_sync, name


def raw_scope(headers: list[tuple[str, str]]) -> dict[str, Any]:
    """:func:`scope` with the headers exactly as listed: repeated ones kept, in order."""
    request = scope()
    request["headers"] = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return request


def jwt_with_kid(key: Any, claims: dict[str, Any], kid: str) -> str:
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


class TricklingHeaders:
    """A certs endpoint on 127.0.0.1 that sends its status line, then one header byte every 0.2 s, for at most
    ``seconds``: each read gets a byte well within any per-read timeout, so only a bound on the whole fetch ends it.
    ``client_hung_up`` is set when the client closed the connection while bytes were still coming, ``finished``
    when the endpoint is done either way."""

    def __init__(self, seconds: float) -> None:
        self.client_hung_up = threading.Event()
        self.finished = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/cdn-cgi/access/certs"
        self._seconds = seconds
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            with self._listener, self._listener.accept()[0] as conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                for _ in range(int(self._seconds / 0.2)):
                    time.sleep(0.2)
                    try:
                        conn.sendall(b"X")
                    except OSError:
                        self.client_hung_up.set()
                        return
        finally:
            self.finished.set()


@pytest.mark.parametrize("driver", ["async", "sync"])
def test_a_fetch_whose_headers_trickle_in_is_cut_off_at_its_timeout(driver: str) -> None:
    """The module promises that a fetch never takes longer than its timeout in total; the async driver keeps it
    (anyio.fail_after around the exchange), and the sync driver must too, or a misbehaving certs endpoint (or a
    proxy in front of it) holds a WSGI server's request threads for as long as it likes. Before, the sync driver
    bounded each read only, and checked its deadline between body chunks: a 1 s fetch whose headers trickled in
    took as long as they trickled (8 s and more), holding the flight and every waiting request thread."""
    endpoint = TricklingHeaders(seconds=6.0)
    keys = JWKSClient(endpoint.url, timeout=0.5, cooldown_seconds=0.0)
    fetched = in_daemon_thread(keys.refresh_sync if driver == "sync" else lambda: asyncio.run(keys.refresh()))
    assert fetched.result(timeout=BOUND) is False, "no keys: the fetch failed"
    assert endpoint.finished.wait(BOUND)
    assert endpoint.client_hung_up.is_set(), "the client gave up while the endpoint was still sending"
    assert keys.last_failure is not None
    assert "no answer within" in keys.last_failure


def test_the_routine_refresh_happens_when_each_request_runs_in_its_own_event_loop() -> None:
    """asyncio.run (and asgiref's AsyncToSync, and Starlette's TestClient outside ``with``) cancels what is left of
    a request's loop when it ends. Before, the background refresh was a task of that loop and was cancelled with it,
    before its first step, and ``_due_at`` stayed pushed past it: with a loop per request the routine refresh never
    ran, and a withdrawn key stayed trusted until the maximum age (a day), not the cache lifetime."""
    with LocalIssuer() as issuer:
        clock = Clock()
        keys = JWKSClient(issuer.certs_url, clock=clock, cache_seconds=60, cooldown_seconds=1, timeout=2)
        keys.refresh_sync()
        for _ in range(10):  # five lifetimes of requests, each in a loop of its own
            clock.now += 30
            asyncio.run(keys.get_key(issuer.signing_kid))
            keys.settle_sync()
        assert keys.age < 60, "refreshed within a lifetime or so"
        assert issuer.fetch_count == 6, "one fetch per refresh: the first was cancelled before it began its GET"


class StalledRefresh:
    """A client due for its routine refresh, against a certs endpoint that holds each answer until ``release`` is
    set; ``request()`` is a request that starts the refresh and returns once its GET is at the endpoint, held.

    ``socketless``: the loop's GET goes to a transport that never answers and holds no socket (a loop closed under
    it then leaks none); the sync client, which a thread uses, still fetches from the issuer."""

    def __init__(self, issuer: LocalIssuer, *, socketless: bool = False) -> None:
        self.issuer = issuer
        self.clock = Clock()
        transports: dict[str, Any] = {}
        if socketless:
            transports = {"transport": httpx.MockTransport(self.hang), "sync_transport": httpx.HTTPTransport()}
        self.keys = JWKSClient(
            issuer.certs_url, clock=self.clock, cache_seconds=60, cooldown_seconds=1, timeout=5, **transports
        )
        self.keys.refresh_sync()
        self.endpoint = HeldCerts(issuer, bound=BOUND)
        self.arrived = threading.Event()
        issuer.responder = self.respond
        self.clock.now += 61

    def respond(self) -> Any:
        self.arrived.set()
        return self.endpoint()

    async def hang(self, request: httpx.Request) -> httpx.Response:
        self.arrived.set()
        await asyncio.Event().wait()
        raise AssertionError("never answered")

    async def request(self) -> None:
        await self.keys.get_key(self.issuer.signing_kid)  # served from the cache; starts the background refresh
        await asyncio.to_thread(self.arrived.wait, BOUND)


def test_a_routine_refresh_whose_loop_ends_mid_fetch_is_carried_on_in_a_thread() -> None:
    """The loop ends while the refresh's GET is under way (a slow certs endpoint): the refresh is cut short, and
    carried on in a daemon thread with the sync client, which lands the keys; later refreshes start in a thread."""
    with LocalIssuer() as issuer:
        stalled = StalledRefresh(issuer)
        keys = stalled.keys
        asyncio.run(asyncio.wait_for(stalled.request(), BOUND))  # the loop ends and cancels the refresh mid-GET
        stalled.endpoint.release.set()
        keys.settle_sync()
        assert keys.age < 60, "the refresh landed after its loop ended"
        assert keys.last_failure is None
        fetches = issuer.fetch_count
        stalled.clock.now += 61
        asyncio.run(keys.get_key(issuer.signing_kid))  # the next one goes to a thread at once: nothing to cancel
        keys.settle_sync()
        assert keys.age < 60
        assert issuer.fetch_count == fetches + 1, "one fetch for that refresh, not a cancelled one and a second"


def test_a_routine_refresh_whose_loop_is_closed_without_cancelling_it_is_started_again_in_a_thread() -> None:
    """Code that runs a loop and then just closes it (``run_until_complete``, ``close``) leaves the refresh task
    pending for ever, its GET cut off mid-way: it never lands its flight, nor ends. Its flight is taken over at once
    (its loop is closed), the next refresh starts in a thread, and ``settle`` does not wait for the dead task."""
    with LocalIssuer() as issuer:
        stalled = StalledRefresh(issuer, socketless=True)
        keys = stalled.keys
        loop = asyncio.SelectorEventLoop()  # whatever the policy (uvloop refuses to close over open sockets)
        loop.run_until_complete(asyncio.wait_for(stalled.request(), BOUND))
        loop.close()  # the task is left pending, holding the flight
        stalled.endpoint.release.set()
        stalled.clock.now += 10  # past the time a refresh may take: the next request starts another
        asyncio.run(keys.get_key(issuer.signing_kid))
        asyncio.run(asyncio.wait_for(keys.settle(), BOUND))
        assert keys.age < 60, "the refresh landed, not held up by the dead task's flight"
        assert keys.last_failure is None


def test_a_routine_refresh_in_one_long_lived_loop_stays_a_task_of_it() -> None:
    """Under one loop (uvicorn), each routine refresh is one fetch, run by that loop: nothing moves to a thread."""
    with LocalIssuer() as issuer:
        clock = Clock()
        keys = JWKSClient(issuer.certs_url, clock=clock, cache_seconds=60, cooldown_seconds=1, timeout=2)
        refreshers: set[str] = set()

        async def serve() -> None:
            await keys.refresh()
            for _ in range(5):
                clock.now += 61
                await keys.get_key(issuer.signing_kid)
                refreshers.update(task.get_name() for task in keys._tasks)
                await keys.settle()
                assert keys.age < 60

        asyncio.run(asyncio.wait_for(serve(), BOUND))
        assert issuer.fetch_count == 6
        assert len(refreshers) == 5, "each refresh a task of the loop"


def test_an_owner_that_comes_back_after_its_flight_was_taken_over_does_not_undo_the_newer_answer() -> None:
    """A fetch whose owner stalls past the flight's bound is taken over; the owner may still come back with its
    answer (a key set read before the newer one, or its own timeout). That answer is older than the one held: it
    is dropped, not applied over it (before, it replaced the newer keys or marked the endpoint as failing)."""
    old, new = (new_rsa_key(), new_rsa_key())
    entered, release = threading.Event(), threading.Event()
    calls = 0

    def endpoint(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:  # the owner's fetch: it stalls, then answers with the key set of then
            entered.set()
            release.wait(BOUND)
            return httpx.Response(200, json={"keys": [public_jwk("old", old)]})
        return httpx.Response(200, json={"keys": [public_jwk("new", new)]})

    keys = JWKSClient("https://certs.example/c", timeout=0.05, sync_transport=httpx.MockTransport(endpoint))
    owner = in_daemon_thread(keys.refresh_sync)
    assert entered.wait(BOUND)
    assert keys.refresh_sync(), "waits for the stalled fetch, takes it over once stale, and fetches"
    assert keys.kids == ["new"]
    release.set()
    owner.result(timeout=BOUND)
    assert keys.kids == ["new"], "the older answer did not replace the newer keys"
    assert keys.last_failure is None, "nor did the owner's late failure count"
