"""The middleware end to end: real Starlette apps, a real certs server on loopback, both exposure modes."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient, WebSocketDenialResponse

from cfaccess_mw import (
    ApiKey,
    CloudflareAccessMiddleware,
    ConfigError,
    ExposureMode,
    Forbidden,
    Reason,
    ServiceToken,
    Settings,
)
from cfaccess_mw.keys.jwks import JWKSClient
from cfaccess_mw.testing import LocalIssuer

from .conftest import LOCAL_BASE_URL, LOOPBACK_PEER, REMOTE_PEER, ClientFactory, error_of, find_user, jwt_header

API_KEY = "k_live_9fJ2-example-api-key-for-tests"
CI_CLIENT_ID = "0123456789abcdef0123456789abcdef.access"


def full_settings(issuer: LocalIssuer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_keys": (ApiKey.from_secret("operator", API_KEY),),
        "service_tokens": (ServiceToken("ci", CI_CLIENT_ID),),
        "public_paths": ("/healthz",),
    }
    values.update(overrides)
    return issuer.settings(**values)


# --- accepted callers ------------------------------------------------------------------------


def test_identity_token_of_existing_user_is_accepted(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer))
    response = client.get("/", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert response.status_code == 200
    assert response.json() == {
        "kind": "user",
        "display_name": "alice@example.com",
        "email": "alice@example.com",
        "name": None,
        "scopes": ["authenticated", "user"],
    }


def test_email_is_normalised_before_lookup(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    seen: list[str] = []

    def lookup(email: str) -> object:
        seen.append(email)
        return {"email": email} if email == "alice@example.com" else None

    client = make_client(full_settings(shared_issuer), user_lookup=lookup)
    response = client.get("/", headers=jwt_header(shared_issuer.identity_token("  Alice@Example.COM ")))
    assert response.status_code == 200
    assert seen == ["alice@example.com"]


def test_async_user_lookup_is_awaited(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    async def lookup(email: str) -> object:
        return {"email": email}

    client = make_client(full_settings(shared_issuer), user_lookup=lookup)
    response = client.get("/", headers=jwt_header(shared_issuer.identity_token("carol@example.com")))
    assert response.status_code == 200
    assert response.json()["email"] == "carol@example.com"


def test_allowed_service_token_becomes_a_named_service(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer))
    response = client.get("/", headers=jwt_header(shared_issuer.service_token(CI_CLIENT_ID)))
    assert response.status_code == 200
    assert response.json()["kind"] == "service"
    assert response.json()["name"] == "ci"


def test_api_key_is_accepted(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer))
    response = client.get("/", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200
    assert response.json()["kind"] == "api_key"
    assert response.json()["name"] == "operator"


def test_bearer_scheme_is_case_insensitive(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer))
    assert client.get("/", headers={"Authorization": f"bearer {API_KEY}"}).status_code == 200


def test_starlette_requires_sees_extra_scopes(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    def roles(principal: Any) -> list[str]:
        return [principal.user["role"]] if principal.kind == "user" else []

    client = make_client(full_settings(shared_issuer), extra_scopes=roles)
    alice = jwt_header(shared_issuer.identity_token("alice@example.com"))
    bob = jwt_header(shared_issuer.identity_token("bob@example.com"))
    assert client.get("/admin", headers=alice).status_code == 200
    assert client.get("/admin", headers=bob).status_code == 403


def test_keys_are_fetched_at_startup(issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(issuer))
    assert issuer.fetch_count == 1
    for _ in range(3):
        assert client.get("/", headers=jwt_header(issuer.identity_token("alice@example.com"))).status_code == 200
    assert issuer.fetch_count == 1


def test_rotated_key_is_accepted_without_restart(issuer: LocalIssuer, make_client: ClientFactory) -> None:
    monotonic = [0.0]
    settings = full_settings(issuer)
    keys = JWKSClient(settings.certs_url or "", cooldown_seconds=10, clock=lambda: monotonic[0])
    client = make_client(settings, jwks=keys)
    assert client.get("/", headers=jwt_header(issuer.identity_token("alice@example.com"))).status_code == 200
    issuer.rotate()
    monotonic[0] += 10  # Cloudflare publishes the new key; a cooldown later the middleware may refetch
    response = client.get("/", headers=jwt_header(issuer.identity_token("alice@example.com")))
    assert response.status_code == 200
    assert issuer.fetch_count == 2


# --- refused callers -------------------------------------------------------------------------


def test_no_credentials_is_401_with_challenge(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    response = make_client(full_settings(shared_issuer)).get("/")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="cfaccess"'
    assert response.headers["content-type"] == "application/json"
    assert error_of(response)["code"] == "UNAUTHORIZED"
    assert error_of(response)["reason"] == "no_credentials"


def test_unknown_user_is_403_and_nothing_is_created(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    users = {"alice@example.com": {"role": "admin"}}
    client = make_client(full_settings(shared_issuer), user_lookup=users.get)
    response = client.get("/", headers=jwt_header(shared_issuer.identity_token("mallory@example.com")))
    assert response.status_code == 403
    assert error_of(response) == {
        "code": "FORBIDDEN",
        "reason": "unknown_user",
        "message": "This account is not a user of this application; ask an administrator to add it.",
    }
    assert list(users) == ["alice@example.com"]


def test_without_user_lookup_every_user_is_forbidden(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer), user_lookup=None)
    response = client.get("/", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert response.status_code == 403


def test_failing_user_lookup_is_503_not_500(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    def broken(email: str) -> object:
        raise ConnectionError("database is down")

    client = make_client(full_settings(shared_issuer), user_lookup=broken)
    response = client.get("/", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert response.status_code == 503
    assert error_of(response)["reason"] == "user_lookup_failed"
    assert "retry-after" in response.headers


def test_unlisted_service_token_is_403(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer))
    response = client.get("/", headers=jwt_header(shared_issuer.service_token("ffff.access")))
    assert response.status_code == 403
    assert error_of(response)["reason"] == "service_token_not_allowed"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"email": ""}, "claim_invalid"),
        ({"email": "   "}, "claim_invalid"),
        ({"email": ["alice@example.com"]}, "claim_invalid"),
        ({"email": 42}, "claim_invalid"),
        ({"email": None}, "claim_invalid"),
        ({}, "claim_invalid"),
        ({"common_name": ""}, "claim_invalid"),
        ({"common_name": 7}, "claim_invalid"),
    ],
    ids=["empty", "spaces", "list", "number", "null", "no-identity", "empty-common-name", "number-common-name"],
)
def test_identity_claims_of_wrong_type_are_401(
    shared_issuer: LocalIssuer, make_client: ClientFactory, claims: dict[str, Any], reason: str
) -> None:
    client = make_client(full_settings(shared_issuer))
    token = shared_issuer.mint(shared_issuer.base_claims() | claims)
    response = client.get("/", headers=jwt_header(token))
    assert response.status_code == 401
    assert error_of(response)["reason"] == reason


def test_expired_token_is_401_with_invalid_token_challenge(
    shared_issuer: LocalIssuer, make_client: ClientFactory
) -> None:
    client = make_client(full_settings(shared_issuer))
    response = client.get("/", headers=jwt_header(shared_issuer.identity_token("alice@example.com", lifetime=-600)))
    assert response.status_code == 401
    assert error_of(response)["reason"] == "token_expired"
    assert "expired 10 minutes ago" in error_of(response)["message"]
    assert response.headers["www-authenticate"] == 'Bearer realm="cfaccess", error="invalid_token"'


def test_wrong_audience_is_401(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer, audiences=("f" * 64,)))
    response = client.get("/", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert response.status_code == 401
    assert error_of(response)["reason"] == "audience_mismatch"


def test_invalid_token_never_falls_through_to_api_key(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer))
    headers = {**jwt_header("not.a.token"), "Authorization": f"Bearer {API_KEY}"}
    response = client.get("/", headers=headers)
    assert response.status_code == 401
    assert error_of(response)["reason"] == "token_malformed"


def test_invalid_token_never_falls_through_to_loopback(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer, exposure_mode="local"), peer=LOOPBACK_PEER)
    assert client.get("/").status_code == 200  # loopback is trusted in local mode ...
    response = client.get("/", headers=jwt_header(shared_issuer.identity_token("mallory@example.com")))
    assert response.status_code == 403  # ... but a token that names an unknown user still refuses
    assert client.get("/", headers=jwt_header("x.y.z")).status_code == 401


def test_unknown_user_never_falls_through_to_api_key(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer))
    headers = {
        **jwt_header(shared_issuer.identity_token("mallory@example.com")),
        "Authorization": f"Bearer {API_KEY}",
    }
    assert client.get("/", headers=headers).status_code == 403


def test_token_header_sent_twice_is_refused(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer))
    token = shared_issuer.identity_token("alice@example.com")
    response = client.get("/", headers=[("Cf-Access-Jwt-Assertion", token), ("Cf-Access-Jwt-Assertion", token)])
    assert response.status_code == 401
    assert error_of(response)["reason"] == "token_malformed"


def test_bearer_prefix_inside_token_header_is_refused(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer))
    token = shared_issuer.identity_token("alice@example.com")
    response = client.get("/", headers=jwt_header(f"Bearer {token}"))
    assert response.status_code == 401


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {API_KEY[:-1]}",
        f"Bearer {API_KEY}x",
        f"Bearer {API_KEY.upper()}",
        "Bearer ",
        "Bearer " + "k" * 10_000,
        f"Bearer  {API_KEY} extra",
    ],
    ids=["one-short", "one-long", "wrong-case", "empty", "huge", "trailing-junk"],
)
def test_wrong_api_keys_are_refused(shared_issuer: LocalIssuer, make_client: ClientFactory, value: str) -> None:
    client = make_client(full_settings(shared_issuer))
    response = client.get("/", headers={"Authorization": value})
    assert response.status_code == 401
    assert error_of(response)["reason"] == "api_key_invalid"


def test_api_key_without_configured_keys_is_refused(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer, api_keys=()))
    assert client.get("/", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 401


def test_authorization_sent_twice_is_refused(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer))
    headers = [("Authorization", f"Bearer {API_KEY}"), ("Authorization", "Bearer other")]
    assert client.get("/", headers=headers).status_code == 401


def test_non_bearer_authorization_is_not_a_credential(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer))
    response = client.get("/", headers={"Authorization": f"Basic {API_KEY}"})
    assert response.status_code == 401
    assert error_of(response)["reason"] == "no_credentials"


def test_unsigned_email_header_is_never_trusted(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer))
    response = client.get("/", headers={"Cf-Access-Authenticated-User-Email": "alice@example.com"})
    assert response.status_code == 401


def test_cookie_is_not_a_credential_by_default(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer))
    token = shared_issuer.identity_token("alice@example.com")
    response = client.get("/", headers={"Cookie": f"CF_Authorization={token}"})
    assert response.status_code == 401


def test_cookie_is_accepted_when_enabled(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer, allow_cookie=True))
    token = shared_issuer.identity_token("alice@example.com")
    assert client.get("/", headers={"Cookie": f"theme=dark; CF_Authorization={token}"}).status_code == 200
    bad = client.get("/", headers={"Cookie": f"CF_Authorization={token}x"})
    assert bad.status_code == 401


def test_certs_down_with_no_keys_is_503_with_retry_after(issuer: LocalIssuer, make_client: ClientFactory) -> None:
    issuer.responder = lambda: (500, {}, b"down")
    client = make_client(full_settings(issuer))
    response = client.get("/", headers=jwt_header(issuer.identity_token("alice@example.com")))
    assert response.status_code == 503
    assert error_of(response) == {
        "code": "AUTH_UNAVAILABLE",
        "reason": "keys_unavailable",
        "message": "The signing keys for this application cannot be fetched right now; try again shortly.",
    }
    assert int(response.headers["retry-after"]) >= 1
    # API keys do not depend on the certs endpoint.
    assert client.get("/", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


# --- public paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "public"),
    [
        ("/healthz", True),
        ("/healthz/live", True),
        ("/healthzz", False),
        ("/healthz-admin", False),
        ("/", False),
    ],
)
def test_public_paths_match_on_segment_boundaries(
    shared_issuer: LocalIssuer, make_client: ClientFactory, path: str, public: bool
) -> None:
    client = make_client(full_settings(shared_issuer))
    response = client.get(path)
    if public:
        assert response.status_code == 200
    else:
        assert response.status_code == 401
        assert error_of(response)["reason"] == "no_credentials"


@pytest.mark.parametrize("path", ["/healthz/../admin", "/healthz/./live", "/healthz/..", "/healthz/x/../../admin"])
@pytest.mark.anyio
async def test_dot_segments_never_make_a_path_public(shared_issuer: LocalIssuer, path: str) -> None:
    # httpx normalises dot segments before sending, so this drives the ASGI interface directly.
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    middleware = CloudflareAccessMiddleware(app, settings=full_settings(shared_issuer))
    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "client": REMOTE_PEER}
    await middleware(scope, receive, send)
    assert reached == []
    assert sent[0]["status"] == 401


def test_public_path_sees_an_unauthenticated_user(shared_issuer: LocalIssuer) -> None:
    async def peek(request: Any) -> PlainTextResponse:
        return PlainTextResponse(f"{request.user.is_authenticated} {request.auth.scopes}")

    app = Starlette(routes=[Route("/healthz", peek)])
    app.add_middleware(CloudflareAccessMiddleware, settings=full_settings(shared_issuer))
    with TestClient(app, client=REMOTE_PEER) as client:
        assert client.get("/healthz").text == "False []"


# --- exposure modes --------------------------------------------------------------------------


LOCAL_ONLY = Settings(exposure_mode=ExposureMode.LOCAL)


@pytest.mark.parametrize(
    ("mode", "peer", "headers", "status"),
    [
        ("local", ("127.0.0.1", 1), {}, 200),
        ("local", ("127.8.9.10", 1), {}, 200),
        ("local", ("::1", 1), {}, 200),
        ("local", ("::ffff:127.0.0.1", 1), {}, 200),
        ("local", ("203.0.113.7", 1), {}, 401),
        ("local", ("::ffff:203.0.113.7", 1), {}, 401),
        ("local", ("testclient", 50000), {}, 401),
        ("local", ("localhost", 1), {}, 401),
        ("local", None, {}, 401),
        ("local", ("203.0.113.7", 1), {"X-Forwarded-For": "127.0.0.1"}, 401),
        ("local", ("203.0.113.7", 1), {"X-Real-IP": "127.0.0.1"}, 401),
        ("local", ("203.0.113.7", 1), {"Forwarded": "for=127.0.0.1"}, 401),
        ("local", ("203.0.113.7", 1), {"Host": "localhost"}, 401),
        ("reverse-proxy", ("127.0.0.1", 1), {}, 401),
        ("reverse-proxy", ("::1", 1), {}, 401),
        ("reverse-proxy", ("127.0.0.1", 1), {"X-Forwarded-For": "127.0.0.1"}, 401),
    ],
    ids=[
        "local-127.0.0.1",
        "local-127/8",
        "local-ipv6-loopback",
        "local-ipv4-mapped-loopback",
        "local-remote",
        "local-ipv4-mapped-remote",
        "local-testclient-name",
        "local-hostname-not-resolved",
        "local-no-client",
        "local-spoofed-xff",
        "local-spoofed-x-real-ip",
        "local-spoofed-forwarded",
        "local-spoofed-host",
        "proxy-loopback",
        "proxy-ipv6-loopback",
        "proxy-loopback-with-xff",
    ],
)
def test_loopback_trust_by_mode_and_socket_peer(
    shared_issuer: LocalIssuer,
    make_client: ClientFactory,
    mode: str,
    peer: tuple[str, int] | None,
    headers: dict[str, str],
    status: int,
) -> None:
    settings = full_settings(shared_issuer, exposure_mode=mode)
    response = make_client(settings, peer=peer).get("/", headers=headers)
    assert response.status_code == status
    if status == 200:
        assert response.json()["kind"] == "local"


def test_local_mode_without_team_ignores_token_header(make_client: ClientFactory) -> None:
    client = make_client(LOCAL_ONLY, peer=LOOPBACK_PEER)
    response = client.get("/", headers=jwt_header("anything"))
    assert response.status_code == 200
    assert response.json()["kind"] == "local"
    assert make_client(LOCAL_ONLY).get("/", headers=jwt_header("anything")).status_code == 401


# --- websockets ------------------------------------------------------------------------------


def test_websocket_with_valid_token_is_accepted(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer))
    with client.websocket_connect("/ws", headers=jwt_header(shared_issuer.identity_token("alice@example.com"))) as ws:
        assert ws.receive_json() == {"hello": "alice@example.com"}


@pytest.mark.parametrize("credential", ["none", "expired", "unknown-user"])
def test_websocket_is_refused_before_accept(
    shared_issuer: LocalIssuer, make_client: ClientFactory, credential: str
) -> None:
    client = make_client(full_settings(shared_issuer))
    headers = {
        "none": {},
        "expired": jwt_header(shared_issuer.identity_token("alice@example.com", lifetime=-600)),
        "unknown-user": jwt_header(shared_issuer.identity_token("mallory@example.com")),
    }[credential]
    with pytest.raises(WebSocketDenialResponse) as caught, client.websocket_connect("/ws", headers=headers):
        pass  # pragma: no cover - the handshake is refused
    # TestClient, like uvicorn, offers ASGI's websocket.http.response extension: the refusal is the JSON error.
    assert caught.value.status_code == (403 if credential == "unknown-user" else 401)
    assert error_of(caught.value)["reason"] == {"none": "no_credentials", "expired": "token_expired"}.get(
        credential, "unknown_user"
    )


# --- errors raised by the app ----------------------------------------------------------------


def test_auth_error_raised_by_the_app_becomes_a_json_refusal(shared_issuer: LocalIssuer, audit_mode: str) -> None:
    async def endpoint(request: Any) -> PlainTextResponse:
        raise Forbidden(Reason.INSUFFICIENT_SCOPE, "Admins only.")

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(CloudflareAccessMiddleware, settings=full_settings(shared_issuer))
    with TestClient(app, client=REMOTE_PEER) as client:
        response = client.get("/", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 403
    assert error_of(response) == {"code": "FORBIDDEN", "reason": "insufficient_scope", "message": "Admins only."}


def test_settings_are_read_from_the_environment(shared_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in shared_issuer.env(CFACCESS_API_KEYS=ApiKey.from_secret("op", API_KEY).line()).items():
        monkeypatch.setenv(name, value)
    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse(request.user.display_name))])
    app.add_middleware(CloudflareAccessMiddleware)
    with TestClient(app, client=REMOTE_PEER) as client:
        assert client.get("/", headers={"Authorization": f"Bearer {API_KEY}"}).text == "op"
        assert client.get("/").status_code == 401


def test_bad_environment_stops_startup_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFACCESS_EXPOSURE_MODE", "reverse-proxy")
    monkeypatch.delenv("CFACCESS_TEAM_DOMAIN", raising=False)
    app = Starlette()
    app.add_middleware(CloudflareAccessMiddleware)
    with pytest.raises(ConfigError, match="CFACCESS_TEAM_DOMAIN"), TestClient(app):
        pass  # pragma: no cover


def test_lifespan_reaches_the_app(shared_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            events.append(message["type"])
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    middleware = CloudflareAccessMiddleware(app, settings=full_settings(shared_issuer))
    with caplog.at_level(logging.DEBUG), TestClient(middleware):
        pass
    assert events == ["lifespan.startup", "lifespan.shutdown"]
    assert middleware.jwks is not None
    assert middleware.jwks.kids == shared_issuer.kids


def test_lookup_variants_sync_returning_awaitable_and_async_callable_object(
    shared_issuer: LocalIssuer, make_client: ClientFactory
) -> None:
    async def fetch(email: str) -> dict[str, str]:
        return {"email": email}

    class AsyncLookup:
        async def __call__(self, email: str) -> dict[str, str]:
            return {"email": email}

    token = jwt_header(shared_issuer.identity_token("dave@example.com"))
    for lookup in (lambda email: fetch(email), AsyncLookup()):
        client = make_client(full_settings(shared_issuer), user_lookup=lookup)
        assert client.get("/", headers=token).json()["email"] == "dave@example.com"


@pytest.mark.anyio
async def test_other_scope_types_pass_through(shared_issuer: LocalIssuer) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = CloudflareAccessMiddleware(app, settings=full_settings(shared_issuer))
    await middleware({"type": "custom"}, None, None)  # type: ignore[arg-type]
    assert seen == ["custom"]


@pytest.mark.parametrize("scope_type", ["http", "websocket"])
@pytest.mark.anyio
async def test_auth_error_after_the_answer_started_propagates_and_sends_nothing_more(
    shared_issuer: LocalIssuer, audit_mode: str, scope_type: str
) -> None:
    started = {
        "http": {"type": "http.response.start", "status": 200, "headers": []},
        "websocket": {"type": "websocket.accept"},
    }[scope_type]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(started)
        raise Forbidden(Reason.INSUFFICIENT_SCOPE, "too late")

    sent: list[Any] = []

    async def send(message: Any) -> None:  # accepts anything, like a compressing middleware in between would
        sent.append(message)

    middleware = CloudflareAccessMiddleware(app, settings=full_settings(shared_issuer))
    scope = {
        "type": scope_type,
        "method": "GET",
        "path": "/",
        "headers": [(b"authorization", f"Bearer {API_KEY}".encode())],
        "client": REMOTE_PEER,
    }
    with pytest.raises(Forbidden):
        await middleware(scope, None, send)  # type: ignore[arg-type]
    assert sent == [started]  # no refusal spliced into an answer already under way


# --- found in review -------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [False, 0, "", {}])
def test_falsy_lookup_results_mean_unknown_user(
    shared_issuer: LocalIssuer, make_client: ClientFactory, answer: object
) -> None:
    client = make_client(full_settings(shared_issuer), user_lookup=lambda email: answer)
    response = client.get("/", headers=jwt_header(shared_issuer.identity_token("stranger@example.com")))
    assert response.status_code == 403
    assert error_of(response)["reason"] == "unknown_user"


def test_lookup_returning_true_is_a_bug_answered_with_503(
    shared_issuer: LocalIssuer, make_client: ClientFactory
) -> None:
    client = make_client(full_settings(shared_issuer), user_lookup=lambda email: True)
    response = client.get("/", headers=jwt_header(shared_issuer.identity_token("stranger@example.com")))
    assert response.status_code == 503
    assert error_of(response)["reason"] == "user_lookup_failed"


def test_only_ascii_letters_are_lower_cased(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    seen: list[str] = []

    def lookup(email: str) -> object:
        seen.append(email)
        return USERS_BY_EMAIL.get(email)

    client = make_client(full_settings(shared_issuer), user_lookup=lookup)
    kelvin = "\u212aate@example.com"  # str.lower() would turn the Kelvin sign into "k"
    response = client.get("/", headers=jwt_header(shared_issuer.identity_token(kelvin)))
    assert response.status_code == 403
    assert seen == [kelvin]


USERS_BY_EMAIL = {"kate@example.com": {"name": "Kate"}}


def test_failing_lookup_logs_the_type_not_the_message(
    shared_issuer: LocalIssuer, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(email: str) -> object:
        raise ConnectionError("postgres://app:hunter2@db/app refused")

    client = make_client(full_settings(shared_issuer), user_lookup=broken)
    with caplog.at_level(logging.DEBUG):
        client.get("/", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert "ConnectionError" in caplog.text
    assert "hunter2" not in caplog.text


def test_duplicate_access_cookie_is_refused(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(full_settings(shared_issuer, allow_cookie=True))
    token = shared_issuer.identity_token("alice@example.com")
    response = client.get("/", headers={"Cookie": f"CF_Authorization=junk; CF_Authorization={token}"})
    assert response.status_code == 401
    assert error_of(response)["reason"] == "token_malformed"


@pytest.mark.parametrize(
    ("root_path", "path", "public"),
    [
        ("/api", "/api/healthz", True),
        ("/api", "/api/healthz/live", True),
        ("/api", "/healthz", True),  # not under root_path: Starlette routes it as is, and so do we
        ("/api", "/api/healthzz", False),
        ("/api", "/apihealthz", False),
        ("/healthz", "/healthz/admin", False),  # a root_path inside a public prefix opens nothing
    ],
)
@pytest.mark.anyio
async def test_public_paths_are_matched_like_the_router_under_root_path(
    shared_issuer: LocalIssuer, root_path: str, path: str, public: bool
) -> None:
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    async def send(message: Any) -> None:
        pass

    middleware = CloudflareAccessMiddleware(app, settings=full_settings(shared_issuer))
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": root_path,
        "headers": [],
        "client": REMOTE_PEER,
    }
    await middleware(scope, None, send)  # type: ignore[arg-type]
    assert (reached == [path]) is public


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_huge_time_claims_are_401_not_500(shared_issuer: LocalIssuer, make_client: ClientFactory, claim: str) -> None:
    client = make_client(full_settings(shared_issuer))
    token = shared_issuer.mint(shared_issuer.base_claims() | {"email": "alice@example.com", claim: 10**400})
    response = client.get("/", headers=jwt_header(token))
    assert response.status_code == 401
    assert error_of(response)["reason"] == "claim_invalid"


def test_shared_jwks_must_fetch_the_configured_url(shared_issuer: LocalIssuer) -> None:
    with pytest.raises(ValueError, match="jwks fetches"):
        CloudflareAccessMiddleware(
            Starlette(), settings=full_settings(shared_issuer), jwks=JWKSClient("https://elsewhere.example/certs")
        )


def test_acceptance_is_audited_even_when_the_app_fails_or_sends_nothing(shared_issuer: LocalIssuer) -> None:
    from cfaccess_mw import AuditEvent

    events: list[AuditEvent] = []

    async def crash(request: Any) -> PlainTextResponse:
        raise RuntimeError("app bug")

    class Silent:  # an ASGI app that returns without answering
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            return None

    app = Starlette(routes=[Route("/crash", crash), Route("/silent", Silent())])
    app.add_middleware(CloudflareAccessMiddleware, settings=full_settings(shared_issuer), audit_hook=events.append)
    key = {"Authorization": f"Bearer {API_KEY}"}
    with TestClient(app, client=REMOTE_PEER, raise_server_exceptions=False) as client:
        assert client.get("/crash", headers=key).status_code == 500  # the app's own bug, not the middleware's
        assert client.get("/silent", headers=key).status_code == 500  # TestClient's stand-in for no answer
    assert [(e.outcome, e.status, e.principal) for e in events] == [
        ("accepted", None, "operator"),
        ("accepted", None, "operator"),
    ]


# --- what is remembered with a repeated token ---------------------------------------------------


def test_repeated_token_still_looks_the_user_up_every_time(
    shared_issuer: LocalIssuer, make_client: ClientFactory, audit_mode: str
) -> None:
    users: dict[str, dict[str, str]] = {"erin@example.com": {"role": "admin"}}

    def roles(principal: Any) -> list[str]:
        return [principal.user["role"]] if principal.kind == "user" else []

    client = make_client(full_settings(shared_issuer), user_lookup=users.get, extra_scopes=roles)
    token = jwt_header(shared_issuer.identity_token("erin@example.com"))
    assert client.get("/admin", headers=token).status_code == 200
    users["erin@example.com"]["role"] = "member"  # demoted in place: the same user object
    assert client.get("/admin", headers=token).status_code == 403
    users["erin@example.com"] = {"role": "admin"}  # replaced by a new object
    assert client.get("/", headers=token).json()["scopes"] == ["authenticated", "user", "admin"]
    del users["erin@example.com"]  # deleted: the same token is refused at once
    response = client.get("/", headers=token)
    assert response.status_code == 403
    assert error_of(response)["reason"] == "unknown_user"


def test_repeated_token_reuses_the_principal_while_the_user_is_the_same(
    shared_issuer: LocalIssuer, audit_mode: str
) -> None:
    seen: list[object] = []

    async def remember(request: Any) -> PlainTextResponse:
        seen.append(request.user)
        return PlainTextResponse("ok")

    users = {"erin@example.com": {"role": "admin"}}
    app = Starlette(routes=[Route("/", remember)])
    app.add_middleware(CloudflareAccessMiddleware, settings=full_settings(shared_issuer), user_lookup=users.get)
    token = jwt_header(shared_issuer.identity_token("erin@example.com"))
    with TestClient(app, client=REMOTE_PEER) as client:
        client.get("/", headers=token)
        client.get("/", headers=token)
        users["erin@example.com"] = {"role": "member"}
        client.get("/", headers=token)
    first, second, third = seen
    assert second is first
    assert third is not first
    assert third.user == {"role": "member"}  # type: ignore[attr-defined]


def test_request_auth_is_never_shared_between_requests(shared_issuer: LocalIssuer, audit_mode: str) -> None:
    async def escalate(request: Any) -> JSONResponse:
        scopes = list(request.auth.scopes)
        request.auth.scopes.append("sudo")  # an app granting a scope for this request only
        return JSONResponse(scopes)

    settings = full_settings(shared_issuer, exposure_mode="local")
    app = Starlette(routes=[Route("/", escalate)])
    app.add_middleware(CloudflareAccessMiddleware, settings=settings, user_lookup=find_user)
    credentials = {
        "api_key": {"Authorization": f"Bearer {API_KEY}"},
        "service": jwt_header(shared_issuer.service_token(CI_CLIENT_ID)),
        "user": jwt_header(shared_issuer.identity_token("alice@example.com")),
        "local": {},
    }
    for kind, headers in credentials.items():
        peer = LOOPBACK_PEER if kind == "local" else REMOTE_PEER
        with TestClient(app, base_url=LOCAL_BASE_URL, client=peer) as client:
            for _ in range(2):
                assert client.get("/", headers=headers).json() == ["authenticated", kind]


def test_extra_scopes_are_asked_on_every_request_for_every_kind(shared_issuer: LocalIssuer) -> None:
    granted: set[str] = {"service", "api_key", "user"}

    def roles(principal: Any) -> list[str]:
        return ["deploy"] if principal.kind in granted else []

    async def show(request: Any) -> JSONResponse:
        return JSONResponse(request.auth.scopes)

    app = Starlette(routes=[Route("/", show)])
    app.add_middleware(
        CloudflareAccessMiddleware, settings=full_settings(shared_issuer), user_lookup=find_user, extra_scopes=roles
    )
    credentials = {
        "service": jwt_header(shared_issuer.service_token(CI_CLIENT_ID)),
        "api_key": {"Authorization": f"Bearer {API_KEY}"},
        "user": jwt_header(shared_issuer.identity_token("alice@example.com")),
    }
    with TestClient(app, client=REMOTE_PEER) as client:
        for kind, headers in credentials.items():
            assert client.get("/", headers=headers).json() == ["authenticated", kind, "deploy"]
            granted.discard(kind)  # the role is revoked: the same credential loses it at once
            assert client.get("/", headers=headers).json() == ["authenticated", kind]


@pytest.mark.anyio
async def test_header_names_as_bytearray_are_read(shared_issuer: LocalIssuer) -> None:
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["user"].kind)

    middleware = CloudflareAccessMiddleware(app, settings=full_settings(shared_issuer))
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(bytearray(b"authorization"), bytearray(f"Bearer {API_KEY}".encode()))],
        "client": REMOTE_PEER,
    }
    await middleware(scope, None, None)  # type: ignore[arg-type]
    assert reached == ["api_key"]


@pytest.mark.anyio
async def test_a_token_header_as_bytearray_is_verified(shared_issuer: LocalIssuer) -> None:
    """A server may hand header values as bytearray (test_header_names_as_bytearray_are_read): the token header's
    value, found by its bytes in the token cache, must not be hashed as one (unhashable: a 500, not a decision)."""
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["user"].email)

    middleware = CloudflareAccessMiddleware(app, settings=full_settings(shared_issuer), user_lookup=find_user)
    token = shared_issuer.identity_token("alice@example.com")
    for _ in range(2):  # verified afresh, then found in the cache
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(bytearray(b"cf-access-jwt-assertion"), bytearray(token.encode()))],
            "client": REMOTE_PEER,
        }
        await middleware(scope, None, None)  # type: ignore[arg-type]
    assert reached == ["alice@example.com", "alice@example.com"]


@pytest.mark.anyio
async def test_a_bug_while_deciding_is_a_503_in_our_shape_not_a_500(
    shared_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """A header value no decision step can read (a str where ASGI says bytes) stands in for any bug while
    deciding: the request is refused with 503 internal_error, the app is not reached, the value is not logged."""
    reached: list[object] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    middleware = CloudflareAccessMiddleware(app, settings=full_settings(shared_issuer))
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"authorization", "Bearer not-bytes-secret")],
        "client": REMOTE_PEER,
    }
    with caplog.at_level(logging.DEBUG):
        await middleware(scope, receive, send)  # type: ignore[arg-type]
    assert reached == []
    assert sent[0]["status"] == 503
    assert json.loads(sent[1]["body"])["error"]["reason"] == "internal_error"
    assert "unexpected AttributeError while deciding" in caplog.text
    assert "not-bytes-secret" not in caplog.text + sent[1]["body"].decode()


def test_failing_extra_scopes_is_503_not_500(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    def broken(principal: Any) -> list[str]:
        raise KeyError("role")

    client = make_client(full_settings(shared_issuer), extra_scopes=broken)
    response = client.get("/", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 503
    assert error_of(response)["reason"] == "user_lookup_failed"
