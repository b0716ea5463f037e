"""A certs endpoint having a bad day, seen through the real middleware in a real Starlette app.

The endpoint is a real HTTP server on 127.0.0.1 (LocalIssuer) told to misbehave.
The middleware's key cache is a JWKSClient with a monotonic clock the test moves
by hand, so cache expiry and refetch cooldowns pass without sleeping. For each bad
day: a token signed by a cached key keeps working; a token whose key is not cached
gets 503 AUTH_UNAVAILABLE (never 401, never 500); the app is never reached by a
refused request; the fetch never holds a request longer than the timeout; and the
key log says what happened once, not once per request.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import TestClient

from cfaccess_mw import ApiKey
from cfaccess_mw.keys.jwks import JWKSClient
from cfaccess_mw.testing import LocalIssuer, Response, new_rsa_key, public_jwk

from .conftest import Clock
from .hostile import Endpoint, assert_refused, b64json, counting_app

API_KEY = "ck_" + "Zr4nQw8Ee2Ty6Ui0Op3As7Df1Gh5Jk9L"
TIMEOUT = 0.5  # short, yet well above a loopback fetch on a busy machine (each fetch builds a TLS context)
CACHE_SECONDS = 60.0
COOLDOWN = 10.0
REQUESTS_PER_BATCH = 5
REMOTE = ("198.51.100.20", 43000)


@functools.cache
def stranger_key() -> Any:
    return new_rsa_key()


def document_with(issuer: LocalIssuer, **changes: object) -> bytes:
    keys = [dict(jwk, **changes) for jwk in issuer.certs_document()["keys"]]
    return json.dumps({"keys": keys}).encode()


def beside_a_good_key(issuer: LocalIssuer, **changes: str) -> bytes:
    mangled = dict(public_jwk(issuer.signing_kid, issuer.private_key()), **changes)
    return json.dumps({"keys": [mangled, public_jwk("good-other", stranger_key())]}).encode()


def duplicate_kid(issuer: LocalIssuer, with_good_key: bool) -> bytes:
    """Every kid the issuer publishes, listed twice: once with its key, once with a stranger's."""
    keys = [
        jwk
        for kid in issuer.kids
        for jwk in (public_jwk(kid, issuer.private_key(kid)), public_jwk(kid, stranger_key()))
    ]
    if with_good_key:
        keys.append(public_jwk("good-other", stranger_key()))
    return json.dumps({"keys": keys}).encode()


JSON = {"Content-Type": "application/json"}
TEN_MB = 10 * 1024 * 1024


@dataclass
class BadDay:
    """How the endpoint misbehaves: ``make(issuer, elsewhere, release)`` returns a responder, or None for "down"."""

    id: str
    make: Callable[[LocalIssuer, LocalIssuer, threading.Event], Callable[[], Response] | None]
    #: Whether a fetch still *succeeds* (a usable key set beside the broken entry) rather than fails.
    partial: bool = False
    #: Whether the document lists every kid, each in a form that cannot verify (so a token naming one is 401).
    unusable: bool = False


def respond(status: int, headers: dict[str, str], body: bytes) -> Callable[..., Callable[[], Response]]:
    return lambda issuer, elsewhere, release: lambda: (status, headers, body)


def slow(issuer: LocalIssuer, elsewhere: LocalIssuer, release: threading.Event) -> Callable[[], Response]:
    def answer() -> Response:
        release.wait(10)  # held until the test is over: far beyond the 0.2 s timeout
        return 200, JSON, json.dumps(issuer.certs_document()).encode()

    return answer


def serve(
    body: Callable[[LocalIssuer], bytes], headers: dict[str, str] = JSON
) -> Callable[..., Callable[[], Response]]:
    """A 200 whose body is built once, when the bad day starts (building it may take longer than the timeout)."""

    def make(issuer: LocalIssuer, elsewhere: LocalIssuer, release: threading.Event) -> Callable[[], Response]:
        fixed = body(issuer)
        return lambda: (200, headers, fixed)

    return make


BAD_DAYS = [
    BadDay("down", lambda issuer, elsewhere, release: None),
    BadDay("http-500", respond(500, {"Content-Type": "text/plain"}, b"internal error")),
    BadDay(
        "html-login-page",
        respond(200, {"Content-Type": "text/html"}, b"<!doctype html><title>Sign in</title><form>...</form>"),
    ),
    BadDay("empty-keys", respond(200, JSON, b'{"keys": []}')),
    BadDay("garbage-bytes", respond(200, JSON, bytes(range(256)) * 4)),
    BadDay("ten-megabytes", respond(200, JSON, b" " * TEN_MB)),
    BadDay("gzip-bomb", respond(200, {**JSON, "Content-Encoding": "gzip"}, gzip.compress(b" " * TEN_MB))),
    BadDay(
        "redirect-to-another-host",
        lambda issuer, elsewhere, release: lambda: (302, {"Location": elsewhere.certs_url}, b""),
    ),
    BadDay("slow-beyond-the-timeout", slow),
    BadDay("wrong-kty", serve(lambda i: document_with(i, kty="EC")), unusable=True),
    BadDay("wrong-alg", serve(lambda i: document_with(i, alg="HS256")), unusable=True),
    BadDay("wrong-use", serve(lambda i: document_with(i, use="enc")), unusable=True),
    BadDay("wrong-key-ops", serve(lambda i: document_with(i, key_ops=["sign"])), unusable=True),
    BadDay("duplicate-kid", serve(lambda i: duplicate_kid(i, with_good_key=False)), unusable=True),
    BadDay("wrong-kty-beside-a-good-key", serve(lambda i: beside_a_good_key(i, kty="EC")), partial=True),
    BadDay("wrong-alg-beside-a-good-key", serve(lambda i: beside_a_good_key(i, alg="RS512")), partial=True),
    BadDay("wrong-use-beside-a-good-key", serve(lambda i: beside_a_good_key(i, use="enc")), partial=True),
    BadDay("duplicate-kid-beside-a-good-key", serve(lambda i: duplicate_kid(i, with_good_key=True)), partial=True),
]
FAILING_DAYS = [day for day in BAD_DAYS if not day.partial]
#: The days on which nothing proves a token's key unusable: "try again" (503) is the only honest answer.
UNDECIDED_DAYS = [day for day in FAILING_DAYS if not day.unusable]
UNUSABLE_DAYS = [day for day in FAILING_DAYS if day.unusable]


@pytest.fixture(scope="module")
def module_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as issuer:
        yield issuer


@pytest.fixture
def issuer(module_issuer: LocalIssuer) -> Iterator[LocalIssuer]:
    """One issuer for the module (key generation is slow), put back to a good day after each test."""
    signing_kid = module_issuer.signing_kid
    yield module_issuer
    module_issuer.responder = None
    module_issuer.start()  # back on its port if a test took it down
    for kid in module_issuer.kids:
        if kid != signing_kid:
            module_issuer.remove_key(kid)
    module_issuer.signing_kid = signing_kid


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[LocalIssuer]:
    """Another certs server (another origin on loopback) that a redirect points at; it must never be asked."""
    with LocalIssuer() as other:
        yield other


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@dataclass
class Rig:
    issuer: LocalIssuer
    clock: Clock
    keys: JWKSClient
    client: TestClient
    endpoint: Endpoint

    def get(self, headers: dict[str, str]) -> Any:
        return self.client.get("/", headers=headers)

    def token(self, email: str = "alice@example.com", kid: str | None = None) -> dict[str, str]:
        return {"Cf-Access-Jwt-Assertion": self.issuer.identity_token(email, kid=kid)}

    def settle(self) -> None:
        """Wait for the background refresh a request may have started (requests never wait for it)."""
        assert self.client.portal is not None
        self.client.portal.call(self.keys.settle)


@pytest.fixture
def rig_factory(issuer: LocalIssuer, register_secret: Callable[[str], str]) -> Iterator[Callable[[], Rig]]:
    register_secret(API_KEY)
    settings = issuer.settings(jwks_timeout_seconds=TIMEOUT, api_keys=(ApiKey.from_secret("ops", API_KEY),))
    assert settings.certs_url is not None
    clients: list[TestClient] = []

    def start() -> Rig:
        clock = Clock()
        keys = JWKSClient(
            settings.certs_url or "",
            cache_seconds=CACHE_SECONDS,
            cooldown_seconds=COOLDOWN,
            timeout=settings.jwks_timeout_seconds,
            clock=clock,
        )
        app, endpoint = counting_app(settings, jwks=keys)
        client = TestClient(app, client=REMOTE)
        client.__enter__()  # lifespan startup: the first fetch
        clients.append(client)
        return Rig(issuer, clock, keys, client, endpoint)

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def misbehave(rig_issuer: LocalIssuer, day: BadDay, elsewhere: LocalIssuer, release: threading.Event) -> None:
    responder = day.make(rig_issuer, elsewhere, release)
    if responder is None:
        rig_issuer.stop()
    else:
        rig_issuer.responder = responder


def key_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cfaccess_mw.keys" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("day", BAD_DAYS, ids=[day.id for day in BAD_DAYS])
def test_cached_key_keeps_working_through_a_bad_day(
    rig_factory: Callable[[], Rig],
    elsewhere: LocalIssuer,
    release: threading.Event,
    caplog: pytest.LogCaptureFixture,
    day: BadDay,
) -> None:
    caplog.set_level(logging.DEBUG, logger="cfaccess_mw")
    rig = rig_factory()
    assert rig.keys.kids == [rig.issuer.signing_kid]
    misbehave(rig.issuer, day, elsewhere, release)
    rig.clock.now += CACHE_SECONDS + 1  # the cache is stale: the next request tries to refresh

    for n in range(REQUESTS_PER_BATCH):
        response = rig.get(rig.token(f"alice@example.com{' ' * n}"))  # distinct tokens: no token-cache hits
        assert response.status_code == 200
    rig.settle()
    assert rig.endpoint.calls == REQUESTS_PER_BATCH
    assert rig.keys.fetch_count == 2, "one refresh attempt for the whole batch, not one per request"
    assert not release.is_set()  # a slow endpoint was never waited out
    warnings_after_first_window = key_warnings(caplog)
    assert warnings_after_first_window, "the bad day is logged"
    if not day.partial:
        assert len(warnings_after_first_window) == 1
        assert rig.keys.last_failure is not None

    rig.clock.now += CACHE_SECONDS + 1  # a second attempt, just as bad
    for _ in range(REQUESTS_PER_BATCH):
        assert rig.get(rig.token()).status_code == 200
    rig.settle()
    assert rig.keys.fetch_count == 3
    assert key_warnings(caplog) == warnings_after_first_window, "the same trouble is not logged again"
    assert elsewhere.fetch_count == 0, "a redirect was followed"


@pytest.mark.parametrize("day", UNDECIDED_DAYS, ids=[day.id for day in UNDECIDED_DAYS])
def test_uncached_key_on_a_bad_day_is_503_not_401(
    rig_factory: Callable[[], Rig],
    elsewhere: LocalIssuer,
    release: threading.Event,
    caplog: pytest.LogCaptureFixture,
    day: BadDay,
) -> None:
    """Cloudflare rotated its key while its certs endpoint misbehaves: the new key cannot be known, so "try again"."""
    caplog.set_level(logging.DEBUG, logger="cfaccess_mw")
    rig = rig_factory()
    new_kid = rig.issuer.add_key(stranger_key())  # published (for when the endpoint recovers), not yet fetched
    misbehave(rig.issuer, day, elsewhere, release)
    rig.clock.now += COOLDOWN
    for _ in range(REQUESTS_PER_BATCH):
        response = rig.get(rig.token(kid=new_kid))
        assert_refused(response.status_code, response.json(), rig.endpoint, 503, ("keys_unavailable",))
        assert int(response.headers["retry-after"]) >= 1
    assert rig.keys.fetch_count == 2
    assert len(key_warnings(caplog)) == 1
    assert not release.is_set()
    # The cached key still works meanwhile, and API keys never depended on the endpoint.
    assert rig.get(rig.token()).status_code == 200
    assert rig.get({"Authorization": f"Bearer {API_KEY}"}).status_code == 200


@pytest.mark.parametrize("day", UNUSABLE_DAYS, ids=[day.id for day in UNUSABLE_DAYS])
@pytest.mark.parametrize("when", ["at-startup", "after-rotation"])
def test_a_key_the_endpoint_lists_unusably_is_401_not_503(
    rig_factory: Callable[[], Rig],
    elsewhere: LocalIssuer,
    release: threading.Event,
    caplog: pytest.LogCaptureFixture,
    day: BadDay,
    when: str,
    issuer: LocalIssuer,
) -> None:
    """The fetch proved the token's key unusable (wrong kty, alg, use, key_ops): a 401 that says so, not "retry".

    A 503 with Retry-After here made clients retry for ever, though no fetch could ever make the key usable.
    """
    caplog.set_level(logging.DEBUG, logger="cfaccess_mw")
    if when == "at-startup":
        misbehave(issuer, day, elsewhere, release)
        rig = rig_factory()  # the start-up fetch reads the document and finds no usable key in it
        kid = None
        assert rig.keys.kids == []
    else:
        rig = rig_factory()
        kid = rig.issuer.add_key(stranger_key())  # rotated in, published only in the broken form
        misbehave(rig.issuer, day, elsewhere, release)
        rig.clock.now += COOLDOWN
    fetches = rig.keys.fetch_count + (0 if when == "at-startup" else 1)
    for _ in range(REQUESTS_PER_BATCH):
        response = rig.get(rig.token(kid=kid))
        assert_refused(response.status_code, response.json(), rig.endpoint, 401, ("key_unusable",))
        assert "retry-after" not in response.headers
    assert rig.keys.fetch_count == fetches, "at most the one fetch an unknown kid may cause"
    if when == "after-rotation":
        assert rig.get(rig.token()).status_code == 200, "the cached copy of a key still listed is kept"
    issuer.responder = None
    rig.clock.now += COOLDOWN + CACHE_SECONDS
    rig.get(rig.token(kid=kid))  # starts the refresh that finds the repaired document
    rig.settle()
    assert rig.get(rig.token(kid=kid)).status_code == 200


@pytest.mark.parametrize("day", UNDECIDED_DAYS, ids=[day.id for day in UNDECIDED_DAYS])
def test_no_keys_since_startup_is_503_until_the_endpoint_recovers(
    rig_factory: Callable[[], Rig],
    elsewhere: LocalIssuer,
    release: threading.Event,
    caplog: pytest.LogCaptureFixture,
    day: BadDay,
    issuer: LocalIssuer,
) -> None:
    caplog.set_level(logging.DEBUG, logger="cfaccess_mw")
    misbehave(issuer, day, elsewhere, release)
    rig = rig_factory()  # the start-up fetch fails
    assert rig.keys.kids == []

    for window in range(2):
        for _ in range(REQUESTS_PER_BATCH):
            response = rig.get(rig.token())
            assert_refused(response.status_code, response.json(), rig.endpoint, 503, ("keys_unavailable",))
        assert rig.keys.fetch_count == 1 + window, "one attempt per cooldown, not one per request"
        assert len(key_warnings(caplog)) == 1, "the failure is logged once"
        rig.clock.now += COOLDOWN
    assert not release.is_set()
    assert elsewhere.fetch_count == 0

    # Malformed tokens are still 401: they are refused before any key is needed.
    response = rig.get({"Cf-Access-Jwt-Assertion": "e30.e30.c2ln"})
    assert response.status_code == 401

    issuer.responder = None
    issuer.start()  # back up (same port) if it was down
    assert rig.get(rig.token()).status_code == 200
    assert rig.endpoint.calls == 1
    assert any("recovered" in message for message in key_warnings(caplog))


def test_slow_endpoint_never_holds_a_request_beyond_the_timeout(
    rig_factory: Callable[[], Rig], elsewhere: LocalIssuer, release: threading.Event
) -> None:
    rig = rig_factory()
    misbehave(rig.issuer, BadDay("slow", slow), elsewhere, release)
    rig.clock.now += CACHE_SECONDS + 1
    new_kid = rig.issuer.add_key(stranger_key())
    # Both requests need the endpoint; both finish while it still has not answered. The first does not wait
    # for the refresh it starts; the second, whose key only the endpoint can give, waits for it, up to the timeout.
    assert rig.get(rig.token()).status_code == 200
    rig.clock.now += COOLDOWN
    assert rig.get(rig.token(kid=new_kid)).status_code == 503
    rig.settle()
    assert not release.is_set()
    assert rig.keys.last_failure == f"no answer within {TIMEOUT:g}s"


# --- keys that change under the token cache (issue 10 finding 6) --------------------------------


def test_a_kid_republished_with_other_material_stops_its_cached_tokens(rig_factory: Callable[[], Rig]) -> None:
    rig = rig_factory()
    alice = rig.token()
    assert rig.get(alice).status_code == 200  # verified and cached
    kid = rig.issuer.signing_kid
    document = json.dumps({"keys": [public_jwk(kid, stranger_key())]}).encode()
    rig.issuer.responder = lambda: (200, JSON, document)  # the same kid, other key material
    rig.clock.now += CACHE_SECONDS + 1
    assert rig.get(alice).status_code == 200  # the old key still holds while the refresh runs in the background
    rig.settle()
    rig.endpoint.calls = 0
    response = rig.get(alice)
    assert_refused(response.status_code, response.json(), rig.endpoint, 401, ("bad_signature",))
    assert rig.keys.fetch_count == 2


def test_a_withdrawn_key_stops_its_cached_tokens_under_cache_only_traffic(rig_factory: Callable[[], Rig]) -> None:
    rig = rig_factory()
    alice = rig.token()
    assert rig.get(alice).status_code == 200
    document = json.dumps({"keys": [public_jwk("good-other", stranger_key())]}).encode()
    rig.issuer.responder = lambda: (200, JSON, document)  # the key is withdrawn; only this cached token keeps coming
    rig.clock.now += CACHE_SECONDS + 1
    assert rig.get(alice).status_code == 200
    rig.settle()
    rig.endpoint.calls = 0
    for _ in range(3):
        response = rig.get(alice)
        assert_refused(response.status_code, response.json(), rig.endpoint, 401, ("unknown_key",))
    assert rig.keys.fetch_count == 3  # start-up, the routine refresh, and one for the kid it no longer lists


def made_up_kid(token: str) -> str:
    """``token`` with its header naming a random kid (the signature is never checked: the kid is unknown)."""
    _, payload, signature = token.split(".")
    header = {"alg": "RS256", "kid": secrets.token_hex(32), "typ": "JWT"}
    return f"{b64json(header)}.{payload}.{signature}"


def test_a_flood_of_made_up_kids_does_not_turn_a_rotation_into_401s(rig_factory: Callable[[], Rig]) -> None:
    rig = rig_factory()
    template = rig.issuer.identity_token("mallory@example.com")
    genuine: dict[str, str] | None = None
    genuine_statuses: list[int] = []
    accepted_after: float | None = None
    rotated_at = 0.0
    for step in range(40):  # 20 s of flood, half a second per step: two cooldown windows
        for _ in range(5):
            response = rig.get({"Cf-Access-Jwt-Assertion": made_up_kid(template)})
            assert response.status_code in (401, 503)
        if step == 3:  # Cloudflare rotates, after the flood spent this window's fetch
            rig.issuer.rotate(keep_old=True)
            genuine = rig.token()
            rotated_at = rig.clock.now
        if genuine is not None and accepted_after is None:
            rig.endpoint.calls = 0
            response = rig.get(genuine)
            genuine_statuses.append(response.status_code)
            if response.status_code == 200:
                accepted_after = rig.clock.now - rotated_at
            else:
                assert_refused(response.status_code, response.json(), rig.endpoint, 503, ("keys_unavailable",))
                assert 1 <= int(response.headers["retry-after"]) <= COOLDOWN
        rig.clock.now += 0.5
        rig.settle()
    assert accepted_after is not None, genuine_statuses
    assert accepted_after <= COOLDOWN, genuine_statuses
    assert 401 not in genuine_statuses, "a genuine token was told it is invalid"
    assert rig.keys.fetch_count <= 1 + 2 + 1  # start-up, then at most one per window of the flood
