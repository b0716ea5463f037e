"""The framework-neutral core: one Authenticator per configuration, shared by middleware instances, and the
refusal paths conforming to the ASGI spec (checked with a strict hand-written server, not a test client)."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, cookie_parser
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from cfaccess_mw import ApiKey, Authenticator, CloudflareAccessMiddleware, InvalidToken, Principal
from cfaccess_mw.core.decision import _user_principal
from cfaccess_mw.core.request import COOKIE_NAME, _access_cookie, normalise_email
from cfaccess_mw.testing import LocalIssuer

from .conftest import REMOTE_PEER, build_app, error_of, find_user, jwt_header

API_KEY = "k_core_tests_0123456789abcdef"


async def hello(request: Any) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.user.display_name}")


def test_one_authenticator_serves_many_middleware_instances_with_one_key_set(issuer: LocalIssuer) -> None:
    auth = Authenticator(issuer.settings(), user_lookup=find_user)
    inner = Starlette(routes=[Route("/", hello)], middleware=[])
    inner.add_middleware(CloudflareAccessMiddleware, authenticator=auth)
    outer = Starlette(routes=[Route("/", hello), Mount("/sub", app=inner)])
    outer.add_middleware(CloudflareAccessMiddleware, authenticator=auth)
    token = jwt_header(issuer.identity_token("alice@example.com"))
    with TestClient(outer, client=REMOTE_PEER) as client:
        assert client.get("/", headers=token).text == "hello alice@example.com"
        assert client.get("/sub/", headers=token).text == "hello alice@example.com"
    assert issuer.fetch_count == 1  # the lifespan's prefetch; both layers used its keys and one token cache
    assert auth.verifier is not None
    assert auth.verifier.cached_tokens == 1


def test_authenticator_and_its_options_are_not_both_given(shared_issuer: LocalIssuer) -> None:
    auth = Authenticator(shared_issuer.settings())
    with pytest.raises(TypeError, match="user_lookup"):
        CloudflareAccessMiddleware(build_app(shared_issuer.settings()), authenticator=auth, user_lookup=find_user)


def test_authenticate_takes_a_scope_or_a_request_and_applies_extra_scopes(shared_issuer: LocalIssuer) -> None:
    auth = Authenticator(
        shared_issuer.settings(api_keys=(ApiKey.from_secret("ops", API_KEY),)),
        extra_scopes=lambda principal: ["admin"] if principal.name == "ops" else [],
    )
    scope = {"type": "http", "path": "/", "headers": [(b"authorization", f"Bearer {API_KEY}".encode())]}

    async def both() -> tuple[Any, Any]:
        return await auth.authenticate(scope), await auth.authenticate(HTTPConnection(scope))

    from_scope, from_request = anyio.run(both)
    assert from_scope.principal is from_request.principal
    assert isinstance(from_scope.principal, Principal)
    assert from_scope.scopes == ["authenticated", "api_key", "admin"]
    with pytest.raises(TypeError, match="ASGI scope"):
        anyio.run(auth.authenticate, object())


def test_extra_scopes_that_are_not_strings_are_a_503(shared_issuer: LocalIssuer) -> None:
    settings = shared_issuer.settings(api_keys=(ApiKey.from_secret("ops", API_KEY),))
    app = build_app(settings, extra_scopes=lambda principal: [None])
    with TestClient(app, client=REMOTE_PEER) as client:
        response = client.get("/", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 503
    assert error_of(response)["reason"] == "user_lookup_failed"


def test_with_no_user_lookup_the_refusal_says_none_is_configured(shared_issuer: LocalIssuer) -> None:
    auth = Authenticator(shared_issuer.settings())
    token = shared_issuer.identity_token("alice@example.com").encode()
    scope = {"type": "http", "path": "/", "headers": [(b"cf-access-jwt-assertion", token)]}
    with pytest.raises(Exception, match="no user_lookup is configured") as caught:
        anyio.run(auth.identify, scope)
    assert getattr(caught.value, "status_code", None) == 403


# --- ASGI conformance of the refusal paths -------------------------------------------------------------------


class StrictServer:
    """Plays the server side of one ASGI connection and checks the app keeps the spec's order."""

    def __init__(self, scope: dict[str, Any], incoming: list[dict[str, Any]]) -> None:
        self.scope = scope
        self.incoming = list(incoming)
        self.received: list[str] = []
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = (
            self.incoming.pop(0) if self.incoming else {"type": "websocket.disconnect", "code": 1000}
        )
        self.received.append(message["type"])
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if self.scope["type"] == "websocket" and not self.sent:
            assert self.received[:1] == ["websocket.connect"], "the app answered before receiving websocket.connect"
        self.sent.append(message)

    def run(self, app: Any) -> StrictServer:
        anyio.run(app, self.scope, self.receive, self.send)
        return self


def ws_scope(extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    scope: dict[str, Any] = {"type": "websocket", "path": "/ws", "headers": [], "client": REMOTE_PEER}
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


def test_a_websocket_refusal_receives_connect_first_then_closes_with_1008(shared_issuer: LocalIssuer) -> None:
    server = StrictServer(ws_scope(), [{"type": "websocket.connect"}]).run(build_app(shared_issuer.settings()))
    assert server.sent == [{"type": "websocket.close", "code": 1008, "reason": "UNAUTHORIZED"}]


def test_a_websocket_refusal_is_the_json_error_where_the_server_supports_it(shared_issuer: LocalIssuer) -> None:
    scope = ws_scope({"websocket.http.response": {}})
    server = StrictServer(scope, [{"type": "websocket.connect"}]).run(build_app(shared_issuer.settings()))
    start, body = server.sent
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 401
    assert body == {"type": "websocket.http.response.body", "body": body["body"], "more_body": False}
    assert b'"reason":"no_credentials"' in body["body"]


def test_a_websocket_that_leaves_before_the_handshake_gets_nothing(shared_issuer: LocalIssuer) -> None:
    server = StrictServer(ws_scope(), [{"type": "websocket.disconnect", "code": 1001}])
    assert server.run(build_app(shared_issuer.settings())).sent == []


def test_an_http_refusal_ends_its_body_explicitly(shared_issuer: LocalIssuer) -> None:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": REMOTE_PEER}
    server = StrictServer(scope, [{"type": "http.request", "body": b"", "more_body": False}])
    start, body = server.run(build_app(shared_issuer.settings())).sent
    assert start["status"] == 401
    assert body["more_body"] is False  # Quart reads message["more_body"] without a default


def test_headers_and_client_given_as_iterators_reach_the_app_intact(shared_issuer: LocalIssuer) -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["headers"], seen["client"] = list(scope["headers"]), scope["client"]
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    settings = shared_issuer.settings(api_keys=(ApiKey.from_secret("ops", API_KEY),))
    headers = [(b"authorization", f"Bearer {API_KEY}".encode()), (b"x-extra", b"1")]
    scope = {"type": "http", "method": "GET", "path": "/", "headers": iter(headers), "client": iter(REMOTE_PEER)}
    server = StrictServer(scope, [{"type": "http.request", "body": b"", "more_body": False}])
    server.run(CloudflareAccessMiddleware(app, settings=settings))
    assert server.sent[0]["status"] == 204
    assert seen == {"headers": headers, "client": REMOTE_PEER}


def test_every_whitespace_character_inside_an_email_refuses() -> None:
    """normalise_email tests ``isprintable()`` and the ASCII space, not ``isspace()`` character by character: the
    same, because the ASCII space is the only character both printable and whitespace (every code point checked)."""
    characters = [chr(point) for point in range(sys.maxunicode + 1)]
    assert [c for c in characters if c.isspace() and c.isprintable()] == [" "]
    spaces = [c for c in characters if c.isspace()]
    assert len(spaces) > 20
    for c in spaces:
        with pytest.raises(InvalidToken):
            normalise_email(f"alice{c}x@example.com")
    assert normalise_email(" \tAlice@Example.COM\t ") == "alice@example.com"


def test_a_users_principal_is_built_as_the_constructor_builds_it() -> None:
    """_user_principal skips the frozen dataclass's __init__ for speed: a field added to Principal must be set."""
    claims = {"email": "alice@example.com"}
    user = {"name": "Alice"}
    fast = _user_principal("alice@example.com", user, claims)
    slow = Principal("user", email="alice@example.com", user=user, claims=claims)
    assert vars(fast) == vars(slow)
    assert [f.name for f in dataclasses.fields(Principal)] == list(vars(fast))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.email = "mallory@example.com"  # type: ignore[misc]
    assert (fast.identity, fast.scopes, repr(fast)) == (slow.identity, slow.scopes, repr(slow))


_COOKIE_PIECES = ["CF_Authorization", "a", "=", ";", " ", "\t", '"', "\\", "x.y", "CF_Authorization=", '"q"', "\\073"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_COOKIE_PIECES), max_size=8).map("".join))
def test_the_access_cookie_is_read_as_starlettes_cookie_parser_reads_it(cookie: str) -> None:
    """The core reads the cookie itself (it imports no web framework): the same value as Starlette's parser,
    and a refusal exactly when the name appears more than once."""
    named = [chunk.split("=", 1)[0].strip() for chunk in cookie.split(";")].count(COOKIE_NAME)
    try:
        value = _access_cookie([cookie.encode()])
    except InvalidToken:
        assert named > 1
        return
    assert named <= 1
    assert value == cookie_parser(cookie).get(COOKIE_NAME)
