"""Shared pieces of the adversarial suite: an app that counts who reached it, raw ASGI calls, forged tokens.

Every hostile test asks three things of a refusal: the status (401 unless the
issue documents 403 or 503), the JSON error shape every refusal shares, and that
the application endpoint was never reached. :class:`Endpoint` counts the third.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.hashes import SHA256
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from cfaccess_mw import CloudflareAccessMiddleware, Settings
from cfaccess_mw.testing import LocalIssuer, Response

from .conftest import REMOTE_PEER, find_user

CODES = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 503: "AUTH_UNAVAILABLE"}


class Endpoint:
    """The protected endpoint: counts every call that got through the middleware."""

    def __init__(self) -> None:
        self.calls = 0

    async def handle(self, request: Request) -> JSONResponse:
        self.calls += 1
        user = request.user
        return JSONResponse({"kind": user.kind, "display_name": user.display_name})


def counting_app(settings: Settings, **middleware_options: Any) -> tuple[Starlette, Endpoint]:
    """A real Starlette app with one counted endpoint at ``/`` behind the real middleware."""
    endpoint = Endpoint()
    app = Starlette(routes=[Route("/", endpoint.handle), Route("/healthz", endpoint.handle)])
    middleware_options.setdefault("user_lookup", find_user)
    app.add_middleware(CloudflareAccessMiddleware, settings=settings, **middleware_options)
    return app, endpoint


@dataclass
class RawResponse:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_call(
    app: ASGIApp,
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None = REMOTE_PEER,
    path: str = "/",
) -> RawResponse:
    """One HTTP request straight through ASGI, with header bytes exactly as given (no client normalises them)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": client,
        "server": ("127.0.0.1", 8000),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return RawResponse(start["status"], dict(start["headers"]), body)


def assert_refused(status: int, body: Any, endpoint: Endpoint, expected_status: int, reasons: tuple[str, ...]) -> None:
    """A refusal with the documented status, the shared JSON error shape, a known reason, and no app call."""
    assert status == expected_status, f"status {status}, expected {expected_status}: {body}"
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "reason", "message"}
    assert body["error"]["code"] == CODES[expected_status]
    if reasons:
        assert body["error"]["reason"] in reasons, f"refused for {body['error']['reason']!r}, expected {reasons}"
    assert endpoint.calls == 0, "a refused request reached the application"


# --- forging tokens ----------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def rs256(key: RSAPrivateKey, header: Mapping[str, Any], payload: Mapping[str, Any] | bytes) -> str:
    """A correctly RS256-signed token over any header and any payload bytes (a claims object or raw bytes)."""
    payload_segment = b64(payload) if isinstance(payload, bytes) else b64json(payload)
    signing_input = f"{b64json(header)}.{payload_segment}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode(), PKCS1v15(), SHA256()))}"


def hmac_signed(secret: bytes, alg: str, header: Mapping[str, Any], payload: Mapping[str, Any]) -> str:
    """An HS256/384/512 token whose HMAC secret is ``secret`` (the algorithm-confusion attack)."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), digest).digest())}"


class HeldCerts:
    """A certs endpoint for a LocalIssuer's ``responder``: it holds each answer until ``release`` is set (so a
    burst piles up on one fetch), and answers 503 while ``down``. Every wait is bounded by ``bound`` seconds."""

    def __init__(self, issuer: LocalIssuer, *, held: bool = True, bound: float = 30.0) -> None:
        self.issuer = issuer
        self.bound = bound
        self.release = threading.Event()
        if not held:
            self.release.set()
        self.down = False

    def __call__(self) -> Response:
        self.release.wait(self.bound)
        if self.down:
            return 503, {"Content-Type": "text/plain"}, b"down"
        return 200, {"Content-Type": "application/json"}, json.dumps(self.issuer.certs_document()).encode()
