"""BlackSheep: a guardpost authentication handler, so BlackSheep's own auth and its test client see the caller.

BlackSheep's TestClient calls the application's handler directly, past any ASGI
middleware: everything here runs through BlackSheep's own middleware chain, under
its test client and live under uvicorn, hypercorn and granian.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("blacksheep")

from blacksheep import Application, Request, Response, WebSocket
from blacksheep.server.authorization import allow_anonymous, auth
from blacksheep.server.routing import Router
from blacksheep.testing import TestClient
from blacksheep.testing.simulator import TestSimulator as Simulator
from guardpost import Identity, UnauthorizedError
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from cfaccess_mw import ApiKey, AuditEvent, Authenticator, ConfigError, Forbidden, Principal, Reason, ServiceToken
from cfaccess_mw.integrations.blacksheep import CloudflareAccessIdentity, principal_of, use_cloudflare_access
from cfaccess_mw.testing import LocalIssuer
from examples import blacksheep_app
from examples.userdb import UserDB

from .conftest import REMOTE_PEER, find_user, jwt_header
from .live_servers import granian_available, serve_granian, serve_hypercorn, serve_uvicorn

API_KEY = "blacksheep-test-key-0123456789"
CLIENT_ID = "abcdef.access"
TIMEOUT = 5.0


def bearer(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def roles(principal: Principal) -> list[str]:
    return [principal.user["role"]] if principal.kind == "user" else []


def settings_for(issuer: LocalIssuer, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "api_keys": (ApiKey.from_secret("operator", API_KEY),),
        "service_tokens": (ServiceToken("ci", CLIENT_ID),),
        "public_paths": ("/healthz",),
    }
    values.update(overrides)
    return issuer.settings(**values)


async def error_of(response: Any) -> dict[str, str]:
    """The ``error`` object of a refusal, checking the shape every refusal shares."""
    assert response.content_type() == b"application/json"
    body = await response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "reason", "message"}
    return dict(body["error"])


def build_app(settings: Any, events: list[AuditEvent], **options: Any) -> Application:
    router = Router()
    app = Application(router=router)
    options.setdefault("user_lookup", find_user)
    use_cloudflare_access(app, settings=settings, extra_scopes=roles, audit_hook=events.append, **options)

    @router.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        principal = principal_of(request)
        identity = request.user
        assert isinstance(identity, CloudflareAccessIdentity)
        return {"kind": principal.kind, "who": principal.display_name, "roles": identity.roles}

    @router.get("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        extra = request.get_first_header(b"x-extra")
        return {"who": principal_of(request).display_name, "extra": extra.decode() if extra else None}

    @router.get("/principal")
    async def by_binder(principal: Principal) -> dict[str, str]:
        return {"who": principal.display_name}

    @allow_anonymous()
    @router.get("/maybe")
    async def maybe(principal: Principal | None = None) -> dict[str, str | None]:
        return {"who": principal.display_name if principal else None}

    @auth(roles=["admin"])
    @router.get("/admin")
    async def admin() -> dict[str, str]:
        return {"ok": "admin"}

    @router.get("/raise")
    async def raises() -> None:
        raise Forbidden(Reason.INSUFFICIENT_SCOPE, "Admins only.", "the handler said no")

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @auth()
    @router.get("/healthz/who")
    async def healthz_who(principal: Principal) -> dict[str, str]:
        return {"who": principal.display_name}

    @router.ws("/ws")
    async def ws(websocket: WebSocket, principal: Principal) -> None:
        await websocket.accept()
        await websocket.send_json({"who": principal.display_name})
        await websocket.close()

    @router.ws("/ws-raise")
    async def ws_raise(websocket: WebSocket) -> None:
        raise Forbidden(Reason.INSUFFICIENT_SCOPE, "Admins only.")

    @auth(roles=["admin"])
    @router.ws("/ws-admin")
    async def ws_admin(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    return app


@asynccontextmanager
async def started(app: Application) -> AsyncIterator[Client]:
    """The app started (``on_start`` run, so the keys fetched) and a test client for it; stopped after."""
    await app.start()  # type: ignore[no-untyped-call]  # BlackSheep leaves these two untyped
    try:
        yield Client(app)
    finally:
        await app.stop()  # type: ignore[no-untyped-call]


class Client(TestClient):
    """BlackSheep's TestClient, keeping its simulator (which holds the websocket tasks it starts)."""

    def __init__(self, app: Application) -> None:
        self.simulator = Simulator(app)
        super().__init__(app, self.simulator)


@pytest.fixture
def events() -> list[AuditEvent]:
    return []


@pytest.fixture
async def client(shared_issuer: LocalIssuer, events: list[AuditEvent]) -> AsyncIterator[Client]:
    async with started(build_app(settings_for(shared_issuer), events)) as test_client:
        yield test_client


async def websocket_tasks_done(client: Client) -> None:
    """Wait (bounded) for the app's websocket handlers the client started."""
    await asyncio.wait_for(asyncio.gather(*client.simulator.websocket_tasks), TIMEOUT)


async def ws_first_message(client: Client, path: str, headers: dict[str, str] | None = None) -> Any:
    """Open a websocket the ASGI way (send ``websocket.connect``) and return the app's first answer."""
    socket = client.websocket_connect(path, headers=headers)
    await socket.send({"type": "websocket.connect"})
    message = await asyncio.wait_for(socket.receive(), TIMEOUT)
    await socket.send({"type": "websocket.disconnect", "code": 1000})
    await websocket_tasks_done(client)
    return message


# --- who the caller is ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_user_is_request_user(client: Client, shared_issuer: LocalIssuer) -> None:
    response = await client.get("/me", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert response.status == 200
    assert await response.json() == {
        "kind": "user",
        "who": "alice@example.com",
        "roles": ["authenticated", "user", "admin"],
    }


@pytest.mark.anyio
async def test_the_principal_binder(client: Client, shared_issuer: LocalIssuer) -> None:
    response = await client.get("/principal", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert await response.json() == {"who": "bob@example.com"}


@pytest.mark.anyio
async def test_a_service_token_and_an_api_key(client: Client, shared_issuer: LocalIssuer) -> None:
    service = await client.get("/me", headers=jwt_header(shared_issuer.service_token(CLIENT_ID)))
    assert (await service.json())["who"] == "ci"
    api_key = await client.get("/me", headers=bearer())
    assert (await api_key.json())["kind"] == "api_key"


@pytest.mark.anyio
async def test_no_credentials_is_our_401_not_guardposts(client: Client) -> None:
    response = await client.get("/me")
    assert response.status == 401
    assert (await error_of(response))["reason"] == "no_credentials"
    assert response.headers.get_first(b"www-authenticate") == b'Bearer realm="cfaccess"'
    assert response.headers.get_first(b"cache-control") == b"no-store"


@pytest.mark.anyio
async def test_the_reason_a_request_stayed_anonymous_is_the_answer(client: Client, shared_issuer: LocalIssuer) -> None:
    expired = await client.get("/me", headers=jwt_header(shared_issuer.identity_token("a@example.com", lifetime=-60)))
    assert expired.status == 401
    assert (await error_of(expired))["reason"] == "token_expired"
    assert b'error="invalid_token"' in (expired.headers.get_first(b"www-authenticate") or b"")
    unknown = await client.get("/me", headers=jwt_header(shared_issuer.identity_token("eve@example.com")))
    assert unknown.status == 403
    assert (await error_of(unknown))["reason"] == "unknown_user"
    wrong_key = await client.get("/me", headers=bearer("not-the-key"))
    assert (await error_of(wrong_key))["reason"] == "api_key_invalid"


@pytest.mark.anyio
async def test_a_token_header_in_two_spellings_is_refused(client: Client, shared_issuer: LocalIssuer) -> None:
    token = shared_issuer.identity_token("alice@example.com")
    response = await client.get(
        "/me", headers=[(b"Cf-Access-Jwt-Assertion", token.encode()), (b"cf-access-jwt-assertion", token.encode())]
    )
    assert response.status == 401
    assert (await error_of(response))["reason"] == "token_malformed"


@pytest.mark.anyio
async def test_an_unknown_path_is_refused_before_it_is_a_404(client: Client, events: list[AuditEvent]) -> None:
    response = await client.get("/no/such/route")
    assert response.status == 401  # routes are not disclosed to an anonymous caller
    assert (await client.get("/no/such/route", headers=bearer())).status == 404
    assert [(e.outcome, e.status) for e in events] == [("refused", 401), ("accepted", 404)]


# --- authorization: @auth, policies, and refusals raised by the app ------------------------------


@pytest.mark.anyio
async def test_auth_roles_are_the_principals_scopes(
    client: Client, shared_issuer: LocalIssuer, events: list[AuditEvent]
) -> None:
    alice = await client.get("/admin", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert alice.status == 200
    bob = await client.get("/admin", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert bob.status == 403
    assert (await error_of(bob))["reason"] == "insufficient_scope"  # guardpost's own answer is text "Forbidden"
    assert [(e.outcome, e.status, e.reason) for e in events] == [
        ("accepted", 200, None),
        ("refused", 403, "insufficient_scope"),
    ]


@pytest.mark.anyio
async def test_an_auth_error_raised_by_a_handler_is_our_json_and_one_refusal(
    client: Client, events: list[AuditEvent]
) -> None:
    response = await client.get("/raise", headers=bearer())
    assert response.status == 403
    assert await error_of(response) == {"code": "FORBIDDEN", "reason": "insufficient_scope", "message": "Admins only."}
    assert [(e.outcome, e.status, e.detail) for e in events] == [("refused", 403, "the handler said no")]


@pytest.mark.anyio
async def test_public_paths_and_allow_anonymous(client: Client, shared_issuer: LocalIssuer) -> None:
    assert (await (await client.get("/healthz")).json()) == {"status": "ok"}  # CFACCESS_PUBLIC_PATHS
    explicit = await client.get("/healthz/who")  # @auth() still requires a caller on a public path
    assert explicit.status == 401
    assert (await error_of(explicit))["reason"] == "no_credentials"
    assert await (await client.get("/maybe")).json() == {"who": None}
    alice = jwt_header(shared_issuer.identity_token("alice@example.com"))
    assert await (await client.get("/maybe", headers=alice)).json() == {"who": "alice@example.com"}
    # A credential that fails leaves an @allow_anonymous() route's caller anonymous, as guardpost does.
    assert await (await client.get("/maybe", headers=bearer("not-the-key"))).json() == {"who": None}


@pytest.mark.anyio
async def test_require_authentication_false_keeps_the_apps_own_default_policy(shared_issuer: LocalIssuer) -> None:
    router = Router()
    app = Application(router=router)
    use_cloudflare_access(app, settings=settings_for(shared_issuer), require_authentication=False)

    @router.get("/")
    async def home(request: Request) -> dict[str, bool]:
        identity: Identity | None = request.user
        return {"authenticated": bool(identity and identity.is_authenticated())}

    async with started(app) as client:
        assert await (await client.get("/")).json() == {"authenticated": False}
        assert await (await client.get("/", headers=bearer())).json() == {"authenticated": True}


@pytest.mark.anyio
async def test_an_apps_own_refusal_handler_is_kept(shared_issuer: LocalIssuer) -> None:
    router = Router()
    app = Application(router=router)

    async def teapot(app: Any, request: Request, exc: Exception) -> Response:
        return Response(418)

    app.exceptions_handlers[UnauthorizedError] = teapot
    use_cloudflare_access(app, settings=settings_for(shared_issuer))

    @router.get("/")
    async def home() -> str:
        return "home"

    async with started(app) as client:
        assert (await client.get("/")).status == 418


@pytest.mark.anyio
async def test_headers_and_client_given_as_iterators_are_read_intact(shared_issuer: LocalIssuer) -> None:
    app = build_app(settings_for(shared_issuer), [])
    headers = [(b"authorization", f"Bearer {API_KEY}".encode()), (b"x-extra", b"1")]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/echo", "raw_path": b"/echo", "root_path": "", "query_string": b"", "headers": iter(headers),
             "client": iter(REMOTE_PEER), "server": ("testserver", 80)}  # fmt: skip
    async with started(app):
        await app(scope, receive, send)
    assert sent[0]["status"] == 200  # BlackSheep read the headers iterator first: its parsed copy was used
    assert json.loads(b"".join(message.get("body", b"") for message in sent[1:])) == {"who": "operator", "extra": "1"}
    assert scope["client"] == REMOTE_PEER


# --- websockets -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_websocket_accepted_with_the_principal(client: Client, events: list[AuditEvent]) -> None:
    socket = client.websocket_connect("/ws", headers=bearer())
    await socket.send({"type": "websocket.connect"})
    assert (await asyncio.wait_for(socket.receive(), TIMEOUT))["type"] == "websocket.accept"
    assert json.loads((await asyncio.wait_for(socket.receive(), TIMEOUT))["text"]) == {"who": "operator"}
    assert (await asyncio.wait_for(socket.receive(), TIMEOUT))["type"] == "websocket.close"
    await websocket_tasks_done(client)
    assert [(e.outcome, e.kind) for e in events] == [("accepted", "api_key")]  # at accept


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "who", "code"),
    [("/ws", None, "UNAUTHORIZED"), ("/ws-raise", "bob", "FORBIDDEN"), ("/ws-admin", "bob", "FORBIDDEN")],
)
async def test_a_refused_websocket_closes_1008_after_connect(
    client: Client,
    shared_issuer: LocalIssuer,
    events: list[AuditEvent],
    path: str,
    who: str | None,
    code: str,
) -> None:
    headers = jwt_header(shared_issuer.identity_token(f"{who}@example.com")) if who else None
    message: MutableMapping[str, Any] = await ws_first_message(client, path, headers)
    assert message == {"type": "websocket.close", "code": 1008, "reason": code}
    assert [e.outcome for e in events] == ["refused"]


# --- one Authenticator, keys fetched once at startup ----------------------------------------------


@pytest.mark.anyio
async def test_keys_are_fetched_once_at_start(issuer: LocalIssuer) -> None:
    events: list[AuditEvent] = []
    app = build_app(settings_for(issuer), events)
    assert issuer.fetch_count == 0
    async with started(app) as client:
        assert issuer.fetch_count == 1  # at on_start, before any request
        alice = jwt_header(issuer.identity_token("alice@example.com"))
        for path in ("/me", "/principal", "/admin"):
            assert (await client.get(path, headers=alice)).status == 200
        assert issuer.fetch_count == 1


@pytest.mark.anyio
async def test_unreachable_keys_are_a_503_with_retry_after(issuer: LocalIssuer) -> None:
    issuer.responder = lambda: (500, {}, b"down")
    async with started(build_app(settings_for(issuer), [])) as client:
        response = await client.get("/me", headers=jwt_header(issuer.identity_token("alice@example.com")))
    assert response.status == 503
    assert (await error_of(response))["reason"] == "keys_unavailable"
    assert response.headers.get_first(b"retry-after") is not None


# --- configuration ---------------------------------------------------------------------------------


def test_a_bad_variable_stops_the_app_being_wired(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFACCESS_EXPOSURE_MODE", "reverse-proxy")
    monkeypatch.setenv("CFACCESS_AUD", "a" * 64)
    monkeypatch.delenv("CFACCESS_TEAM_DOMAIN", raising=False)
    with pytest.raises(ConfigError, match="CFACCESS_TEAM_DOMAIN"):
        use_cloudflare_access(Application(router=Router()), user_lookup=find_user)


def test_authenticator_or_its_options_not_both(shared_issuer: LocalIssuer) -> None:
    shared = Authenticator(settings_for(shared_issuer), user_lookup=find_user)
    assert use_cloudflare_access(Application(router=Router()), shared).authenticator is shared
    with pytest.raises(TypeError, match="user_lookup"):
        use_cloudflare_access(Application(router=Router()), shared, user_lookup=find_user)


# --- the example app, live -------------------------------------------------------------------------


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
        with serve_uvicorn(blacksheep_app.create_app(settings, str(db))) as base:
            yield base
    elif request.param == "hypercorn":
        with serve_hypercorn(blacksheep_app.create_app(settings, str(db))) as base:
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
        with serve_granian("examples.blacksheep_app:create_app", env, factory=True) as base:
            yield base


def test_live_server(live: str, issuer: LocalIssuer) -> None:
    assert issuer.fetch_count == 1  # the keys came at on_start
    with httpx.Client(base_url=live, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        me = http.get("/api/me", headers=jwt_header(issuer.identity_token("alice@example.com")))
        assert me.json()["name"] == "Alice"
        refused = http.get("/api/me")
        assert refused.status_code == 401
        assert refused.json()["error"]["reason"] == "no_credentials"
        unknown = http.get("/api/me", headers=jwt_header(issuer.identity_token("eve@example.com")))
        assert unknown.status_code == 403
        assert unknown.json()["error"]["reason"] == "unknown_user"
        assert http.get("/api/machines", headers=bearer()).json()["who"] == "operator"
        service = http.get("/api/machines", headers=jwt_header(issuer.service_token(CLIENT_ID)))
        assert service.json()["who"] == "ci"
        guarded = http.get("/api/admin", headers=jwt_header(issuer.identity_token("bob@example.com")))
        assert guarded.status_code == 403
        assert guarded.json()["error"]["reason"] == "insufficient_scope"
    assert issuer.fetch_count == 1
    ws_url = live.replace("http://", "ws://") + "/ws"
    with connect(ws_url, additional_headers=bearer(), open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10)) == {"hello": "operator"}
    with pytest.raises(InvalidStatus) as caught, connect(ws_url, open_timeout=10):
        pass  # pragma: no cover - refused at the handshake
    # uvicorn, hypercorn and granian all offer ASGI's websocket.http.response: the refusal is our JSON error.
    assert caught.value.response.status_code == 401
    assert json.loads(bytes(caught.value.response.body or b""))["error"]["reason"] == "no_credentials"


# --- what BlackSheep serves itself, and its raw-path routing (issue 18) ----------------------------


@pytest.mark.anyio
async def test_served_files_and_the_spa_fallback_need_a_caller_unless_public(
    shared_issuer: LocalIssuer, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("<p>app</p>")
    (tmp_path / "secret.txt").write_text("secret")
    events: list[AuditEvent] = []
    app = build_app(settings_for(shared_issuer, public_paths=("/healthz", "/pub")), events)
    app.serve_files(tmp_path, root_path="files", fallback_document="index.html")
    app.serve_files(tmp_path, root_path="pub")
    async with started(app) as client:
        for path in ("/files/secret.txt", "/files/no/such/route"):  # a file, and the SPA fallback
            refused = await client.get(path)
            assert refused.status == 401, path
            assert (await error_of(refused))["reason"] == "no_credentials"
        assert (await client.get("/files/secret.txt", headers=bearer())).status == 200
        assert (await client.get("/pub/secret.txt")).status == 200  # listed public
        # An @allow_anonymous() route the app wrote stays the app's decision.
        assert (await client.get("/maybe")).status == 200
    assert [event.path for event in events if event.outcome == "refused"] == [
        "/files/secret.txt",
        "/files/no/such/route",
    ]


def test_an_escaped_slash_under_a_public_prefix_is_not_public(shared_issuer: LocalIssuer) -> None:
    app = Application(router=Router())
    use_cloudflare_access(app, settings=settings_for(shared_issuer, public_paths=("/status",)), user_lookup=find_user)

    @app.router.get("/status")
    async def status() -> dict[str, str]:
        return {"status": "ok"}

    @app.router.get("/{slug}")
    async def protected(slug: str) -> dict[str, str]:
        return {"slug": slug}

    with serve_uvicorn(app) as base, httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/status").json() == {"status": "ok"}
        for path in ("/status%2Fx", "/status%2fx", "/%73tatus"):
            refused = http.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["reason"] == "no_credentials"
        assert http.get("/status%2Fx", headers=bearer()).json() == {"slug": "status/x"}


def test_a_mounted_app_needs_a_caller_even_before_the_app_starts(shared_issuer: LocalIssuer) -> None:
    """BlackSheep dispatches ``app.mount`` before its middleware chain, and before it starts itself."""
    reached: list[str] = []

    async def mounted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"mounted"})

    app = Application(router=Router())
    use_cloudflare_access(app, settings=settings_for(shared_issuer, public_paths=("/healthz",)), user_lookup=find_user)
    app.mount("/sub", mounted)  # after the wiring, as apps usually do
    with serve_uvicorn(app, lifespan="off") as base, httpx.Client(base_url=base, timeout=10) as http:
        for path in ("/sub/healthz", "/sub/x"):
            refused = http.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["reason"] == "no_credentials"
        assert reached == []
        assert http.get("/sub/x", headers=bearer()).text == "mounted"
    assert reached == ["/sub/x"]
