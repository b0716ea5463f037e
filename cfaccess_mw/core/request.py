"""What the decision reads from a request, and how: its ASGI scope, the credential's raw forms (the access
cookie, an ``Authorization`` ID token), the path as routed, and the email a token names.

Pure functions of their arguments, shared by :class:`~cfaccess_mw.core.decision.Decision` and the adapters.
"""

from __future__ import annotations

import http.cookies
from collections.abc import Mapping
from typing import Any

from .audit import requested_path
from .errors import InvalidToken, Reason

#: Longest Bearer key considered; longer ones are refused without hashing.
MAX_API_KEY_LENGTH = 512
COOKIE_NAME = "CF_Authorization"
#: Most bytes of Cookie headers read for CF_Authorization. Browsers send a few KB; Cloudflare's edge allows 32 KB of
#: request headers in all. More is refused before any parsing, so the work one request can cause stays bounded.
MAX_COOKIE_BYTES = 64 * 1024
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def scope_of(source: Any) -> Mapping[str, Any]:
    """The ASGI scope of ``source``: a scope itself, or a request object carrying one in ``.scope``."""
    if isinstance(source, dict):  # what servers pass, and the WSGI adapters' WSGIScope: no ABC check per request
        return source
    if isinstance(source, Mapping):
        return source
    scope = getattr(source, "scope", None)
    if isinstance(scope, Mapping):
        return scope
    raise TypeError(f"expected an ASGI scope or a request with a .scope, got {type(source).__name__}")


def _access_cookie(values: list[bytes]) -> str | None:
    """The ``CF_Authorization`` cookie's value from the request's ``Cookie`` headers.

    Bounded before any parsing: more than :data:`MAX_COOKIE_BYTES` in all is refused
    (no browser sends that much, and every cookie would have to be read to find ours).
    Refused when the cookie is sent twice (cookie tossing from a sibling domain).
    """
    size = sum(map(len, values)) + 2 * (len(values) - 1)
    if size > MAX_COOKIE_BYTES:
        raise InvalidToken(
            Reason.TOKEN_TOO_LARGE,
            "The request's cookies are too large.",
            f"{len(values)} Cookie headers of {size} bytes in all exceed the {MAX_COOKIE_BYTES} limit",
        )
    cookie = b"; ".join(values).decode("latin-1")
    # Read as browsers and Starlette's cookie_parser read it (RFC 6265 in practice): chunks split at ";", the
    # name before the first "=" (a chunk without one is a value with no name), both stripped, a quoted value
    # unquoted by Python's own rules. A chunk naming our cookie without a value still counts as a second one.
    ours = [
        (sep, value)
        for name, sep, value in (c.partition("=") for c in cookie.split(";"))
        if name.strip() == COOKIE_NAME
    ]
    if len(ours) > 1:
        raise InvalidToken(
            Reason.TOKEN_MALFORMED,
            "The access cookie was sent more than once.",
            f"{COOKIE_NAME} cookie appears {len(ours)} times",
        )
    if not ours or not ours[0][0]:
        return None
    return http.cookies._unquote(ours[0][1].strip())


def _bearer_id_token(value: str) -> tuple[str | None, str | None]:
    """The oidc preset reading ``Authorization``: ``(ID token, None)`` or ``(None, header)`` for the API-key path.

    Decided by shape alone, before anything is verified, so a credential takes exactly
    one path and a failure on it never falls through to the other: a Bearer credential
    with a ``.`` is a JWT (an ID token), anything else an API key (``new-api-key``
    makes keys without dots).
    """
    scheme, _, credential = value.partition(" ")
    credential = credential.strip()
    if scheme.lower() == "bearer" and "." in credential:
        return credential, None
    return None, value


def route_path(scope: Mapping[str, Any]) -> str:
    """The path as requested, without the server's ``root_path`` prefix (:func:`~cfaccess_mw.audit.requested_path`:
    a mount's full path where the framework gave the adapter only the part below it)."""
    path = requested_path(scope)
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path) and path[len(root_path) : len(root_path) + 1] in ("/", ""):
        return path[len(root_path) :] or "/"
    return path


def _escaped(raw_path: object) -> bool:
    """Whether a raw path (ASGI's ``raw_path``; some test clients leave the query on it) holds a percent-escape."""
    if raw_path is None:
        return False
    raw = raw_path.encode("latin-1") if isinstance(raw_path, str) else bytes(raw_path)  # type: ignore[call-overload]
    return b"%" in raw.split(b"?", 1)[0]


#: Characters an email claim may be padded with by a sloppy IdP; anything else around it is refused.
_EMAIL_PADDING = " \t"


def normalise_email(email: object) -> str:
    """The email a token names, as it is looked up: trimmed of ASCII space and tab, ASCII letters lower-cased.

    Only ASCII is trimmed and folded. ``str.strip()`` would remove Unicode spaces
    (``alice@example.com\\u3000`` would become alice), and ``str.lower()`` folds the
    Kelvin sign into ``k``: either would let one address pose as another. An email
    that still holds whitespace or a control character is refused.
    """
    if not isinstance(email, str):
        raise InvalidToken(
            Reason.CLAIM_INVALID, "The token's email claim is invalid.", f"claim 'email' is a {type(email).__name__}"
        )
    email = email.strip(_EMAIL_PADDING)
    if not email:
        raise InvalidToken(Reason.CLAIM_INVALID, "The token's email claim is invalid.", "claim 'email' is empty")
    # The ASCII space is the only character both printable and whitespace (test_authenticator checks every code
    # point), so this is "no control character and no whitespace" without a Python-level loop over the email.
    if not email.isprintable() or " " in email:
        raise InvalidToken(
            Reason.CLAIM_INVALID,
            "The token's email claim is invalid.",
            "claim 'email' contains whitespace or control characters",
        )
    # For an ASCII address (nearly all) lower() is exactly the ASCII fold, and much faster than translate.
    return email.lower() if email.isascii() else email.translate(_ASCII_LOWER)
