"""Token verification: each check refuses on its own, with its own reason, against real keys over real HTTP."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from cfaccess_mw.core.errors import AuthUnavailable, InvalidToken, Reason
from cfaccess_mw.core.tokens import MAX_TOKEN_LENGTH, b64url_decode, decode_unverified, human_duration
from cfaccess_mw.core.verifier import KEY_TAIL, TokenVerifier
from cfaccess_mw.keys.jwks import JWKSClient
from cfaccess_mw.testing import LocalIssuer, new_rsa_key, public_jwk

from .conftest import Clock

pytestmark = pytest.mark.anyio


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def make_verifier(issuer: LocalIssuer, now: float | None = None, **options: Any) -> TokenVerifier:
    clock: Callable[[], float] = (lambda: now) if now is not None else time.time
    options.setdefault("leeway", 30.0)
    return TokenVerifier(
        issuer=issuer.issuer,
        audiences=(issuer.audience,),
        keys=JWKSClient(issuer.certs_url),
        clock=clock,
        **options,
    )


def resign(issuer: LocalIssuer, header: dict[str, Any], payload_segment: str) -> str:
    """A token with an arbitrary payload segment, correctly RS256-signed by the issuer's key."""
    return resign_with(issuer.private_key(), header, payload_segment)


def resign_with(key: Any, header: dict[str, Any], payload_segment: str) -> str:
    """A token with an arbitrary payload segment, RS256-signed by ``key``."""
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.hashes import SHA256

    signing_input = f"{b64json(header)}.{payload_segment}"
    signature = key.sign(signing_input.encode(), PKCS1v15(), SHA256())
    return f"{signing_input}.{b64(signature)}"


async def refused(verifier: TokenVerifier, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    return caught.value


async def test_valid_identity_token_verifies_and_claims_are_read_only(shared_issuer: LocalIssuer) -> None:
    verifier = make_verifier(shared_issuer)
    claims = await verifier.verify(shared_issuer.identity_token("alice@example.com"))
    assert claims["email"] == "alice@example.com"
    with pytest.raises(TypeError):
        claims["email"] = "mallory@example.com"  # type: ignore[index]


async def test_repeated_token_is_served_from_cache_without_refetch(issuer: LocalIssuer) -> None:
    verifier = make_verifier(issuer)
    token = issuer.identity_token("alice@example.com")
    first = await verifier.verify(token)
    second = await verifier.verify(token)
    assert second is first
    assert verifier.cached_tokens == 1
    assert issuer.fetch_count == 1


async def test_token_cache_is_bounded(shared_issuer: LocalIssuer) -> None:
    verifier = make_verifier(shared_issuer, cache_size=3)
    for n in range(6):
        await verifier.verify(shared_issuer.identity_token(f"u{n}@example.com"))
    assert verifier.cached_tokens == 3


async def test_cached_token_is_refused_once_expired(shared_issuer: LocalIssuer) -> None:
    now = time.time()
    clock = [now]
    verifier = TokenVerifier(
        issuer=shared_issuer.issuer,
        audiences=(shared_issuer.audience,),
        keys=JWKSClient(shared_issuer.certs_url),
        leeway=0,
        clock=lambda: clock[0],
    )
    token = shared_issuer.identity_token("alice@example.com", lifetime=60)
    await verifier.verify(token)
    clock[0] = now + 120
    err = await refused(verifier, token)
    assert err.reason is Reason.TOKEN_EXPIRED
    assert verifier.cached_tokens == 0


async def test_cached_token_is_refused_once_its_key_is_withdrawn(issuer: LocalIssuer) -> None:
    monotonic = [0.0]
    keys = JWKSClient(issuer.certs_url, cooldown_seconds=10, clock=lambda: monotonic[0])
    verifier = TokenVerifier(issuer=issuer.issuer, audiences=(issuer.audience,), keys=keys)
    old_kid = issuer.signing_kid
    token = issuer.identity_token("alice@example.com")
    await verifier.verify(token)
    issuer.rotate(keep_old=False)
    monotonic[0] = 11.0
    await keys.refresh()
    assert not keys.has_kid(old_kid)
    err = await refused(verifier, token)
    assert err.reason is Reason.UNKNOWN_KEY


@pytest.mark.parametrize("alg_name", ["none", "None", "NONE"])
@pytest.mark.parametrize("signature", ["", "c2lnbmF0dXJl"])
async def test_alg_none_is_refused(shared_issuer: LocalIssuer, alg_name: str, signature: str) -> None:
    header = {"alg": alg_name, "typ": "JWT", "kid": shared_issuer.signing_kid}
    claims = shared_issuer.base_claims() | {"email": "alice@example.com"}
    token = f"{b64json(header)}.{b64json(claims)}.{signature}"
    err = await refused(make_verifier(shared_issuer), token)
    assert err.reason in (Reason.ALGORITHM_NOT_ALLOWED, Reason.TOKEN_MALFORMED)
    if signature:
        assert err.reason is Reason.ALGORITHM_NOT_ALLOWED


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize("form", ["pem", "jwk"])
async def test_hmac_signed_with_the_public_key_is_refused(shared_issuer: LocalIssuer, alg: str, form: str) -> None:
    public = shared_issuer.private_key().public_key()
    if form == "pem":
        secret = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        secret = json.dumps(public_jwk(shared_issuer.signing_kid, shared_issuer.private_key())).encode()
    header = {"alg": alg, "typ": "JWT", "kid": shared_issuer.signing_kid}
    claims = shared_issuer.base_claims() | {"email": "alice@example.com"}
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    import hashlib
    import hmac

    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    token = f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), digest).digest())}"
    err = await refused(make_verifier(shared_issuer), token)
    assert err.reason is Reason.ALGORITHM_NOT_ALLOWED


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256"])
async def test_other_rsa_algorithms_are_refused(shared_issuer: LocalIssuer, alg: str) -> None:
    claims = shared_issuer.base_claims() | {"email": "alice@example.com"}
    token = jwt.encode(claims, shared_issuer.private_key(), algorithm=alg, headers={"kid": shared_issuer.signing_kid})
    err = await refused(make_verifier(shared_issuer), token)
    assert err.reason is Reason.ALGORITHM_NOT_ALLOWED


async def test_es256_token_is_refused(shared_issuer: LocalIssuer) -> None:
    claims = shared_issuer.base_claims() | {"email": "alice@example.com"}
    key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": shared_issuer.signing_kid})
    err = await refused(make_verifier(shared_issuer), token)
    assert err.reason is Reason.ALGORITHM_NOT_ALLOWED


@pytest.mark.parametrize("kid", [None, "", "../../etc/passwd", "' OR 1=1 --", "x" * 300, 42])
async def test_missing_or_unknown_kid_is_refused(issuer: LocalIssuer, kid: object) -> None:
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    token = resign(issuer, header, b64json(issuer.base_claims() | {"email": "alice@example.com"}))
    verifier = make_verifier(issuer)
    await verifier.keys.refresh()  # type: ignore[attr-defined]
    err = await refused(verifier, token)
    assert err.reason is Reason.UNKNOWN_KEY


async def test_kid_pointing_at_another_published_key_is_refused(issuer: LocalIssuer) -> None:
    other = issuer.add_key()
    claims = issuer.base_claims() | {"email": "alice@example.com"}
    token = issuer.mint(claims, headers={"kid": other})  # signed by the signing key, but names the other
    err = await refused(make_verifier(issuer), token)
    assert err.reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize("field", ["jku", "x5u", "jwk", "x5c"])
async def test_key_carrying_headers_are_ignored(shared_issuer: LocalIssuer, field: str) -> None:
    attacker = new_rsa_key()
    attacker_jwk = public_jwk("attacker", attacker)
    value = {"jku": "https://evil.example/jwks", "x5u": "https://evil.example/cert", "jwk": attacker_jwk}.get(
        field, ["MIIBIjAN"]
    )
    claims = shared_issuer.base_claims() | {"email": "alice@example.com"}
    forged = jwt.encode(claims, attacker, algorithm="RS256", headers={"kid": shared_issuer.signing_kid, field: value})
    err = await refused(make_verifier(shared_issuer), forged)
    assert err.reason is Reason.BAD_SIGNATURE


async def test_crit_header_is_refused(shared_issuer: LocalIssuer) -> None:
    claims = shared_issuer.base_claims() | {"email": "alice@example.com"}
    token = shared_issuer.mint(claims, headers={"crit": ["exp"], "exp": 1})
    err = await refused(make_verifier(shared_issuer), token)
    assert err.reason is Reason.TOKEN_MALFORMED


async def test_payload_tampered_after_signing_is_refused(shared_issuer: LocalIssuer) -> None:
    header, payload, signature = shared_issuer.identity_token("bob@example.com").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["email"] = "alice@example.com"
    err = await refused(make_verifier(shared_issuer), f"{header}.{b64json(claims)}.{signature}")
    assert err.reason is Reason.BAD_SIGNATURE


async def test_signature_from_another_token_is_refused(shared_issuer: LocalIssuer) -> None:
    header, payload, _ = shared_issuer.identity_token("bob@example.com").split(".")
    other_signature = shared_issuer.identity_token("alice@example.com").split(".")[2]
    err = await refused(make_verifier(shared_issuer), f"{header}.{payload}.{other_signature}")
    assert err.reason is Reason.BAD_SIGNATURE


async def test_truncated_signature_is_refused(shared_issuer: LocalIssuer) -> None:
    token = shared_issuer.identity_token("alice@example.com")
    err = await refused(make_verifier(shared_issuer), token[:-2])  # 255 bytes, canonically encoded
    assert err.reason is Reason.BAD_SIGNATURE


async def test_non_canonical_signature_encoding_is_refused(shared_issuer: LocalIssuer) -> None:
    token = shared_issuer.identity_token("alice@example.com")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    # A 256-byte signature ends in a 2-character group whose last character carries 4 unused bits.
    twin = token[:-1] + alphabet[last | 1]
    assert base64.urlsafe_b64decode(twin.split(".")[2] + "==") == base64.urlsafe_b64decode(token.split(".")[2] + "==")
    err = await refused(make_verifier(shared_issuer), twin)
    assert err.reason is Reason.TOKEN_MALFORMED


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda c: c.pop("exp"), Reason.CLAIM_INVALID),
        (lambda c: c.update(exp="9999999999"), Reason.CLAIM_INVALID),
        (lambda c: c.update(exp=True), Reason.CLAIM_INVALID),
        (lambda c: c.update(exp=None), Reason.CLAIM_INVALID),
        (lambda c: c.update(exp=10**400), Reason.CLAIM_INVALID),
        (lambda c: c.update(nbf=10**400), Reason.CLAIM_INVALID),
        (lambda c: c.update(exp=int(time.time()) - 3600), Reason.TOKEN_EXPIRED),
        (lambda c: c.update(nbf=int(time.time()) + 3600), Reason.TOKEN_NOT_YET_VALID),
        (lambda c: c.update(nbf="0"), Reason.CLAIM_INVALID),
        (lambda c: c.update(iat=int(time.time()) + 3600), Reason.TOKEN_NOT_YET_VALID),
        (lambda c: c.update(iat=[1]), Reason.CLAIM_INVALID),
        (lambda c: c.pop("aud"), Reason.AUDIENCE_MISMATCH),
        (lambda c: c.update(aud=["0" * 64]), Reason.AUDIENCE_MISMATCH),
        (lambda c: c.update(aud=[]), Reason.AUDIENCE_MISMATCH),
        (lambda c: c.update(aud={"a": 1}), Reason.AUDIENCE_MISMATCH),
        (lambda c: c.update(aud=[1, None, {}, c["aud"][0]]), Reason.AUDIENCE_MISMATCH),
        (lambda c: c.pop("iss"), Reason.ISSUER_MISMATCH),
        (lambda c: c.update(iss=c["iss"] + "/"), Reason.ISSUER_MISMATCH),
        (lambda c: c.update(iss=c["iss"].upper()), Reason.ISSUER_MISMATCH),
        (lambda c: c.update(iss="https://other-team.cloudflareaccess.com"), Reason.ISSUER_MISMATCH),
    ],
    ids=[
        "exp-missing",
        "exp-string",
        "exp-bool",
        "exp-null",
        "exp-too-large-for-a-float",
        "nbf-too-large-for-a-float",
        "exp-past",
        "nbf-future",
        "nbf-string",
        "iat-future",
        "iat-list",
        "aud-missing",
        "aud-wrong",
        "aud-empty-list",
        "aud-object",
        "aud-junk-types",
        "iss-missing",
        "iss-trailing-slash",
        "iss-case",
        "iss-other-team",
    ],
)
async def test_bad_claims_are_refused(
    shared_issuer: LocalIssuer, mutate: Callable[[dict[str, Any]], object], reason: Reason
) -> None:
    claims = shared_issuer.base_claims() | {"email": "alice@example.com"}
    mutate(claims)
    err = await refused(make_verifier(shared_issuer), shared_issuer.mint(claims))
    assert err.reason is reason


async def test_audience_may_be_a_string_or_a_list_with_any_configured_tag(shared_issuer: LocalIssuer) -> None:
    verifier = TokenVerifier(
        issuer=shared_issuer.issuer,
        audiences=("0" * 64, shared_issuer.audience),
        keys=JWKSClient(shared_issuer.certs_url),
    )
    as_string = shared_issuer.base_claims() | {"aud": shared_issuer.audience, "email": "a@example.com"}
    as_list = shared_issuer.base_claims() | {"aud": ["f" * 64, shared_issuer.audience], "email": "a@example.com"}
    assert (await verifier.verify(shared_issuer.mint(as_string)))["aud"] == shared_issuer.audience
    assert (await verifier.verify(shared_issuer.mint(as_list)))["email"] == "a@example.com"


async def test_leeway_admits_slightly_expired_and_slightly_early_tokens(shared_issuer: LocalIssuer) -> None:
    now = time.time()
    claims = shared_issuer.base_claims(now=now) | {"email": "a@example.com"}
    claims["exp"] = int(now) - 10
    claims["nbf"] = claims["iat"] = int(now) + 10
    assert await make_verifier(shared_issuer, now=now, leeway=30).verify(shared_issuer.mint(claims))
    err = await refused(make_verifier(shared_issuer, now=now, leeway=5), shared_issuer.mint(claims))
    assert err.reason is Reason.TOKEN_EXPIRED


async def test_expiry_message_says_how_long_ago(shared_issuer: LocalIssuer) -> None:
    token = shared_issuer.identity_token("a@example.com", lifetime=-180)
    err = await refused(make_verifier(shared_issuer, leeway=0), token)
    assert "3 minutes ago" in err.message


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", Reason.TOKEN_MALFORMED),
        ("abc", Reason.TOKEN_MALFORMED),
        ("a.b", Reason.TOKEN_MALFORMED),
        ("a.b.c.d", Reason.TOKEN_MALFORMED),
        ("..", Reason.TOKEN_MALFORMED),
        ("e30..c2ln", Reason.TOKEN_MALFORMED),
        ("e30=.e30.c2ln", Reason.TOKEN_MALFORMED),
        ("e3+0.e30.c2ln", Reason.TOKEN_MALFORMED),
        ("ZQ.e30.c2ln", Reason.TOKEN_MALFORMED),  # header "e": not JSON
        ("W10.e30.c2ln", Reason.TOKEN_MALFORMED),  # header []: not an object
        ("eyJhbGciOiJSUzI1NiJ9\u00e9.e30.c2ln", Reason.TOKEN_MALFORMED),
        ("x" * (MAX_TOKEN_LENGTH + 1), Reason.TOKEN_TOO_LARGE),
        ("e30." + "x" * 1_000_000 + ".c2ln", Reason.TOKEN_TOO_LARGE),
    ],
    ids=[
        "empty",
        "one-segment",
        "two-segments",
        "four-segments",
        "empty-segments",
        "empty-payload",
        "padded",
        "plus-sign",
        "header-not-json",
        "header-array",
        "non-ascii",
        "over-limit",
        "one-megabyte",
    ],
)
async def test_malformed_tokens_are_refused_before_any_key_lookup(
    issuer: LocalIssuer, token: str, reason: Reason
) -> None:
    err = await refused(make_verifier(issuer), token)
    assert err.reason is reason
    assert issuer.fetch_count == 0


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"exp": NaN}',
        b'{"exp": Infinity}',
        b"not json",
        b"[1, 2]",
        b"\xff\xfe",
        '{"email": "a@example.com"}'.encode("utf-16"),
        b'\xef\xbb\xbf{"email": "a@example.com"}',
        b'{"email": "a@example.com"}{}',
        b'{"email": "a@example.com"} x',
    ],
    ids=[
        "deeply-nested",
        "nan",
        "infinity",
        "not-json",
        "array",
        "not-utf8",
        "utf-16",
        "utf-8-bom",
        "trailing-object",
        "trailing-text",
    ],
)
async def test_signed_but_malformed_payload_is_refused(shared_issuer: LocalIssuer, payload: bytes) -> None:
    token = resign(shared_issuer, {"alg": "RS256", "kid": shared_issuer.signing_kid}, b64(payload))
    err = await refused(make_verifier(shared_issuer), token)
    assert err.reason is Reason.TOKEN_MALFORMED


@pytest.mark.parametrize("padding", [("", ""), (" \n", ""), ("", " \r\n\t"), ("\t", " ")])
async def test_json_whitespace_around_a_signed_payload_is_accepted(
    shared_issuer: LocalIssuer, padding: tuple[str, str]
) -> None:
    """JSON allows whitespace around the value (PyJWT accepts it too); the fast path without it must agree."""
    before, after = padding
    text = before + json.dumps(shared_issuer.base_claims() | {"email": "a@example.com"}) + after
    token = resign(shared_issuer, {"alg": "RS256", "kid": shared_issuer.signing_kid}, b64(text.encode()))
    assert (await make_verifier(shared_issuer).verify(token))["email"] == "a@example.com"


async def test_no_keys_at_all_is_unavailable_not_unauthorized(issuer: LocalIssuer) -> None:
    issuer.responder = lambda: (500, {}, b"down")
    with pytest.raises(AuthUnavailable) as caught:
        await make_verifier(issuer).verify(issuer.identity_token("a@example.com"))
    assert caught.value.status_code == 503


def test_decode_unverified_reads_header_and_claims(shared_issuer: LocalIssuer) -> None:
    header, claims = decode_unverified(shared_issuer.identity_token("a@example.com"))
    assert header["alg"] == "RS256"
    assert header["kid"] == shared_issuer.signing_kid
    assert claims["email"] == "a@example.com"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0 seconds"), (1, "1 second"), (59, "59 seconds"), (180, "3 minutes"), (7200, "2 hours")]
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


# --- the cache follows the keys, and keeps the sessions in use (issue 10 finding 6, issue 11 part 3) ------


def monotonic_verifier(issuer: LocalIssuer, clock: Clock, **options: Any) -> TokenVerifier:
    keys = JWKSClient(issuer.certs_url, cache_seconds=60, cooldown_seconds=10, clock=clock)
    return TokenVerifier(issuer=issuer.issuer, audiences=(issuer.audience,), keys=keys, **options)


async def settle(verifier: TokenVerifier) -> None:
    keys = verifier.keys
    assert isinstance(keys, JWKSClient)
    await keys.settle()


async def test_cached_token_is_verified_again_when_its_kid_is_republished_with_other_material(
    issuer: LocalIssuer,
) -> None:
    clock = Clock()
    verifier = monotonic_verifier(issuer, clock)
    kid = issuer.signing_kid
    token = issuer.identity_token("alice@example.com")
    await verifier.verify(token)
    impostor = new_rsa_key()
    document = json.dumps({"keys": [public_jwk(kid, impostor)]}).encode()
    issuer.responder = lambda: (200, {}, document)  # the same kid, other key material
    clock.now += 61
    await verifier.verify(token)  # still the old key: served, and a background refresh starts
    await settle(verifier)
    err = await refused(verifier, token)
    assert err.reason is Reason.BAD_SIGNATURE
    claims = issuer.base_claims() | {"email": "bob@example.com"}
    signed_by_new = resign_with(impostor, {"alg": "RS256", "kid": kid}, b64json(claims))
    assert (await verifier.verify(signed_by_new))["email"] == "bob@example.com"


async def test_cache_only_traffic_refreshes_the_keys_and_a_withdrawn_key_stops_its_tokens(issuer: LocalIssuer) -> None:
    clock = Clock()
    verifier = monotonic_verifier(issuer, clock)
    token = issuer.identity_token("alice@example.com")
    first = await verifier.verify(token)
    issuer.rotate(keep_old=False)  # Cloudflare withdraws the key
    clock.now += 61  # the key set outlives its lifetime while only this cached token arrives
    assert await verifier.verify(token) is first  # served from the cache, without waiting for the refresh
    await settle(verifier)
    assert issuer.fetch_count == 2
    err = await refused(verifier, token)
    assert err.reason is Reason.UNKNOWN_KEY


async def test_a_routine_refresh_keeps_cached_tokens(issuer: LocalIssuer) -> None:
    clock = Clock()
    verifier = monotonic_verifier(issuer, clock)
    token = issuer.identity_token("alice@example.com")
    first = await verifier.verify_token(token)
    for _ in range(3):
        clock.now += 61
        await verifier.verify_token(token)
        await settle(verifier)
    assert issuer.fetch_count == 4
    assert await verifier.verify_token(token) is first  # never verified again: the key object was kept


async def test_an_active_session_survives_a_burst_of_one_off_tokens_larger_than_the_cache(
    shared_issuer: LocalIssuer,
) -> None:
    verifier = make_verifier(shared_issuer, cache_size=8)
    session = shared_issuer.identity_token("alice@example.com")
    entry = await verifier.verify_token(session)
    for n in range(24):  # three times the cache: a crawler, or a fleet of CI jobs each with its own token
        await verifier.verify_token(shared_issuer.identity_token(f"ci-{n}@example.com"))
        if n % 4 == 3:  # the browser session keeps sending its token meanwhile
            assert await verifier.verify_token(session) is entry
    assert verifier.cached_tokens == 8
    assert await verifier.verify_token(session) is entry, "still cached: the one-off tokens were evicted first"


# --- claims are read-only all the way down (issue 10 finding 7) ---------------------------------------


async def test_claims_are_read_only_all_the_way_down(shared_issuer: LocalIssuer) -> None:
    import copy

    verifier = make_verifier(shared_issuer)
    custom: dict[str, Any] = {"groups": ["staff"], "org": {"teams": ["blue"], "level": 3}}
    token = shared_issuer.identity_token("alice@example.com", **custom)
    claims = await verifier.verify(token)
    attempts: list[Callable[[], object]] = [
        lambda: claims["groups"].append("admins"),
        lambda: claims["groups"].extend(["admins"]),
        lambda: claims["groups"].insert(0, "admins"),
        lambda: claims["groups"].__setitem__(0, "admins"),
        lambda: claims["groups"].__iadd__(["admins"]),
        lambda: claims["groups"].clear(),
        lambda: claims["aud"].pop(),
        lambda: claims["org"].__setitem__("level", 9),
        lambda: claims["org"].update(level=9),
        lambda: claims["org"].setdefault("admin", True),
        lambda: claims["org"].pop("level"),
        lambda: claims["org"]["teams"].append("red"),
    ]
    for attempt in attempts:
        with pytest.raises(TypeError):
            attempt()
    again = await verifier.verify(token)  # the cache hit every later request of this session gets
    assert again["groups"] == ["staff"]
    assert again["org"] == {"teams": ["blue"], "level": 3}
    assert again["aud"] == [shared_issuer.audience]
    assert isinstance(again["groups"], list)
    assert json.loads(json.dumps(dict(again))) == {**dict(again), **custom}
    mine = copy.deepcopy(dict(again))  # a copy is the app's own, and ordinary
    mine["groups"].append("admins")
    mine["org"]["teams"].append("red")
    assert again["groups"] == ["staff"]
    assert again["org"]["teams"] == ["blue"]


async def test_a_signed_payload_too_deep_to_make_read_only_is_malformed(shared_issuer: LocalIssuer) -> None:
    import inspect
    import sys

    # Python 3.11's JSON parser counts against the recursion limit and refuses first; from 3.12 it does not,
    # and making the claims read-only is what runs out. Either way: 401 malformed, never an exception.
    depth = 200
    deep = b'{"a":' * depth + b"1" + b"}" * depth
    claims = json.dumps(shared_issuer.base_claims() | {"email": "a@example.com"}).encode()
    payload = claims[:-1] + b', "deep": ' + deep + b"}"
    token = resign(shared_issuer, {"alg": "RS256", "kid": shared_issuer.signing_kid}, b64(payload))
    verifier = make_verifier(shared_issuer)
    await verifier.verify(token)  # fine at the usual recursion limit ...
    verifier = make_verifier(shared_issuer)
    await verifier.keys.refresh()  # type: ignore[attr-defined]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + depth // 2)
    try:
        err = await refused(verifier, token)  # ... refused, never a crash, when it cannot be parsed or frozen
    finally:
        sys.setrecursionlimit(limit)
    assert err.reason is Reason.TOKEN_MALFORMED


class _EvictingKeys:
    """A key source that, while the verifier asks it about a cached token, lets "another thread" evict that
    token from the cache: the interleaving two WSGI threads can produce between a cache get and its move."""

    def __init__(self, inner: Any, evict: Callable[[], None]) -> None:
        self.inner = inner
        self.evict = evict

    def cached_key(self, kid: str) -> Any:
        self.evict()
        return self.inner.cached_key(kid)

    async def get_key(self, kid: str) -> Any:
        return await self.inner.get_key(kid)

    def get_key_sync(self, kid: str) -> Any:
        return self.inner.get_key_sync(kid)


def test_a_cache_entry_evicted_by_another_thread_meanwhile_is_no_error(shared_issuer: LocalIssuer) -> None:
    keys = JWKSClient(shared_issuer.certs_url)
    assert keys.refresh_sync()
    token = shared_issuer.identity_token("a@example.com")
    verifier = TokenVerifier(issuer=shared_issuer.issuer, audiences=(shared_issuer.audience,), keys=keys)
    first = verifier.verify_token_sync(token)
    verifier.keys = _EvictingKeys(keys, lambda: verifier._cache.clear())
    assert verifier.cached(token) is first  # before: KeyError from move_to_end, a 500 (503 under WSGI)
    assert verifier.cached_tokens == 0


def test_overwriting_a_cached_token_evicts_nothing(shared_issuer: LocalIssuer) -> None:
    keys = JWKSClient(shared_issuer.certs_url)
    assert keys.refresh_sync()
    verifier = TokenVerifier(issuer=shared_issuer.issuer, audiences=(shared_issuer.audience,), keys=keys, cache_size=2)
    one, two = (shared_issuer.identity_token(f"{n}@example.com") for n in ("one", "two"))
    verifier.verify_token_sync(one)
    verifier.verify_token_sync(two)
    signed = verifier.check(two)
    verifier.finish(signed, keys.get_key_sync(signed.kid))  # verified again, stored again
    assert verifier.cached(one) is not None, "the other entry was evicted to make room for an overwrite"


def test_a_token_sharing_another_ones_tail_is_never_answered_for_it(shared_issuer: LocalIssuer) -> None:
    """The cache is keyed by a token's last characters and checks the whole token: a crafted token ending like a
    cached one gets no answer from the cache, and does not displace the genuine entry by failing."""
    keys = JWKSClient(shared_issuer.certs_url)
    assert keys.refresh_sync()
    verifier = TokenVerifier(issuer=shared_issuer.issuer, audiences=(shared_issuer.audience,), keys=keys)
    genuine = shared_issuer.identity_token("alice@example.com")
    entry = verifier.verify_token_sync(genuine)
    other = shared_issuer.identity_token("mallory@example.com")
    crafted = other.rsplit(".", 1)[0] + "." + genuine.rsplit(".", 1)[1]  # mallory's claims, alice's signature
    assert crafted[-KEY_TAIL:] == genuine[-KEY_TAIL:]
    for form in (crafted, crafted.encode()):
        assert verifier.cached(form) is None
        with pytest.raises(InvalidToken) as refused:
            verifier.verify_token_sync(form)  # type: ignore[arg-type]
        assert refused.value.reason is Reason.BAD_SIGNATURE
    assert verifier.cached(genuine) is entry


def test_a_header_token_is_cached_by_its_bytes_and_decoded_only_when_verified(shared_issuer: LocalIssuer) -> None:
    keys = JWKSClient(shared_issuer.certs_url)
    assert keys.refresh_sync()
    verifier = TokenVerifier(issuer=shared_issuer.issuer, audiences=(shared_issuer.audience,), keys=keys)
    token = shared_issuer.identity_token("alice@example.com")
    entry = verifier.verify_fresh_sync(token.encode())
    assert entry.claims["email"] == "alice@example.com"
    assert verifier.cached(token.encode()) is entry
    assert verifier.cached(token) is None  # the text is another key: verified (and cached) on its own
    assert verifier.verify_token_sync(token) is not entry
    assert verifier.cached_tokens == 2


def test_eviction_spares_the_entries_in_use(shared_issuer: LocalIssuer) -> None:
    """CLOCK: a hit marks its entry; a fresh token needing room evicts the oldest unmarked entry, and a marked
    one is unmarked and kept once (used again, it is kept again)."""
    keys = JWKSClient(shared_issuer.certs_url)
    assert keys.refresh_sync()
    verifier = TokenVerifier(issuer=shared_issuer.issuer, audiences=(shared_issuer.audience,), keys=keys, cache_size=2)
    session, one_off, *later = (shared_issuer.identity_token(f"{n}@example.com") for n in range(5))
    verifier.verify_token_sync(session)
    verifier.verify_token_sync(one_off)
    for token in later:
        assert verifier.cached(session) is not None, "the session was evicted although in use"
        verifier.verify_token_sync(token)
    assert verifier.cached(one_off) is None
    assert verifier.cached(later[0]) is None
    assert verifier.cached(later[-1]) is not None
    assert verifier.cached_tokens == 2


def test_eviction_ends_when_every_entry_is_marked(shared_issuer: LocalIssuer) -> None:
    keys = JWKSClient(shared_issuer.certs_url)
    assert keys.refresh_sync()
    verifier = TokenVerifier(issuer=shared_issuer.issuer, audiences=(shared_issuer.audience,), keys=keys, cache_size=3)
    tokens = [shared_issuer.identity_token(f"{n}@example.com") for n in range(4)]
    for token in tokens[:3]:
        verifier.verify_token_sync(token)
        assert verifier.cached(token) is not None  # every entry marked
    verifier.verify_token_sync(tokens[3])
    assert verifier.cached_tokens == 3
    assert verifier.cached(tokens[0]) is None, "the oldest goes once one pass unmarked them all"


def _canonical_base64url_of(segment: str) -> bytes | None:
    """The bytes whose canonical unpadded base64url encoding is exactly ``segment``, or None: the definition
    b64url_decode must meet, computed by the standard library's encoder (no decoder trusted)."""
    if not segment or len(segment) % 4 == 1 or not segment.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except ValueError:
        return None
    return raw if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == segment else None


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet="AQgwBz09-_+/=*.é \n\t\x00", max_size=12))
def test_base64url_is_exactly_the_canonical_unpadded_alphabet(segment: str) -> None:
    expected = _canonical_base64url_of(segment)
    try:
        got = b64url_decode(segment, "payload")
    except InvalidToken:
        assert expected is None, f"{segment!r} is canonical base64url of {expected!r} but was refused"
        return
    assert got == expected
