"""Falcon (ASGI): ``req.context.principal`` under Falcon's own test client and conductor, and live servers.

The app is ``examples/falcon_app.py`` (users in a real SQLite file) plus a few
routes that exist for tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

pytest.importorskip("falcon")

import falcon
import falcon.asgi
import falcon.testing
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from cfaccess_mw import ApiKey, AuditEvent, AuthUnavailable, ExposureMode, Reason, ServiceToken, Settings
from cfaccess_mw.integrations.falcon import AccessRequest, CloudflareAccessMiddleware, get_principal, install, require
from cfaccess_mw.testing import LocalIssuer
from examples import falcon_app
from examples.fastapi_app import roles
from examples.userdb import UserDB

from .conftest import REMOTE_PEER, find_user, jwt_header
from .live_servers import granian_available, serve_granian, serve_hypercorn, serve_uvicorn

API_KEY = "falcon-test-key-0123456789"
CLIENT_ID = "falcon-ci.access"
WS_POLICY_VIOLATION = 1008


def _settings(issuer: LocalIssuer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_keys": (ApiKey.from_secret("operator", API_KEY),),
        "service_tokens": (ServiceToken("ci", CLIENT_ID),),
        "public_paths": ("/healthz", "/public"),
    }
    return issuer.settings(**{**values, **overrides})


class Raises:
    async def on_get(self, req: AccessRequest, resp: falcon.asgi.Response) -> None:
        raise AuthUnavailable(Reason.USER_LOOKUP_FAILED, "The user directory is unavailable.", retry_after=7)


class Public:
    async def on_get(self, req: AccessRequest, resp: falcon.asgi.Response) -> None:
        resp.media = {"principal": req.context.principal}


class PublicButNeedsPrincipal:
    async def on_get(self, req: AccessRequest, resp: falcon.asgi.Response) -> None:
        resp.media = {"who": get_principal(req).display_name}


#: Paths whose websocket responder ran: a refused socket must never reach one.
REACHED: list[str] = []


class Socket(falcon_app.Socket):
    async def on_websocket(self, req: AccessRequest, ws: falcon.asgi.WebSocket) -> None:
        REACHED.append(req.path)
        await super().on_websocket(req, ws)


@falcon.before(require("user", scopes=["admin"]))
class AdminSocket:
    async def on_websocket(self, req: AccessRequest, ws: falcon.asgi.WebSocket) -> None:
        REACHED.append(req.path)
        await ws.accept()
        await ws.send_text("admin")
        await ws.receive_text()


pytestmark = pytest.mark.usefixtures("falcons_loop")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("falcon") / "users.sqlite3"
    users = UserDB(path)
    users.add("alice@example.com", "Alice", role="admin")
    users.add("bob@example.com", "Bob")
    return path


@pytest.fixture
def events() -> list[AuditEvent]:
    return []


@pytest.fixture
def app(shared_issuer: LocalIssuer, db: Path, events: list[AuditEvent]) -> Any:
    app: Any = falcon.asgi.App(request_type=AccessRequest)
    users = UserDB(db)
    for route, resource in (
        ("/healthz", falcon_app.Health()),
        ("/api/me", falcon_app.Me()),
        ("/api/admin", falcon_app.Admin()),
        ("/api/machines", falcon_app.Machines()),
        ("/ws", Socket()),
        ("/ws/admin", AdminSocket()),
        ("/api/raise", Raises()),
        ("/public", Public()),
        ("/public/who", PublicButNeedsPrincipal()),
    ):
        app.add_route(route, resource)
    install(
        app,
        settings=_settings(shared_issuer),
        user_lookup=users.find,
        extra_scopes=roles,
        audit_hook=events.append,
    )
    return app


class Client:
    """Falcon's TestClient, every request from a non-loopback peer (its default has no peer at all)."""

    def __init__(self, app: Any) -> None:
        self.client = falcon.testing.TestClient(app)

    def get(self, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> falcon.testing.Result:
        kwargs.setdefault("remote_addr", REMOTE_PEER[0])
        return self.client.simulate_get(path, headers=headers, **kwargs)


@pytest.fixture
def client(app: Any) -> Client:
    return Client(app)


def error_of(result: falcon.testing.Result) -> dict[str, str]:
    body = result.json
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "reason", "message"}
    return dict(body["error"])


def bearer(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- who req.context.principal is --------------------------------------------------------------


def test_a_user_is_the_principal_with_its_database_row(client: Client, shared_issuer: LocalIssuer) -> None:
    result = client.get("/api/me", jwt_header(shared_issuer.identity_token("Alice@Example.com")))
    assert result.status_code == 200
    assert result.json == {
        "kind": "user",
        "display_name": "alice@example.com",
        "name": "Alice",
        "role": "admin",
        "scopes": ["authenticated", "user", "admin"],
    }


def test_service_tokens_and_api_keys_are_principals(client: Client, shared_issuer: LocalIssuer) -> None:
    assert client.get("/api/me", bearer()).json["display_name"] == "operator"
    assert client.get("/api/machines", bearer()).json == {"status": "machines welcome"}
    service = jwt_header(shared_issuer.service_token(CLIENT_ID))
    assert client.get("/api/me", service).json["kind"] == "service"
    assert client.get("/api/machines", service).status_code == 200


def test_the_require_hook_refuses_with_the_json_error(client: Client, shared_issuer: LocalIssuer) -> None:
    alice = jwt_header(shared_issuer.identity_token("alice@example.com"))
    bob = jwt_header(shared_issuer.identity_token("bob@example.com"))
    assert client.get("/api/admin", alice).status_code == 200
    refused = client.get("/api/admin", bob)
    assert refused.status_code == 403
    assert error_of(refused)["reason"] == "insufficient_scope"
    machines = client.get("/api/machines", alice)
    assert machines.status_code == 403
    assert "service or api_key" in error_of(machines)["message"]


# --- refusals ----------------------------------------------------------------------------------


def test_no_credentials_is_a_401_json_error(client: Client) -> None:
    result = client.get("/api/me")
    assert result.status_code == 401
    assert error_of(result)["reason"] == "no_credentials"
    assert result.headers["www-authenticate"] == 'Bearer realm="cfaccess"'
    assert result.headers["cache-control"] == "no-store"
    assert result.headers["content-type"] == "application/json"


def test_a_refusal_is_json_whatever_the_client_prefers(client: Client) -> None:
    # Falcon renders its own HTTPError as XML for a client that prefers it; the refusal stays our JSON.
    result = client.get("/api/me", {"Accept": "application/xml"})
    assert result.status_code == 401
    assert result.headers["content-type"] == "application/json"
    assert error_of(result)["code"] == "UNAUTHORIZED"


def test_unknown_user_is_a_403(client: Client, shared_issuer: LocalIssuer) -> None:
    result = client.get("/api/me", jwt_header(shared_issuer.identity_token("eve@example.com")))
    assert result.status_code == 403
    assert error_of(result)["reason"] == "unknown_user"


def test_a_bad_token_is_a_401_with_invalid_token(client: Client, shared_issuer: LocalIssuer) -> None:
    token = shared_issuer.identity_token("alice@example.com")
    result = client.get("/api/me", jwt_header(token[:-4] + "AAAA"))
    assert result.status_code == 401
    assert result.headers["www-authenticate"] == 'Bearer realm="cfaccess", error="invalid_token"'


def test_a_responder_raising_auth_error_gets_the_json_error_and_one_refusal_event(
    client: Client, shared_issuer: LocalIssuer, events: list[AuditEvent]
) -> None:
    result = client.get("/api/raise", jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert result.status_code == 503
    assert error_of(result)["reason"] == "user_lookup_failed"
    assert result.headers["retry-after"] == "7"
    assert [(e.outcome, e.status, e.reason) for e in events] == [("unavailable", 503, "user_lookup_failed")]


def test_acceptances_are_audited_with_the_response_status(
    client: Client, shared_issuer: LocalIssuer, events: list[AuditEvent]
) -> None:
    bob = jwt_header(shared_issuer.identity_token("bob@example.com"))
    client.get("/api/me", bob)
    client.get("/api/nowhere", bob)
    client.get("/api/me")
    assert [(e.outcome, e.status, e.principal, e.client) for e in events] == [
        ("accepted", 200, "bob@example.com", events[0].client),
        ("accepted", 404, "bob@example.com", events[1].client),
        ("refused", 401, None, events[2].client),
    ]
    assert all(e.client is not None and e.client.startswith(f"{REMOTE_PEER[0]}:") for e in events)


# --- public paths ------------------------------------------------------------------------------


def test_public_paths_need_no_credentials(client: Client) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/public").json == {"principal": None}


def test_get_principal_refuses_on_a_public_path(client: Client, shared_issuer: LocalIssuer) -> None:
    result = client.get("/public/who", jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert result.status_code == 401
    assert error_of(result)["reason"] == "no_credentials"


# --- websockets under Falcon's conductor -------------------------------------------------------


@pytest.mark.anyio
async def test_websocket_is_accepted_with_the_principal(app: Any) -> None:
    async with (
        falcon.testing.ASGIConductor(app) as conductor,
        conductor.simulate_ws("/ws", headers=bearer(), remote_addr=REMOTE_PEER[0]) as ws,
    ):
        assert await ws.receive_json() == {"hello": "operator"}
    assert REACHED[-1] == "/ws"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "headers"),
    [("/ws", {}), ("/ws", {"Authorization": "Bearer wrong"}), ("/ws/admin", "bob")],
    ids=["no-credentials", "bad-key", "hook-refuses"],
)
async def test_websocket_refusal_closes_1008_before_accept(
    app: Any, shared_issuer: LocalIssuer, events: list[AuditEvent], path: str, headers: Any
) -> None:
    if headers == "bob":
        headers = jwt_header(shared_issuer.identity_token("bob@example.com"))
    sent: list[dict[str, Any]] = []
    REACHED.clear()

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def record(message: Any) -> None:
            sent.append(dict(message))
            await send(message)

        await app(scope, receive, record)

    # The conductor, like the ASGI spec, wants websocket.connect received before any close: Falcon receives it.
    async with falcon.testing.ASGIConductor(recording) as conductor:
        with pytest.raises(falcon.WebSocketDisconnected) as caught:
            async with conductor.simulate_ws(path, headers=headers, remote_addr=REMOTE_PEER[0]):
                pass  # pragma: no cover - refused before accept
    # What a client sees of a close before accept is an HTTP 403, which Falcon's simulator reports as 3403.
    assert caught.value.code == 3403
    socket_messages = [m for m in sent if m["type"].startswith("websocket.")]
    assert [(m["type"], m.get("code")) for m in socket_messages] == [("websocket.close", WS_POLICY_VIOLATION)]
    # Falcon has no middleware hook after a websocket responder, so the middleware records its acceptance when
    # it lets the socket through; a hook refusing it afterwards adds the refusal.
    expected = [("accepted", None), ("refused", 403)] if path == "/ws/admin" else [("refused", 401)]
    assert [(e.outcome, e.status) for e in events] == expected
    assert REACHED == []


@pytest.mark.anyio
async def test_a_refused_websocket_never_reaches_its_responder(app: Any) -> None:
    # Run to completion (the conductor stops the app once the client has seen the denial, which could hide a
    # responder running after the close).
    REACHED.clear()
    sent: list[Any] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> Any:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": [(b"host", b"example.com")],
        "client": REMOTE_PEER,
        "server": ("example.com", 80),
        "subprotocols": [],
    }
    with anyio.fail_after(10):
        await app(scope, receive, send)
    assert REACHED == []
    assert [message["type"] for message in sent] == ["websocket.close"]


@pytest.mark.anyio
async def test_websocket_for_an_admin_passes_the_hook(app: Any, shared_issuer: LocalIssuer) -> None:
    alice = jwt_header(shared_issuer.identity_token("alice@example.com"))
    async with (
        falcon.testing.ASGIConductor(app) as conductor,
        conductor.simulate_ws("/ws/admin", headers=alice, remote_addr=REMOTE_PEER[0]) as ws,
    ):
        assert await ws.receive_text() == "admin"


# --- start-up, sharing, WSGI ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_keys_are_fetched_at_startup(issuer: LocalIssuer, db: Path) -> None:
    app = falcon_app.create_app(issuer.settings(), str(db))
    async with falcon.testing.ASGIConductor(app) as conductor:
        assert issuer.fetch_count == 1
        result = await conductor.simulate_get(
            "/api/me", headers=jwt_header(issuer.identity_token("bob@example.com")), remote_addr=REMOTE_PEER[0]
        )
        assert result.status_code == 200
        assert issuer.fetch_count == 1


def test_one_authenticator_serves_two_apps(shared_issuer: LocalIssuer, db: Path) -> None:
    first = falcon.asgi.App()
    middleware = install(first, settings=shared_issuer.settings(), user_lookup=find_user)
    second = falcon.asgi.App()
    assert install(second, authenticator=middleware.authenticator).authenticator is middleware.authenticator
    with pytest.raises(TypeError, match="not both"):
        CloudflareAccessMiddleware(authenticator=middleware.authenticator, user_lookup=find_user)


def test_a_wsgi_app_refuses_the_middleware(shared_issuer: LocalIssuer) -> None:
    middleware = CloudflareAccessMiddleware(settings=shared_issuer.settings())
    with pytest.raises(falcon.CompatibilityError):
        falcon.App(middleware=[middleware])  # type: ignore[arg-type]  # mypy sees it too
    with pytest.raises(TypeError, match=r"falcon\.asgi\.App"):
        install(falcon.App(), settings=shared_issuer.settings())  # type: ignore[arg-type]


def test_local_mode_reads_falcons_iterable_client(shared_issuer: LocalIssuer, db: Path) -> None:
    app = falcon_app.create_app(shared_issuer.settings(exposure_mode=ExposureMode.LOCAL), str(db))
    client = Client(app)
    local = client.get("/api/me", remote_addr="127.0.0.1", host="localhost")
    assert local.json["kind"] == "local"
    assert client.get("/api/me", host="localhost").status_code == 401  # a remote peer


def test_repr_shows_no_secret(shared_issuer: LocalIssuer) -> None:
    middleware = CloudflareAccessMiddleware(settings=_settings(shared_issuer))
    assert API_KEY not in repr(middleware)
    assert "Authenticator(" in repr(middleware)


# --- live servers ------------------------------------------------------------------------------


@pytest.fixture(params=["uvicorn", "hypercorn", "granian"])
def live(request: pytest.FixtureRequest, shared_issuer: LocalIssuer, db: Path) -> Iterator[str]:
    settings = _settings(shared_issuer)
    if request.param == "uvicorn":
        with serve_uvicorn(falcon_app.create_app(settings, str(db))) as base:
            yield base
    elif request.param == "hypercorn":
        with serve_hypercorn(falcon_app.create_app(settings, str(db))) as base:
            yield base
    else:
        if not granian_available():
            pytest.skip("granian is not installed (it needs a prebuilt wheel for this platform)")
        env = shared_issuer.env(
            CFACCESS_API_KEYS=ApiKey.from_secret("operator", API_KEY).line(),
            CFACCESS_SERVICE_TOKENS=f"ci={CLIENT_ID}",
            CFACCESS_PUBLIC_PATHS="/healthz",
            EXAMPLE_DB=str(db),
        )
        with serve_granian("examples.falcon_app:create_app", env, factory=True) as base:
            yield base


def test_live_server(live: str, shared_issuer: LocalIssuer) -> None:
    with httpx.Client(base_url=live, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        me = http.get("/api/me", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
        assert me.json()["name"] == "Bob"
        refused = http.get("/api/me")
        assert refused.status_code == 401
        assert refused.json()["error"]["reason"] == "no_credentials"
        assert (
            http.get("/api/me", headers=jwt_header(shared_issuer.identity_token("eve@example.com"))).status_code == 403
        )
        assert http.get("/api/machines", headers=bearer()).status_code == 200
        service = http.get("/api/machines", headers=jwt_header(shared_issuer.service_token(CLIENT_ID)))
        assert service.status_code == 200
        admin = http.get("/api/admin", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
        assert admin.status_code == 403
    ws_url = live.replace("http://", "ws://") + "/ws"
    with connect(ws_url, additional_headers=bearer(), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"hello": "operator"}
    with pytest.raises(InvalidStatus) as caught, connect(ws_url, open_timeout=10):
        pass  # pragma: no cover - refused at the handshake
    assert caught.value.response.status_code == 403
