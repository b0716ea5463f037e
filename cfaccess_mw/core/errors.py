"""Every way cfaccess_mw can refuse, and the one place a refusal becomes a response.

A refusal is an :class:`AuthError` carrying an HTTP status, a public error code
(``UNAUTHORIZED``, ``FORBIDDEN``, ``AUTH_UNAVAILABLE``), a machine-readable
:class:`Reason` for logs and metrics, a ``message`` that is safe to show the
caller, and a ``detail`` for operators (logs, ``cfaccess-mw explain``) that may
quote claim values but never a token, key or header value.

:func:`error_response` is the only function that turns one into bytes on the
wire, so every refusal looks the same and none can echo a credential.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "WS_POLICY_VIOLATION",
    "AuthError",
    "AuthUnavailable",
    "CfAccessError",
    "ConfigError",
    "Forbidden",
    "InvalidToken",
    "Reason",
    "Unauthorized",
    "error_response",
    "framework_error_response",
    "send_error",
]


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Close code for a refused websocket handshake (RFC 6455, "policy violation").
WS_POLICY_VIOLATION = 1008


class Reason(str, enum.Enum):
    """Why a request was refused (or could not be decided); stable, documented codes."""

    NO_CREDENTIALS = "no_credentials"
    TOKEN_MALFORMED = "token_malformed"
    TOKEN_TOO_LARGE = "token_too_large"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    UNKNOWN_KEY = "unknown_key"
    KEY_UNUSABLE = "key_unusable"
    BAD_SIGNATURE = "bad_signature"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    AUDIENCE_MISMATCH = "audience_mismatch"
    ISSUER_MISMATCH = "issuer_mismatch"
    CLAIM_INVALID = "claim_invalid"
    API_KEY_INVALID = "api_key_invalid"
    UNKNOWN_USER = "unknown_user"
    SERVICE_TOKEN_NOT_ALLOWED = "service_token_not_allowed"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    KEYS_UNAVAILABLE = "keys_unavailable"
    USER_LOOKUP_FAILED = "user_lookup_failed"
    SERVER_MISCONFIGURED = "server_misconfigured"
    INTERNAL_ERROR = "internal_error"

    def __str__(self) -> str:
        return self.value


class CfAccessError(Exception):
    """Base of every exception this package raises on purpose."""


class ConfigError(CfAccessError, ValueError):
    """A setting is missing or malformed. Raised at start-up; names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        #: Set once the error has been logged (by ``Settings.from_env``), so no one logs it twice.
        self.logged = False
        super().__init__(f"{variable}: {problem}")


class AuthError(CfAccessError):
    """A request that cannot be let through. Subclasses fix the status and public code."""

    status_code: int = 401
    code: str = "UNAUTHORIZED"

    def __init__(self, reason: Reason, message: str, detail: str | None = None) -> None:
        self.reason = reason
        self.message = message
        self.detail = detail if detail is not None else message
        super().__init__(self.detail)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason.value!r}, detail={self.detail!r})"


class Unauthorized(AuthError):
    """401: the caller has not proven who it is (no credential, or one that does not verify)."""

    status_code = 401
    code = "UNAUTHORIZED"


class InvalidToken(Unauthorized):
    """401: a ``Cf-Access-Jwt-Assertion`` token failed a check; ``reason`` says which."""


class Forbidden(AuthError):
    """403: the caller is proven, but this app does not admit it (unknown user, unlisted service token)."""

    status_code = 403
    code = "FORBIDDEN"


class AuthUnavailable(AuthError):
    """503: the decision cannot be made now (no signing keys, user store failing). Never a 401."""

    status_code = 503
    code = "AUTH_UNAVAILABLE"

    def __init__(self, reason: Reason, message: str, detail: str | None = None, retry_after: int = 10) -> None:
        super().__init__(reason, message, detail)
        self.retry_after = retry_after


def internal_error(exc: BaseException) -> AuthUnavailable:
    """The 503 for a bug met while deciding a request (ours, or in what a server handed us): never a 500, never
    a fall-through. Logged by type only, since an exception's text can carry a header's value."""
    logging.getLogger("cfaccess_mw").error("cfaccess_mw: unexpected %s while deciding a request", type(exc).__name__)
    return AuthUnavailable(
        Reason.INTERNAL_ERROR,
        "The server cannot decide this request now; try again shortly.",
        f"unexpected {type(exc).__name__} while deciding",
    )


def error_response(err: AuthError, realm: str = "cfaccess") -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and JSON body for a refusal. The only place a refusal is rendered."""
    body = json.dumps(
        {"error": {"code": err.code, "reason": err.reason.value, "message": err.message}},
        separators=(",", ":"),
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if err.status_code == 401:
        # RFC 6750 section 3: a fixed challenge; never the error text, which could be long or odd.
        challenge = f'Bearer realm="{realm}"'
        if err.reason is not Reason.NO_CREDENTIALS:
            challenge += ', error="invalid_token"'
        headers.append((b"www-authenticate", challenge.encode()))
    elif isinstance(err, AuthUnavailable):
        headers.append((b"retry-after", str(err.retry_after).encode()))
    return err.status_code, headers, body


#: What a framework's own response object computes from its body and media type, so never set by hand.
_COMPUTED_HEADERS = (b"content-type", b"content-length")


def framework_error_response(err: AuthError, realm: str = "cfaccess") -> tuple[int, dict[str, str], bytes]:
    """:func:`error_response` for a framework that builds its own response object (Falcon, Litestar, Sanic,
    Quart, BlackSheep): the headers as a ``str`` dict without ``content-type`` and ``content-length``, which
    the framework sets itself from the body and the media type it is given (``application/json``)."""
    status, headers, body = error_response(err, realm)
    kept = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers if name not in _COMPUTED_HEADERS}
    return status, kept, body


async def send_error(scope: Scope, receive: Receive, send: Send, err: AuthError, *, connected: bool = False) -> None:
    """Refuse a request: the JSON error for HTTP; for a websocket, the same JSON error as the handshake's
    answer where the server supports ASGI's ``websocket.http.response`` extension, else close code 1008.

    A websocket app must receive ``websocket.connect`` before it answers (the ASGI
    spec; Falcon's test conductor enforces it), so the refusal waits for it unless
    the app already took it (``connected``). Either way the server answers the
    upgrade with an HTTP error, so the connection is never opened.
    """
    if scope["type"] == "websocket":
        if not connected:
            message = await receive()
            if message["type"] != "websocket.connect":
                return  # the client left before the handshake: nothing to refuse
        if "websocket.http.response" in (scope.get("extensions") or {}):
            status, headers, body = error_response(err)
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
            return
        await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": err.code})
        return
    status, headers, body = error_response(err)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
