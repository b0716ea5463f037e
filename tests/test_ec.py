"""ES256: the 64-byte signature form, the r/s range checks (CVE-2022-21449), and P-256-only keys from JWK and PEM."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.hashes import SHA256

from cfaccess_mw.core.ec import (
    MAX_PEM_BYTES,
    P256_ORDER,
    es256_der_signature,
    key_algorithm,
    parse_ec_jwk,
    parse_p256_pem,
    verify_signature,
)
from cfaccess_mw.core.errors import InvalidToken, Reason
from cfaccess_mw.core.providers import jwk_parser
from cfaccess_mw.keys.jwks import JWKSFetchError, parse_jwks
from cfaccess_mw.testing import new_rsa_key
from cfaccess_mw.testing.presets import new_ec_key, public_jwk, sign

KEY = new_ec_key()
MESSAGE = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0"


def raw(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def refusal(alg: str, key: Any, signature: bytes, message: bytes = MESSAGE) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        verify_signature(alg, key, signature, message, "k1")
    return caught.value


def test_a_real_es256_signature_verifies() -> None:
    verify_signature("ES256", KEY.public_key(), sign(KEY, MESSAGE), MESSAGE, "k1")


def test_a_signature_over_other_bytes_is_refused() -> None:
    err = refusal("ES256", KEY.public_key(), sign(KEY, MESSAGE), MESSAGE + b"x")
    assert err.reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("r", "s"),
    [(0, 0), (0, 1), (1, 0), (P256_ORDER, 1), (1, P256_ORDER), (P256_ORDER, P256_ORDER), (2**256 - 1, 2**256 - 1)],
    ids=["r=s=0", "r=0", "s=0", "r=n", "s=n", "r=s=n", "all-ones"],
)
def test_psychic_and_out_of_range_signatures_are_refused_before_cryptography(r: int, s: int) -> None:
    with pytest.raises(InvalidToken) as caught:
        es256_der_signature(raw(r, s))
    assert caught.value.reason is Reason.BAD_SIGNATURE
    assert "CVE-2022-21449" in caught.value.detail
    assert refusal("ES256", KEY.public_key(), raw(r, s)).reason is Reason.BAD_SIGNATURE


def test_r_and_s_just_inside_the_range_reach_the_verify() -> None:
    # n - 1 is allowed by the range check (the verify then refuses it as a forgery, not as out of range).
    assert es256_der_signature(raw(P256_ORDER - 1, 1))
    err = refusal("ES256", KEY.public_key(), raw(P256_ORDER - 1, 1))
    assert "CVE" not in err.detail


@pytest.mark.parametrize("length", [0, 63, 65, 70, 72, 96, 128])
def test_a_signature_of_any_other_length_is_refused(length: int) -> None:
    signature = (sign(KEY, MESSAGE) * 3)[:length]
    err = refusal("ES256", KEY.public_key(), signature)
    assert err.reason is Reason.BAD_SIGNATURE
    assert f"this one is {length}" in err.detail


def test_a_der_signature_is_refused_even_when_it_would_verify() -> None:
    der = KEY.sign(MESSAGE, ec.ECDSA(SHA256()))
    assert refusal("ES256", KEY.public_key(), der).reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP256K1(), ec.SECP521R1()], ids=lambda c: c.name)
def test_a_key_on_another_curve_never_verifies_es256(curve: ec.EllipticCurve) -> None:
    other = new_ec_key(curve)
    assert key_algorithm(other.public_key()) is None
    err = refusal("ES256", other.public_key(), sign(other, MESSAGE))
    assert err.reason is Reason.ALGORITHM_NOT_ALLOWED


def test_the_key_decides_the_algorithm_not_the_token() -> None:
    rsa_key = new_rsa_key()
    assert refusal("ES256", rsa_key.public_key(), sign(KEY, MESSAGE)).reason is Reason.ALGORITHM_NOT_ALLOWED
    assert refusal("RS256", KEY.public_key(), sign(rsa_key, MESSAGE)).reason is Reason.ALGORITHM_NOT_ALLOWED
    verify_signature("RS256", rsa_key.public_key(), sign(rsa_key, MESSAGE), MESSAGE, "k1")


# --- JWK -------------------------------------------------------------------------------------------


def test_a_p256_jwk_parses_to_the_same_key() -> None:
    jwk = public_jwk("k1", KEY)
    assert parse_ec_jwk(jwk, "k1").public_numbers() == KEY.public_key().public_numbers()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "change",
    [
        {"crv": "P-384"},
        {"crv": "secp256k1"},
        {"crv": None},
        {"alg": "RS256"},
        {"alg": "ES384"},
        {"d": "AAAA"},
        {"x": "AAAA"},
        {"x": None},
        {"y": 5},
        {"x": _b64(b"\x01" * 32) + "="},
        {"y": _b64(b"\x00" + b"\x01" * 32)},
        {"y": _b64(b"\x01" * 32)},  # 32 bytes, but not a point on the curve
    ],
    ids=lambda c: ",".join(f"{k}={str(v)[:12]}" for k, v in c.items()),
)
def test_unusable_ec_jwks_are_refused(change: dict[str, Any]) -> None:
    jwk = {**public_jwk("k1", KEY), **change}
    with pytest.raises(ValueError, match="kid 'k1'"):
        parse_ec_jwk(jwk, "k1")


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP256K1()], ids=lambda c: c.name)
def test_a_key_set_skips_keys_on_other_curves(curve: ec.EllipticCurve) -> None:
    other = public_jwk("other", new_ec_key(curve))
    keys, problems, _ = parse_jwks({"keys": [public_jwk("good", KEY), other]}, jwk_parser(("ES256",)))
    assert list(keys) == ["good"]
    assert any("other" in p for p in problems)


def test_an_es256_only_parser_skips_rsa_and_symmetric_keys() -> None:
    document = {
        "keys": [
            public_jwk("rsa", new_rsa_key()),
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AAAA"},
        ]
    }
    with pytest.raises(JWKSFetchError, match="no usable keys"):
        parse_jwks(document, jwk_parser(("ES256",)))
    keys, _, _ = parse_jwks(document, jwk_parser(("ES256", "RS256")))
    assert list(keys) == ["rsa"]


def test_a_parser_refuses_keys_not_for_signing() -> None:
    with pytest.raises(ValueError, match="use"):
        jwk_parser(("ES256",))({**public_jwk("k1", KEY), "use": "enc"})


# --- PEM (AWS ALB) ---------------------------------------------------------------------------------


def _pem(key: Any) -> bytes:
    public = key.public_key()
    result: bytes = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return result


def test_a_p256_pem_parses() -> None:
    assert parse_p256_pem(_pem(KEY), "k").public_numbers() == KEY.public_key().public_numbers()


@pytest.mark.parametrize(
    "pem",
    [
        _pem(new_ec_key(ec.SECP384R1())),
        _pem(new_ec_key(ec.SECP256K1())),
        _pem(new_rsa_key()),
        b"not a pem",
        b"",
        b"-----BEGIN PUBLIC KEY-----\n" + b"A" * MAX_PEM_BYTES + b"\n-----END PUBLIC KEY-----\n",
    ],
    ids=["p384", "secp256k1", "rsa", "garbage", "empty", "oversized"],
)
def test_unusable_pems_are_refused(pem: bytes) -> None:
    with pytest.raises(ValueError, match="kid 'k'"):
        parse_p256_pem(pem, "k")
