"""Differential test for ES256: a preset verifier (``providers.PresetProfile``) against PyJWT as the oracle.

The verifier under test is the ``oidc`` preset pinned to ES256 (the same code path
Google IAP, Pomerium and ALB take, with ``aud`` checked). The oracle is PyJWT's
``jwt.decode(algorithms=["ES256"])`` after the project's documented extra rules,
restated here independently: the 16 KiB cap, ASCII, three segments, canonical
unpadded base64url, no ``NaN``/``Infinity``, ``alg`` exactly ES256, ``crit``/``b64``
refused, a string ``kid`` of 1-256 characters naming a published key, NumericDate
time claims within +-10**12, string ``sub``/``jti``, and ``email_verified``, when
present, ``true``. Time claims stay 3 s away from the edges, as in test_differential.py.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfaccess_mw.core.errors import InvalidToken, Reason
from cfaccess_mw.core.profiles import PresetProfile
from cfaccess_mw.core.providers import PRESETS, Provider
from cfaccess_mw.core.tokens import MAX_TOKEN_LENGTH
from cfaccess_mw.core.verifier import TokenVerifier
from cfaccess_mw.keys.jwks import PublicKey
from cfaccess_mw.testing.presets import new_ec_key, sign

from .test_differential import _json_values, _strict_json, _strict_segment, _time_claim

ISSUER = "https://idp.example.com/realms/diff"
CLIENT_ID = "diff-client"
LEEWAY = 30.0
KID = "es-1"
OTHER_KID = "es-2"
PRIVATE = {KID: new_ec_key(), OTHER_KID: new_ec_key()}
P384 = new_ec_key(ec.SECP384R1())


class PublishedKeys:
    def __init__(self) -> None:
        self._public: dict[str, PublicKey] = {kid: key.public_key() for kid, key in PRIVATE.items()}

    async def get_key(self, kid: str) -> PublicKey:
        return self.get_key_sync(kid)

    def get_key_sync(self, kid: str) -> PublicKey:
        key = self._public.get(kid)
        if key is None:
            raise InvalidToken(Reason.UNKNOWN_KEY, "unknown key", f"kid {kid!r} is not published")
        return key

    def cached_key(self, kid: str) -> PublicKey | None:
        return self._public.get(kid)


PROFILE = PresetProfile(
    PRESETS[Provider.OIDC], issuers=(ISSUER,), audiences=(CLIENT_ID,), algorithms=("ES256",), leeway=LEEWAY
)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def mint(header: Mapping[str, Any], claims: Any, signer: Any = None) -> str:
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    key = signer if signer is not None else PRIVATE[KID]
    return f"{head}.{body}.{b64url(sign(key, f'{head}.{body}'.encode('ascii')))}"


def valid_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "248289761001",
        "aud": CLIENT_ID,
        "exp": now + 600,
        "iat": now,
        "email": "alice@example.com",
        "email_verified": True,
    }
    claims.update(overrides)
    return claims


HEADER = {"alg": "ES256", "kid": KID, "typ": "JWT"}


def ours(token: str) -> dict[str, Any] | None:
    verifier = TokenVerifier(issuer=ISSUER, audiences=(CLIENT_ID,), keys=PublishedKeys(), cache_size=0, profile=PROFILE)
    try:
        return dict(verifier.verify_token_sync(token).claims)
    except InvalidToken:
        return None


def _numeric_date(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and -(10**12) < value < 10**12


def oracle(token: str) -> dict[str, Any] | None:
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return None
    segments = token.split(".")
    if len(segments) != 3:
        return None
    raw = [_strict_segment(s) for s in segments]
    if any(r is None for r in raw):
        return None
    header, payload = _strict_json(raw[0]), _strict_json(raw[1])  # type: ignore[arg-type]
    if header is None or payload is None:
        return None
    kid = header.get("kid")
    if header.get("alg") != "ES256" or "crit" in header or "b64" in header:
        return None
    if not isinstance(kid, str) or not 0 < len(kid) <= 256 or kid not in PRIVATE:
        return None
    if any(name in payload and not _numeric_date(payload[name]) for name in ("exp", "nbf", "iat")):
        return None
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            PRIVATE[kid].public_key(),
            algorithms=["ES256"],
            audience=CLIENT_ID,
            issuer=ISSUER,
            leeway=LEEWAY,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.PyJWTError:
        return None
    if "email_verified" in claims and claims["email_verified"] is not True and claims["email_verified"] != "true":
        return None
    return claims


def assert_same_decision(token: str) -> dict[str, Any] | None:
    expected = oracle(token)
    got = ours(token)
    assert got == expected, f"oracle {'accepts' if expected is not None else 'refuses'}, ours differs"
    return got


def test_an_es256_id_token_is_accepted_by_both() -> None:
    claims = valid_claims()
    assert assert_same_decision(mint(HEADER, claims)) == claims


def _resigned(token: str, signature: bytes) -> str:
    head, body, _ = token.split(".")
    return f"{head}.{body}.{b64url(signature)}"


N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
GOOD = mint(HEADER, valid_claims())

FIXED_REFUSALS = {
    "r=s=0 (psychic signature)": _resigned(GOOD, bytes(64)),
    "r=n, s=n": _resigned(GOOD, N.to_bytes(32, "big") * 2),
    "63-byte signature": _resigned(GOOD, bytes.fromhex("01" * 63)),
    "signed by a P-384 key under an ES256 kid": mint(HEADER, valid_claims(), signer=P384),
    "signed by the other published key": mint(HEADER, valid_claims(), signer=PRIVATE[OTHER_KID]),
    "alg RS256": mint({**HEADER, "alg": "RS256"}, valid_claims()),
    "alg ES384": mint({**HEADER, "alg": "ES384"}, valid_claims()),
    "alg none": mint({**HEADER, "alg": "none"}, valid_claims()),
    "no exp": mint(HEADER, {k: v for k, v in valid_claims().items() if k != "exp"}),
    "expired": mint(HEADER, valid_claims(exp=int(time.time()) - 3600)),
    "wrong audience": mint(HEADER, valid_claims(aud="other-client")),
    "wrong issuer": mint(HEADER, valid_claims(iss="https://idp.example.com/realms/other")),
    "string exp": mint(HEADER, valid_claims(exp=str(int(time.time()) + 600))),
    "email not verified": mint(HEADER, valid_claims(email_verified=False)),
    "crit": mint({**HEADER, "crit": ["exp"]}, valid_claims()),
}


@pytest.mark.parametrize("token", FIXED_REFUSALS.values(), ids=FIXED_REFUSALS.keys())
def test_both_refuse(token: str) -> None:
    assert oracle(token) is None
    assert ours(token) is None


CLAIM_CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.sampled_from([ISSUER, ISSUER + "/", "https://other.example.com", "", 5, None, "<absent>"]),
        "aud": st.sampled_from([CLIENT_ID, [CLIENT_ID], ["x", CLIENT_ID], ["x"], "x", [], 5, None, "<absent>"]),
        "exp": _time_claim("exp"),
        "nbf": _time_claim("nbf"),
        "iat": _time_claim("iat"),
        "sub": st.sampled_from(["", "s", 5, None, "<absent>"]),
        "email_verified": st.sampled_from([True, False, "true", "false", 1, None, "<absent>"]),
        "extra": _json_values(),
    },
)
HEADER_CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["ES256", "ES256", "es256", "ES384", "RS256", "HS256", "none", None, "<absent>"]),
        "kid": st.sampled_from([KID, KID, OTHER_KID, "nope", "", None, 5, "k" * 257, "<absent>"]),
        "crit": st.sampled_from([[], ["b64"]]),
        "b64": st.booleans(),
        "jwk": st.just({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}),
    },
)


def _apply(base: dict[str, Any], changes: Mapping[str, Any], now: float) -> dict[str, Any]:
    result = dict(base)
    for name, value in changes.items():
        if value == "<absent>":
            result.pop(name, None)
        elif isinstance(value, tuple) and value[0] == "offset":
            result[name] = now + value[1] if isinstance(value[1], float) else int(now) + value[1]
        elif isinstance(value, tuple):
            result[name] = value[1]
        else:
            result[name] = value
    return result


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claim_changes=CLAIM_CHANGES, header_changes=HEADER_CHANGES, signer=st.sampled_from(["right", "other", "p384"]))
def test_generated_es256_tokens_get_the_same_decision(
    claim_changes: dict[str, Any], header_changes: dict[str, Any], signer: str
) -> None:
    now = time.time()
    header = _apply(HEADER, header_changes, now)
    claims = _apply(valid_claims(), claim_changes, now)
    kid = header.get("kid")
    key = PRIVATE.get(kid) if isinstance(kid, str) else None
    if signer == "other" or key is None:
        key = PRIVATE[OTHER_KID] if key is PRIVATE[KID] else PRIVATE[KID]
    elif signer == "p384":
        key = P384
    assert_same_decision(mint(header, claims, signer=key))


@settings(max_examples=150, deadline=None)
@given(position=st.integers(min_value=0), char=st.sampled_from(list("AQgw-_=+/.x0 ")))
def test_tampered_es256_tokens_get_the_same_decision(position: int, char: str) -> None:
    i = position % len(GOOD)
    tampered = GOOD[:i] + char + GOOD[i + 1 :]
    decision = assert_same_decision(tampered)
    if tampered != GOOD:
        assert decision is None
