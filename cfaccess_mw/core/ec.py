"""ES256 (ECDSA P-256 with SHA-256): keys from JWK or PEM, and signatures checked before ``cryptography`` sees them.

Google IAP, AWS ALB and Pomerium sign with ES256. Three things make it easy to get
wrong, and each has its own check here:

* A JWS carries the signature as 64 raw bytes, ``r || s`` (RFC 7518 section 3.4);
  ``cryptography`` wants DER. Anything but exactly 64 bytes is refused, never padded
  or trimmed into shape.
* ``r`` and ``s`` must each lie in ``[1, n - 1]`` for the curve order ``n``. Java 15-18
  accepted ``r = s = 0`` for every message and key (CVE-2022-21449, "psychic
  signatures"); OpenSSL refuses it too, but the rule is checked here, in plain
  Python, so the guarantee does not rest on one backend.
* Only P-256 is ES256. Pomerium labels any ECDSA key ES256, and a P-384 or secp256k1
  key under an ES256 ``kid`` must not be adopted: such keys are refused where they
  are parsed (so a key set listing one skips it) and again before each verify.
"""

from __future__ import annotations

import base64
import re

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import (
    ECDSA,
    SECP256R1,
    EllipticCurvePublicKey,
    EllipticCurvePublicNumbers,
)
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .errors import InvalidToken, Reason

#: The order ``n`` of the P-256 base point (FIPS 186-4, D.1.2.3; SEC 2, 2.4.2).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
#: A P-256 coordinate, and each half of an ES256 signature, is 32 bytes.
P256_BYTES = 32
ES256_SIGNATURE_BYTES = 2 * P256_BYTES
#: A PEM public key is a few hundred bytes; anything much larger is not one.
MAX_PEM_BYTES = 8 * 1024

_ECDSA_SHA256 = ECDSA(SHA256())
_PKCS1 = PKCS1v15()
_SHA256 = SHA256()
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _bad_signature(detail: str) -> InvalidToken:
    return InvalidToken(Reason.BAD_SIGNATURE, "The token's signature does not verify.", detail)


def es256_der_signature(raw: bytes) -> bytes:
    """The DER form of a JWS ES256 signature, after the length and range checks (CVE-2022-21449)."""
    if len(raw) != ES256_SIGNATURE_BYTES:
        raise _bad_signature(f"an ES256 signature is {ES256_SIGNATURE_BYTES} bytes (r || s), this one is {len(raw)}")
    r = int.from_bytes(raw[:P256_BYTES], "big")
    s = int.from_bytes(raw[P256_BYTES:], "big")
    if not (0 < r < P256_ORDER and 0 < s < P256_ORDER):
        raise _bad_signature("ES256 signature has r or s of zero or not below the curve order (CVE-2022-21449)")
    return encode_dss_signature(r, s)


def is_p256(key: object) -> bool:
    """Whether ``key`` is an EC public key on P-256 (the only curve ES256 names)."""
    return isinstance(key, EllipticCurvePublicKey) and isinstance(key.curve, SECP256R1)


#: Key classes already judged (a handful: cryptography's concrete RSA and EC classes): "RS256" for an RSA key
#: class, "EC" for an EC one (whose curve is each key's own), None for anything else. ``isinstance`` against
#: cryptography's abstract classes costs an ABC check each (about 0.3 µs per fresh token for the two).
_KEY_CLASSES: dict[type, str | None] = {}


def key_algorithm(key: object) -> str | None:
    """The one JWS algorithm a key may verify: ``RS256`` for RSA, ``ES256`` for P-256, else ``None``."""
    kind = type(key)
    try:
        family = _KEY_CLASSES[kind]
    except KeyError:
        family = "RS256" if isinstance(key, RSAPublicKey) else "EC" if isinstance(key, EllipticCurvePublicKey) else None
        if len(_KEY_CLASSES) < 64:  # bounded, whatever objects a custom key source hands in
            _KEY_CLASSES[kind] = family
    if family == "EC":
        return "ES256" if isinstance(key.curve, SECP256R1) else None  # type: ignore[attr-defined]  # an EC key
    return family


def verify_signature(alg: str, key: object, signature: bytes, signing_input: bytes, kid: str) -> None:
    """Verify ``signature`` over ``signing_input`` with ``key`` under the pinned ``alg``; raise if it fails.

    The key decides what it can verify: a token whose ``alg`` is not the key's own
    algorithm is refused before any cryptography runs (an RSA key is never asked to
    check an ES256 token, nor an EC key an RS256 one).
    """
    own = key_algorithm(key)
    if own != alg:
        raise InvalidToken(
            Reason.ALGORITHM_NOT_ALLOWED,
            "The token's signing algorithm is not allowed.",
            f"the token says {alg}, but key {kid!r} is {own or 'of an unusable type'}",
        )
    # key_algorithm decided the key's class above: RSA for RS256, P-256 for ES256.
    try:
        if alg == "ES256":
            key.verify(es256_der_signature(signature), signing_input, _ECDSA_SHA256)  # type: ignore[attr-defined]
        else:
            key.verify(signature, signing_input, _PKCS1, _SHA256)  # type: ignore[attr-defined]
    except InvalidSignature:
        raise _bad_signature(f"{alg} signature does not verify against key {kid!r}") from None


def _coordinate(value: object, what: str) -> int:
    """One P-256 coordinate: canonical unpadded base64url of exactly 32 bytes (RFC 7518 section 6.2.1.2)."""
    if not isinstance(value, str) or not _B64URL.fullmatch(value):
        raise ValueError(f"{what} is not base64url")
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if len(raw) != P256_BYTES or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != value:
        raise ValueError(f"{what} is not {P256_BYTES} bytes of canonical base64url")
    return int.from_bytes(raw, "big")


def parse_ec_jwk(jwk: dict[str, object], kid: str) -> EllipticCurvePublicKey:
    """An EC JWK to a P-256 public key; ``ValueError`` for another curve, a bad point or private material."""
    crv = jwk.get("crv")
    if crv != "P-256":
        raise ValueError(f"kid {kid!r}: curve {crv!r} is not P-256, the only curve ES256 uses")
    if "alg" in jwk and jwk["alg"] != "ES256":
        raise ValueError(f"kid {kid!r}: alg is {jwk['alg']!r}, not 'ES256'")
    if "d" in jwk:
        raise ValueError(f"kid {kid!r}: contains private key material")
    x = _coordinate(jwk.get("x"), f"kid {kid!r}: x")
    y = _coordinate(jwk.get("y"), f"kid {kid!r}: y")
    try:
        # cryptography refuses a point that is not on the curve (an invalid-curve attack needs one).
        return EllipticCurvePublicNumbers(x, y, SECP256R1()).public_key()
    except ValueError:
        raise ValueError(f"kid {kid!r}: the point is not on P-256") from None


def parse_p256_pem(pem: bytes, kid: str) -> EllipticCurvePublicKey:
    """A PEM (SubjectPublicKeyInfo) public key that must be P-256, as AWS ALB serves one per ``kid``."""
    if len(pem) > MAX_PEM_BYTES:
        raise ValueError(f"kid {kid!r}: a PEM key of {len(pem)} bytes is too large")
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"kid {kid!r}: not a PEM public key") from None
    if not is_p256(key):
        raise ValueError(f"kid {kid!r}: a {type(key).__name__} is not a P-256 key; ES256 needs one")
    assert isinstance(key, EllipticCurvePublicKey)
    return key
