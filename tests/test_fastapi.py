"""FastAPI: the principal dependency, kind and scope requirements, and the schemes in OpenAPI."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, WebSocket
from fastapi.routing import APIRoute
from starlette.testclient import TestClient, WebSocketDenialResponse

from cfaccess_mw import ApiKey, AuditEvent, CloudflareAccessMiddleware, Principal, ServiceToken
from cfaccess_mw.integrations.fastapi import CurrentPrincipal, document_security, get_principal, require
from cfaccess_mw.testing import LocalIssuer

from .conftest import REMOTE_PEER, error_of, find_user, jwt_header

API_KEY = "fastapi-test-key-0123456789"
CLIENT_ID = "abcdef.access"


Machine = Annotated[Principal, Depends(require("service", "api_key"))]


def roles(principal: Principal) -> list[str]:
    return [principal.user["role"]] if principal.kind == "user" else []


@pytest.fixture
def client(shared_issuer: LocalIssuer, audit_mode: str) -> Any:
    app = FastAPI()

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, Any]:
        return {"kind": principal.kind, "who": principal.display_name}

    @app.get("/admin", dependencies=[Depends(require("user", scopes=["admin"]))])
    async def admin() -> dict[str, str]:
        return {"ok": "admin"}

    @app.get("/machines")
    async def machines(principal: Machine) -> dict[str, str]:
        return {"who": principal.display_name}

    @app.get("/healthz")
    async def healthz(principal: CurrentPrincipal) -> dict[str, str]:
        return {"who": principal.display_name}  # public path: the dependency must still refuse

    settings = shared_issuer.settings(
        api_keys=(ApiKey.from_secret("operator", API_KEY),),
        service_tokens=(ServiceToken("ci", CLIENT_ID),),
        public_paths=("/healthz", "/openapi.json", "/docs"),
    )
    app.add_middleware(CloudflareAccessMiddleware, settings=settings, user_lookup=find_user, extra_scopes=roles)
    document_security(app)
    with TestClient(app, client=REMOTE_PEER) as test_client:
        yield test_client


def test_current_principal_dependency(client: TestClient, shared_issuer: LocalIssuer) -> None:
    response = client.get("/me", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert response.json() == {"kind": "user", "who": "bob@example.com"}


def test_require_scope_admits_holders_and_refuses_others(client: TestClient, shared_issuer: LocalIssuer) -> None:
    alice = jwt_header(shared_issuer.identity_token("alice@example.com"))
    bob = jwt_header(shared_issuer.identity_token("bob@example.com"))
    assert client.get("/admin", headers=alice).status_code == 200
    refused = client.get("/admin", headers=bob)
    assert refused.status_code == 403
    assert error_of(refused)["reason"] == "insufficient_scope"


def test_require_kind_refuses_other_kinds(client: TestClient, shared_issuer: LocalIssuer) -> None:
    assert client.get("/machines", headers={"Authorization": f"Bearer {API_KEY}"}).json() == {"who": "operator"}
    service = jwt_header(shared_issuer.service_token(CLIENT_ID))
    assert client.get("/machines", headers=service).json() == {"who": "ci"}
    refused = client.get("/machines", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert refused.status_code == 403
    assert "service or api_key" in error_of(refused)["message"]


def test_dependency_refuses_on_a_public_path(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 401
    assert error_of(response)["reason"] == "no_credentials"


def test_openapi_shows_both_security_schemes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["CloudflareAccess"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Cf-Access-Jwt-Assertion",
        "description": schemes["CloudflareAccess"]["description"],
    }
    assert schemes["ApiKey"]["type"] == "http"
    assert schemes["ApiKey"]["scheme"] == "bearer"
    both: list[dict[str, list[str]]] = [{"CloudflareAccess": []}, {"ApiKey": []}]
    assert schema["paths"]["/me"]["get"]["security"] == both  # CurrentPrincipal
    assert schema["paths"]["/admin"]["get"]["security"] == both  # require(...) in the route's dependencies
    assert schema["paths"]["/machines"]["get"]["security"] == both  # require(...) as a parameter
    assert client.get("/docs").status_code == 200


def test_routes_without_the_dependencies_are_not_marked_secured(shared_issuer: LocalIssuer) -> None:
    app = FastAPI()

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return {}

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        return {}

    document_security(app)
    document_security(app)  # twice is harmless
    schema = app.openapi()
    assert "security" not in schema["paths"]["/open"]["get"]
    assert schema["paths"]["/me"]["get"]["security"] == [{"CloudflareAccess": []}, {"ApiKey": []}]
    assert app.openapi() is schema


def test_without_document_security_the_access_scheme_is_still_documented() -> None:
    app = FastAPI()

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        return {}

    schema = app.openapi()
    assert schema["paths"]["/me"]["get"]["security"] == [{"CloudflareAccess": []}]
    assert set(schema["components"]["securitySchemes"]) == {"CloudflareAccess"}


def test_current_principal_is_one_dependency_without_sub_dependencies() -> None:
    """The dependency FastAPI resolves per request is get_principal alone: the schemes cost nothing at run time."""
    app = FastAPI()

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        return {}

    @app.get("/admin", dependencies=[Depends(require("user", scopes=["admin"]))])
    async def admin() -> dict[str, str]:
        return {}

    routes = {route.path: route for route in app.routes if isinstance(route, APIRoute)}
    (principal,) = routes["/me"].dependant.dependencies
    assert principal.call is get_principal
    assert principal.dependencies == []
    (requirement,) = routes["/admin"].dependant.dependencies
    assert requirement.dependencies == []


def test_require_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown principal kind"):
        require("admin")  # type: ignore[arg-type]


def test_require_rejects_one_string_as_scopes() -> None:
    with pytest.raises(ValueError, match="not one string"):
        require("user", scopes="admin")


def test_websocket_routes_get_the_principal_and_requirements(shared_issuer: LocalIssuer) -> None:
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, principal: CurrentPrincipal) -> None:
        await websocket.accept()
        await websocket.send_json({"who": principal.display_name})
        await websocket.close()

    @app.websocket("/admin-ws", dependencies=[Depends(require("user", scopes=["admin"]))])
    async def admin_ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    @app.websocket("/machines-ws")
    async def machines_ws(websocket: WebSocket, principal: Machine) -> None:
        await websocket.accept()
        await websocket.send_json({"who": principal.display_name})
        await websocket.close()

    settings = shared_issuer.settings(api_keys=(ApiKey.from_secret("operator", API_KEY),))
    app.add_middleware(CloudflareAccessMiddleware, settings=settings, user_lookup=find_user, extra_scopes=roles)
    document_security(app)
    with TestClient(app, client=REMOTE_PEER) as client:
        assert app.openapi()["openapi"]  # websocket routes are not in OpenAPI; documenting them breaks nothing
        with client.websocket_connect("/ws", headers={"Authorization": f"Bearer {API_KEY}"}) as socket:
            assert socket.receive_json() == {"who": "operator"}
        with client.websocket_connect("/machines-ws", headers={"Authorization": f"Bearer {API_KEY}"}) as socket:
            assert socket.receive_json() == {"who": "operator"}
        alice = jwt_header(shared_issuer.identity_token("alice@example.com"))
        with client.websocket_connect("/admin-ws", headers=alice):
            pass
        bob = jwt_header(shared_issuer.identity_token("bob@example.com"))
        with pytest.raises(WebSocketDenialResponse) as caught, client.websocket_connect("/admin-ws", headers=bob):
            pass  # pragma: no cover - refused before accept
        assert caught.value.status_code == 403
        assert error_of(caught.value)["reason"] == "insufficient_scope"


def test_a_refusal_by_require_is_one_audit_event(shared_issuer: LocalIssuer) -> None:
    events: list[AuditEvent] = []
    app = FastAPI()

    @app.get("/admin", dependencies=[Depends(require("user", scopes=["admin"]))])
    async def admin() -> dict[str, str]:
        return {"ok": "admin"}

    app.add_middleware(
        CloudflareAccessMiddleware,
        settings=shared_issuer.settings(),
        user_lookup=find_user,
        extra_scopes=roles,
        audit_hook=events.append,
    )
    with TestClient(app, client=REMOTE_PEER) as client:
        client.get("/admin", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
        client.get("/admin", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert [(e.outcome, e.status, e.reason) for e in events] == [
        ("refused", 403, "insufficient_scope"),
        ("accepted", 200, None),
    ]
