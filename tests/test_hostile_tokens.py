"""Hostile tokens and headers, end to end: each goes through the real middleware in a real Starlette app.

The verifier-level unit tests (test_tokens.py) say *which check* refuses; this
file says what an attacker at the HTTP boundary gets: 401 (403 or 503 only where
documented), the shared JSON error body, and an application that was never
called. One table per bullet of issue 5; a few accepted controls in each table
show the app is reachable when the input is honest, so a refusal proves something.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from cfaccess_mw import ApiKey, ServiceToken, Settings
from cfaccess_mw.testing import LocalIssuer, new_rsa_key, public_jwk

from .conftest import LOCAL_BASE_URL, find_user
from .hostile import Endpoint, assert_refused, b64, b64json, counting_app, hmac_signed, raw_call, rs256

API_KEY = "hk_" + "7Qm2xZ9vLp4Rt8Wn3Yc6Bd1Fg5Hj0Ks2"
OTHER_APP_KEY = "hk_" + "0000000000000000000000000000aaaa"
CI_CLIENT_ID = "7f3e2d1c0b9a8f7e6d5c4b3a29180716.access"
ALICE = "alice@example.com"
REMOTE = ("203.0.113.7", 51000)

DROP = object()  # a claim value meaning "remove this claim"


@pytest.fixture(scope="module")
def hostile_issuer() -> Iterator[LocalIssuer]:
    """An issuer publishing two keys: the signing key and another (for kid-confusion)."""
    with LocalIssuer() as issuer:
        issuer.other_kid = issuer.add_key()  # type: ignore[attr-defined]
        yield issuer


def hostile_settings(issuer: LocalIssuer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_keys": (ApiKey.from_secret("operator", API_KEY),),
        "service_tokens": (ServiceToken("ci", CI_CLIENT_ID),),
        # A deployment's cooldown, not the test issuer's zero: the flood and unknown-kid rules are under test.
        "jwks_refresh_cooldown_seconds": 10.0,
    }
    values.update(overrides)
    return issuer.settings(**values)


@dataclass
class Target:
    client: TestClient
    endpoint: Endpoint


@pytest.fixture(scope="module")
def module_target(hostile_issuer: LocalIssuer) -> Iterator[Target]:
    app, endpoint = counting_app(hostile_settings(hostile_issuer))
    with TestClient(app, client=REMOTE) as client:
        yield Target(client, endpoint)


@pytest.fixture
def target(module_target: Target, register_secret: Callable[[str], str]) -> Target:
    register_secret(API_KEY)
    register_secret(OTHER_APP_KEY)
    module_target.endpoint.calls = 0
    return module_target


# --- building hostile tokens -------------------------------------------------------------------


def claims(issuer: LocalIssuer, **changes: Any) -> dict[str, Any]:
    """Cloudflare's identity-token claims for Alice, with ``changes`` applied (``DROP`` removes one)."""
    values = issuer.base_claims() | {"email": ALICE, "sub": "7335d417", "identity_nonce": "n0nce", "country": "US"}
    for name, value in changes.items():
        if value is DROP:
            values.pop(name, None)
        else:
            values[name] = value
    return values


def header(issuer: LocalIssuer, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"alg": "RS256", "kid": issuer.signing_kid, "typ": "JWT"}
    for name, value in changes.items():
        if value is DROP:
            values.pop(name, None)
        else:
            values[name] = value
    return values


def signed(issuer: LocalIssuer, payload: dict[str, Any] | bytes, **header_changes: Any) -> str:
    return rs256(issuer.private_key(), header(issuer, **header_changes), payload)


def alg_none(name: str, signature: str) -> Callable[[LocalIssuer], str]:
    def build(issuer: LocalIssuer) -> str:
        return f"{b64json(header(issuer, alg=name))}.{b64json(claims(issuer))}.{signature}"

    return build


def hmac_with_public_key(alg: str, form: str) -> Callable[[LocalIssuer], str]:
    def build(issuer: LocalIssuer) -> str:
        public = issuer.private_key().public_key()
        if form == "pem":
            secret = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        else:
            secret = json.dumps(public_jwk(issuer.signing_kid, issuer.private_key())).encode()
        return hmac_signed(secret, alg, header(issuer, alg=alg), claims(issuer))

    return build


def other_algorithm(alg: str) -> Callable[[LocalIssuer], str]:
    def build(issuer: LocalIssuer) -> str:
        key: Any = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else issuer.private_key()
        return jwt.encode(claims(issuer), key, algorithm=alg, headers={"kid": issuer.signing_kid})

    return build


def with_kid(kid: Any) -> Callable[[LocalIssuer], str]:
    return lambda issuer: signed(issuer, claims(issuer), kid=kid)


def attacker_key_header(name: str) -> Callable[[LocalIssuer], str]:
    """Signed by the attacker's key, with a header naming that key; the real signing kid is kept."""

    def build(issuer: LocalIssuer) -> str:
        attacker = new_rsa_key()
        values = {
            "jku": "http://127.0.0.1:9/attacker/jwks.json",
            "x5u": "http://127.0.0.1:9/attacker/cert.pem",
            "jwk": public_jwk("attacker", attacker),
            "x5c": [b64(b"not really a certificate")],
        }
        return rs256(attacker, header(issuer, **{name: values[name]}), claims(issuer))

    return build


def with_claims(**changes: Any) -> Callable[[LocalIssuer], str]:
    return lambda issuer: signed(issuer, claims(issuer, **changes))


def identity(email: Any) -> Callable[[LocalIssuer], str]:
    return with_claims(email=email)


def service(client_id: str) -> Callable[[LocalIssuer], str]:
    return lambda issuer: issuer.service_token(client_id)


def valid(issuer: LocalIssuer) -> str:
    return issuer.identity_token(ALICE)


def tampered(issuer: LocalIssuer) -> str:
    head, _, signature = issuer.identity_token("bob@example.com").split(".")
    return f"{head}.{b64json(claims(issuer))}.{signature}"


def signature_of_another_token(issuer: LocalIssuer) -> str:
    head, payload, _ = issuer.identity_token(ALICE).split(".")
    return f"{head}.{payload}.{issuer.identity_token('bob@example.com').split('.')[2]}"


def edited(edit: Callable[[str], str]) -> Callable[[LocalIssuer], str]:
    return lambda issuer: edit(valid(issuer))


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[LocalIssuer], str]
    status: int = 401
    reasons: tuple[str, ...] = field(default=())


M, ALG, KID, SIG = ("token_malformed",), ("algorithm_not_allowed",), ("unknown_key",), ("bad_signature",)
CLAIM, EXPIRED, EARLY = ("claim_invalid",), ("token_expired",), ("token_not_yet_valid",)
AUD, ISS = ("audience_mismatch",), ("issuer_mismatch",)

TOKEN_CASES = [
    # algorithm and header attacks
    *(Case(f"alg-{name}-unsigned", alg_none(name, ""), reasons=M) for name in ("none", "None", "NONE")),
    *(Case(f"alg-{name}-signed", alg_none(name, b64(b"sig")), reasons=ALG) for name in ("none", "None", "NONE")),
    *(
        Case(f"{alg}-with-public-key-{form}", hmac_with_public_key(alg, form), reasons=ALG)
        for alg in ("HS256", "HS384", "HS512")
        for form in ("pem", "jwk")
    ),
    *(Case(alg, other_algorithm(alg), reasons=ALG) for alg in ("RS384", "RS512", "PS256", "ES256")),
    Case("kid-absent", with_kid(DROP), reasons=KID),
    Case("kid-empty", with_kid(""), reasons=KID),
    Case("kid-number", with_kid(7), reasons=KID),
    Case("kid-huge", with_kid("k" * 5000), reasons=KID),
    Case("kid-of-another-published-key", lambda i: signed(i, claims(i), kid=i.other_kid), reasons=SIG),  # type: ignore[attr-defined]
    *(
        Case(f"{name}-names-attacker-key", attacker_key_header(name), reasons=SIG)
        for name in ("jku", "x5u", "jwk", "x5c")
    ),
    Case("crit", lambda i: signed(i, claims(i), crit=["exp"], exp=1), reasons=M),
    Case("crit-empty", lambda i: signed(i, claims(i), crit=[]), reasons=M),
    # claims and signature
    Case("tampered-after-signing", tampered, reasons=SIG),
    Case("signature-stripped", edited(lambda t: t.rsplit(".", 1)[0] + "."), reasons=M),
    Case("signature-removed", edited(lambda t: t.rsplit(".", 1)[0]), reasons=M),
    Case("signature-truncated", edited(lambda t: t[:-2]), reasons=SIG),
    Case("signature-halved", edited(lambda t: t[:-171]), reasons=(*SIG, *M)),
    Case("signature-of-another-token", signature_of_another_token, reasons=SIG),
    Case("exp-missing", with_claims(exp=DROP), reasons=CLAIM),
    Case("exp-past", lambda i: signed(i, claims(i, exp=int(i.base_claims()["iat"]) - 3600)), reasons=EXPIRED),
    Case("exp-string", with_claims(exp="9999999999"), reasons=CLAIM),
    Case("exp-true", with_claims(exp=True), reasons=CLAIM),
    Case("exp-false", with_claims(exp=False), reasons=CLAIM),
    Case("exp-null", with_claims(exp=None), reasons=CLAIM),
    Case("exp-huge-integer", with_claims(exp=10**400), reasons=CLAIM),
    Case(
        "exp-overflows-to-infinity",
        lambda i: signed(i, json.dumps(claims(i, exp=0)).replace('"exp": 0', '"exp": 1e999').encode()),
        reasons=CLAIM,
    ),
    Case("exp-infinity-literal", lambda i: signed(i, json.dumps(claims(i, exp=float("inf"))).encode()), reasons=M),
    Case("nbf-huge-integer", with_claims(nbf=10**400), reasons=CLAIM),
    Case("nbf-future", lambda i: signed(i, claims(i, nbf=int(i.base_claims()["iat"]) + 3600)), reasons=EARLY),
    Case("iat-future", lambda i: signed(i, claims(i, iat=int(i.base_claims()["iat"]) + 3600)), reasons=EARLY),
    Case("aud-missing", with_claims(aud=DROP), reasons=AUD),
    Case("aud-wrong", with_claims(aud=["0" * 64]), reasons=AUD),
    Case("aud-right-tag-among-junk", lambda i: signed(i, claims(i, aud=[1, None, {}, [], i.audience])), reasons=AUD),
    Case("iss-trailing-slash", lambda i: signed(i, claims(i, iss=i.issuer + "/")), reasons=ISS),
    Case("iss-other-case", lambda i: signed(i, claims(i, iss=i.issuer.upper())), reasons=ISS),
    Case("iss-missing", with_claims(iss=DROP), reasons=ISS),
    Case("email-missing", with_claims(email=DROP), reasons=CLAIM),
    Case("email-empty", identity(""), reasons=CLAIM),
    Case("email-spaces-only", identity("   "), reasons=CLAIM),
    Case("email-list", identity([ALICE]), reasons=CLAIM),
    Case("email-number", identity(42), reasons=CLAIM),
    Case("email-normalised-then-unknown", identity("  Mallory@Example.COM "), status=403, reasons=("unknown_user",)),
    Case(
        "service-token-unlisted", service("ffffffffffffffff.access"), status=403, reasons=("service_token_not_allowed",)
    ),
    # malformed input
    Case("two-segments", lambda i: "e30.e30", reasons=M),
    Case("four-segments", edited(lambda t: t + ".e30"), reasons=M),
    Case("empty-segments", lambda i: "..", reasons=M),
    Case("empty-header-segment", edited(lambda t: "." + t.split(".", 1)[1]), reasons=M),
    Case("invalid-base64", edited(lambda t: "e3+/" + t), reasons=M),
    Case("padded-header", edited(lambda t: t.replace(".", "==.", 1)), reasons=M),
    Case("padded-signature", edited(lambda t: t + "=="), reasons=M),
    Case("header-not-json", lambda i: f"{b64(b'not json')}.e30.{b64(b'sig')}", reasons=M),
    Case("header-array", lambda i: f"{b64json([1, 2])}.e30.{b64(b'sig')}", reasons=M),
    Case("header-deeply-nested", lambda i: f"{b64(b'[' * 6000 + b']' * 6000)}.e30.{b64(b'sig')}", reasons=M),
    Case("payload-not-json-signed", lambda i: signed(i, b"not json"), reasons=M),
    Case("payload-array-signed", lambda i: signed(i, b"[1, 2]"), reasons=M),
    # Python 3.12 and older stop at 1,000 levels (malformed); 3.13 parses this depth (bounded by the 16 KiB cap),
    # and the claims, which carry no issuer, are refused instead. Either way: 401, the app never reached.
    Case("payload-deeply-nested-signed", lambda i: signed(i, nested(1500)), reasons=(*M, "issuer_mismatch")),
    Case("payload-not-utf8-signed", lambda i: signed(i, b"\xff\xfe\xfd"), reasons=M),
    Case("one-megabyte", lambda i: "e30." + "A" * 1_000_000 + ".c2ln", reasons=("token_too_large",)),
    Case("bearer-prefix-inside-token-header", edited(lambda t: f"Bearer {t}"), reasons=M),
    Case("surrounding-spaces", edited(lambda t: f" {t} "), reasons=M),
]

# Unknown kids get their own app each (below): the first one in a cooldown is decided by a fetch (401), later ones
# in the same cooldown are undecided (503), and the module's shared app would make the answer depend on the order.
UNKNOWN_KID_CASES = [
    Case("kid-unknown", with_kid("b5e2" * 16), reasons=KID),
    Case("kid-path-traversal", with_kid("../../../../etc/passwd"), reasons=KID),
    Case("kid-sql", with_kid("' OR '1'='1' --"), reasons=KID),
]

ACCEPTED_CONTROLS = [
    Case("valid-identity-token", valid, status=200),
    Case("email-with-spaces-and-case-is-normalised", identity("  Alice@Example.COM "), status=200),
    Case("aud-as-string", lambda i: signed(i, claims(i, aud=i.audience)), status=200),
    Case("aud-right-tag-among-other-tags", lambda i: signed(i, claims(i, aud=["0" * 64, i.audience])), status=200),
    Case("nbf-within-leeway", lambda i: signed(i, claims(i, nbf=int(i.base_claims()["iat"]) + 10)), status=200),
    Case("listed-service-token", service(CI_CLIENT_ID), status=200),
]


@pytest.mark.parametrize("case", TOKEN_CASES, ids=[c.id for c in TOKEN_CASES])
def test_hostile_token_is_refused_before_the_app(target: Target, hostile_issuer: LocalIssuer, case: Case) -> None:
    token = case.build(hostile_issuer)
    response = target.client.get("/", headers={"Cf-Access-Jwt-Assertion": token})
    assert_refused(response.status_code, response.json(), target.endpoint, case.status, case.reasons)


@pytest.mark.parametrize("case", UNKNOWN_KID_CASES, ids=[c.id for c in UNKNOWN_KID_CASES])
def test_unknown_kid_is_refused_before_the_app(
    hostile_issuer: LocalIssuer, register_secret: Callable[[str], str], case: Case
) -> None:
    register_secret(API_KEY)
    app, endpoint = counting_app(hostile_settings(hostile_issuer))
    with TestClient(app, client=REMOTE) as client:
        fetches = hostile_issuer.fetch_count
        response = client.get("/", headers={"Cf-Access-Jwt-Assertion": case.build(hostile_issuer)})
        assert_refused(response.status_code, response.json(), endpoint, 401, KID)  # a fetch made for it says so
        assert hostile_issuer.fetch_count == fetches + 1
        # Another made-up kid within the cooldown cannot be fetched for: undecided, "try again" (it could be a key
        # Cloudflare just rotated in), never a fall-through to the valid API key beside it, and no fetch.
        headers = {
            "Cf-Access-Jwt-Assertion": with_kid("c6f3" * 16)(hostile_issuer),
            "Authorization": f"Bearer {API_KEY}",
        }
        response = client.get("/", headers=headers)
        assert_refused(response.status_code, response.json(), endpoint, 503, ("keys_unavailable",))
        assert 1 <= int(response.headers["retry-after"]) <= 10
        # The first kid, which a fetch did not list, stays a plain 401 for the rest of the cooldown.
        response = client.get("/", headers={"Cf-Access-Jwt-Assertion": case.build(hostile_issuer)})
        assert_refused(response.status_code, response.json(), endpoint, 401, KID)
        assert hostile_issuer.fetch_count == fetches + 1


@pytest.mark.parametrize("case", ACCEPTED_CONTROLS, ids=[c.id for c in ACCEPTED_CONTROLS])
def test_honest_token_reaches_the_app(target: Target, hostile_issuer: LocalIssuer, case: Case) -> None:
    response = target.client.get("/", headers={"Cf-Access-Jwt-Assertion": case.build(hostile_issuer)})
    assert response.status_code == 200
    assert target.endpoint.calls == 1


def test_hostile_token_never_falls_through_to_a_valid_api_key(target: Target, hostile_issuer: LocalIssuer) -> None:
    for case in TOKEN_CASES[:: max(1, len(TOKEN_CASES) // 12)]:
        headers = {"Cf-Access-Jwt-Assertion": case.build(hostile_issuer), "Authorization": f"Bearer {API_KEY}"}
        response = target.client.get("/", headers=headers)
        assert_refused(response.status_code, response.json(), target.endpoint, case.status, case.reasons)


# --- raw header bytes (no HTTP client would send these as given) -------------------------------


@pytest.mark.parametrize(
    ("headers", "reasons"),
    [
        ([(b"cf-access-jwt-assertion", "eyJhbGciOiJSUzI1NiJ9\u00e9.e30.c2ln".encode("latin-1"))], M),
        ([(b"cf-access-jwt-assertion", b"e30.e30.c2ln\xff\xfe")], M),
        ([(b"cf-access-jwt-assertion", b"e30.\x00\x01.c2ln")], (*M, *ALG)),
        ([(b"authorization", b"Bearer " + API_KEY.encode() + b"\xe9")], ("api_key_invalid",)),
        ([(b"authorization", b"Bearer \xff" + API_KEY.encode())], ("api_key_invalid",)),
    ],
    ids=["latin-1-letter-in-token", "high-bytes-after-token", "control-bytes", "key-plus-high-byte", "high-byte-key"],
)
@pytest.mark.anyio
async def test_non_ascii_header_bytes_are_refused(
    hostile_issuer: LocalIssuer,
    register_secret: Callable[[str], str],
    headers: list[tuple[bytes, bytes]],
    reasons: tuple[str, ...],
) -> None:
    register_secret(API_KEY)
    app, endpoint = counting_app(hostile_settings(hostile_issuer))
    response = await raw_call(app, headers)
    assert_refused(response.status, response.json(), endpoint, 401, reasons)


@pytest.mark.parametrize(
    ("name", "second", "reasons"),
    [
        (b"cf-access-jwt-assertion", "same", M),
        (b"cf-access-jwt-assertion", "other-user", M),
        (b"cf-access-jwt-assertion", "garbage-first", M),
        (b"authorization", "key-twice", ("api_key_invalid",)),
    ],
    ids=["token-twice", "two-different-tokens", "garbage-then-valid", "api-key-twice"],
)
@pytest.mark.anyio
async def test_credential_header_given_twice_is_refused(
    hostile_issuer: LocalIssuer,
    register_secret: Callable[[str], str],
    name: bytes,
    second: str,
    reasons: tuple[str, ...],
) -> None:
    register_secret(API_KEY)
    app, endpoint = counting_app(hostile_settings(hostile_issuer))
    good = valid(hostile_issuer).encode()
    if name == b"authorization":
        pair = [(name, b"Bearer " + API_KEY.encode())] * 2
    elif second == "same":
        pair = [(name, good), (name, good)]
    elif second == "other-user":
        pair = [(name, good), (name, hostile_issuer.identity_token("bob@example.com").encode())]
    else:
        pair = [(name, b"x.y.z"), (name, good)]
    response = await raw_call(app, pair)
    assert_refused(response.status, response.json(), endpoint, 401, reasons)
    # The same credential sent once is accepted, so the refusal is about the repetition.
    assert (await raw_call(app, pair[1:])).status == 200


# --- trust boundary ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "peer", "headers", "status"),
    [
        ("reverse-proxy", ("127.0.0.1", 40000), {}, 401),
        ("reverse-proxy", ("::1", 40000), {}, 401),
        ("reverse-proxy", ("::ffff:127.0.0.1", 40000), {}, 401),
        ("reverse-proxy", ("127.0.0.1", 40000), {"X-Forwarded-For": "127.0.0.1"}, 401),
        ("local", REMOTE, {"X-Forwarded-For": "127.0.0.1"}, 401),
        ("local", REMOTE, {"X-Real-IP": "127.0.0.1"}, 401),
        ("local", REMOTE, {"Forwarded": "for=127.0.0.1"}, 401),
        ("local", REMOTE, {"Forwarded": 'for="[::1]"'}, 401),
        ("local", REMOTE, {"X-Forwarded-For": "::1", "X-Real-IP": "::1", "Host": "localhost"}, 401),
        ("local", ("::ffff:203.0.113.7", 40000), {}, 401),
        ("local", ("localhost", 40000), {}, 401),
        ("local", ("testclient", 50000), {}, 401),
        ("local", ("127.0.0.1", 40000), {}, 200),
        ("local", ("::1", 40000), {}, 200),
        ("local", ("::ffff:127.0.0.1", 40000), {}, 200),
    ],
    ids=[
        "proxy-loopback-without-credentials",
        "proxy-ipv6-loopback",
        "proxy-ipv4-mapped-loopback",
        "proxy-loopback-with-xff",
        "local-remote-spoofs-xff",
        "local-remote-spoofs-x-real-ip",
        "local-remote-spoofs-forwarded",
        "local-remote-spoofs-forwarded-ipv6",
        "local-remote-spoofs-everything",
        "local-ipv4-mapped-remote",
        "local-hostname-is-not-an-address",
        "local-testclient-name",
        "local-ipv4-loopback-control",
        "local-ipv6-loopback-control",
        "local-ipv4-mapped-loopback-control",
    ],
)
def test_trust_comes_from_the_socket_peer_and_the_mode(
    hostile_issuer: LocalIssuer, mode: str, peer: tuple[str, int], headers: dict[str, str], status: int
) -> None:
    app, endpoint = counting_app(hostile_settings(hostile_issuer, exposure_mode=mode))
    with TestClient(app, base_url=LOCAL_BASE_URL, client=peer) as client:
        response = client.get("/", headers=headers)
    if status == 200:
        assert response.status_code == 200
        assert response.json() == {"kind": "local", "display_name": "local"}
        assert endpoint.calls == 1
    else:
        assert_refused(response.status_code, response.json(), endpoint, 401, ("no_credentials",))


@pytest.mark.parametrize("mode", ["local", "reverse-proxy"])
@pytest.mark.anyio
async def test_missing_client_is_not_loopback(hostile_issuer: LocalIssuer, mode: str) -> None:
    app, endpoint = counting_app(hostile_settings(hostile_issuer, exposure_mode=mode))
    response = await raw_call(app, [(b"x-forwarded-for", b"127.0.0.1")], client=None)
    assert_refused(response.status, response.json(), endpoint, 401, ("no_credentials",))


def near_misses() -> list[tuple[str, str]]:
    flip = {c: ("A" if c != "A" else "B") for c in API_KEY}
    return [
        ("one-short", API_KEY[:-1]),
        ("one-long", API_KEY + "x"),
        ("first-char-changed", flip[API_KEY[0]] + API_KEY[1:]),
        ("middle-char-changed", API_KEY[:17] + flip[API_KEY[17]] + API_KEY[18:]),
        ("last-char-changed", API_KEY[:-1] + flip[API_KEY[-1]]),
        ("upper-case", API_KEY.upper()),
        ("prefix-only", API_KEY[:3]),
        ("doubled", API_KEY * 2),
        ("huge", "k" * 10_000),
        ("other-apps-key", OTHER_APP_KEY),
        ("key-then-junk", f"{API_KEY} extra"),
        ("nul-inside", API_KEY[:5] + "\x00" + API_KEY[5:]),
        ("empty", ""),
        ("random-same-length", secrets.token_urlsafe(64)[: len(API_KEY)]),
    ]


@pytest.mark.parametrize(("name", "key"), near_misses(), ids=[name for name, _ in near_misses()])
@pytest.mark.anyio
async def test_near_miss_bearer_keys_are_refused(
    hostile_issuer: LocalIssuer, register_secret: Callable[[str], str], name: str, key: str
) -> None:
    register_secret(API_KEY)
    if len(key) >= 8:
        register_secret(key)
    app, endpoint = counting_app(hostile_settings(hostile_issuer, exposure_mode="local"))
    # Sent from loopback in local mode: a wrong key must not fall back to loopback trust either.
    response = await raw_call(app, [(b"authorization", f"Bearer {key}".encode("latin-1"))], client=("127.0.0.1", 1))
    assert_refused(response.status, response.json(), endpoint, 401, ("api_key_invalid",))
    control = await raw_call(app, [(b"authorization", f"Bearer {API_KEY}".encode())])
    assert control.status == 200


@pytest.mark.parametrize("scheme", ["Basic", "Token", "Bearer:", "Bearerx"])
def test_other_authorization_schemes_are_not_credentials(
    target: Target, register_secret: Callable[[str], str], scheme: str
) -> None:
    response = target.client.get("/", headers={"Authorization": f"{scheme} {API_KEY}"})
    assert_refused(response.status_code, response.json(), target.endpoint, 401, ("no_credentials",))


# --- claims shared by a session's requests (issue 10 finding 7) -------------------------------------


def test_a_request_cannot_change_the_claims_the_next_request_of_the_session_sees(hostile_issuer: LocalIssuer) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from cfaccess_mw import CloudflareAccessMiddleware

    async def meddle(request: Request) -> JSONResponse:
        claims = request.user.claims
        seen = {"groups": list(claims["groups"]), "org": dict(claims["org"]), "aud": list(claims["aud"])}
        changed = []
        changes: list[tuple[str, Callable[[], object]]] = [
            ("groups", lambda: claims["groups"].append("admins")),
            ("org", lambda: claims["org"].update(role="owner")),
            ("org.teams", lambda: claims["org"]["teams"].append("red")),
            ("aud", lambda: claims["aud"].append("0" * 64)),
        ]
        for name, change in changes:
            try:
                change()
            except TypeError:
                continue
            changed.append(name)
        return JSONResponse({"seen": seen, "changed": changed})

    app = Starlette(routes=[Route("/", meddle)])
    app.add_middleware(CloudflareAccessMiddleware, settings=hostile_settings(hostile_issuer), user_lookup=find_user)
    token = hostile_issuer.identity_token(ALICE, groups=["staff"], org={"teams": ["blue"]})
    with TestClient(app, client=REMOTE) as client:
        first = client.get("/", headers={"Cf-Access-Jwt-Assertion": token}).json()
        second = client.get("/", headers={"Cf-Access-Jwt-Assertion": token}).json()
    assert first["changed"] == []
    assert (
        second["seen"]
        == first["seen"]
        == {
            "groups": ["staff"],
            "org": {"teams": ["blue"]},
            "aud": [hostile_issuer.audience],
        }
    )
