"""JSON Web Keys: which keys a published key set holds, and which of them may verify a token.

Pure functions over a parsed document (no I/O; :mod:`cfaccess_mw.keys` and
:mod:`cfaccess_mw.keysources` fetch). A key is adopted only when every rule below
holds; anything else in the document is skipped, and the kid it names is recorded
as *unusable* with the reason, so a token naming it is refused (401 ``key_unusable``)
rather than asked to wait for a fetch that can never help:

* ``use`` (when present) is ``sig`` and ``key_ops`` (when present) lists ``verify``
  (RFC 7517 section 4; Wycheproof's ``rejectWrongKeyOps``);
* RSA: 2048 to 8192 bits, an odd public exponent of at least 3, no private members,
  and not a modulus with the ROCA fingerprint (CVE-2017-15361: such keys can be factored);
* EC: P-256 only, a point on the curve (:mod:`cfaccess_mw.ec`);
* a ``kid`` listed twice is ambiguous and adopts neither key.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from .plans import JWKSFetchError

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192  # bounds the work one verification can cost
_B64URL = re.compile(r"[A-Za-z0-9_-]+")

#: A key a token can be verified with: RSA (RS256) for Cloudflare, or P-256 (ES256) for the other presets.
PublicKey = RSAPublicKey | EllipticCurvePublicKey
#: One JWK to ``(kid, key)``, or ``ValueError`` saying why it is unusable (:func:`parse_jwk` is Cloudflare's).
JWKParser = Callable[[object], tuple[str, PublicKey]]


def _b64_uint(value: object, what: str) -> int:
    if not isinstance(value, str) or not _B64URL.fullmatch(value):
        raise ValueError(f"{what} is not base64url")
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    return int.from_bytes(raw, "big")


def jwk_kid(jwk: object) -> str:
    """The ``kid`` of a JWK that may verify signatures; ``ValueError`` when it has none, or is for something else.

    RFC 7517 section 4: ``use`` (when present) must be ``sig``, and ``key_ops`` (when
    present) must list ``verify``; a key published for encryption, or for signing only,
    is not one to verify with (Wycheproof's ``rejectWrongKeyOps``). Every key parser
    starts here, so no key type skips the rule.
    """
    if not isinstance(jwk, dict):
        raise ValueError("entry is not an object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("no kid")
    if "use" in jwk and jwk["use"] != "sig":
        raise ValueError(f"kid {kid!r}: use is {jwk['use']!r}, not 'sig'")
    if "key_ops" in jwk:
        ops = jwk["key_ops"]
        if not isinstance(ops, list) or "verify" not in ops or any(not isinstance(op, str) for op in ops):
            raise ValueError(f"kid {kid!r}: key_ops {ops!r} does not include 'verify'")
    return kid


def _roca_masks() -> tuple[tuple[int, int], ...]:
    """For each small prime ``p``: the bit mask of the residues ``65537**k mod p`` (the subgroup 65537 generates).

    A modulus made by the Infineon library of CVE-2017-15361 (ROCA) is ``k * M + (65537**a mod M)``
    with ``M`` the product of these primes, so ``n mod p`` lies in that subgroup for every one of
    them; a random modulus does so with a probability of about 2**-150. This is the published
    detector's test (Nemec et al., CCS 2017), its table computed here rather than copied.
    """
    primes = [p for p in range(3, 168) if all(p % d for d in range(2, int(p**0.5) + 1))]
    return tuple((p, sum(1 << r for r in {pow(65537, k, p) for k in range(p)})) for p in primes)


_ROCA = _roca_masks()


def has_roca_fingerprint(n: int) -> bool:
    """Whether an RSA modulus has the ROCA fingerprint (CVE-2017-15361): such keys can be factored."""
    return all((mask >> (n % p)) & 1 for p, mask in _ROCA)


def parse_jwk(jwk: object) -> tuple[str, RSAPublicKey]:
    """One JWK to ``(kid, key)``; raise ``ValueError`` saying why it is unusable."""
    kid = jwk_kid(jwk)
    assert isinstance(jwk, dict)
    if jwk.get("kty") != "RSA":
        raise ValueError(f"kid {kid!r}: kty is {jwk.get('kty')!r}, not 'RSA'")
    if "alg" in jwk and jwk["alg"] != "RS256":
        raise ValueError(f"kid {kid!r}: alg is {jwk['alg']!r}, not 'RS256'")
    if any(private in jwk for private in ("d", "p", "q")):
        raise ValueError(f"kid {kid!r}: contains private key material")
    n = _b64_uint(jwk.get("n"), f"kid {kid!r}: n")
    e = _b64_uint(jwk.get("e"), f"kid {kid!r}: e")
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
        raise ValueError(f"kid {kid!r}: RSA key of {n.bit_length()} bits is not {MIN_RSA_BITS}-{MAX_RSA_BITS} bits")
    if e < 3 or e % 2 == 0:
        raise ValueError(f"kid {kid!r}: bad RSA exponent")
    if has_roca_fingerprint(n):
        raise ValueError(f"kid {kid!r}: the RSA key has the ROCA weakness (CVE-2017-15361) and can be factored")
    return kid, RSAPublicNumbers(e, n).public_key()


class KeySet(NamedTuple):
    """A parsed certs document: the usable keys, the problems with the rest, and why each listed kid is unusable."""

    keys: dict[str, PublicKey]
    problems: list[str]
    #: kid -> why it cannot be used (wrong type, curve, ``use``/``key_ops``, a weak key, listed twice). The
    #: document proves these unusable: a token naming one is refused (401), not asked to wait for a fetch.
    unusable: dict[str, str]


def parse_jwks(document: object, parse: JWKParser = parse_jwk) -> KeySet:
    """A certs document to a :class:`KeySet`; unusable keys are skipped, not fatal.

    A ``kid`` that appears twice is dropped altogether: with two keys under one
    name there is no safe way to pick, and Cloudflare never publishes that.
    Raises :class:`JWKSFetchError` when the document is not a key set, or holds no
    usable key (its ``unusable`` then says which kids it did list).
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JWKSFetchError("document has no 'keys' list")
    keys: dict[str, PublicKey] = {}
    problems: list[str] = []
    unusable: dict[str, str] = {}
    seen: set[str] = set()
    duplicates: set[str] = set()
    for jwk in document["keys"]:
        try:
            kid, key = parse(jwk)
        except (ValueError, TypeError) as exc:
            problems.append(str(exc))
            listed = jwk.get("kid") if isinstance(jwk, dict) else None
            if isinstance(listed, str) and listed:
                unusable.setdefault(listed, str(exc))
            continue
        if kid in seen:
            duplicates.add(kid)
        seen.add(kid)
        keys[kid] = key
    for kid in duplicates:
        del keys[kid]
        problems.append(f"kid {kid!r} appears more than once; ignoring it")
        unusable[kid] = f"kid {kid!r} is published more than once, with no way to tell which key is meant"
    for kid in keys:
        unusable.pop(kid, None)  # listed once unusably and once usably: the usable entry stands
    if not keys:
        usable = "no usable RS256 keys" if parse is parse_jwk else "no usable keys"
        raise JWKSFetchError(usable + (f" ({'; '.join(problems)})" if problems else ""), unusable)
    return KeySet(keys, problems, unusable)
