"""Quart: the extension under Quart's own test client and under uvicorn, hypercorn and granian; the raw ASGI
middleware around a Quart app under Quart's test client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

pytest.importorskip("quart", reason="Quart is an optional extra: pip install 'cfaccess_mw[quart]'")

from quart import Blueprint, Quart, request, websocket
from quart.testing import WebsocketResponseError
from quart.typing import TestClientProtocol as QuartTestClient

from cfaccess_mw import (
    ApiKey,
    AuditEvent,
    Authenticator,
    CloudflareAccessMiddleware,
    ConfigError,
    Forbidden,
    Principal,
    Reason,
    ServiceToken,
    Settings,
)
from cfaccess_mw.integrations.quart import CloudflareAccess, current_principal, get_principal, get_scopes
from cfaccess_mw.testing import LocalIssuer
from examples import quart_app

from .conftest import error_of, find_user, jwt_header
from .live_examples import (
    EXAMPLE_API_KEY,
    EXAMPLE_CLIENT_ID,
    check_example_app,
    example_db,
    example_env,
    free_port,
    granian_argv,
    serve_command,
    serve_hypercorn,
    serve_uvicorn,
)

pytestmark = pytest.mark.anyio

API_KEY = EXAMPLE_API_KEY
PEER = {"client": ("203.0.113.7", 51000)}  # Quart's test client sends no client address unless given one


class Json:
    """Quart's test response in the shape conftest's ``error_of`` reads."""

    def __init__(self, body: Any) -> None:
        self.body = body

    def json(self) -> Any:
        return self.body


def example_settings(issuer: LocalIssuer) -> Settings:
    return issuer.settings(
        api_keys=(ApiKey.from_secret("operator", API_KEY),),
        service_tokens=(ServiceToken("ci", EXAMPLE_CLIENT_ID),),
        public_paths=("/healthz",),
    )


@pytest.fixture
def events() -> list[AuditEvent]:
    return []


@pytest.fixture
def app(shared_issuer: LocalIssuer, tmp_path: Path, events: list[AuditEvent]) -> Quart:
    """The example app, its audit events collected, plus routes for the edges of the contract."""
    app = quart_app.create_app(example_settings(shared_issuer), str(example_db(tmp_path)))
    cfaccess = app.extensions["cfaccess_mw"]
    assert isinstance(cfaccess, CloudflareAccess)
    cfaccess.authenticator.audit_hook = events.append
    app.config["reached"] = []

    @app.get("/healthz/who")
    async def public_who() -> dict[str, str]:
        return {"who": current_principal.display_name}  # public: the proxy must refuse, not return None

    @app.websocket("/ws/guarded")
    async def guarded() -> None:
        app.config["reached"].append("guarded")
        await websocket.accept()

    return app


@pytest.fixture
async def client(app: Quart) -> AsyncIterator[QuartTestClient]:
    async with app.test_app() as test_app:
        yield test_app.test_client()


# --- the decisions, under Quart's own test client ---------------------------------------------------


async def test_a_user_in_the_database_is_the_current_principal(
    client: QuartTestClient, shared_issuer: LocalIssuer
) -> None:
    response = await client.get("/api/me", headers=jwt_header(shared_issuer.identity_token("Alice@Example.com")))
    assert response.status_code == 200
    assert await response.get_json() == {"kind": "user", "display_name": "alice@example.com", "name": "Alice",
                                         "role": "admin"}  # fmt: skip


async def test_an_unknown_user_is_refused_403(
    client: QuartTestClient, shared_issuer: LocalIssuer, events: list[AuditEvent]
) -> None:
    response = await client.get("/api/me", headers=jwt_header(shared_issuer.identity_token("eve@example.com")))
    assert response.status_code == 403
    assert error_of(Json(await response.get_json()))["reason"] == "unknown_user"
    assert [(e.outcome, e.status, e.reason) for e in events] == [("refused", 403, "unknown_user")]


async def test_no_credentials_is_refused_401_with_a_challenge(client: QuartTestClient) -> None:
    response = await client.get("/api/me", scope_base=PEER)
    assert response.status_code == 401
    assert error_of(Json(await response.get_json()))["reason"] == "no_credentials"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="cfaccess"'
    assert response.headers["Cache-Control"] == "no-store"
    assert response.content_type == "application/json"


async def test_an_unknown_route_is_refused_before_routing(client: QuartTestClient) -> None:
    assert (await client.get("/no/such/route")).status_code == 401
    authenticated = await client.get("/no/such/route", headers={"Authorization": f"Bearer {API_KEY}"})
    assert authenticated.status_code == 404


async def test_a_service_token_and_an_api_key_are_principals(
    client: QuartTestClient, shared_issuer: LocalIssuer
) -> None:
    service = await client.get("/api/me", headers=jwt_header(shared_issuer.service_token(EXAMPLE_CLIENT_ID)))
    assert (await service.get_json())["kind"] == "service"
    key = await client.get("/api/me", headers={"Authorization": f"Bearer {API_KEY}"})
    assert (await key.get_json())["display_name"] == "operator"
    bad = await client.get("/api/me", headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401
    assert error_of(Json(await bad.get_json()))["reason"] == "api_key_invalid"


async def test_an_auth_error_raised_in_a_view_is_our_json_and_one_refusal(
    client: QuartTestClient, shared_issuer: LocalIssuer, events: list[AuditEvent]
) -> None:
    bob = jwt_header(shared_issuer.identity_token("bob@example.com"))
    response = await client.get("/api/admin", headers=bob)
    assert response.status_code == 403
    assert error_of(Json(await response.get_json()))["reason"] == "insufficient_scope"
    alice = jwt_header(shared_issuer.identity_token("alice@example.com"))
    assert (await client.get("/api/admin", headers=alice)).status_code == 200
    assert [(e.outcome, e.status, e.reason, e.principal) for e in events] == [
        ("refused", 403, "insufficient_scope", None),
        ("accepted", 200, None, "alice@example.com"),
    ]


async def test_a_503_carries_retry_after(shared_issuer: LocalIssuer) -> None:
    def broken_lookup(email: str) -> None:
        raise OSError("database down")

    app = Quart(__name__)
    CloudflareAccess(app, settings=shared_issuer.settings(), user_lookup=broken_lookup)
    response = await app.test_client().get("/", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "10"
    assert error_of(Json(await response.get_json()))["reason"] == "user_lookup_failed"


async def test_public_paths_need_no_credentials_but_the_principal_proxy_still_refuses(
    client: QuartTestClient,
) -> None:
    assert (await client.get("/healthz")).status_code == 200
    response = await client.get("/healthz/who")
    assert response.status_code == 401
    assert error_of(Json(await response.get_json()))["reason"] == "no_credentials"


async def test_a_refused_websocket_gets_the_json_denial_and_never_reaches_its_handler(
    app: Quart, client: QuartTestClient, shared_issuer: LocalIssuer
) -> None:
    with pytest.raises(WebsocketResponseError) as caught:
        async with client.websocket("/ws/guarded") as ws:
            await ws.receive()
    assert caught.value.response.status_code == 401
    assert error_of(Json(await caught.value.response.get_json()))["reason"] == "no_credentials"
    stranger = jwt_header(shared_issuer.identity_token("eve@example.com"))
    with pytest.raises(WebsocketResponseError) as caught:
        async with client.websocket("/ws/guarded", headers=stranger) as ws:
            await ws.receive()
    assert caught.value.response.status_code == 403
    assert app.config["reached"] == []


async def test_an_accepted_websocket_sees_the_principal(client: QuartTestClient) -> None:
    async with client.websocket("/ws", headers={"Authorization": f"Bearer {API_KEY}"}) as ws:
        assert await ws.receive_json() == {"hello": "operator"}


async def drive_websocket(
    app: Quart, path: str, headers: list[tuple[bytes, bytes]], extensions: dict[str, Any]
) -> list[dict[str, Any]]:
    """One websocket connection driven by hand (Quart 0.23's test client no longer reports close codes):
    what the app sent, for a server that does or does not offer ``websocket.http.response``."""
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop(0)
        await asyncio.sleep(0.05)  # then the client leaves, ending the connection
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "scheme": "ws", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"host", b"testserver"), *headers], "client": ("203.0.113.7", 5000),
             "server": ("testserver", 80), "subprotocols": [], "extensions": extensions}  # fmt: skip
    async with app.test_app():
        await asyncio.wait_for(app(scope, receive, send), 10)  # type: ignore[arg-type]
    return sent


async def test_a_websocket_refused_by_its_handler_after_accept_closes_1008(
    app: Quart, shared_issuer: LocalIssuer
) -> None:
    bob = (b"cf-access-jwt-assertion", shared_issuer.identity_token("bob@example.com").encode())
    sent = await drive_websocket(app, "/ws/admin", [bob], {"websocket.http.response": {}})
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert sent[1]["code"] == 1008
    alice = (b"cf-access-jwt-assertion", shared_issuer.identity_token("alice@example.com").encode())
    sent = await drive_websocket(app, "/ws/admin", [alice], {"websocket.http.response": {}})
    assert sent[1]["type"] == "websocket.send"
    assert json.loads(sent[1]["text"]) == {"admin": True}


async def test_without_the_denial_extension_a_refused_websocket_closes_1008(app: Quart) -> None:
    """A server without ``websocket.http.response``: the refusal is close code 1008."""
    sent = await drive_websocket(app, "/ws/guarded", [], {})
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "UNAUTHORIZED"}]
    assert app.config["reached"] == []


# --- wiring: hook order, prefetch, one authenticator, configuration ----------------------------------


async def test_keys_are_fetched_once_at_before_serving(issuer: LocalIssuer, tmp_path: Path) -> None:
    app = quart_app.create_app(example_settings(issuer), str(example_db(tmp_path)))
    assert issuer.fetch_count == 0
    async with app.test_app() as test_app:
        assert issuer.fetch_count == 1
        client = test_app.test_client()
        for email in ("alice@example.com", "bob@example.com"):
            response = await client.get("/api/me", headers=jwt_header(issuer.identity_token(email)))
            assert response.status_code == 200
    assert issuer.fetch_count == 1


async def test_one_authenticator_serves_several_apps(issuer: LocalIssuer) -> None:
    auth = Authenticator(issuer.settings(), user_lookup=find_user)
    cfaccess = CloudflareAccess(authenticator=auth)
    apps = [Quart("one"), Quart("two")]
    for each in apps:
        cfaccess.init_app(each)

        @each.get("/")
        async def who() -> str:
            return current_principal.display_name

    token = jwt_header(issuer.identity_token("bob@example.com"))
    async with apps[0].test_app() as first, apps[1].test_app() as second:
        for test_app in (first, second):
            assert (
                await (await test_app.test_client().get("/", headers=token)).get_data(as_text=True) == "bob@example.com"
            )
    assert issuer.fetch_count == 1
    assert cfaccess.authenticator is auth


async def test_authentication_runs_before_the_apps_other_hooks(shared_issuer: LocalIssuer) -> None:
    """A ``before_request`` hook registered before the extension must not see an unproven caller."""
    app = Quart(__name__)
    seen: list[str] = []

    @app.before_request
    async def load_things() -> None:
        seen.append(get_principal().display_name)

    @app.get("/")
    async def index() -> str:
        return "ok"

    CloudflareAccess(app, settings=shared_issuer.settings(api_keys=(ApiKey.from_secret("op", API_KEY),)))
    client = app.test_client()
    assert (await client.get("/")).status_code == 401
    assert seen == []
    assert (await client.get("/", headers={"Authorization": f"Bearer {API_KEY}"})).status_code == 200
    assert seen == ["op"]


async def test_a_blueprints_catch_all_error_handler_does_not_answer_a_refusal(shared_issuer: LocalIssuer) -> None:
    """Quart (as Flask) tries a blueprint's handlers for every class of the error before the app's: a
    blueprint's ``errorhandler(Exception)`` came before our app-wide handler for AuthError and answered the
    refusal (a text 500 here), the extension's and a view's alike."""
    app = Quart(__name__)
    api = Blueprint("api", __name__, url_prefix="/api")

    @api.get("/items")
    async def items() -> str:
        raise Forbidden(Reason.INSUFFICIENT_SCOPE, "Not for you.", "the view refused")

    @api.errorhandler(Exception)
    async def oops(exc: Exception) -> tuple[str, int]:
        return f"api error {type(exc).__name__}", 500

    CloudflareAccess(app, settings=shared_issuer.settings(api_keys=(ApiKey.from_secret("op", API_KEY),)))
    app.register_blueprint(api)
    client = app.test_client()
    refused = await client.get("/api/items")
    assert refused.status_code == 401
    assert error_of(Json(await refused.get_json()))["reason"] == "no_credentials"
    forbidden = await client.get("/api/items", headers={"Authorization": f"Bearer {API_KEY}"})
    assert forbidden.status_code == 403
    assert error_of(Json(await forbidden.get_json()))["reason"] == "insufficient_scope"


async def test_settings_are_read_at_init_app_and_a_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFACCESS_EXPOSURE_MODE", "reverse-proxy")
    monkeypatch.setenv("CFACCESS_TEAM_DOMAIN", "test-team.cloudflareaccess.com")
    monkeypatch.delenv("CFACCESS_AUD", raising=False)
    cfaccess = CloudflareAccess()  # reads nothing yet: an extensions module may create it at import
    with pytest.raises(ConfigError, match="CFACCESS_AUD"):
        cfaccess.init_app(Quart(__name__))


def test_an_authenticator_excludes_the_other_options(shared_issuer: LocalIssuer) -> None:
    auth = Authenticator(shared_issuer.settings())
    with pytest.raises(TypeError, match="either authenticator or user_lookup"):
        CloudflareAccess(authenticator=auth, user_lookup=find_user)


async def test_current_principal_is_typed_and_behaves_as_the_principal(shared_issuer: LocalIssuer) -> None:
    app = Quart(__name__)
    CloudflareAccess(app, settings=shared_issuer.settings(), user_lookup=find_user, extra_scopes=lambda p: ["extra"])

    @app.get("/")
    async def index() -> dict[str, object]:
        principal: Principal = current_principal  # mypy checks this assignment
        return {"is_principal": isinstance(principal, Principal), "email": principal.email, "scopes": get_scopes()}

    response = await app.test_client().get("/", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert await response.get_json() == {"is_principal": True, "email": "bob@example.com",
                                         "scopes": ["authenticated", "user", "extra"]}  # fmt: skip


# --- the raw ASGI middleware around a Quart app -----------------------------------------------------


async def test_the_raw_middleware_works_under_quarts_test_client(issuer: LocalIssuer) -> None:
    """Quart's test client once crashed on every refusal (the body message had no ``more_body``)."""
    app = Quart(__name__)

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"who": current_principal.display_name, "raw": request.scope["user"].kind}  # type: ignore[typeddict-item]

    # Quart types asgi_app with hypercorn's scope TypedDicts, ours is a plain mapping: mypy needs the casts.
    wrapped = CloudflareAccessMiddleware(cast(Any, app.asgi_app), settings=issuer.settings(), user_lookup=find_user)
    app.asgi_app = cast(Any, wrapped)  # type: ignore[method-assign]
    async with app.test_app() as test_app:
        assert issuer.fetch_count == 1  # the middleware's own lifespan prefetch, through Quart's test app
        client = test_app.test_client()
        refused = await client.get("/", scope_base=PEER)
        assert refused.status_code == 401
        assert error_of(Json(await refused.get_json()))["reason"] == "no_credentials"
        stranger = await client.get("/", headers=jwt_header(issuer.identity_token("eve@example.com")))
        assert stranger.status_code == 403
        accepted = await client.get("/", headers=jwt_header(issuer.identity_token("bob@example.com")))
        assert await accepted.get_json() == {"who": "bob@example.com", "raw": "user"}


# --- live servers ----------------------------------------------------------------------------------


@pytest.fixture
def live_db(tmp_path: Path) -> Path:
    return example_db(tmp_path)


def test_live_under_uvicorn(issuer: LocalIssuer, live_db: Path) -> None:
    with serve_uvicorn(quart_app.create_app(example_settings(issuer), str(live_db))) as base:  # type: ignore[arg-type]
        assert issuer.fetch_count == 1
        check_example_app(base, issuer, ws_denial=401)


def test_live_under_hypercorn(issuer: LocalIssuer, live_db: Path) -> None:
    with serve_hypercorn(quart_app.create_app(example_settings(issuer), str(live_db))) as base:  # type: ignore[arg-type]
        assert issuer.fetch_count == 1
        check_example_app(base, issuer, ws_denial=401)


@pytest.fixture
def granian_server(issuer: LocalIssuer, live_db: Path) -> Iterator[str]:
    port = free_port()
    argv = granian_argv("examples.quart_app:create_app", port)
    if argv is None:
        pytest.skip("granian is not installed here")
    with serve_command(argv, port, example_env(issuer, live_db), probe="/healthz") as base:
        yield base


def test_live_under_granian(granian_server: str, issuer: LocalIssuer) -> None:
    assert issuer.fetch_count == 1  # before_serving ran in the server process
    # granian offers websocket.http.response but refuses a denial body sent in several messages (more_body),
    # which is how Quart sends every denial: granian logs "Unsupported ASGI message" and answers a bare 403.
    check_example_app(granian_server, issuer, ws_denial=403)


async def test_authentication_runs_before_url_value_preprocessors_and_request_started(
    shared_issuer: LocalIssuer,
) -> None:
    """Quart runs ``request_started`` and every ``url_value_preprocessor`` before any ``before_request`` hook:
    the "load the object, 404 if missing" pattern must not answer an unproven caller (issue 18, finding 4)."""
    from quart import abort, request_started, websocket_started

    app = Quart(__name__)
    seen: list[str] = []

    @app.url_value_preprocessor
    def load_thing(endpoint: str | None, values: dict[str, Any] | None) -> None:
        seen.append(f"preprocessor {values}")
        if values and values.get("thing") != "1":
            abort(404)

    async def started(sender: Any, **extra: Any) -> None:
        seen.append("signal")

    request_started.connect(started, app)
    websocket_started.connect(started, app)

    @app.get("/things/<thing>")
    async def thing(thing: str) -> str:
        return thing

    @app.websocket("/ws/<thing>")
    async def ws(thing: str) -> None:
        await websocket.accept()

    CloudflareAccess(app, settings=shared_issuer.settings(api_keys=(ApiKey.from_secret("op", API_KEY),)))
    client = app.test_client()
    for path in ("/things/1", "/things/2"):
        refused = await client.get(path)
        assert refused.status_code == 401  # never the 404 that tells which ids exist
        assert (await refused.get_json())["error"]["reason"] == "no_credentials"
    with pytest.raises(WebsocketResponseError):
        async with client.websocket("/ws/2") as socket:
            await socket.receive()
    assert seen == []
    assert (await client.get("/things/2", headers={"Authorization": f"Bearer {API_KEY}"})).status_code == 404
    assert seen == ["signal", "preprocessor {'thing': '2'}"]
