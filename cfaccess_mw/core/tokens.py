"""Tokens: the JWS primitives every preset uses, and the verifier that caches what they verified.

Built directly on ``cryptography`` rather than on ``jwt.decode`` for two reasons:
it lets every check be stricter than a general JWT library needs to be (the pinned
algorithm whatever the header says, canonical base64url, JSON numbers for time
claims, a size cap before any parsing), and it keeps the per-token cost close to
the signature verification itself. PyJWT is the oracle in the differential tests.

Order of work: size and shape, header (``alg`` pinned, ``kid`` required, ``crit``
and ``b64`` refused, ``jku``/``x5u``/``jwk``/``x5c`` ignored), key lookup,
signature, and only then the payload, which is never parsed before its signature
verifies. The rules of each preset, Cloudflare's included, are a
:class:`~cfaccess_mw.profiles.PresetProfile`; :class:`TokenVerifier` keeps the cache.
"""

from __future__ import annotations

import binascii
import copy
import json
import re
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn

from .errors import InvalidToken, Reason
from .jwk import PublicKey

#: Longest token accepted, in characters. Cloudflare's tokens are about 1 KB; a 16 KiB cap
#: bounds the work an attacker can ask for before any signature check.
MAX_TOKEN_LENGTH = 16 * 1024
#: Largest NumericDate accepted (about the year 33658); beyond it a time claim is nonsense.
MAX_NUMERIC_DATE = 10**12
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


class Signed:
    """A fresh token whose shape and header passed, waiting for its key: what is left is I/O-free.

    The verifier's two ways in (:meth:`TokenVerifier.verify_token`, async, and
    :meth:`TokenVerifier.verify_token_sync`) differ only in how they get ``kid``'s key
    when the cache does not hold it; everything before is :meth:`TokenVerifier.check`,
    everything after :meth:`TokenVerifier.finish`.
    """

    __slots__ = ("alg", "header", "header_claims", "kid", "now", "payload", "signature", "token")

    def __init__(
        self,
        token: str | bytes,
        alg: str,
        kid: str,
        header: str,
        payload: str,
        signature: bytes,
        now: float,
        header_claims: Mapping[str, Any] | None = None,
    ) -> None:
        self.token = token  # as the verifier received it: its cache keeps the verified token under this
        self.alg = alg
        self.kid = kid
        self.header = header  # the header and payload segments as received: the signing input
        self.payload = payload
        self.signature = signature
        self.now = now
        self.header_claims = header_claims  # claims the proxy signs in the header (ALB's iss and exp)

    def signing_input(self) -> bytes:
        """``header.payload``, what the signature covers: a slice of the token's bytes when it came as bytes (a
        header as received), else the text's, encoded (split_token checked it is ASCII)."""
        end = len(self.header) + 1 + len(self.payload)
        token = self.token
        return token[:end] if type(token) is bytes else token[:end].encode("ascii")  # type: ignore[union-attr]


def _malformed(detail: str) -> InvalidToken:
    return InvalidToken(Reason.TOKEN_MALFORMED, "The access token is malformed.", detail)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# A canonical encoding leaves the unused low bits of its last character zero (RFC 4648 section 3.5):
# after 2 characters of a group 4 bits are unused, after 3 characters 2 bits.
_CANONICAL_LAST = {
    2: frozenset("AQgw"),
    3: frozenset("AEIMQUYcgkosw048"),
}


_PADS = (b"", b"", b"==", b"=")
#: base64url to the standard alphabet, and the standard alphabet's own '+', '/' and the padding '=' to '*': a byte
#: binascii's strict mode (3.11+) refuses, as it refuses anything else outside the alphabet; 3.10 uses the regex.
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/***")


def b64url_decode(segment: str, what: str) -> bytes:
    """Strict base64url (RFC 7515 section 2): alphabet only, no padding, canonical trailing bits."""
    remainder = len(segment) % 4
    if not segment:
        raise _malformed(f"the {what} is not base64url (empty, padded or with other characters)")
    if remainder == 1:
        raise _malformed(f"the {what} is not valid base64url (its length is impossible)")
    try:
        if sys.version_info >= (3, 11):
            # One pass in C to the standard alphabet, where '+', '/' and '=' (not base64url) become '*', which
            # the strict decoder refuses like any other byte outside the alphabet; non-ASCII fails to encode.
            # 0.25 µs less per 342-character segment than checking for each and replacing '-' and '_' in turn.
            data = segment.encode("ascii").translate(_TO_STANDARD) + _PADS[remainder]
            raw = binascii.a2b_base64(data, strict_mode=True)
        else:  # pragma: no cover - Python 3.10: no strict mode, so the alphabet is checked by the regex first
            if not _B64URL.fullmatch(segment):
                raise binascii.Error("not base64url")
            raw = binascii.a2b_base64(segment.replace("-", "+").replace("_", "/") + _PADS[remainder].decode())
    except (UnicodeEncodeError, binascii.Error):
        raise _malformed(f"the {what} is not base64url (empty, padded or with other characters)") from None
    if remainder and segment[-1] not in _CANONICAL_LAST[remainder]:
        raise _malformed(f"the {what} is not canonical base64url")
    return raw


# One decoder for every token: json.loads(..., parse_constant=...) would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        # RFC 7519 section 7.2: the JSON is UTF-8 (json.loads on bytes would also take UTF-16 and UTF-32).
        text = raw.decode("utf-8")
        # JSONDecoder.decode is raw_decode between two whitespace regex matches. A token's JSON has no whitespace
        # around it: raw_decode alone, and decode (the same rules) only when something follows the value.
        if text[:1] == "{":
            value, end = _DECODER.raw_decode(text)
            if end != len(text):
                value = _DECODER.decode(text)
        else:
            value = _DECODER.decode(text)
    except (ValueError, RecursionError):
        raise _malformed(f"the {what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise _malformed(f"the {what} is not a JSON object")
    return value


def too_large(length: int) -> InvalidToken:
    """The refusal of a token longer than :data:`MAX_TOKEN_LENGTH` (checked before it is decoded or hashed)."""
    return InvalidToken(
        Reason.TOKEN_TOO_LARGE,
        "The access token is too large.",
        f"token of {length} characters exceeds the {MAX_TOKEN_LENGTH} limit",
    )


def split_token(token: str) -> tuple[str, str, str]:
    """Check size and shape; return the three base64url segments."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise too_large(len(token))
    if not token.isascii():
        raise _malformed("the token contains non-ASCII characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise _malformed(f"a JWS has 3 dot-separated segments, this token has {len(parts)}")
    if not all(parts):
        raise _malformed("the token has an empty segment")
    return parts[0], parts[1], parts[2]


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a token, checked for shape only. Trust nothing in them."""
    header_b64, payload_b64, _ = split_token(token)
    return (
        _json_object(b64url_decode(header_b64, "header"), "header"),
        _json_object(b64url_decode(payload_b64, "payload"), "payload"),
    )


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if type(value) is int and -MAX_NUMERIC_DATE < value < MAX_NUMERIC_DATE:
        return float(value)  # the common case, a JSON integer, first; everything else is checked below
    if value is None and name not in claims:
        return None
    # RFC 7519 NumericDate is a JSON number; a string or boolean is refused (PyJWT alone accepts "9999999999").
    # The range check also refuses NaN and infinities, and keeps huge integers away from float().
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not -MAX_NUMERIC_DATE < value < MAX_NUMERIC_DATE
    ):
        raise InvalidToken(
            Reason.CLAIM_INVALID,
            f"The token's '{name}' claim is invalid.",
            f"claim {name!r} must be a JSON number of seconds (NumericDate), got {type(value).__name__}",
        )
    return float(value)


def human_duration(seconds: float) -> str:
    """``3 minutes``, ``45 seconds``, ``2 hours``: for messages a person reads."""
    seconds = abs(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    count = int(seconds)
    return f"{count} second{'s' if count != 1 else ''}"


def _read_only(*args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError("token claims are read-only; change a copy (list(...), dict(...)) instead")


class ReadOnlyList(list[Any]):
    """A JSON array from verified claims: equal to, serialised as and ``isinstance`` of ``list``, but read-only.

    A list, not a tuple, so code written against the JSON types (``claims["aud"] ==
    [...]``, ``json.dumps``) keeps working. Copies (``list(x)``, ``copy.copy``,
    ``copy.deepcopy``) are ordinary, mutable lists.
    """

    __slots__ = ()
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return copy.deepcopy(list(self), memo)

    def __reduce__(self) -> tuple[Any, ...]:
        return list, (list(self),)


class ReadOnlyDict(dict[str, Any]):
    """A JSON object nested in verified claims: equal to, serialised as and ``isinstance`` of ``dict``, read-only."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = pop = popitem = clear = update = setdefault = _read_only

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)

    def __reduce__(self) -> tuple[Any, ...]:
        return dict, (dict(self),)


_CONTAINERS = frozenset((list, dict))


def _frozen(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        for item in value:
            if type(item) in _CONTAINERS:
                return ReadOnlyList([_frozen(item) for item in value])
        return ReadOnlyList(value)  # the common case (``aud``, a list of groups): no copy item by item
    if kind is dict:
        return ReadOnlyDict({name: _frozen(item) for name, item in value.items()})
    return value


def freeze_claims(claims: dict[str, Any]) -> Mapping[str, Any]:
    """Verified claims made read-only all the way down, once per verification (not per cache hit).

    The claims are shared by every request that presents the same token, so a
    request that changed them (``claims["groups"].append(...)``) would change what
    the next one sees. The top level becomes a ``MappingProxyType``; nested arrays
    and objects become :class:`ReadOnlyList` and :class:`ReadOnlyDict`.
    """
    for name, value in claims.items():
        if type(value) in _CONTAINERS:
            claims[name] = _frozen(value)  # replacing a value while iterating is allowed (no key is added)
    return MappingProxyType(claims)


def read_only_claims(claims: dict[str, Any]) -> Mapping[str, Any]:
    """:func:`freeze_claims` for a verified payload; one nested deeper than the interpreter recurses is malformed."""
    try:
        return freeze_claims(claims)
    except RecursionError:
        raise _malformed("the payload is nested too deeply") from None


class VerifiedToken:
    """A verified token's read-only claims, its key id, expiry and key, and a slot for the caller's memo.

    The middleware keeps what it derives from the claims (the normalised email, the
    principal) in ``memo``, so a repeated token costs neither RSA nor re-deriving.
    ``key`` is the key object the signature verified with: the cache serves the
    token only while the key source still returns that very object.
    """

    __slots__ = ("claims", "exp", "key", "kid", "memo", "token", "used")

    def __init__(self, claims: Mapping[str, Any], kid: str, exp: float, key: PublicKey) -> None:
        self.claims = claims
        self.kid = kid
        self.exp = exp
        self.key = key
        self.memo: Any = None
        self.token: str | bytes = b""  # the token as the verifier's cache holds it (set when remembered)
        self.used = False  # served from the cache since eviction last passed it (the verifier's CLOCK)

    def __repr__(self) -> str:
        return f"VerifiedToken(kid={self.kid!r}, exp={self.exp!r})"


#: How many distinct token headers to remember. Cloudflare's header segment is the same for every token
#: signed by one key, so a handful covers a key rotation; more only serves someone making them up.
HEADER_CACHE_SIZE = 16
