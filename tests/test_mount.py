"""Starlette ``Mount`` with the middleware: public paths relative to the mount, key prefetch from the parent's
lifespan, ``url_for`` of mounted routes, and what stays outside the mount."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, NoMatchFound, Route
from starlette.testclient import TestClient

from cfaccess_mw import ApiKey, Authenticator, CloudflareAccessMiddleware, Settings
from cfaccess_mw.testing import LocalIssuer

from .conftest import REMOTE_PEER, error_of, find_user, jwt_header

API_KEY = "mount-test-key-0123456789"


async def who(request: Request) -> JSONResponse:
    return JSONResponse({"who": request.user.display_name, "root_path": request.scope["root_path"]})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def link(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(request.url_for("api:item", item_id=7)))


def sub_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/me", who),
            Route("/healthz", health),
            Route("/items/{item_id:int}", who, name="item"),
            Route("/link", link),
        ]
    )


def parent(auth: Authenticator, *, prefetch: bool = True, api: Starlette | None = None) -> Starlette:
    """A parent app with a public home page and the API mounted at /api behind the middleware."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Lifespan events stop at the parent's router: a mounted app and its middleware never see them.
        if prefetch:
            await auth.startup()
        yield
        await auth.aclose()

    return Starlette(
        routes=[
            Route("/", health),
            Mount(
                "/api",
                app=api or sub_app(),
                name="api",
                middleware=[Middleware(CloudflareAccessMiddleware, authenticator=auth)],
            ),
        ],
        lifespan=lifespan,
    )


@pytest.fixture
def auth(shared_issuer: LocalIssuer) -> Authenticator:
    return Authenticator(
        shared_issuer.settings(api_keys=(ApiKey.from_secret("op", API_KEY),), public_paths=("/healthz",)),
        user_lookup=find_user,
    )


@pytest.fixture
def client(auth: Authenticator) -> Iterator[TestClient]:
    with TestClient(parent(auth), client=REMOTE_PEER) as test_client:
        yield test_client


def test_the_mount_is_protected_and_its_handlers_see_the_principal(
    client: TestClient, shared_issuer: LocalIssuer
) -> None:
    refused = client.get("/api/me")
    assert refused.status_code == 401
    assert error_of(refused)["reason"] == "no_credentials"
    accepted = client.get("/api/me", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert accepted.json() == {"who": "bob@example.com", "root_path": "/api"}


def test_public_paths_are_relative_to_the_mount(client: TestClient) -> None:
    """Starlette gives the mounted app ``root_path="/api"``; the middleware matches the path below it."""
    assert client.get("/api/healthz").status_code == 200


def test_a_public_path_written_with_the_mount_prefix_matches_nothing(shared_issuer: LocalIssuer) -> None:
    auth = Authenticator(shared_issuer.settings(public_paths=("/api/healthz",)), user_lookup=find_user)
    with TestClient(parent(auth), client=REMOTE_PEER) as client:
        refused = client.get("/api/healthz")
    assert refused.status_code == 401


def test_routes_outside_the_mount_are_not_protected(client: TestClient) -> None:
    """Middleware on a Mount guards that mount only: the parent's own routes answer anyone."""
    assert client.get("/").text == "ok"


def test_keys_are_prefetched_from_the_parents_lifespan(issuer: LocalIssuer) -> None:
    auth = Authenticator(issuer.settings(), user_lookup=find_user)
    with TestClient(parent(auth), client=REMOTE_PEER) as client:
        assert issuer.fetch_count == 1
        response = client.get("/api/me", headers=jwt_header(issuer.identity_token("bob@example.com")))
        assert response.status_code == 200
    assert issuer.fetch_count == 1


def test_without_the_parents_prefetch_the_first_request_fetches_the_keys(issuer: LocalIssuer) -> None:
    """What happens when nobody calls startup(): the mounted middleware never sees lifespan."""
    auth = Authenticator(issuer.settings(), user_lookup=find_user)
    with TestClient(parent(auth, prefetch=False), client=REMOTE_PEER) as client:
        assert issuer.fetch_count == 0
        client.get("/api/me", headers=jwt_header(issuer.identity_token("bob@example.com")))
        assert issuer.fetch_count == 1


def test_url_for_reaches_mounted_routes_through_the_middleware_argument(
    client: TestClient, auth: Authenticator
) -> None:
    app = parent(auth)
    assert app.url_path_for("api:item", item_id=7) == "/api/items/7"
    linked = client.get("/api/link", headers={"Authorization": f"Bearer {API_KEY}"})
    assert linked.text == "http://testserver/api/items/7"


def test_wrapping_the_mounted_app_instead_hides_its_routes_from_url_for(auth: Authenticator) -> None:
    wrapped = Mount("/api", app=CloudflareAccessMiddleware(sub_app(), authenticator=auth), name="api")
    app = Starlette(routes=[wrapped])
    with pytest.raises(NoMatchFound):
        app.url_path_for("api:item", item_id=7)


def test_two_mounts_share_one_authenticator(issuer: LocalIssuer) -> None:
    auth = Authenticator(issuer.settings(), user_lookup=find_user)
    guarded = [Middleware(CloudflareAccessMiddleware, authenticator=auth)]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await auth.startup()
        yield

    app = Starlette(
        routes=[Mount("/a", app=sub_app(), middleware=guarded), Mount("/b", app=sub_app(), middleware=guarded)],
        lifespan=lifespan,
    )
    token = jwt_header(issuer.identity_token("alice@example.com"))
    with TestClient(app, client=REMOTE_PEER) as client:
        assert client.get("/a/me", headers=token).json()["root_path"] == "/a"
        assert client.get("/b/me", headers=token).json()["root_path"] == "/b"
    assert issuer.fetch_count == 1


def test_middleware_on_the_parent_matches_public_paths_from_the_parents_root(shared_issuer: LocalIssuer) -> None:
    """The other wiring: the whole app behind the middleware, its lifespan prefetching; public paths then
    name the full path, mount prefix included."""
    app = Starlette(routes=[Route("/", health), Mount("/api", app=sub_app(), name="api")])
    app.add_middleware(
        CloudflareAccessMiddleware,
        settings=shared_issuer.settings(public_paths=("/api/healthz",)),
        user_lookup=find_user,
    )
    with TestClient(app, client=REMOTE_PEER) as client:
        assert client.get("/api/healthz").status_code == 200
        assert client.get("/").status_code == 401
        assert app.url_path_for("api:item", item_id=7) == "/api/items/7"


def test_a_mount_behind_a_server_root_path_is_relative_to_the_mount(
    auth: Authenticator, shared_issuer: LocalIssuer
) -> None:
    """Served under a prefix (uvicorn ``--root-path /svc``): the mount's root_path is ``/svc/api``, and public
    paths stay relative to the mount."""
    with TestClient(parent(auth), client=REMOTE_PEER, root_path="/svc") as client:
        assert client.get("/svc/api/healthz").status_code == 200
        assert client.get("/svc/api/me").status_code == 401
        token = jwt_header(shared_issuer.identity_token("bob@example.com"))
        assert client.get("/svc/api/me", headers=token).json() == {"who": "bob@example.com", "root_path": "/svc/api"}


# --- refusals from inside a mounted app (issue 18, finding 5) ----------------------------------------


def settings_for(issuer: LocalIssuer) -> Settings:
    return issuer.settings(api_keys=(ApiKey.from_secret("op", API_KEY),), public_paths=("/healthz",))


def _refusing_sub_app() -> Starlette:
    from cfaccess_mw import Forbidden, Reason
    from cfaccess_mw.integrations.starlette import requires

    async def raises(request: Request) -> PlainTextResponse:
        raise Forbidden(Reason.INSUFFICIENT_SCOPE, "Admins only.", "the handler said no")

    @requires("admin")
    async def admin(request: Request) -> PlainTextResponse:
        return PlainTextResponse("admin")

    async def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("a real bug")

    return Starlette(routes=[Route("/raise", raises), Route("/admin", admin), Route("/boom", boom)])


@pytest.mark.parametrize("where", ["on the parent", "on the mount"])
def test_a_refusal_inside_a_mounted_app_is_our_json_not_its_500(shared_issuer: LocalIssuer, where: str) -> None:
    """The mounted app's own ServerErrorMiddleware answers our AuthError with a plain-text 500 before re-raising."""
    from cfaccess_mw import AuditEvent

    events: list[AuditEvent] = []
    auth = Authenticator(settings_for(shared_issuer), user_lookup=find_user, audit_hook=events.append)
    if where == "on the parent":
        app = Starlette(routes=[Mount("/api", app=_refusing_sub_app())])
        app.add_middleware(CloudflareAccessMiddleware, authenticator=auth)
    else:
        middleware = [Middleware(CloudflareAccessMiddleware, authenticator=auth)]
        app = Starlette(routes=[Mount("/api", app=_refusing_sub_app(), middleware=middleware)])
    with TestClient(app, client=REMOTE_PEER, raise_server_exceptions=False) as client:
        for path in ("/api/raise", "/api/admin"):
            refused = client.get(path, headers={"Authorization": f"Bearer {API_KEY}"})
            assert refused.status_code == 403, path
            assert error_of(refused)["reason"] == "insufficient_scope"
        failed = client.get("/api/boom", headers={"Authorization": f"Bearer {API_KEY}"})
        assert failed.status_code == 500  # a real error is still the app's own 500
        assert failed.text == "Internal Server Error"
    assert [(event.outcome, event.status, event.path) for event in events] == [
        ("refused", 403, "/api/raise"),
        ("refused", 403, "/api/admin"),
        ("accepted", 500, "/api/boom"),
    ]


def test_a_refusal_inside_a_fastapi_mount_is_our_json_not_its_500(shared_issuer: LocalIssuer) -> None:
    from fastapi import Depends, FastAPI

    from cfaccess_mw.integrations.fastapi import require

    sub = FastAPI()

    @sub.get("/admin", dependencies=[Depends(require("user"))])
    async def admin() -> dict[str, str]:
        return {"ok": "admin"}

    app = FastAPI()
    app.mount("/api", sub)
    app.add_middleware(CloudflareAccessMiddleware, settings=settings_for(shared_issuer), user_lookup=find_user)
    with TestClient(app, client=REMOTE_PEER, raise_server_exceptions=False) as client:
        refused = client.get("/api/admin", headers={"Authorization": f"Bearer {API_KEY}"})
    assert refused.status_code == 403
    assert error_of(refused)["reason"] == "insufficient_scope"
