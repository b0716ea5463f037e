"""The signing side of JOSE for the stand-in issuers and the tests: P-256 and RSA keys as JWKs, raw ES256/RS256
signatures, and compact JWS built byte for byte (so a test can also build one no real issuer would)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def new_ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    """A fresh EC private key (P-256 unless told otherwise)."""
    return ec.generate_private_key(curve or ec.SECP256R1())


def _b64(data: bytes, padded: bool = False) -> str:
    encoded = base64.urlsafe_b64encode(data).decode("ascii")
    return encoded if padded else encoded.rstrip("=")


def _int_b64(value: int, size: int) -> str:
    return _b64(value.to_bytes(size, "big"))


def public_jwk(kid: str, key: PrivateKey) -> dict[str, Any]:
    """The JWK a proxy publishes for ``key``: ``kty``, ``crv``/``x``/``y`` or ``n``/``e``, ``kid``, ``alg``, ``use``."""
    public = key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        size = (public.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(public.curve.name, "secp256k1")
        return {
            "kty": "EC",
            "crv": crv,
            "x": _int_b64(numbers.x, size),
            "y": _int_b64(numbers.y, size),
            "kid": kid,
            "alg": "ES256",
            "use": "sig",
        }
    rsa_numbers = public.public_numbers()
    return {
        "kty": "RSA",
        "n": _int_b64(rsa_numbers.n, (rsa_numbers.n.bit_length() + 7) // 8),
        "e": _int_b64(rsa_numbers.e, 3),
        "kid": kid,
        "alg": "RS256",
        "use": "sig",
    }


def sign(key: PrivateKey, signing_input: bytes) -> bytes:
    """A JWS signature: raw ``r || s`` (32 bytes each on P-256) for EC, PKCS#1 v1.5 for RSA."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(SHA256())))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return key.sign(signing_input, PKCS1v15(), SHA256())


def jws(key: PrivateKey, header: Mapping[str, Any], payload: Mapping[str, Any] | bytes, padded: bool = False) -> str:
    """A compact JWS over any header and payload (a claims object or raw bytes), signed with ``key``."""
    head = _b64(json.dumps(header, separators=(",", ":")).encode(), padded)
    raw = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    body = _b64(raw, padded)
    signing_input = f"{head}.{body}"
    return f"{signing_input}.{_b64(sign(key, signing_input.encode('ascii')), padded)}"
