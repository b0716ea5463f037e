"""Tokens and keys as the real signers make them (issue 17), each through a real app behind the real middleware.

* AWS ALB documents ``iss`` and ``exp`` as fields of the signed JWT *header*; older
  tokens carry them only there. They are read there, and must agree with the payload
  where it repeats them.
* A key the certs endpoint publishes for something else (``key_ops`` without
  ``verify``), or one that can be factored (ROCA), is never used to verify.
* Keys that no fetch has confirmed for ``CFACCESS_JWKS_MAX_AGE_SECONDS`` stop being
  trusted: 503 until a fetch succeeds, said once in the log.
* Reading ``Cookie`` headers is linear and bounded before any parsing.

The key-set answers for unusable keys (401 ``key_unusable``, never 503) are in
``test_hostile_certs.py`` and ``test_hostile_presets.py``; Wycheproof's vectors and real
tokens signed by the real proxies run in ``test_wycheproof.py`` and ``test_real_tokens.py``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from cfaccess_mw import ConfigError, Settings
from cfaccess_mw.core.jwk import _ROCA, has_roca_fingerprint, parse_jwk
from cfaccess_mw.core.request import MAX_COOKIE_BYTES
from cfaccess_mw.keys.sources import build_key_source
from cfaccess_mw.testing import LocalIssuer, public_jwk
from cfaccess_mw.testing.jose import _int_b64
from cfaccess_mw.testing.presets import AlbIssuer, PomeriumIssuer, jws

from .conftest import REMOTE_PEER, Clock, build_app, error_of

ALICE = "alice@example.com"
JSON = {"Content-Type": "application/json"}


def started(settings: Settings, **options: Any) -> TestClient:
    client = TestClient(build_app(settings, **options), client=REMOTE_PEER)
    client.__enter__()
    return client


# --- AWS ALB: iss and exp where AWS documents them ------------------------------------------------


@pytest.fixture(scope="module")
def alb() -> Iterator[AlbIssuer]:
    with AlbIssuer() as issuer:
        yield issuer


@pytest.fixture
def alb_client(alb: AlbIssuer) -> Iterator[TestClient]:
    client = started(alb.settings())
    yield client
    client.__exit__(None, None, None)


def alb_jws(alb: AlbIssuer, claims: dict[str, Any], header: dict[str, Any]) -> str:
    """A token signed by ``alb``'s key with exactly this header and these claims, in ALB's padded encoding."""
    return jws(alb.private_key(), header, claims, padded=True)


def without(claims: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: value for name, value in claims.items() if name not in names}


def test_an_alb_token_in_the_documented_form_is_accepted(alb: AlbIssuer, alb_client: TestClient) -> None:
    """iss and exp only in the signed header, as AWS's user guide shows them (a 2018 Cognito token had this form)."""
    header = {**alb.header(alb.signing_kid), "exp": int(time.time()) + 120}
    token = alb_jws(alb, without(alb.identity_claims(ALICE, None), "iss", "exp"), header)
    response = alb_client.get("/", headers=alb.request_headers(token))
    assert response.status_code == 200, response.text
    assert response.json()["email"] == ALICE


@pytest.mark.parametrize(
    ("header", "payload", "reason"),
    [
        pytest.param({"iss": "https://evil.example.com"}, {"iss": None}, "issuer_mismatch", id="header-iss-elsewhere"),
        pytest.param({"iss": "https://evil.example.com"}, {}, "issuer_mismatch", id="header-iss-disagrees"),
        pytest.param({}, {"iss": "https://evil.example.com"}, "issuer_mismatch", id="payload-iss-disagrees"),
        pytest.param({"exp": "LATER"}, {}, "claim_invalid", id="header-exp-disagrees"),
        pytest.param({"exp": "PAST"}, {"exp": None}, "token_expired", id="header-exp-past"),
        pytest.param({"exp": "STRING"}, {"exp": None}, "claim_invalid", id="header-exp-a-string"),
        pytest.param({"exp": None}, {"exp": None}, "claim_invalid", id="no-exp-anywhere"),
        pytest.param({"iss": None}, {"iss": None}, "issuer_mismatch", id="no-iss-anywhere"),
    ],
)
def test_alb_header_claims_are_checked_and_must_agree_with_the_payload(
    alb: AlbIssuer, alb_client: TestClient, header: dict[str, Any], payload: dict[str, Any], reason: str
) -> None:
    now = int(time.time())
    values = {"LATER": now + 3600, "PAST": now - 3600, "STRING": str(now + 60)}
    claims = alb.identity_claims(ALICE, None)
    for name, value in payload.items():
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value
    signed = {**alb.header(alb.signing_kid), "exp": claims.get("exp", now + 120)}
    for name, value in header.items():
        if value is None:
            signed.pop(name)
        else:
            signed[name] = values.get(value, value)
    token = alb_jws(alb, claims, signed)
    response = alb_client.get("/", headers=alb.request_headers(token))
    assert response.status_code == 401, response.text
    assert error_of(response)["reason"] == reason


# --- keys published for something else, or that can be factored ----------------------------------


@pytest.mark.parametrize(
    ("key_ops", "status"),
    [
        pytest.param(["verify"], 200, id="verify"),
        pytest.param(["sign", "verify"], 200, id="sign-and-verify"),
        pytest.param(["sign"], 401, id="sign-only"),
        pytest.param(["encrypt", "wrapKey"], 401, id="encryption"),
        pytest.param([], 401, id="empty"),
        pytest.param("verify", 401, id="a-string-not-a-list"),
    ],
)
def test_key_ops_must_include_verify(issuer: LocalIssuer, key_ops: object, status: int) -> None:
    """RFC 7517 section 4.3; Wycheproof's rejectWrongKeyOps. ``use: enc`` was refused already; key_ops was not."""
    document = {"keys": [dict(public_jwk(issuer.signing_kid, issuer.private_key()), key_ops=key_ops)]}
    issuer.responder = lambda: (200, JSON, json.dumps(document).encode())
    client = started(issuer.settings())
    try:
        response = client.get("/", headers={"Cf-Access-Jwt-Assertion": issuer.identity_token(ALICE)})
    finally:
        client.__exit__(None, None, None)
    assert response.status_code == status, response.text
    if status == 401:
        assert error_of(response)["reason"] == "key_unusable"


def test_key_ops_is_checked_under_the_presets_too() -> None:
    with PomeriumIssuer() as pomerium:
        document = {"keys": [dict(jwk, key_ops=["sign"]) for jwk in pomerium.jwks_document()["keys"]]}
        pomerium.responder = lambda path: (200, JSON, json.dumps(document).encode())
        client = started(pomerium.settings())
        try:
            response = client.get("/", headers=pomerium.request_headers(pomerium.identity_token(ALICE)))
        finally:
            client.__exit__(None, None, None)
    assert response.status_code == 401
    assert error_of(response)["reason"] == "key_unusable"


def roca_modulus(bits: int = 2048) -> int:
    """A modulus of the shape the flawed Infineon generator makes: ``k * M + 65537**a mod M`` (not a real key)."""
    product = math.prod(p for p, _ in _ROCA)
    residue = pow(65537, 12345, product)
    k = ((1 << (bits - 1)) + product) // product  # puts the result at exactly ``bits`` bits
    n = k * product + residue
    return n if n % 2 else n + 2 * product


def _jwk_with_modulus(n: int) -> dict[str, str]:
    return {"kty": "RSA", "kid": "roca", "n": _int_b64(n, (n.bit_length() + 7) // 8), "e": "AQAB"}


def test_a_key_with_the_roca_fingerprint_is_refused_when_the_key_set_is_parsed() -> None:
    n = roca_modulus()
    assert n.bit_length() == 2048
    assert has_roca_fingerprint(n)
    with pytest.raises(ValueError, match="ROCA"):
        parse_jwk(_jwk_with_modulus(n))


def test_ordinary_keys_do_not_have_the_roca_fingerprint(shared_issuer: LocalIssuer) -> None:
    n = shared_issuer.private_key().public_key().public_numbers().n
    assert not has_roca_fingerprint(n)
    assert not has_roca_fingerprint(roca_modulus() + 2)  # one residue off is enough to miss the fingerprint
    parse_jwk(public_jwk("ordinary", shared_issuer.private_key()))


# --- keys no fetch has confirmed -------------------------------------------------------------------


def test_keys_unconfirmed_past_the_maximum_age_stop_being_trusted(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a withdrawn key still worked after 30 simulated days of a failing certs endpoint."""
    caplog.set_level(logging.INFO, logger="cfaccess_mw.keys")
    settings = issuer.settings(jwks_max_age_seconds=3600)
    clock = Clock()
    keys = build_key_source(settings, clock=clock)
    client = started(settings, jwks=keys)
    token = {"Cf-Access-Jwt-Assertion": issuer.identity_token(ALICE, lifetime=86400)}
    try:
        assert client.get("/", headers=token).status_code == 200
        issuer.stop()  # the certs endpoint goes away; the key may have been withdrawn meanwhile
        clock.now += 3000
        assert client.get("/", headers=token).status_code == 200, "kept through an outage shorter than the bound"
        assert client.portal is not None
        client.portal.call(keys.settle)
        clock.now += 601
        for _ in range(3):
            response = client.get("/", headers=token)
            assert response.status_code == 503, response.text
            assert error_of(response)["reason"] == "keys_unavailable"
        client.portal.call(keys.settle)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, errors
        assert "no longer trusted" in errors[0]
        assert keys.expired
        issuer.start()  # back on its port
        clock.now += 10
        client.get("/", headers=token)  # starts the refresh that confirms the keys again
        client.portal.call(keys.settle)
        assert client.get("/", headers=token).status_code == 200
        assert not keys.expired
    finally:
        client.__exit__(None, None, None)


def test_a_cached_copy_confirms_the_keys_only_as_of_its_age(issuer: LocalIssuer) -> None:
    """A certs response a cache held (``Age``) confirms the keys as of when it was fetched from the origin."""
    settings = issuer.settings(jwks_max_age_seconds=3600, jwks_refresh_cooldown_seconds=10)
    document = json.dumps(issuer.certs_document()).encode()
    issuer.responder = lambda: (200, {**JSON, "Age": "3000"}, document)
    clock = Clock()
    keys = build_key_source(settings, clock=clock)
    client = started(settings, jwks=keys)
    token = {"Cf-Access-Jwt-Assertion": issuer.identity_token(ALICE, lifetime=86400)}
    try:
        assert client.get("/", headers=token).status_code == 200
        assert client.portal is not None
        client.portal.call(keys.settle)
        fetches = issuer.fetch_count
        assert client.get("/", headers=token).status_code == 200
        assert issuer.fetch_count == fetches, "an old copy does not make every request refetch"
        issuer.stop()
        clock.now += 601  # 3000 s in the cache + 601 s here: past the hour
        assert client.get("/", headers=token).status_code == 503
    finally:
        client.__exit__(None, None, None)


def test_the_default_maximum_age_is_a_day(issuer: LocalIssuer) -> None:
    settings = issuer.settings()
    assert settings.jwks_max_age_seconds == 86400
    clock = Clock()
    keys = build_key_source(settings, clock=clock)
    client = started(settings, jwks=keys)
    token = {"Cf-Access-Jwt-Assertion": issuer.identity_token(ALICE, lifetime=40 * 86400)}
    try:
        assert client.get("/", headers=token).status_code == 200
        issuer.stop()
        for _ in range(30):  # 30 days of a failing endpoint, a request now and then
            clock.now += 86400 / 24
            client.get("/", headers=token)
            assert client.portal is not None
            client.portal.call(keys.settle)
            clock.now += 86400 * 23 / 24
        assert client.get("/", headers=token).status_code == 503
    finally:
        client.__exit__(None, None, None)


def test_alb_keys_are_fetched_again_past_the_maximum_age(alb: AlbIssuer) -> None:
    settings = alb.settings(jwks_max_age_seconds=3600)
    clock = Clock()
    keys = build_key_source(settings, clock=clock)
    client = started(settings, jwks=keys)
    token = alb.request_headers(alb.identity_token(ALICE, lifetime=86400))
    try:
        assert client.get("/", headers=token).status_code == 200
        fetches = alb.fetch_count
        clock.now += 3599
        assert client.get("/", headers=token).status_code == 200
        assert alb.fetch_count == fetches, "a confirmed key costs no fetch"
        alb.stop()
        clock.now += 2
        response = client.get("/", headers=token)
        assert response.status_code == 503, response.text
        assert error_of(response)["reason"] == "keys_unavailable"
        alb.start()
        clock.now += 60
        assert client.get("/", headers=token).status_code == 200
        assert alb.fetch_count == fetches + 1
    finally:
        client.__exit__(None, None, None)


@pytest.mark.parametrize("value", ["59", "2592001", "abc", "inf"])
def test_the_maximum_age_is_validated(value: str) -> None:
    env = {"CFACCESS_EXPOSURE_MODE": "local", "CFACCESS_JWKS_MAX_AGE_SECONDS": value}
    with pytest.raises(ConfigError, match="CFACCESS_JWKS_MAX_AGE_SECONDS"):
        Settings.from_env(env)


def test_the_maximum_age_cannot_be_shorter_than_the_cache_lifetime() -> None:
    env = {
        "CFACCESS_EXPOSURE_MODE": "local",
        "CFACCESS_JWKS_CACHE_SECONDS": "600",
        "CFACCESS_JWKS_MAX_AGE_SECONDS": "300",
    }
    with pytest.raises(ConfigError, match="CFACCESS_JWKS_MAX_AGE_SECONDS: must be at least"):
        Settings.from_env(env)


# --- Cookie headers --------------------------------------------------------------------------------


@pytest.fixture
def cookie_client(shared_issuer: LocalIssuer) -> Iterator[TestClient]:
    client = started(shared_issuer.settings(allow_cookie=True))
    yield client
    client.__exit__(None, None, None)


def test_many_cookie_headers_are_refused_before_any_parsing(cookie_client: TestClient) -> None:
    """80,000 short Cookie headers held a worker for seconds: joined one at a time, the work was quadratic."""
    response = cookie_client.get("/", headers=[("cookie", "a=b")] * 80_000)
    assert response.status_code == 401
    assert error_of(response)["reason"] == "token_too_large"


def test_cookies_just_under_the_bound_are_read(cookie_client: TestClient, shared_issuer: LocalIssuer) -> None:
    token = shared_issuer.identity_token(ALICE)
    filler = "x" * (MAX_COOKIE_BYTES - len(token) - 200)
    headers = [("cookie", f"pad={filler}"), ("cookie", f"CF_Authorization={token}")]
    response = cookie_client.get("/", headers=headers)
    assert response.status_code == 200, response.text
    headers = [("cookie", f"pad={filler}x{'y' * 300}"), ("cookie", f"CF_Authorization={token}")]
    assert error_of(cookie_client.get("/", headers=headers))["reason"] == "token_too_large"


def test_a_token_in_the_header_is_not_refused_for_large_cookies(
    cookie_client: TestClient, shared_issuer: LocalIssuer
) -> None:
    """The bound applies where the cookie is read: with the token in its header, cookies are never parsed."""
    headers = [("cookie", "a=b")] * 40_000 + [("cf-access-jwt-assertion", shared_issuer.identity_token(ALICE))]
    assert cookie_client.get("/", headers=headers).status_code == 200
