"""The JWKS client against a real certs server on loopback: caching, refetch, single flight, bad days."""

from __future__ import annotations

import functools
import json
import logging
import threading
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from cfaccess_mw.core.errors import AuthError, AuthUnavailable, InvalidToken, Reason
from cfaccess_mw.keys.jwks import JWKSClient, parse_jwks
from cfaccess_mw.testing import LocalIssuer, new_rsa_key, public_jwk

from .conftest import Clock

pytestmark = pytest.mark.anyio


@functools.cache
def spare_key() -> RSAPrivateKey:
    """One extra key for the whole module (generating keys is the slow part)."""
    return new_rsa_key()


def client_for(issuer: LocalIssuer, clock: Clock, **options: float) -> JWKSClient:
    return JWKSClient(issuer.certs_url, clock=clock, **options)  # type: ignore[arg-type]


async def test_keys_are_fetched_once_and_cached(issuer: LocalIssuer) -> None:
    clock = Clock()
    keys = client_for(issuer, clock)
    for _ in range(5):
        await keys.get_key(issuer.signing_kid)
    assert issuer.fetch_count == 1
    assert keys.kids == [issuer.signing_kid]


async def test_cache_expiry_triggers_a_refetch_in_the_background(issuer: LocalIssuer) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cache_seconds=300)
    await keys.get_key(issuer.signing_kid)
    clock.now += 301
    for _ in range(20):  # single flight: one refresh for all of them
        await keys.get_key(issuer.signing_kid)
    await keys.settle()
    assert issuer.fetch_count == 2
    await keys.get_key(issuer.signing_kid)
    await keys.settle()
    assert issuer.fetch_count == 2, "fresh again: no further fetch"


async def test_known_key_due_for_refresh_is_served_without_waiting_for_the_fetch(issuer: LocalIssuer) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cache_seconds=60, timeout=10)
    await keys.refresh()
    clock.now += 61
    release, answered = threading.Event(), threading.Event()

    def hanging() -> tuple[int, dict[str, str], bytes]:
        release.wait(5)
        answered.set()
        return 200, {}, json.dumps(issuer.certs_document()).encode()

    issuer.responder = hanging
    try:
        assert await keys.get_key(issuer.signing_kid) is not None
        assert keys.cached_key(issuer.signing_kid) is not None
        served_before_the_answer = not answered.is_set()
    finally:
        release.set()
    await keys.settle()
    assert served_before_the_answer
    assert issuer.fetch_count == 2


async def test_only_cached_lookups_still_refresh_a_stale_key_set(issuer: LocalIssuer) -> None:
    # What the token cache asks on every hit: no request ever awaits get_key, yet the keys are refreshed.
    clock = Clock()
    keys = client_for(issuer, clock, cache_seconds=60)
    await keys.refresh()
    old_kid = issuer.signing_kid
    issuer.rotate(keep_old=False)
    for _ in range(100):  # a hundred cache lifetimes of cache-only traffic
        clock.now += 60
        keys.cached_key(old_kid)
        await keys.settle()
    assert issuer.fetch_count == 101
    assert keys.cached_key(old_kid) is None  # withdrawn at the first refresh


async def test_a_routine_refresh_keeps_the_key_object_of_unchanged_material(issuer: LocalIssuer) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cache_seconds=60)
    await keys.refresh()
    before = keys.cached_key(issuer.signing_kid)
    clock.now += 61
    assert await keys.refresh()
    assert issuer.fetch_count == 2
    assert keys.cached_key(issuer.signing_kid) is before


async def test_a_kid_republished_with_other_material_gets_a_new_key_object(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cache_seconds=60)
    await keys.refresh()
    kid = issuer.signing_kid
    before = keys.cached_key(kid)
    assert before is not None
    document = json.dumps({"keys": [public_jwk(kid, spare_key())]}).encode()
    issuer.responder = lambda: (200, {}, document)
    clock.now += 61
    with caplog.at_level(logging.WARNING, logger="cfaccess_mw.keys"):
        assert await keys.refresh()
    after = keys.cached_key(kid)
    assert after is not None
    assert after is not before
    assert after.public_numbers() == spare_key().public_key().public_numbers()
    assert any("different key material" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_background_refresh_runs_under_either_event_loop(issuer: LocalIssuer, anyio_backend: str) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cache_seconds=60)
    await keys.refresh()
    issuer.rotate(keep_old=False)
    clock.now += 61
    assert keys.cached_key(issuer.kids[0]) is None  # not fetched yet: the refresh only started
    await keys.settle()
    assert issuer.fetch_count == 2
    assert keys.cached_key(issuer.signing_kid) is not None


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_failing_background_refresh_is_logged_never_raised(
    caplog: pytest.LogCaptureFixture, anyio_backend: str
) -> None:
    import httpx

    issuer_key = spare_key()
    document = json.dumps({"keys": [public_jwk("k1", issuer_key)]}).encode()
    calls = 0

    def endpoint(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("bug in a transport")  # stands in for any bug below the fetch
        return httpx.Response(200, content=document)

    clock = Clock()
    keys = JWKSClient(
        "https://certs.example/cdn-cgi/access/certs",
        clock=clock,
        cache_seconds=60,
        transport=httpx.MockTransport(endpoint),
    )
    await keys.refresh()
    clock.now += 61
    with caplog.at_level(logging.DEBUG, logger="cfaccess_mw.keys"):
        assert await keys.get_key("k1") is not None
        await keys.settle()
        assert await keys.get_key("k1") is not None  # the last good keys still serve
    assert calls == 2
    assert keys.last_failure == "unexpected RuntimeError"
    assert any("unexpected error" in r.getMessage() for r in caplog.records)


async def test_the_background_refresh_runs_outside_the_requests_context() -> None:
    import contextvars

    import httpx

    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    seen: list[str] = []
    document = json.dumps({"keys": [public_jwk("k1", spare_key())]}).encode()

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request_id.get("none"))
        return httpx.Response(200, content=document)

    clock = Clock()
    keys = JWKSClient("https://certs.example/c", clock=clock, cache_seconds=60, transport=httpx.MockTransport(endpoint))
    request_id.set("request-1")
    await keys.refresh()
    clock.now += 61
    await keys.get_key("k1")
    await keys.settle()
    assert seen == ["request-1", "none"]  # the explicit refresh ran in this task; the background one did not


async def test_concurrent_first_requests_cause_exactly_one_fetch(issuer: LocalIssuer) -> None:
    keys = client_for(issuer, Clock())
    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(keys.get_key, issuer.signing_kid)
    assert issuer.fetch_count == 1


async def test_new_kid_is_picked_up_without_restart_after_the_cooldown(issuer: LocalIssuer) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cooldown_seconds=10)
    await keys.refresh()
    new_kid = issuer.rotate()
    clock.now += 10
    assert await keys.get_key(new_kid) is not None
    assert issuer.fetch_count == 2


async def undecided(keys: JWKSClient, kid: str) -> AuthUnavailable:
    with pytest.raises(AuthUnavailable) as caught:
        await keys.get_key(kid)
    assert caught.value.reason is Reason.KEYS_UNAVAILABLE
    return caught.value


async def unknown(keys: JWKSClient, kid: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        await keys.get_key(kid)
    assert caught.value.reason is Reason.UNKNOWN_KEY
    return caught.value


async def test_unknown_kid_flood_fetches_at_most_once_per_cooldown(issuer: LocalIssuer) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cooldown_seconds=10)
    await keys.refresh()
    for window in range(3):
        await unknown(keys, f"first-of-window-{window}")  # its fetch does not list it: 401
        for n in range(300):
            err = await undecided(keys, f"random-{window}-{n}")  # the allowance is spent: 503, try again later
            assert 1 <= err.retry_after <= 10
        assert issuer.fetch_count == 2 + window  # start-up, then one per window
        clock.now += 10


async def test_startup_fetch_does_not_spend_the_unknown_kid_allowance(issuer: LocalIssuer) -> None:
    # Cloudflare rotates a second after start-up: its new kid is fetched at once, not a cooldown later.
    keys = client_for(issuer, Clock(), cooldown_seconds=10)
    await keys.refresh()
    new_kid = issuer.rotate()
    assert await keys.get_key(new_kid) is not None
    assert issuer.fetch_count == 2


async def test_concurrent_first_requests_for_a_rotated_kid_all_wait_for_the_one_fetch(issuer: LocalIssuer) -> None:
    """Found by the two-worker load test: the first request's fetch waits for the lock before it is under way,
    and the requests that arrived meanwhile were told 503 "undecided" instead of waiting for its answer."""
    keys = client_for(issuer, Clock(), cooldown_seconds=10)
    await keys.refresh()
    new_kid = issuer.rotate(keep_old=True)
    found: list[object] = []

    async def first_request() -> None:
        found.append(await keys.get_key(new_kid))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(first_request)
    assert len(found) == 20
    assert all(key is found[0] for key in found)
    assert issuer.fetch_count == 2  # start-up, and the one fetch every request waited for
    made_up = ["made-up-a", "made-up-b", "made-up-c"]
    outcomes: list[str] = []

    async def made_up_request(kid: str) -> None:  # the window's fetch is spent: each is undecided, none fetches
        with pytest.raises(AuthUnavailable):
            await keys.get_key(kid)
        outcomes.append(kid)

    async with anyio.create_task_group() as tg:
        for kid in made_up:
            tg.start_soon(made_up_request, kid)
    assert sorted(outcomes) == made_up
    assert issuer.fetch_count == 2


async def test_a_flood_of_made_up_kids_does_not_delay_a_rotation_beyond_one_cooldown(issuer: LocalIssuer) -> None:
    """The flood uses up each window's fetch, so the genuine kid waits for the next window, but it is never
    told its token is invalid (503 with Retry-After, not 401), and it is accepted in the first window that
    starts after it appeared, without a second fetch in any window."""
    clock = Clock()
    keys = client_for(issuer, clock, cooldown_seconds=10)
    await keys.refresh()
    genuine: str | None = None
    accepted_at: float | None = None
    refused: list[int] = []
    for step in range(60):  # 30 s in half-second steps, a flood of made-up kids in every step
        for n in range(20):
            with pytest.raises((InvalidToken, AuthUnavailable)):
                await keys.get_key(f"made-up-{step}-{n}")
        if step == 5:  # Cloudflare rotates during the flood, after the window's fetch
            genuine = issuer.rotate()
        if genuine is not None and accepted_at is None:
            try:
                await keys.get_key(genuine)
            except AuthUnavailable as err:
                refused.append(err.retry_after)
            else:
                accepted_at = clock.now
        clock.now += 0.5
    await keys.settle()
    assert accepted_at is not None
    assert accepted_at - (1000 + 5 * 0.5) <= 10, "accepted within one cooldown of the rotation"
    assert refused, "the rotation fell inside a spent window"
    assert all(1 <= seconds <= 10 for seconds in refused)
    assert issuer.fetch_count <= 1 + 3 + 1  # start-up, one per 10 s window of the 30 s flood, one promised


async def test_the_first_request_after_the_cooldown_fetches_for_an_undecided_kid(issuer: LocalIssuer) -> None:
    # Any request (here one for a cached key, as a cache hit makes) starts the fetch the undecided kid waits
    # for, in the background; its own retry then finds the key without fetching.
    clock = Clock()
    keys = client_for(issuer, clock, cooldown_seconds=10)
    await keys.refresh()
    await unknown(keys, "made-up")  # spends the allowance
    new_kid = issuer.rotate()
    err = await undecided(keys, new_kid)
    clock.now += err.retry_after
    assert keys.cached_key(issuer.kids[0]) is not None
    await keys.settle()
    assert issuer.fetch_count == 3
    assert await keys.get_key(new_kid) is not None
    assert issuer.fetch_count == 3


async def test_a_kid_a_fetch_did_not_list_stays_unknown_for_the_cooldown(issuer: LocalIssuer) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cooldown_seconds=10)
    await keys.refresh()
    await unknown(keys, "another-teams-kid")
    for _ in range(5):  # a misconfigured client reloading: the same precise answer, no fetch
        clock.now += 1
        await unknown(keys, "another-teams-kid")
    assert issuer.fetch_count == 2


async def test_failed_refresh_keeps_the_last_good_keys(issuer: LocalIssuer, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cache_seconds=60, cooldown_seconds=10)
    await keys.refresh()
    issuer.responder = lambda: (500, {}, b"oops")
    clock.now += 61
    with caplog.at_level(logging.DEBUG, logger="cfaccess_mw.keys"):
        for _ in range(50):
            assert await keys.get_key(issuer.signing_kid) is not None
            await keys.settle()
        clock.now += 11
        await keys.get_key(issuer.signing_kid)
        await keys.settle()
    assert issuer.fetch_count == 3  # first fetch, then one failed attempt per cooldown window, not per request
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "HTTP 500" in warnings[0].getMessage()


async def test_no_keys_at_all_answers_unavailable(issuer: LocalIssuer) -> None:
    issuer.responder = lambda: (503, {}, b"")
    keys = client_for(issuer, Clock())
    with pytest.raises(AuthUnavailable) as caught:
        await keys.get_key(issuer.signing_kid)
    assert caught.value.reason is Reason.KEYS_UNAVAILABLE
    assert caught.value.retry_after >= 1
    assert "HTTP 503" in caught.value.detail


async def test_recovery_after_startup_failure(issuer: LocalIssuer) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cooldown_seconds=10)
    issuer.responder = lambda: (500, {}, b"")
    assert not await keys.refresh()
    issuer.responder = None
    with pytest.raises(AuthUnavailable):
        await keys.get_key(issuer.signing_kid)  # within the cooldown: no new attempt
    clock.now += 10
    assert await keys.get_key(issuer.signing_kid) is not None
    assert keys.last_failure is None


@pytest.mark.parametrize(
    ("response", "why"),
    [
        ((500, {}, b"boom"), "HTTP 500"),
        ((200, {"Content-Type": "text/html"}, b"<html>login</html>"), "not JSON"),
        ((200, {}, b"\x00\xff garbage"), "not JSON"),
        ((200, {}, b'{"keys": []}'), "no usable RS256 keys"),
        ((200, {}, b'{"nokeys": 1}'), "no 'keys' list"),
        ((200, {}, b"[1]"), "no 'keys' list"),
        ((302, {"Location": "https://evil.example/certs"}, b""), "redirect refused"),
        ((200, {}, b" " * (2 << 20)), "exceeds"),
    ],
    ids=["500", "html", "garbage", "empty-keys", "no-keys-field", "not-object", "redirect", "oversized"],
)
async def test_bad_certs_responses_are_failures(
    issuer: LocalIssuer, response: tuple[int, dict[str, str], bytes], why: str
) -> None:
    issuer.responder = lambda: response
    keys = client_for(issuer, Clock())
    assert not await keys.refresh()
    assert keys.last_failure is not None
    assert why in keys.last_failure


async def test_slow_certs_endpoint_times_out(issuer: LocalIssuer) -> None:
    release = threading.Event()

    def slow() -> tuple[int, dict[str, str], bytes]:
        release.wait(5)
        return 200, {}, json.dumps(issuer.certs_document()).encode()

    issuer.responder = slow
    keys = client_for(issuer, Clock(), timeout=0.2)
    try:
        assert not await keys.refresh()
    finally:
        release.set()
    assert keys.last_failure is not None
    assert "within 0.2s" in keys.last_failure


def test_unusable_keys_are_skipped_and_named() -> None:
    good = public_jwk("good", new_rsa_key())
    document = {
        "keys": [
            good,
            {**good, "kid": "wrong-kty", "kty": "EC"},
            {**good, "kid": "wrong-alg", "alg": "HS256"},
            {**good, "kid": "wrong-use", "use": "enc"},
            {**good, "kid": "private", "d": "AQAB"},
            {**public_jwk("short", new_rsa_key(1024))},
            {**good, "kid": "bad-n", "n": "!!"},
            "not an object",
        ]
    }
    keys, problems, _ = parse_jwks(document)
    assert list(keys) == ["good"]
    text = " ".join(problems)
    for kid in ("wrong-kty", "wrong-alg", "wrong-use", "private", "short", "bad-n"):
        assert kid in text


def test_duplicate_kid_is_dropped() -> None:
    one, two = public_jwk("dup", new_rsa_key()), public_jwk("dup", new_rsa_key())
    keys, problems, _ = parse_jwks({"keys": [one, two, public_jwk("other", new_rsa_key())]})
    assert list(keys) == ["other"]
    assert any("more than once" in p for p in problems)


async def test_known_key_is_served_while_another_request_refreshes(issuer: LocalIssuer) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cache_seconds=60, timeout=10)
    await keys.refresh()
    clock.now += 61  # the cache is due for a refresh ...
    release, answered = threading.Event(), threading.Event()

    def hanging() -> tuple[int, dict[str, str], bytes]:
        release.wait(5)
        answered.set()
        return 200, {}, json.dumps(issuer.certs_document()).encode()

    issuer.responder = hanging  # ... and the certs endpoint hangs
    served_before_the_answer: list[bool] = []

    async def second_request() -> None:
        await anyio.sleep(0.05)  # let the first request take the fetch
        await keys.get_key(issuer.signing_kid)
        served_before_the_answer.append(not answered.is_set())
        release.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(keys.get_key, issuer.signing_kid)
        tg.start_soon(second_request)
    assert served_before_the_answer == [True]


async def test_cancelled_fetch_lets_a_waiter_fetch_for_itself(issuer: LocalIssuer) -> None:
    keys = client_for(issuer, Clock(), cooldown_seconds=10)
    release = threading.Event()

    def hanging() -> tuple[int, dict[str, str], bytes]:
        release.wait(5)
        return 200, {}, json.dumps(issuer.certs_document()).encode()

    issuer.responder = hanging
    holder_scope = anyio.CancelScope()
    results: list[object] = []

    async def holder() -> None:
        with holder_scope:
            await keys.get_key(issuer.signing_kid)

    async def waiter() -> None:
        while issuer.fetch_count < 1:  # noqa: ASYNC110 - a server thread bumps it; wait until the fetch hangs there
            await anyio.sleep(0.01)
        issuer.responder = None  # the endpoint answers normally for the waiter's own fetch
        results.append(await keys.get_key(issuer.signing_kid))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            tg.start_soon(waiter)
            while issuer.fetch_count < 1:  # noqa: ASYNC110 - a server thread bumps it
                await anyio.sleep(0.01)
            await anyio.sleep(0.1)  # the waiter is now queued on the lock
            holder_scope.cancel()  # e.g. the client of the fetching request went away
    finally:
        release.set()
    assert issuer.fetch_count == 2
    assert results[0] is not None


async def test_cancelled_fetches_for_made_up_kids_stay_within_the_cooldown(issuer: LocalIssuer) -> None:
    """Unknown kids cause one fetch per cooldown (a flood of made-up kids must not become a flood of fetches).
    A request whose fetch is cancelled (its client went away; some servers then cancel the app) must not reopen
    that allowance: else each such request, cancelled in turn, starts another fetch within the cooldown."""
    clock = Clock()
    keys = client_for(issuer, clock, cooldown_seconds=60)
    assert await keys.refresh()
    before = issuer.fetch_count
    release = threading.Event()

    def hanging() -> tuple[int, dict[str, str], bytes]:
        release.wait(5)
        return 200, {}, json.dumps(issuer.certs_document()).encode()

    issuer.responder = hanging
    answered: list[str] = []

    async def ask(kid: str) -> None:
        try:
            await keys.get_key(kid)
        except AuthError as err:  # within the cooldown: 503, try again later (no fetch)
            answered.append(err.reason.value)

    try:
        for n in range(5):
            fetches, answers = issuer.fetch_count, len(answered)
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ask, f"made-up-{n}")
                    for _ in range(100):  # until its fetch has reached the server (or it was answered without one)
                        if issuer.fetch_count > fetches or len(answered) > answers:
                            break
                        await anyio.sleep(0.01)
                    scope.cancel()
    finally:
        release.set()
        issuer.responder = None
    assert issuer.fetch_count - before <= 1, "each cancelled request for a made-up kid fetched within the cooldown"
    assert answered == ["keys_unavailable"] * 4  # the first's fetch was cancelled; the others wait out the cooldown


async def test_unexpected_error_while_fetching_is_unavailable_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import httpx

    def explode(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("bug in a transport")  # stands in for any bug below the fetch

    keys = JWKSClient("https://certs.example/cdn-cgi/access/certs", transport=httpx.MockTransport(explode))
    with caplog.at_level(logging.ERROR), pytest.raises(AuthUnavailable):
        await keys.get_key("kid")
    assert keys.last_failure == "unexpected RuntimeError"


async def test_unknown_kid_while_the_endpoint_fails_is_unavailable_not_unknown(issuer: LocalIssuer) -> None:
    # Cloudflare may have rotated in a key we could not fetch: the request cannot be decided yet (503), while a
    # kid that a *successful* fetch does not list is simply unknown (401).
    clock = Clock()
    keys = client_for(issuer, clock, cooldown_seconds=10)
    await keys.refresh()
    issuer.responder = lambda: (500, {}, b"down")
    new_kid = issuer.add_key(spare_key())
    clock.now += 10
    with pytest.raises(AuthUnavailable) as caught:
        await keys.get_key(new_kid)
    assert "is not cached" in caught.value.detail
    assert await keys.get_key(issuer.signing_kid) is not None  # the cached key still serves
    issuer.responder = None
    clock.now += 10
    with pytest.raises(InvalidToken):
        await keys.get_key("never-published")


@pytest.mark.parametrize(
    "mangle",
    [{"kty": "EC"}, {"alg": "RS512"}, {"use": "enc"}, "duplicate"],
    ids=["wrong-kty", "wrong-alg", "wrong-use", "duplicate-kid"],
)
async def test_cached_key_listed_in_an_unusable_form_is_kept(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture, mangle: object
) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cache_seconds=60)
    await keys.refresh()
    kid = issuer.signing_kid
    cached = await keys.get_key(kid)
    entry = public_jwk(kid, issuer.private_key())
    stranger = spare_key()
    listed = [entry, public_jwk(kid, stranger)] if mangle == "duplicate" else [{**entry, **mangle}]  # type: ignore[dict-item]
    document = json.dumps({"keys": [*listed, public_jwk("other", stranger)]}).encode()
    issuer.responder = lambda: (200, {}, document)
    with caplog.at_level(logging.DEBUG, logger="cfaccess_mw.keys"):
        for _ in range(2):  # two refreshes that find the same problem
            clock.now += 61
            assert await keys.refresh()
            assert await keys.get_key(kid) is cached
    assert keys.kids == sorted([kid, "other"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("keeping the cached copy" in w for w in warnings)
    assert len(warnings) == len(set(warnings)), "the same problem is logged once, not on every refresh"


def memory_endpoint(document: bytes) -> tuple[list[int], Any]:
    import httpx

    calls = [0]

    def endpoint(request: httpx.Request) -> httpx.Response:
        calls[0] += 1
        return httpx.Response(200, content=document)

    return calls, httpx.MockTransport(endpoint)


async def test_kids_remembered_as_unknown_are_bounded() -> None:
    from cfaccess_mw.keys.jwks import ABSENT_KIDS_REMEMBERED

    calls, transport = memory_endpoint(json.dumps({"keys": [public_jwk("k1", spare_key())]}).encode())
    clock = Clock()
    keys = JWKSClient("https://certs.example/c", clock=clock, cooldown_seconds=10, transport=transport)
    for n in range(ABSENT_KIDS_REMEMBERED + 1):
        await unknown(keys, f"made-up-{n}")
        clock.now += 10
    clock.now -= 5  # inside the cooldown of the last fetch
    await unknown(keys, f"made-up-{ABSENT_KIDS_REMEMBERED}")  # remembered
    await undecided(keys, "made-up-0")  # the oldest was forgotten: undecided again, which costs no fetch
    assert calls[0] == ABSENT_KIDS_REMEMBERED + 1


def test_a_due_refresh_outside_an_event_loop_runs_in_a_thread_with_the_sync_client() -> None:
    """A WSGI worker has no event loop: the routine refresh runs in a daemon thread, fetching with httpx.Client."""
    calls, transport = memory_endpoint(json.dumps({"keys": [public_jwk("k1", spare_key())]}).encode())
    clock = Clock()
    keys = JWKSClient(
        "https://certs.example/c", clock=clock, cache_seconds=60, transport=transport, sync_transport=transport
    )
    assert keys.refresh_sync()
    assert calls[0] == 1
    clock.now += 61
    assert keys.cached_key("k1") is not None  # answers at once; the refresh runs beside it
    keys.settle_sync()
    assert calls[0] == 2
    assert keys.cached_key("k1") is not None
    assert calls[0] == 2, "refreshed, so not due again"


async def test_a_bug_in_the_background_refresh_is_logged_not_raised(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cache_seconds=60)
    await keys.refresh()

    def broken(generation: int) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(keys, "_refresh_plan", broken)
    clock.now += 61
    with caplog.at_level(logging.ERROR, logger="cfaccess_mw.keys"):
        assert await keys.get_key(issuer.signing_kid) is not None
        await keys.settle()
    assert any("background refresh failed" in r.getMessage() for r in caplog.records)
    clock.now += 16  # the refresh never reported back: a later request tries again
    assert await keys.get_key(issuer.signing_kid) is not None
    monkeypatch.undo()  # before the new task first runs: it fetches for real
    await keys.settle()
    assert issuer.fetch_count == 2


@pytest.mark.parametrize("mangle", [{"key_ops": ["sign"]}, {"use": "enc"}, {"kty": "EC"}], ids=str)
async def test_a_kept_copy_is_trusted_no_longer_than_the_maximum_age(issuer: LocalIssuer, mangle: object) -> None:
    """A cached key the document lists only unusably is kept (see above), but no fetch confirms it: the document
    does not serve that key. Before, every refresh that read the document counted as confirming it, so a key the
    issuer marked as not for verifying (or replaced by a key of another type) was trusted for ever, past
    CFACCESS_JWKS_MAX_AGE_SECONDS; now it goes at that bound and its tokens get 401 key_unusable."""
    clock = Clock()
    keys = client_for(issuer, clock, cache_seconds=60, max_age_seconds=300)
    await keys.refresh()
    kid = issuer.signing_kid
    cached = await keys.get_key(kid)
    stranger = spare_key()
    entry = {**public_jwk(kid, issuer.private_key()), **mangle}  # type: ignore[dict-item]
    document = json.dumps({"keys": [entry, public_jwk("other", stranger)]}).encode()
    issuer.responder = lambda: (200, {}, document)
    clock.now += 61
    assert await keys.refresh()
    assert await keys.get_key(kid) is cached, "kept within the bound"
    for _ in range(5):  # refreshes that read the document, well past the maximum age of the kept copy
        clock.now += 61
        await keys.refresh()
        keys.cached_key("other")
    with pytest.raises(InvalidToken) as caught:
        await keys.get_key(kid)
    assert caught.value.reason is Reason.KEY_UNUSABLE
    assert await keys.get_key("other") is not None, "the keys the document serves stay trusted"


def test_past_the_maximum_age_a_kid_listed_unusably_gets_503_like_every_other() -> None:
    """Once the keys outlived the maximum age unconfirmed, nothing from that document is trusted: a kid it listed
    unusably is as undecided as any other (503), not refused as unusable (401) on the word of a stale document."""
    import httpx

    down = False
    document = {
        "keys": [public_jwk("good", spare_key()), {**public_jwk("signing-only", spare_key()), "key_ops": ["sign"]}]
    }

    def endpoint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503) if down else httpx.Response(200, json=document)

    clock = Clock()
    keys = JWKSClient(
        "https://certs.example/c",
        clock=clock,
        cache_seconds=60,
        max_age_seconds=600,
        sync_transport=httpx.MockTransport(endpoint),
    )
    assert keys.refresh_sync()
    with pytest.raises(InvalidToken) as unusable:
        keys.get_key_sync("signing-only")
    assert unusable.value.reason is Reason.KEY_UNUSABLE
    down = True
    clock.now += 601
    with pytest.raises(AuthUnavailable) as undecided:
        keys.get_key_sync("signing-only")
    assert undecided.value.reason is Reason.KEYS_UNAVAILABLE
    keys.settle_sync()
