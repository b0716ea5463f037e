"""Litestar: one Authenticator for every middleware instance Litestar builds, typed callers, our refusals.

Under Litestar's own TestClient (lifespan run) and live under uvicorn, hypercorn
and granian, with the example app's users in SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("litestar")

from litestar import Litestar, get, websocket
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, WebSocketDisconnect
from litestar.testing import TestClient
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from cfaccess_mw import ApiKey, AuditEvent, Authenticator, ConfigError, Forbidden, Principal, Reason, ServiceToken
from cfaccess_mw.integrations.litestar import (
    AccessAuthenticationMiddleware,
    AccessNotAuthorized,
    AccessRequest,
    AccessWebSocket,
    CloudflareAccessAuth,
    CurrentPrincipal,
    require,
)
from cfaccess_mw.testing import LocalIssuer
from cfaccess_mw.testing.presets import GoogleIapIssuer, OidcIssuer
from examples import litestar_app
from examples.userdb import UserDB

from .conftest import REMOTE_PEER, error_of, find_user, jwt_header
from .live_servers import granian_available, serve_granian, serve_hypercorn, serve_uvicorn

API_KEY = "litestar-test-key-0123456789"
CLIENT_ID = "abcdef.access"


def bearer(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def roles(principal: CurrentPrincipal) -> list[str]:
    return [principal.user["role"]] if principal.kind == "user" else []


def settings_for(issuer: LocalIssuer, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "api_keys": (ApiKey.from_secret("operator", API_KEY),),
        "service_tokens": (ServiceToken("ci", CLIENT_ID),),
        "public_paths": ("/healthz",),
    }
    values.update(overrides)
    return issuer.settings(**values)


# --- the app every TestClient test uses --------------------------------------------------------


@get("/me")
async def me(request: AccessRequest) -> dict[str, Any]:
    principal: Principal = request.user
    scopes: list[str] = request.auth
    return {"kind": principal.kind, "who": principal.display_name, "scopes": scopes}


@get("/principal")
async def by_dependency(principal: CurrentPrincipal) -> dict[str, str]:
    return {"who": principal.display_name}


@get("/admin", guards=[require("user", scopes=["admin"])])
async def admin() -> dict[str, str]:
    return {"ok": "admin"}


@get("/raise")
async def raises() -> None:
    raise Forbidden(Reason.INSUFFICIENT_SCOPE, "Admins only.", "the handler said no")


@get("/echo")
async def echo(request: AccessRequest) -> dict[str, Any]:
    return {"who": request.user.display_name, "extra": request.headers.get("x-extra"), "client": request.client}


@get("/open", opt={"exclude_from_auth": True})
async def opened() -> dict[str, str]:
    return {"status": "open"}


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/healthz/who")
async def healthz_who(principal: CurrentPrincipal) -> dict[str, str]:
    return {"who": principal.display_name}  # a public path: the dependency must refuse


@websocket("/ws")
async def ws(socket: AccessWebSocket) -> None:
    await socket.accept()
    await socket.send_json({"who": socket.user.display_name})
    await socket.close()


@websocket("/ws-raise")
async def ws_raise(socket: AccessWebSocket) -> None:
    raise Forbidden(Reason.INSUFFICIENT_SCOPE, "Admins only.")


@websocket("/ws-admin", guards=[require("user", scopes=["admin"])])
async def ws_admin(socket: AccessWebSocket) -> None:
    await socket.accept()
    await socket.close()


ROUTES = [me, echo, by_dependency, admin, raises, opened, healthz, healthz_who, ws, ws_raise, ws_admin]


@pytest.fixture
def events() -> list[AuditEvent]:
    return []


@pytest.fixture
def client(shared_issuer: LocalIssuer, events: list[AuditEvent]) -> Iterator[TestClient[Litestar]]:
    access = CloudflareAccessAuth(
        settings=settings_for(shared_issuer), user_lookup=find_user, extra_scopes=roles, audit_hook=events.append
    )
    with TestClient(Litestar(ROUTES, on_app_init=[access.on_app_init])) as test_client:
        yield test_client


# --- who the caller is ---------------------------------------------------------------------------


def test_a_user_is_request_user_with_scopes(client: TestClient[Litestar], shared_issuer: LocalIssuer) -> None:
    response = client.get("/me", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert response.json() == {"kind": "user", "who": "alice@example.com", "scopes": ["authenticated", "user", "admin"]}


def test_the_principal_dependency(client: TestClient[Litestar], shared_issuer: LocalIssuer) -> None:
    response = client.get("/principal", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert response.json() == {"who": "bob@example.com"}


def test_a_service_token_and_an_api_key(client: TestClient[Litestar], shared_issuer: LocalIssuer) -> None:
    service = client.get("/me", headers=jwt_header(shared_issuer.service_token(CLIENT_ID)))
    assert service.json()["kind"] == "service"
    assert service.json()["who"] == "ci"
    assert client.get("/me", headers=bearer()).json()["who"] == "operator"


def test_no_credentials_is_a_401_in_our_shape(client: TestClient[Litestar]) -> None:
    response = client.get("/me")
    assert response.status_code == 401
    assert error_of(response)["reason"] == "no_credentials"
    assert response.headers["www-authenticate"] == 'Bearer realm="cfaccess"'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"


def test_a_bad_token_and_a_wrong_key_are_401(client: TestClient[Litestar], shared_issuer: LocalIssuer) -> None:
    expired = client.get("/me", headers=jwt_header(shared_issuer.identity_token("alice@example.com", lifetime=-60)))
    assert expired.status_code == 401
    assert error_of(expired)["reason"] == "token_expired"
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]
    wrong = client.get("/me", headers=bearer("not-the-key"))
    assert wrong.status_code == 401
    assert error_of(wrong)["reason"] == "api_key_invalid"


def test_an_unknown_user_is_a_403(client: TestClient[Litestar], shared_issuer: LocalIssuer) -> None:
    response = client.get("/me", headers=jwt_header(shared_issuer.identity_token("eve@example.com")))
    assert response.status_code == 403
    assert error_of(response)["reason"] == "unknown_user"
    assert "www-authenticate" not in response.headers


def test_a_disallowed_service_token_is_a_403(client: TestClient[Litestar], shared_issuer: LocalIssuer) -> None:
    response = client.get("/me", headers=jwt_header(shared_issuer.service_token("someone-else.access")))
    assert response.status_code == 403
    assert error_of(response)["reason"] == "service_token_not_allowed"


# --- refusals raised by the app -------------------------------------------------------------------


def test_an_auth_error_raised_by_a_handler_is_our_json_and_one_refusal(
    client: TestClient[Litestar], events: list[AuditEvent]
) -> None:
    response = client.get("/raise", headers=bearer())
    assert response.status_code == 403
    assert error_of(response) == {"code": "FORBIDDEN", "reason": "insufficient_scope", "message": "Admins only."}
    assert [(e.outcome, e.status, e.reason) for e in events] == [("refused", 403, "insufficient_scope")]


def test_the_require_guard(client: TestClient[Litestar], shared_issuer: LocalIssuer, events: list[AuditEvent]) -> None:
    alice = jwt_header(shared_issuer.identity_token("alice@example.com"))
    assert client.get("/admin", headers=alice).status_code == 200
    refused = client.get("/admin", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert refused.status_code == 403
    assert error_of(refused)["reason"] == "insufficient_scope"
    machine = client.get("/admin", headers=bearer())
    assert "only for user callers" in error_of(machine)["message"]
    assert [(e.outcome, e.status) for e in events] == [("accepted", 200), ("refused", 403), ("refused", 403)]


def test_require_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown principal kind"):
        require("admin")  # type: ignore[arg-type]


def test_refusals_are_litestars_exceptions_for_its_hooks(shared_issuer: LocalIssuer) -> None:
    seen: list[Exception] = []

    async def record(exc: Exception, scope: Any) -> None:
        seen.append(exc)

    access = CloudflareAccessAuth(settings=settings_for(shared_issuer), user_lookup=find_user)
    app = Litestar([me], on_app_init=[access.on_app_init], after_exception=[record])
    with TestClient(app) as client:
        assert client.get("/me").status_code == 401
        assert client.get("/me", headers=jwt_header(shared_issuer.identity_token("eve@example.com"))).status_code == 403
    assert isinstance(seen[0], NotAuthorizedException)
    assert isinstance(seen[0], AccessNotAuthorized)
    assert seen[0].error.reason is Reason.NO_CREDENTIALS
    assert isinstance(seen[1], PermissionDeniedException)


def test_without_its_handlers_litestar_still_answers_with_the_status_and_challenge(shared_issuer: LocalIssuer) -> None:
    access = CloudflareAccessAuth(settings=settings_for(shared_issuer))
    with TestClient(Litestar([me], middleware=[access.middleware])) as client:  # no on_app_init: Litestar renders it
        response = client.get("/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="cfaccess"'
    assert response.json()["extra"] == {"code": "UNAUTHORIZED", "reason": "no_credentials"}


# --- public routes --------------------------------------------------------------------------------


def test_public_paths_and_excluded_routes(client: TestClient[Litestar]) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}  # CFACCESS_PUBLIC_PATHS
    assert client.get("/open").json() == {"status": "open"}  # opt={"exclude_from_auth": True}
    refused = client.get("/healthz/who")
    assert refused.status_code == 401  # the principal dependency refuses where the middleware let it through
    assert error_of(refused)["reason"] == "no_credentials"


def test_exclude_patterns_and_no_method_is_exempt(shared_issuer: LocalIssuer) -> None:
    access = CloudflareAccessAuth(settings=settings_for(shared_issuer, public_paths=()), exclude=["^/open$"])
    with TestClient(Litestar([opened, healthz, me], on_app_init=[access.on_app_init])) as client:
        assert client.get("/open").status_code == 200
        assert client.get("/healthz").status_code == 401
        assert client.options("/me").status_code == 401  # Litestar's auth middleware would exempt OPTIONS


async def call_asgi(app: Litestar, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """One HTTP request with an empty body, the scope exactly as given; the messages the app sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


@pytest.mark.anyio
async def test_headers_as_a_tuple_and_client_as_an_iterator_reach_the_route_intact(shared_issuer: LocalIssuer) -> None:
    access = CloudflareAccessAuth(settings=settings_for(shared_issuer))
    app = Litestar(ROUTES, on_app_init=[access.on_app_init])
    headers = [(b"authorization", f"Bearer {API_KEY}".encode()), (b"x-extra", b"1")]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/echo", "raw_path": b"/echo", "root_path": "", "query_string": b"", "headers": tuple(headers),
             "client": iter(REMOTE_PEER), "server": ("testserver", 80)}  # fmt: skip
    # ASGI allows any iterable; a headers *iterator* Litestar's own router uses up looking for Host.
    sent = await call_asgi(app, scope)
    assert sent[0]["status"] == 200
    body = json.loads(b"".join(message.get("body", b"") for message in sent[1:]))
    assert body == {"who": "operator", "extra": "1", "client": list(REMOTE_PEER)}


# --- websockets -----------------------------------------------------------------------------------


def test_websocket_accepted_and_refused_with_1008(client: TestClient[Litestar], shared_issuer: LocalIssuer) -> None:
    with client.websocket_connect("/ws", headers=bearer()) as socket:
        assert socket.receive_json() == {"who": "operator"}
    with pytest.raises(WebSocketDisconnect) as caught, client.websocket_connect("/ws"):
        pass  # pragma: no cover - refused before accept
    assert caught.value.code == 1008
    assert caught.value.detail == "UNAUTHORIZED"


@pytest.mark.parametrize("path", ["/ws-raise", "/ws-admin"])
def test_a_websocket_refused_by_handler_or_guard_closes_1008(
    client: TestClient[Litestar], shared_issuer: LocalIssuer, events: list[AuditEvent], path: str
) -> None:
    bob = jwt_header(shared_issuer.identity_token("bob@example.com"))
    with pytest.raises(WebSocketDisconnect) as caught, client.websocket_connect(path, headers=bob):
        pass  # pragma: no cover - refused before accept
    assert caught.value.code == 1008  # not Litestar's 4500 for an exception in a websocket handler
    assert [(e.outcome, e.reason) for e in events] == [("refused", "insufficient_scope")]


# --- one Authenticator, keys fetched once at startup ----------------------------------------------


def test_one_authenticator_and_one_fetch_for_every_middleware_instance(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[AccessAuthenticationMiddleware] = []
    original = AccessAuthenticationMiddleware.__init__

    def counting(self: AccessAuthenticationMiddleware, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(AccessAuthenticationMiddleware, "__init__", counting)

    @get("/one")
    async def one() -> str:
        return "1"

    @get("/two")
    async def two() -> str:
        return "2"

    @get("/three")
    async def three() -> str:
        return "3"

    access = CloudflareAccessAuth(settings=settings_for(issuer), user_lookup=find_user)
    with TestClient(Litestar([one, two, three], on_app_init=[access.on_app_init])) as client:
        assert issuer.fetch_count == 1  # at startup, before any request
        alice = jwt_header(issuer.identity_token("alice@example.com"))
        for path in ("/one", "/two", "/three", "/schema/openapi.json"):
            assert client.get(path, headers=alice).status_code == 200
    assert issuer.fetch_count == 1
    assert len(built) > 3  # one per route handler, the OpenAPI ones included
    assert {id(middleware.authenticator) for middleware in built} == {id(access.authenticator)}


def test_unreachable_keys_are_a_503_with_retry_after(issuer: LocalIssuer) -> None:
    issuer.responder = lambda: (500, {}, b"down")
    access = CloudflareAccessAuth(settings=settings_for(issuer), user_lookup=find_user)
    with TestClient(Litestar([me], plugins=[access])) as client:  # the config is also an init plugin
        response = client.get("/me", headers=jwt_header(issuer.identity_token("alice@example.com")))
    assert response.status_code == 503
    assert error_of(response)["reason"] == "keys_unavailable"
    assert "retry-after" in response.headers


# --- configuration ---------------------------------------------------------------------------------


def test_a_bad_variable_stops_the_app_being_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFACCESS_EXPOSURE_MODE", "reverse-proxy")
    monkeypatch.setenv("CFACCESS_AUD", "a" * 64)
    monkeypatch.delenv("CFACCESS_TEAM_DOMAIN", raising=False)
    with pytest.raises(ConfigError, match="CFACCESS_TEAM_DOMAIN"):
        CloudflareAccessAuth(user_lookup=find_user)


def test_authenticator_or_its_options_not_both(shared_issuer: LocalIssuer) -> None:
    shared = Authenticator(settings_for(shared_issuer), user_lookup=find_user)
    assert CloudflareAccessAuth(shared).authenticator is shared
    with pytest.raises(TypeError, match="user_lookup"):
        CloudflareAccessAuth(shared, user_lookup=find_user)


def test_openapi_documents_both_schemes(client: TestClient[Litestar]) -> None:
    schema = client.get("/schema/openapi.json", headers=bearer()).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["CloudflareAccess"]["type"] == "apiKey"
    assert schemes["CloudflareAccess"]["name"] == "Cf-Access-Jwt-Assertion"
    assert schemes["ApiKey"] == {"type": "http", "scheme": "bearer", "description": schemes["ApiKey"]["description"]}
    assert {"CloudflareAccess": []} in schema["security"]


@pytest.mark.parametrize(
    ("issuer_type", "schemes"),
    [
        (GoogleIapIssuer, {"CloudflareAccess": "x-goog-iap-jwt-assertion", "ApiKey": None}),
        (OidcIssuer, {"ApiKey": None}),
    ],
)
def test_openapi_names_the_presets_token_header(issuer_type: Any, schemes: dict[str, str | None]) -> None:
    with issuer_type() as preset_issuer:
        components = CloudflareAccessAuth(settings=preset_issuer.settings()).openapi_components
    documented = components.security_schemes or {}
    assert {name: getattr(scheme, "name", None) for name, scheme in documented.items()} == schemes


def test_repr_shows_no_secret(shared_issuer: LocalIssuer) -> None:
    access = CloudflareAccessAuth(settings=settings_for(shared_issuer))
    assert API_KEY not in repr(access)
    assert "Authenticator(" in repr(access)


# --- the example app, under the test client and live servers --------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "users.sqlite3"
    users = UserDB(path)
    users.add("alice@example.com", "Alice", role="admin")
    users.add("bob@example.com", "Bob")
    return path


@pytest.fixture(params=["uvicorn", "hypercorn", "granian"])
def live(request: pytest.FixtureRequest, issuer: LocalIssuer, db: Path) -> Iterator[str]:
    settings = settings_for(issuer)
    if request.param == "uvicorn":
        with serve_uvicorn(litestar_app.create_app(settings, str(db))) as base:
            yield base
    elif request.param == "hypercorn":
        with serve_hypercorn(litestar_app.create_app(settings, str(db))) as base:
            yield base
    else:
        if not granian_available():
            pytest.skip("granian is not installed (it needs a prebuilt wheel for this platform)")
        env = issuer.env(
            CFACCESS_API_KEYS=ApiKey.from_secret("operator", API_KEY).line(),
            CFACCESS_SERVICE_TOKENS=f"ci={CLIENT_ID}",
            CFACCESS_PUBLIC_PATHS="/healthz",
            EXAMPLE_DB=str(db),
        )
        with serve_granian("examples.litestar_app:create_app", env, factory=True) as base:
            yield base


def test_live_server(live: str, issuer: LocalIssuer) -> None:
    assert issuer.fetch_count == 1  # the keys came at startup, once for all the routes
    with httpx.Client(base_url=live, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        me = http.get("/api/me", headers=jwt_header(issuer.identity_token("alice@example.com")))
        assert me.json()["name"] == "Alice"
        assert me.json()["scopes"] == ["authenticated", "user", "admin"]
        refused = http.get("/api/me")
        assert refused.status_code == 401
        assert error_of(refused)["reason"] == "no_credentials"
        unknown = http.get("/api/me", headers=jwt_header(issuer.identity_token("eve@example.com")))
        assert unknown.status_code == 403
        assert http.get("/api/machines", headers=bearer()).json()["who"] == "operator"
        service = http.get("/api/machines", headers=jwt_header(issuer.service_token(CLIENT_ID)))
        assert service.json()["who"] == "ci"
        guarded = http.get("/api/admin", headers=jwt_header(issuer.identity_token("bob@example.com")))
        assert guarded.status_code == 403
        assert error_of(guarded)["reason"] == "insufficient_scope"
    assert issuer.fetch_count == 1
    ws_url = live.replace("http://", "ws://") + "/ws"
    with connect(ws_url, additional_headers=bearer(), open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10)) == {"hello": "operator"}
    with pytest.raises(InvalidStatus) as caught, connect(ws_url, open_timeout=10):
        pass  # pragma: no cover - refused at the handshake
    # uvicorn, hypercorn and granian all offer ASGI's websocket.http.response: the refusal is our JSON error.
    assert caught.value.response.status_code == 401
    assert json.loads(bytes(caught.value.response.body or b""))["error"]["reason"] == "no_credentials"


# --- mounts and guards (issue 18) -----------------------------------------------------------------


def test_a_mount_is_judged_on_its_full_path_for_public_paths_excludes_and_audit(shared_issuer: LocalIssuer) -> None:
    from litestar.handlers import asgi

    reached: list[str] = []

    @asgi("/private", is_mount=True, copy_scope=True)
    async def private(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"private"})

    events: list[AuditEvent] = []
    access = CloudflareAccessAuth(
        settings=settings_for(shared_issuer), user_lookup=find_user, audit_hook=events.append, exclude="^/open$"
    )
    with TestClient(Litestar([private], on_app_init=[access.on_app_init])) as client:
        for path in ("/private/healthz", "/private/healthz/anything", "/private/open"):
            assert client.get(path).status_code == 401, path
        assert reached == []
        assert [event.path for event in events] == ["/private/healthz", "/private/healthz/anything", "/private/open"]
        assert client.get("/private/healthz", headers=bearer()).status_code == 200
    assert reached == ["/healthz/"]  # the mounted app still gets the path below its mount (as Litestar gives it)
    assert events[-1].path == "/private/healthz"


def test_a_guards_refusal_reaches_after_exception_as_the_documented_exception(shared_issuer: LocalIssuer) -> None:
    from cfaccess_mw.integrations.litestar import AccessPermissionDenied

    seen: list[Exception] = []

    async def record(exc: Exception, scope: Any) -> None:
        seen.append(exc)

    access = CloudflareAccessAuth(settings=settings_for(shared_issuer), user_lookup=find_user, extra_scopes=roles)
    app = Litestar([admin, healthz_who], on_app_init=[access.on_app_init], after_exception=[record])
    with TestClient(app) as client:
        refused = client.get("/admin", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
        public = client.get("/healthz/who")  # a public path: the principal dependency refuses
    assert refused.status_code == 403
    assert error_of(refused)["reason"] == "insufficient_scope"
    assert public.status_code == 401
    assert len(seen) == 2
    assert isinstance(seen[0], AccessPermissionDenied)
    assert isinstance(seen[0], PermissionDeniedException)
    assert seen[0].error.reason is Reason.INSUFFICIENT_SCOPE
    assert isinstance(seen[1], AccessNotAuthorized)
    assert isinstance(seen[1], NotAuthorizedException)
    assert seen[1].error.reason is Reason.NO_CREDENTIALS


@pytest.mark.anyio
async def test_a_mount_without_raw_path_is_neither_public_nor_excluded(shared_issuer: LocalIssuer) -> None:
    """Without ``raw_path`` a mount's full path cannot be known: it is judged on no path at all (authenticated)."""
    from litestar.handlers import asgi

    reached: list[str] = []

    @asgi("/private", is_mount=True, copy_scope=True)
    async def private(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - must not run
        reached.append(scope["path"])

    events: list[AuditEvent] = []
    access = CloudflareAccessAuth(settings=settings_for(shared_issuer), audit_hook=events.append, exclude="^/healthz")
    app = Litestar([private], on_app_init=[access.on_app_init])
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/private/healthz", "root_path": "", "query_string": b"", "headers": [(b"host", b"testserver")],
             "client": REMOTE_PEER, "server": ("testserver", 80)}  # fmt: skip
    sent = await call_asgi(app, scope)
    assert sent[0]["status"] == 401
    assert reached == []
    assert [event.path for event in events] == ["/<mount>"]
