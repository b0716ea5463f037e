"""The JWKS client against a real certs server on loopback: caching, refetch, single flight, bad days."""

from __future__ import annotations

import functools
import json
import logging
import threading

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from cfaccess_mw.errors import AuthUnavailable, InvalidToken, Reason
from cfaccess_mw.keys import JWKSClient, parse_jwks
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


async def test_cache_expiry_triggers_a_refetch(issuer: LocalIssuer) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cache_seconds=300)
    await keys.get_key(issuer.signing_kid)
    clock.now += 301
    await keys.get_key(issuer.signing_kid)
    assert issuer.fetch_count == 2


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


async def test_unknown_kid_flood_fetches_at_most_once_per_cooldown(issuer: LocalIssuer) -> None:
    clock = Clock()
    keys = client_for(issuer, clock, cooldown_seconds=10)
    await keys.refresh()
    for n in range(500):
        with pytest.raises(InvalidToken) as caught:
            await keys.get_key(f"random-{n}")
        assert caught.value.reason is Reason.UNKNOWN_KEY
    assert issuer.fetch_count == 1
    clock.now += 10
    for n in range(500):
        with pytest.raises(InvalidToken):
            await keys.get_key(f"again-{n}")
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
        clock.now += 11
        await keys.get_key(issuer.signing_kid)
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
    keys, problems = parse_jwks(document)
    assert list(keys) == ["good"]
    text = " ".join(problems)
    for kid in ("wrong-kty", "wrong-alg", "wrong-use", "private", "short", "bad-n"):
        assert kid in text


def test_duplicate_kid_is_dropped() -> None:
    one, two = public_jwk("dup", new_rsa_key()), public_jwk("dup", new_rsa_key())
    keys, problems = parse_jwks({"keys": [one, two, public_jwk("other", new_rsa_key())]})
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
