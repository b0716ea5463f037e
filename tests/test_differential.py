"""Differential tests: our verifier (``cfaccess_mw.tokens``) against PyJWT as the oracle.

Our verifier is built on ``cryptography`` directly, for speed and for stricter checks. These tests
prove it accepts and refuses exactly the tokens that PyJWT's ``jwt.decode`` does, once the oracle
also applies the project's documented extra rules (written out again here, independently, in
:func:`oracle`): a 16 KiB size cap, ASCII only, exactly three segments, canonical unpadded
base64url, no ``NaN``/``Infinity`` in the JSON, ``alg`` exactly RS256, ``crit`` and ``b64``
refused (RFC 7797 requires ``b64`` to be listed in ``crit``), a non-empty string ``kid`` of at
most 256 characters naming a published key, and time claims that are finite JSON numbers (no
strings, booleans or integers beyond a double's range).

Time claims are generated away from the expiry/not-before edges (at least 3 s from them), where
PyJWT's ``int()`` truncation and its ``<=`` versus our ``>`` legitimately differ by a second.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cfaccess_mw.core.errors import InvalidToken, Reason
from cfaccess_mw.core.tokens import MAX_TOKEN_LENGTH
from cfaccess_mw.core.verifier import TokenVerifier

ISSUER = "https://diff-team.cloudflareaccess.com"
AUDIENCE = "5f0c" * 16
LEEWAY = 30.0
KID = "a1" * 32
OTHER_KID = "b2" * 32
_PRIVATE: dict[str, RSAPrivateKey] = {}


def private_key(kid: str) -> RSAPrivateKey:
    """Two real RSA-2048 keys, made once per test session (module-level so hypothesis can reuse them)."""
    if kid not in _PRIVATE:
        _PRIVATE[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _PRIVATE[kid]


def published() -> dict[str, RSAPublicKey]:
    return {kid: private_key(kid).public_key() for kid in (KID, OTHER_KID)}


class PublishedKeys:
    """The key source our verifier reads: the two published keys, nothing fetched."""

    def __init__(self) -> None:
        self.keys = published()

    async def get_key(self, kid: str) -> RSAPublicKey:
        return self.get_key_sync(kid)

    def get_key_sync(self, kid: str) -> RSAPublicKey:
        key = self.keys.get(kid)
        if key is None:
            raise InvalidToken(Reason.UNKNOWN_KEY, "unknown key", f"kid {kid!r} is not published")
        return key

    def cached_key(self, kid: str) -> RSAPublicKey | None:
        return self.keys.get(kid)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def mint(header: Mapping[str, Any], claims: Any, signer: str = KID) -> str:
    """Sign any header and payload as given (RS256 with ``signer``'s key), whatever the header claims."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    signature = private_key(signer).sign(f"{head}.{body}".encode("ascii"), padding.PKCS1v15(), SHA256())
    return f"{head}.{body}.{b64url(signature)}"


def valid_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": [AUDIENCE],
        "email": "alice@example.com",
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "iss": ISSUER,
        "type": "app",
        "identity_nonce": "6ei69kawdKzMIAPF",
        "sub": "7335d417-61da-459d-899c-0a01c76a3a9a",
        "country": "US",
    }
    claims.update(overrides)
    return claims


HEADER = {"alg": "RS256", "kid": KID, "typ": "JWT"}


def ours(token: str) -> dict[str, Any] | None:
    """Our decision: the verified claims, or ``None`` for a refusal (``InvalidToken``, nothing else)."""
    verifier = TokenVerifier(issuer=ISSUER, audiences=(AUDIENCE,), keys=PublishedKeys(), leeway=LEEWAY, cache_size=0)
    try:
        return dict(verifier.verify_token_sync(token).claims)  # the decision the async path makes too
    except InvalidToken:
        return None


# --- the oracle: PyJWT plus the project's stricter rules, restated independently ------------------

_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def _strict_segment(segment: str) -> bytes | None:
    if not segment or not set(segment) <= _ALPHABET or len(segment) % 4 == 1:
        return None
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return raw if b64url(raw) == segment else None


def _strict_json(raw: bytes) -> dict[str, Any] | None:
    try:
        # UTF-8 only (RFC 7519 section 7.2); json.loads on bytes would also take UTF-16 and UTF-32.
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _numeric_date(value: Any) -> bool:
    # The project's rule: a JSON number of seconds within +-10**12 (about the year 33658), which also
    # refuses NaN, infinities and integers too large for a float.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return -(10**12) < value < 10**12


def oracle(token: str) -> dict[str, Any] | None:
    """PyJWT's decision, after the project's extra rules (see the module docstring)."""
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
    if header.get("alg") != "RS256" or "crit" in header or "b64" in header:
        return None
    if not isinstance(kid, str) or not 0 < len(kid) <= 256 or kid not in published():
        return None
    if any(name in payload and not _numeric_date(payload[name]) for name in ("exp", "nbf", "iat")):
        return None
    try:
        return jwt.decode(
            token,
            published()[kid],
            algorithms=["RS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.PyJWTError:
        return None


def assert_same_decision(token: str) -> dict[str, Any] | None:
    expected = oracle(token)
    got = ours(token)
    assert got == expected, f"oracle {'accepts' if expected is not None else 'refuses'}, ours differs"
    return got


# --- fixed cases: each one a rule, with the decision both sides must reach ----------------------------


def test_a_cloudflare_shaped_token_is_accepted_by_both() -> None:
    claims = valid_claims()
    assert assert_same_decision(mint(HEADER, claims)) == claims


def test_a_service_token_with_empty_sub_is_accepted_by_both() -> None:
    claims = valid_claims(common_name="0123abcd.access", sub="")
    del claims["email"]
    assert assert_same_decision(mint(HEADER, claims)) == claims


FIXED_REFUSALS = {
    "wrong key for the kid": mint(HEADER, valid_claims(), signer=OTHER_KID),
    "unknown kid": mint({**HEADER, "kid": "c3" * 32}, valid_claims()),
    "no kid": mint({"alg": "RS256", "typ": "JWT"}, valid_claims()),
    "integer kid": mint({**HEADER, "kid": 7}, valid_claims()),
    "alg none": mint({**HEADER, "alg": "none"}, valid_claims()),
    "alg HS256": mint({**HEADER, "alg": "HS256"}, valid_claims()),
    "crit present": mint({**HEADER, "crit": ["exp"]}, valid_claims()),
    "crit b64": mint({**HEADER, "crit": ["b64"], "b64": True}, valid_claims()),
    "b64 false without crit": mint({**HEADER, "b64": False}, valid_claims()),
    "b64 true without crit": mint({**HEADER, "b64": True}, valid_claims()),
    "expired": mint(HEADER, valid_claims(exp=int(time.time()) - 3600)),
    "not yet valid": mint(HEADER, valid_claims(nbf=int(time.time()) + 3600)),
    "issued in the future": mint(HEADER, valid_claims(iat=int(time.time()) + 3600)),
    "string exp": mint(HEADER, valid_claims(exp=str(int(time.time()) + 600))),
    "boolean iat": mint(HEADER, valid_claims(iat=True)),
    "exp beyond a double": mint(HEADER, valid_claims(exp=10**400)),
    "nbf beyond a double": mint(HEADER, valid_claims(nbf=-(2**1100))),
    "NaN exp": mint(HEADER, valid_claims(exp=float("nan"))),
    "Infinity in an extra claim": mint(HEADER, valid_claims(extra=float("inf"))),
    "no exp": mint(HEADER, {k: v for k, v in valid_claims().items() if k != "exp"}),
    "wrong issuer": mint(HEADER, valid_claims(iss="https://other.cloudflareaccess.com")),
    "issuer with a trailing slash": mint(HEADER, valid_claims(iss=ISSUER + "/")),
    "no issuer": mint(HEADER, {k: v for k, v in valid_claims().items() if k != "iss"}),
    "wrong audience": mint(HEADER, valid_claims(aud=["0" * 64])),
    "empty audience list": mint(HEADER, valid_claims(aud=[])),
    "audience list with a number": mint(HEADER, valid_claims(aud=[AUDIENCE, 5])),
    "integer sub": mint(HEADER, valid_claims(sub=12345)),
    "list jti": mint(HEADER, valid_claims(jti=["x"])),
    "payload is a list": mint(HEADER, [valid_claims()]),
    "oversized but validly signed": mint(HEADER, valid_claims(pad="x" * MAX_TOKEN_LENGTH)),
    "empty string": "",
    "two segments": "a.b",
    "four segments": mint(HEADER, valid_claims()) + ".x",
}


@pytest.mark.parametrize("token", FIXED_REFUSALS.values(), ids=FIXED_REFUSALS.keys())
def test_both_refuse(token: str) -> None:
    assert oracle(token) is None
    assert ours(token) is None


def _with_segment(token: str, index: int, segment: str) -> str:
    parts = token.split(".")
    parts[index] = segment
    return ".".join(parts)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["header", "payload", "signature"])
def test_padded_segments_are_refused_by_both(index: int) -> None:
    token = mint(HEADER, valid_claims(note="ab"))  # payload length chosen so padding is needed somewhere
    segment = token.split(".")[index]
    padded = segment + "=" * (-len(segment) % 4 or 4)
    assert oracle(_with_segment(token, index, padded)) is None
    assert ours(_with_segment(token, index, padded)) is None


def _non_canonical(segment: str) -> str | None:
    """The same bytes with non-zero unused bits in the last character, or None if there are none."""
    unused = {2: 4, 3: 2}.get(len(segment) % 4)
    if unused is None:
        return None
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(segment[-1])
    return segment[:-1] + alphabet[last | 1]


def test_non_canonical_base64url_is_refused_by_both() -> None:
    checked = 0
    for note in ("", "a", "ab", "abc"):
        token = mint(HEADER, valid_claims(note=note))
        for index, segment in enumerate(token.split(".")):
            changed = _non_canonical(segment)
            if changed is not None and changed != segment:
                checked += 1
                assert oracle(_with_segment(token, index, changed)) is None
                assert ours(_with_segment(token, index, changed)) is None
    assert checked >= 3


# --- hypothesis: generated headers, claims and tamperings ----------------------------------------------

EDGE_MARGIN = 3  # seconds kept away from each time edge


def _time_claim(name: str) -> st.SearchStrategy[Any]:
    """Offsets from now (applied at build time), or odd values; never within EDGE_MARGIN of an edge."""
    edge = -LEEWAY if name == "exp" else LEEWAY
    offsets = st.one_of(
        st.integers(-(10**8), 10**8),
        st.floats(-1e8, 1e8, allow_nan=False),
        st.sampled_from([edge - 2 * EDGE_MARGIN, edge + 2 * EDGE_MARGIN, 0, 3600]),
    ).filter(lambda offset: abs(offset - edge) > EDGE_MARGIN)
    odd: st.SearchStrategy[object] = st.sampled_from(
        ["1700000000", "", True, False, None, [], {}, 10**400, -(2**1100), 1e308]
    )
    return st.one_of(offsets.map(lambda offset: ("offset", offset)), odd.map(lambda value: ("value", value)))


def _json_values(finite: bool = False) -> st.SearchStrategy[Any]:
    """Any JSON value; infinities (written as ``Infinity``, which both sides refuse) unless ``finite``."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=not finite),
        st.text(max_size=12),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=6,
    )


CLAIM_CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.sampled_from(
            [
                ISSUER,
                ISSUER + "/",
                ISSUER.upper(),
                "https://other.cloudflareaccess.com",
                "",
                5,
                None,
                [ISSUER],
                "<absent>",
            ]
        ),
        "aud": st.sampled_from(
            [
                AUDIENCE,
                [AUDIENCE],
                [AUDIENCE, "x"],
                ["x", AUDIENCE],
                ["x"],
                "x",
                [],
                "",
                [AUDIENCE, 5],
                5,
                None,
                {"aud": AUDIENCE},
                "<absent>",
            ]
        ),
        "exp": _time_claim("exp"),
        "nbf": _time_claim("nbf"),
        "iat": _time_claim("iat"),
        "sub": st.sampled_from(["", "7335d417", 5, None, ["s"], "<absent>"]),
        "jti": st.sampled_from(["j1", 5, None, {}, "<absent>"]),
        "email": st.one_of(st.text(max_size=20), st.integers(), st.none()),
        "extra": _json_values(),
    },
)

HEADER_CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "RS256", "rs256", "RS384", "PS256", "HS256", "none", "", None, 5, "<absent>"]),
        "kid": st.sampled_from([KID, KID, OTHER_KID, "c3" * 32, "", None, 5, "k" * 257, "<absent>"]),
        "typ": st.sampled_from(["JWT", "at+jwt", None, "<absent>"]),
        "crit": st.sampled_from([[], ["b64"], ["exp"], "b64"]),
        "b64": st.booleans(),
        "jku": st.just("https://attacker.example/jwks"),
        "x5u": st.just("https://attacker.example/cert"),
        "jwk": st.just({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
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


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(SETTINGS, max_examples=300)  # the widest space: every header and claim field varies
@given(claim_changes=CLAIM_CHANGES, header_changes=HEADER_CHANGES, wrong_signer=st.booleans())
def test_generated_tokens_get_the_same_decision(
    claim_changes: dict[str, Any], header_changes: dict[str, Any], wrong_signer: bool
) -> None:
    now = time.time()
    header = _apply(HEADER, header_changes, now)
    claims = _apply(valid_claims(), claim_changes, now)
    signer = KID
    if header.get("kid") in (KID, OTHER_KID):
        signer = header["kid"] if not wrong_signer else ({KID, OTHER_KID} - {header["kid"]}).pop()
    assert_same_decision(mint(header, claims, signer=signer))


@SETTINGS
@given(
    email=st.text(min_size=1, max_size=40),
    extra=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in {*valid_claims(), "jti"}), _json_values(True), max_size=4
    ),
    lifetime=st.integers(EDGE_MARGIN + 1, 10**7),
    kid=st.sampled_from([KID, OTHER_KID]),
)
def test_generated_valid_tokens_are_accepted_with_the_same_claims(
    email: str, extra: dict[str, Any], lifetime: int, kid: str
) -> None:
    claims = valid_claims(email=email, exp=int(time.time()) + lifetime, **extra)
    token = mint({**HEADER, "kid": kid}, claims, signer=kid)
    assume(len(token) <= MAX_TOKEN_LENGTH)
    assert assert_same_decision(token) == claims


_TAMPER_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.! \n\t\x00é"


@SETTINGS
@given(
    action=st.sampled_from(["replace", "insert", "delete", "swap_segments", "truncate"]),
    position=st.integers(min_value=0),
    char=st.sampled_from(list(_TAMPER_CHARS)),
)
def test_tampered_tokens_get_the_same_decision(action: str, position: int, char: str) -> None:
    token = VALID_FOR_TAMPERING
    i = position % len(token)
    if action == "replace":
        tampered = token[:i] + char + token[i + 1 :]
    elif action == "insert":
        tampered = token[:i] + char + token[i:]
    elif action == "delete":
        tampered = token[:i] + token[i + 1 :]
    elif action == "swap_segments":
        h, p, s = token.split(".")
        tampered = ".".join([p, h, s] if position % 2 else [h, s, p])
    else:
        tampered = token[:i]
    decision = assert_same_decision(tampered)
    if tampered != token:
        assert decision is None  # canonical base64url is one-to-one: any other text breaks the signature


VALID_FOR_TAMPERING = mint(HEADER, valid_claims(exp=int(time.time()) + 10**6))
