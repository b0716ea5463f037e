"""Sanic: the extension under sanic-testing's ASGI client and its live-server client, under Sanic's own server
in a subprocess, and under uvicorn, hypercorn and granian as an ASGI app."""

from __future__ import annotations

import asyncio
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("sanic", reason="Sanic is an optional extra: pip install 'cfaccess_mw[sanic]'")
pytest.importorskip("sanic_testing", reason="sanic-testing is in the dev extra")

from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, json, text
from sanic_testing.testing import SanicASGITestClient, SanicTestClient

from cfaccess_mw import (
    ApiKey,
    AuditEvent,
    Authenticator,
    ConfigError,
    ExposureMode,
    Forbidden,
    Principal,
    Reason,
    ServiceToken,
    Settings,
)
from cfaccess_mw.integrations.sanic import CloudflareAccess, get_principal, get_scopes
from cfaccess_mw.testing import LocalIssuer
from examples import sanic_app

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

API_KEY = EXAMPLE_API_KEY
#: sanic-testing's live client runs app.run() per request; Sanic warns about sanic-testing's own listener.
LIVE_CLIENT_WARNING = "ignore:.*Passing the loop argument to listeners is deprecated:DeprecationWarning"


@pytest.fixture(autouse=True)
def sanic_test_mode() -> Iterator[None]:
    """Sanic refuses a second app of the same name in a process unless in test mode; names are unique anyway.

    SanicASGITestClient also replaces ``Sanic.__call__`` for the whole class (with one that cannot run the
    lifespan protocol): put it back, so the live ASGI servers below run the real Sanic.
    """
    call, mode = Sanic.__call__, Sanic.test_mode
    Sanic.test_mode = True
    try:
        yield
    finally:
        Sanic.__call__ = call  # type: ignore[method-assign]
        Sanic.test_mode = mode


class _Parsed:
    def __init__(self, body: Any) -> None:
        self.body = body

    def json(self) -> Any:
        return self.body


def refusal_of(response: Any) -> dict[str, str]:
    """conftest's ``error_of`` for sanic-testing's response, whose ``json`` is a property."""
    return error_of(_Parsed(response.json))


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def example_settings(issuer: LocalIssuer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_keys": (ApiKey.from_secret("operator", API_KEY),),
        "service_tokens": (ServiceToken("ci", EXAMPLE_CLIENT_ID),),
        "public_paths": ("/healthz",),
    }
    return issuer.settings(**{**values, **overrides})


@pytest.fixture
def events() -> list[AuditEvent]:
    return []


@pytest.fixture
def app(shared_issuer: LocalIssuer, tmp_path: Path, events: list[AuditEvent]) -> Sanic[Any, Any]:
    """The example app, its audit events collected, plus routes for the edges of the contract."""
    app = sanic_app.create_app(
        settings=example_settings(shared_issuer), db_path=str(example_db(tmp_path)), name=unique("example")
    )
    cfaccess = app.ctx.cfaccess_mw
    assert isinstance(cfaccess, CloudflareAccess)
    cfaccess.authenticator.audit_hook = events.append
    app.ctx.reached = []

    async def public_who(request: Request) -> HTTPResponse:
        return json({"who": get_principal(request).display_name})  # public: must refuse, not return None

    async def upload(request: Request) -> HTTPResponse:
        app.ctx.reached.append("upload")
        return json({"bytes": len(request.body)})

    app.add_route(public_who, "/healthz/who")
    app.add_route(upload, "/upload", methods=["POST"])
    return app


@pytest.fixture
async def client(app: Sanic[Any, Any]) -> AsyncIterator[SanicASGITestClient]:
    async with SanicASGITestClient(app) as test_client:
        yield test_client


pytestmark = pytest.mark.anyio


# --- the decisions, under sanic-testing's ASGI client ------------------------------------------------


async def test_a_user_in_the_database_is_the_principal(client: SanicASGITestClient, shared_issuer: LocalIssuer) -> None:
    _, response = await client.get("/api/me", headers=jwt_header(shared_issuer.identity_token("Alice@Example.com")))
    assert response.status == 200
    assert response.json == {"kind": "user", "display_name": "alice@example.com", "name": "Alice", "role": "admin"}


async def test_an_unknown_user_is_refused_403(
    client: SanicASGITestClient, shared_issuer: LocalIssuer, events: list[AuditEvent]
) -> None:
    _, response = await client.get("/api/me", headers=jwt_header(shared_issuer.identity_token("eve@example.com")))
    assert response.status == 403
    assert refusal_of(response)["reason"] == "unknown_user"
    assert [(e.outcome, e.status, e.reason) for e in events] == [("refused", 403, "unknown_user")]


async def test_no_credentials_is_refused_401_with_a_challenge(client: SanicASGITestClient) -> None:
    _, response = await client.get("/api/me")
    assert response.status == 401
    assert refusal_of(response)["reason"] == "no_credentials"
    assert response.headers["www-authenticate"] == 'Bearer realm="cfaccess"'
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"


async def test_an_unknown_route_is_refused_before_its_404(client: SanicASGITestClient) -> None:
    _, response = await client.get("/no/such/route")
    assert response.status == 401
    _, response = await client.get("/no/such/route", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status == 404


async def test_a_service_token_and_an_api_key_are_principals(
    client: SanicASGITestClient, shared_issuer: LocalIssuer
) -> None:
    _, service = await client.get("/api/me", headers=jwt_header(shared_issuer.service_token(EXAMPLE_CLIENT_ID)))
    assert service.json["kind"] == "service"
    _, key = await client.get("/api/me", headers={"Authorization": f"Bearer {API_KEY}"})
    assert key.json["display_name"] == "operator"
    _, bad = await client.get("/api/me", headers={"Authorization": "Bearer wrong"})
    assert bad.status == 401
    assert refusal_of(bad)["reason"] == "api_key_invalid"


async def test_a_header_sent_twice_reaches_the_authenticator_twice(
    client: SanicASGITestClient, shared_issuer: LocalIssuer
) -> None:
    """The scope built from Sanic's headers keeps every line, so the one-credential-header check still works."""
    token = shared_issuer.identity_token("alice@example.com")
    headers = [("cf-access-jwt-assertion", token), ("cf-access-jwt-assertion", token)]
    _, response = await client.get("/api/me", headers=headers)
    assert response.status == 401
    assert refusal_of(response)["reason"] == "token_malformed"


async def test_an_auth_error_raised_in_a_handler_is_our_json_and_one_refusal(
    client: SanicASGITestClient, shared_issuer: LocalIssuer, events: list[AuditEvent]
) -> None:
    _, response = await client.get("/api/admin", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert response.status == 403
    assert refusal_of(response)["reason"] == "insufficient_scope"
    _, response = await client.get("/api/admin", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert response.status == 200
    assert [(e.outcome, e.status, e.reason, e.principal) for e in events] == [
        ("refused", 403, "insufficient_scope", None),
        ("accepted", 200, None, "alice@example.com"),
    ]


async def test_a_503_carries_retry_after(shared_issuer: LocalIssuer) -> None:
    def broken_lookup(email: str) -> None:
        raise OSError("database down")

    app: Sanic[Any, Any] = Sanic(unique("broken"))

    async def index(request: Request) -> HTTPResponse:
        return text("never")

    app.add_route(index, "/")
    CloudflareAccess(app, settings=shared_issuer.settings(), user_lookup=broken_lookup)
    async with SanicASGITestClient(app) as client:
        _, response = await client.get("/", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert response.status == 503
    assert response.headers["retry-after"] == "10"
    assert refusal_of(response)["reason"] == "user_lookup_failed"


async def test_public_paths_need_no_credentials_but_get_principal_still_refuses(client: SanicASGITestClient) -> None:
    _, response = await client.get("/healthz")
    assert response.status == 200
    _, response = await client.get("/healthz/who")
    assert response.status == 401
    assert refusal_of(response)["reason"] == "no_credentials"


async def test_an_unproven_upload_is_refused_without_reaching_the_handler(
    app: Sanic[Any, Any], client: SanicASGITestClient
) -> None:
    _, response = await client.post("/upload", content=b"x" * 10_000)
    assert response.status == 401
    _, response = await client.post("/upload", content=b"x" * 10_000, headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.json == {"bytes": 10_000}
    assert app.ctx.reached == ["upload"]


# --- websockets as an ASGI app, driven by hand (sanic-testing's ASGI websocket drops every message) ----


async def _run_websocket(
    app: Sanic[Any, Any], path: str, headers: list[tuple[bytes, bytes]], extensions: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run the lifespan start-up, then one websocket connection; return what the app sent on it."""
    started, stop = asyncio.Event(), asyncio.Event()
    lifespan_inbox = [{"type": "lifespan.startup"}]

    async def lifespan_receive() -> dict[str, Any]:
        if lifespan_inbox:
            return lifespan_inbox.pop(0)
        await stop.wait()
        return {"type": "lifespan.shutdown"}

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    lifespan = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_receive, lifespan_send)
    )
    await asyncio.wait_for(started.wait(), 10)
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "ws",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), *headers], "client": ("203.0.113.7", 5000),
             "server": ("testserver", 80), "subprotocols": [], "extensions": extensions}  # fmt: skip
    try:
        await asyncio.wait_for(app(scope, receive, send), 10)
    finally:
        stop.set()
        await asyncio.wait_for(lifespan, 10)
    return sent


async def test_a_refused_websocket_gets_the_json_denial_where_the_server_offers_it(app: Sanic[Any, Any]) -> None:
    sent = await _run_websocket(app, "/ws", [], {"websocket.http.response": {}})
    assert [m["type"] for m in sent] == ["websocket.http.response.start", "websocket.http.response.body"]
    assert sent[0]["status"] == 401
    assert b'"reason":"no_credentials"' in sent[1]["body"]


async def test_a_refused_websocket_closes_1008_where_the_server_offers_no_denial(app: Sanic[Any, Any]) -> None:
    sent = await _run_websocket(app, "/ws", [], {})
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "UNAUTHORIZED"}]


async def test_a_websocket_refused_by_the_middleware_alone_does_not_wait_for_a_consumed_connect(
    shared_issuer: LocalIssuer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the routing signal does not decide (a handler of the same signal that answers first stops Sanic
    from calling the others), the middleware refuses after Sanic's ASGI adapter has read the websocket's
    "body", which consumed websocket.connect: the refusal must not wait for it again."""

    async def undecided(self: CloudflareAccess, request: Request, **context: Any) -> None:
        return None

    monkeypatch.setattr(CloudflareAccess, "_on_routing", undecided)
    app = sanic_app.create_app(
        settings=example_settings(shared_issuer), db_path=str(example_db(tmp_path)), name=unique("mw")
    )
    sent = await _run_websocket(app, "/ws", [], {})
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "UNAUTHORIZED"}]


async def test_an_accepted_websocket_sees_the_principal(app: Sanic[Any, Any]) -> None:
    sent = await _run_websocket(app, "/ws", [(b"authorization", f"Bearer {API_KEY}".encode())], {})
    assert sent[0]["type"] == "websocket.accept"
    assert sent[1] == {"type": "websocket.send", "text": '{"hello": "operator"}'}


async def test_a_websocket_refused_by_its_handler_after_the_upgrade_closes_1008(
    app: Sanic[Any, Any], shared_issuer: LocalIssuer
) -> None:
    bob = (b"cf-access-jwt-assertion", shared_issuer.identity_token("bob@example.com").encode())
    sent = await _run_websocket(app, "/ws/admin", [bob], {})
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert sent[1]["code"] == 1008


# --- wiring: middleware order, prefetch, one authenticator, configuration ----------------------------


async def test_keys_are_fetched_once_at_before_server_start(issuer: LocalIssuer, tmp_path: Path) -> None:
    app = sanic_app.create_app(settings=example_settings(issuer), db_path=str(example_db(tmp_path)), name=unique("k"))
    assert issuer.fetch_count == 0
    async with SanicASGITestClient(app) as client:
        for email in ("alice@example.com", "bob@example.com"):
            _, response = await client.get("/api/me", headers=jwt_header(issuer.identity_token(email)))
            assert response.status == 200
    assert issuer.fetch_count == 1


async def test_authentication_runs_before_the_apps_own_middleware(shared_issuer: LocalIssuer) -> None:
    """Sanic runs request middleware on its error path too (an unknown route's 404): ours must come first
    there, or the app's middleware would see an unproven caller."""
    app: Sanic[Any, Any] = Sanic(unique("order"))
    seen: list[str] = []

    async def load_things(request: Request) -> None:
        seen.append(request.path)

    async def index(request: Request) -> HTTPResponse:
        return text("ok")

    app.middleware(load_things, "request")
    app.add_route(index, "/")
    CloudflareAccess(app, settings=shared_issuer.settings(api_keys=(ApiKey.from_secret("op", API_KEY),)))
    async with SanicASGITestClient(app) as client:
        for path in ("/", "/no/such/route"):
            _, response = await client.get(path)
            assert response.status == 401
        assert seen == []
        _, response = await client.get("/", headers={"Authorization": f"Bearer {API_KEY}"})
        assert response.status == 200
    assert seen == ["/"]


async def test_a_refusal_is_not_replaced_by_the_apps_middleware_answer(shared_issuer: LocalIssuer) -> None:
    """A refusal made at routing goes through Sanic's error path, which runs request middleware and sends
    whatever one returns instead of the error: ours raises the refusal again there, first."""
    app: Sanic[Any, Any] = Sanic(unique("answering"))

    async def cached(request: Request) -> HTTPResponse:
        return text("cached page")

    async def index(request: Request) -> HTTPResponse:
        return text("never")  # pragma: no cover - the middleware answers

    app.middleware(cached, "request")
    app.add_route(index, "/")
    CloudflareAccess(app, settings=shared_issuer.settings(api_keys=(ApiKey.from_secret("op", API_KEY),)))
    async with SanicASGITestClient(app) as client:
        _, refused = await client.get("/")
        _, served = await client.get("/", headers={"Authorization": f"Bearer {API_KEY}"})
    assert refused.status == 401
    assert refusal_of(refused)["reason"] == "no_credentials"
    assert served.text == "cached page"


async def test_a_blueprints_catch_all_exception_handler_does_not_answer_a_refusal(shared_issuer: LocalIssuer) -> None:
    """Sanic looks a handler up for the route's name across the exception's whole MRO before the app-wide ones:
    a blueprint's ``@bp.exception(Exception)`` came before our app-wide handler for AuthError, and answered the
    refusal (a text 500 here), the middleware's and a handler's alike."""
    app: Sanic[Any, Any] = Sanic(unique("blueprint"))
    bp = Blueprint("api", url_prefix="/api")

    async def items(request: Request) -> HTTPResponse:
        raise Forbidden(Reason.INSUFFICIENT_SCOPE, "Not for you.", "the handler refused")

    async def oops(request: Request, exc: Exception) -> HTTPResponse:
        return text(f"api error {type(exc).__name__}", status=500)

    bp.add_route(items, "/items")
    bp.exception(Exception)(oops)
    CloudflareAccess(app, settings=shared_issuer.settings(api_keys=(ApiKey.from_secret("op", API_KEY),)))
    app.blueprint(bp)
    async with SanicASGITestClient(app) as client:
        _, refused = await client.get("/api/items")
        _, forbidden = await client.get("/api/items", headers={"Authorization": f"Bearer {API_KEY}"})
    assert refused.status == 401
    assert refusal_of(refused)["reason"] == "no_credentials"
    assert forbidden.status == 403
    assert refusal_of(forbidden)["reason"] == "insufficient_scope"


async def test_one_authenticator_serves_several_apps(issuer: LocalIssuer) -> None:
    auth = Authenticator(issuer.settings(), user_lookup=find_user)
    cfaccess = CloudflareAccess(authenticator=auth)
    token = jwt_header(issuer.identity_token("bob@example.com"))

    async def who(request: Request) -> HTTPResponse:
        return text(get_principal(request).display_name)

    for name in ("one", "two"):
        app: Sanic[Any, Any] = Sanic(unique(name))
        app.add_route(who, "/")
        cfaccess.init_app(app)
        async with SanicASGITestClient(app) as client:
            _, response = await client.get("/", headers=token)
            assert response.text == "bob@example.com"
    assert issuer.fetch_count == 1


def test_settings_are_read_at_init_app_and_a_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFACCESS_EXPOSURE_MODE", "reverse-proxy")
    monkeypatch.setenv("CFACCESS_TEAM_DOMAIN", "test-team.cloudflareaccess.com")
    monkeypatch.delenv("CFACCESS_AUD", raising=False)
    cfaccess = CloudflareAccess()
    with pytest.raises(ConfigError, match="CFACCESS_AUD"):
        cfaccess.init_app(Sanic(unique("config")))


def test_an_authenticator_excludes_the_other_options(shared_issuer: LocalIssuer) -> None:
    with pytest.raises(TypeError, match="either authenticator or settings"):
        CloudflareAccess(authenticator=Authenticator(shared_issuer.settings()), settings=shared_issuer.settings())


async def test_get_principal_and_get_scopes_are_typed(shared_issuer: LocalIssuer) -> None:
    app: Sanic[Any, Any] = Sanic(unique("typed"))

    async def index(request: Request) -> HTTPResponse:
        principal: Principal = get_principal(request)  # mypy checks this assignment
        return json({"email": principal.email, "scopes": get_scopes(request)})

    app.add_route(index, "/")
    CloudflareAccess(app, settings=shared_issuer.settings(), user_lookup=find_user, extra_scopes=lambda p: ["extra"])
    async with SanicASGITestClient(app) as client:
        _, response = await client.get("/", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert response.json == {"email": "bob@example.com", "scopes": ["authenticated", "user", "extra"]}


# --- Sanic's own server ------------------------------------------------------------------------------


@pytest.mark.filterwarnings(LIVE_CLIENT_WARNING)
def test_sanic_test_client_runs_sanics_own_server(shared_issuer: LocalIssuer, tmp_path: Path) -> None:
    app = sanic_app.create_app(
        settings=example_settings(shared_issuer), db_path=str(example_db(tmp_path)), name=unique("native")
    )
    client = SanicTestClient(app)
    _, refused = client.get("/api/me")
    assert refused.status == 401
    assert refusal_of(refused)["reason"] == "no_credentials"
    _, accepted = client.get("/api/me", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert accepted.json["role"] == "admin"


@pytest.mark.filterwarnings(LIVE_CLIENT_WARNING)
def test_local_mode_trusts_the_socket_peer_not_forwarded_headers(shared_issuer: LocalIssuer) -> None:
    """Under Sanic's own server the peer is the real socket's: 127.0.0.1 here; a request carrying
    X-Forwarded-For came through a proxy, so it is not the operator whatever the header says (issue 10's
    review). Under the ASGI client the peer is sanic-testing's made-up "mockserver", which is not loopback."""

    def local_app() -> Sanic[Any, Any]:  # a fresh app per live run: sanic-testing's server runs an app once
        app: Sanic[Any, Any] = Sanic(unique("local"))

        async def index(request: Request) -> HTTPResponse:
            return text(get_principal(request).kind)

        app.add_route(index, "/")
        CloudflareAccess(app, settings=Settings(exposure_mode=ExposureMode.LOCAL))
        return app

    _, response = SanicTestClient(local_app()).get("/")
    assert response.text == "local"
    _, forwarded = SanicTestClient(local_app()).get("/", headers={"X-Forwarded-For": "127.0.0.1"})
    assert forwarded.status == 401
    app = local_app()

    async def through_asgi() -> int:
        async with SanicASGITestClient(app) as client:
            _, refused = await client.get("/", headers={"Host": "localhost"})
        return int(refused.status)

    assert asyncio.run(through_asgi()) == 401


@pytest.fixture
def live_db(tmp_path: Path) -> Path:
    return example_db(tmp_path)


def _sanic_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "sanic", "examples.sanic_app:create_app", "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--single-process", "--no-motd", "--no-access-logs"]  # fmt: skip


def test_live_under_sanics_own_server(issuer: LocalIssuer, live_db: Path) -> None:
    port = free_port()
    with serve_command(_sanic_argv(port), port, example_env(issuer, live_db), probe="/healthz") as base:
        assert issuer.fetch_count == 1  # before_server_start ran in the server process
        check_example_app(base, issuer, ws_denial=401)  # the upgrade is answered with our HTTP error


def test_live_sanic_refuses_before_reading_an_unproven_body(issuer: LocalIssuer, live_db: Path) -> None:
    """Sanic reads a POST's body before request middleware; the refusal comes at routing, before the body."""
    port = free_port()
    with serve_command(_sanic_argv(port), port, example_env(issuer, live_db), probe="/healthz") as base:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST /api/notes HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n" + b"x" * 1000)
            head = conn.recv(64)  # within the timeout, though 49.999 MB of the body never come
        saved = httpx.post(base + "/api/notes", content=b"note", headers={"Authorization": f"Bearer {API_KEY}"})
    assert head.startswith(b"HTTP/1.1 401")
    assert saved.status_code == 201
    assert saved.json() == {"saved": 4, "by": "operator"}


def test_live_under_uvicorn(issuer: LocalIssuer, live_db: Path) -> None:
    app = sanic_app.create_app(settings=example_settings(issuer), db_path=str(live_db), name=unique("uvicorn"))
    with serve_uvicorn(app) as base:
        assert issuer.fetch_count == 1
        check_example_app(base, issuer, ws_denial=401)


def test_live_under_hypercorn(issuer: LocalIssuer, live_db: Path) -> None:
    app = sanic_app.create_app(settings=example_settings(issuer), db_path=str(live_db), name=unique("hypercorn"))
    with serve_hypercorn(app) as base:
        assert issuer.fetch_count == 1
        check_example_app(base, issuer, ws_denial=401)


@pytest.fixture
def granian_server(issuer: LocalIssuer, live_db: Path) -> Iterator[str]:
    port = free_port()
    argv = granian_argv("examples.sanic_app:create_app", port)
    if argv is None:
        pytest.skip("granian is not installed here")
    with serve_command(argv, port, example_env(issuer, live_db), probe="/healthz") as base:
        yield base


def test_live_under_granian(granian_server: str, issuer: LocalIssuer) -> None:
    assert issuer.fetch_count == 1
    check_example_app(granian_server, issuer, ws_denial=401)  # granian offers websocket.http.response
