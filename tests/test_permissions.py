"""``cfaccess_mw.permissions.requires``: a Starlette endpoint's refusal looks and is audited like the middleware's.

A real Starlette app behind the real middleware; roles come from ``extra_scopes``.
Each refusal is checked for the shared JSON shape and for the single ``refused``
audit event (Starlette's own ``@requires`` answers plain text, audited as
``accepted 403``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from cfaccess_mw import AuditEvent, CloudflareAccessMiddleware, Forbidden, Principal, Reason
from cfaccess_mw.core.permissions import admit
from cfaccess_mw.integrations.starlette import requires
from cfaccess_mw.testing import LocalIssuer

from .conftest import REMOTE_PEER, error_of, find_user, jwt_header

API_KEY = "permissions-test-key"


@requires("admin")
async def admin(request: Request) -> PlainTextResponse:
    return PlainTextResponse("admin area")


@requires(["user", "admin"])
def report(request: Request) -> PlainTextResponse:  # a sync endpoint runs in the thread pool
    return PlainTextResponse("report")


class SettingsPage(HTTPEndpoint):
    @requires("admin")
    async def get(self, request: Request) -> PlainTextResponse:
        return PlainTextResponse("settings")


@requires("admin")
async def admin_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("admin socket")
    await websocket.close()


def roles(principal: Principal) -> list[str]:
    return [principal.user["role"]] if principal.kind == "user" else []


@pytest.fixture
def events(audit_mode: str) -> list[AuditEvent]:
    return []


@pytest.fixture
def client(shared_issuer: LocalIssuer, events: list[AuditEvent]) -> Iterator[TestClient]:
    app = Starlette(
        routes=[
            Route("/admin", admin),
            Route("/report", report),
            Route("/settings", SettingsPage),
            Route("/open/admin", admin),
            WebSocketRoute("/ws", admin_socket),
        ]
    )
    settings = shared_issuer.settings(api_keys={"robot": API_KEY}, public_paths=("/open",))
    app.add_middleware(
        CloudflareAccessMiddleware,
        settings=settings,
        user_lookup=find_user,
        extra_scopes=roles,
        audit_hook=events.append,
    )
    with TestClient(app, client=REMOTE_PEER) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/admin", "/report", "/settings"])
def test_a_caller_with_the_scopes_is_let_in(
    client: TestClient, shared_issuer: LocalIssuer, events: list[AuditEvent], path: str
) -> None:
    response = client.get(path, headers=jwt_header(shared_issuer.identity_token("alice@example.com")))

    assert response.status_code == 200
    assert [(e.outcome, e.status, e.principal) for e in events] == [("accepted", 200, "alice@example.com")]


@pytest.mark.parametrize(
    ("path", "caller"),
    [
        pytest.param("/admin", "bob", id="async-lacks-role"),
        pytest.param("/report", "bob", id="sync-lacks-role"),
        pytest.param("/settings", "bob", id="method-lacks-role"),
        pytest.param("/report", "api-key", id="api-key-is-not-a-user"),
    ],
)
def test_a_caller_without_the_scopes_gets_the_json_refusal_and_one_refused_event(
    client: TestClient,
    shared_issuer: LocalIssuer,
    events: list[AuditEvent],
    caplog: pytest.LogCaptureFixture,
    path: str,
    caller: str,
) -> None:
    if caller == "bob":
        headers = jwt_header(shared_issuer.identity_token("bob@example.com"))
    else:
        headers = {"Authorization": f"Bearer {API_KEY}"}

    response = client.get(path, headers=headers)

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/json"
    assert error_of(response) == {
        "code": "FORBIDDEN",
        "reason": "insufficient_scope",
        "message": "You do not have permission for this endpoint.",
    }
    assert [(e.outcome, e.status, e.reason) for e in events] == [("refused", 403, "insufficient_scope")]
    assert "lacks scopes" in (events[0].detail or "")
    audit_lines = [r for r in caplog.records if r.name == "cfaccess_mw.audit"]
    assert [(r.levelno, r.getMessage().split(" ")[:2]) for r in audit_lines] == [(logging.WARNING, ["refused", "403"])]


def test_on_a_public_path_there_is_no_principal_so_it_is_a_401(client: TestClient, events: list[AuditEvent]) -> None:
    response = client.get("/open/admin")

    assert response.status_code == 401
    assert error_of(response)["reason"] == "no_credentials"
    assert [(e.outcome, e.status) for e in events] == [("refused", 401)]


def test_a_websocket_without_the_scopes_is_refused_before_accept(
    client: TestClient, shared_issuer: LocalIssuer, events: list[AuditEvent]
) -> None:
    bob = jwt_header(shared_issuer.identity_token("bob@example.com"))
    with pytest.raises(WebSocketDenialResponse) as caught, client.websocket_connect("/ws", headers=bob):
        pass  # pragma: no cover - the handshake is refused
    assert caught.value.status_code == 403
    assert error_of(caught.value)["reason"] == "insufficient_scope"
    assert [(e.outcome, e.reason) for e in events] == [("refused", "insufficient_scope")]

    alice = jwt_header(shared_issuer.identity_token("alice@example.com"))
    with client.websocket_connect("/ws", headers=alice) as ws:
        assert ws.receive_text() == "admin socket"


def test_an_endpoint_without_a_request_argument_is_refused_at_decoration() -> None:
    def endpoint(req: Request) -> None:  # pragma: no cover - never called
        return None

    with pytest.raises(TypeError, match='no "request" or "websocket" argument'):
        requires("admin")(endpoint)


def test_a_decorated_endpoint_called_without_a_request_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not a Request or WebSocket"):
        report("not a request")  # type: ignore[arg-type]


# --- the declaration every framework's require(*kinds, scopes=...) shares ---------------------------------


@pytest.mark.parametrize("module", ["fastapi", "django", "falcon", "litestar"])
def test_every_frameworks_require_refuses_a_bad_declaration_at_import(module: str) -> None:
    require = pytest.importorskip(f"cfaccess_mw.{module}").require
    with pytest.raises(ValueError, match="unknown principal kind"):
        require("robot")
    with pytest.raises(ValueError, match="not one string"):
        require(scopes="admin")  # would otherwise require the scopes a, d, m, i, n


def test_admit_refuses_the_wrong_kind_and_a_missing_scope_and_names_where() -> None:
    service = Principal(kind="service", name="ci")
    assert admit(service, ["deploy"], ("service",), ("deploy",)) is service
    with pytest.raises(Forbidden) as caught:
        admit(service, ["deploy"], ("user",), where="view")
    assert caught.value.reason is Reason.INSUFFICIENT_SCOPE
    assert caught.value.detail == "service caller refused; view admits user"
    with pytest.raises(Forbidden) as caught:
        admit(service, ["deploy"], (), ("deploy", "admin"))
    assert "lacks scopes ['admin']" in caught.value.detail
