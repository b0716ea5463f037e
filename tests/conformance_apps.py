"""The conformance kit's factories: the same small app, written in each framework's own idiom, behind its adapter.

Each factory builds an app with the same routes and returns a :class:`Built`: the ASGI
app (served live by uvicorn) or the WSGI app (served live by Werkzeug's threaded server),
the framework's own test client as one ``call`` function,
the list ``ran`` where every piece of protected app code (handlers, hooks, mounted apps)
records that it ran, and ``skips``: the cases that cannot apply to this framework, each
with the reason. ``tests/test_conformance.py`` drives them all with the same cases. A new
adapter only adds its factory to :data:`FACTORIES`.

The routes (``CFACCESS_PUBLIC_PATHS=/status``):

* ``/status``, ``/status/deep``: public; answer ``{"public": true}`` and record nothing.
* ``/me``: protected; answers the caller's name. ``/{slug}``: protected, one segment.
  ``/files/{path}``: protected, any depth (a catch-all, as an SPA fallback or file route has).
* ``/raise``: the handler raises :class:`Forbidden`. ``/admin``: the adapter's permission
  helper refuses the API key caller (it needs a user with scope ``admin``). ``/dep``: a
  refusal from the framework's dependency mechanism.
* ``/sub/...``: a mounted sub-application, with its own ``/status`` (public only at the root,
  so protected here) and ``/raise``.
* ``/static/secret.txt``: the framework's static-file helper, serving :data:`SECRET`.
* ``/ws``: a websocket that accepts and records.
* A hook of every kind the framework runs before a handler, recording ``hook:<kind>``.
* ``/marked``: where the framework lets an app mark a route anonymous (Litestar's
  ``opt={"exclude_from_auth": True}``, BlackSheep's ``@allow_anonymous()``), a route the
  app marked; such a mark opens that route and nothing the framework serves by itself.
"""

import contextlib
import json
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfaccess_mw import ApiKey, AuditEvent, Forbidden, Reason, Settings
from cfaccess_mw.testing import LocalIssuer

from .conftest import REMOTE_PEER

API_KEY = "conformance-key-0123456789"
PUBLIC_PATHS = ("/status",)
SECRET = "SECRET-FILE-CONTENT"


def settings_for(issuer: LocalIssuer) -> Settings:
    return issuer.settings(api_keys=(ApiKey.from_secret("operator", API_KEY),), public_paths=PUBLIC_PATHS)


def refusal() -> Forbidden:
    return Forbidden(Reason.INSUFFICIENT_SCOPE, "Not for you.", "the app refused")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Call = Callable[[str, str, dict[str, str]], Answer]


@dataclass
class Built:
    """One integration's app: served live (``asgi``, or ``wsgi`` for a WSGI app), called in process (``client``),
    observed (``ran``)."""

    asgi: Any
    client: Callable[[], contextlib.AbstractContextManager[Call]]
    ran: list[str]
    skips: dict[str, str] = field(default_factory=dict)
    wsgi: Any = None


Factory = Callable[[Settings, list[AuditEvent], Path], Built]


def _answer(status: int, headers: Any, body: bytes) -> Answer:
    pairs = headers.items() if hasattr(headers, "items") else headers
    decoded = {
        (k.decode("latin-1") if isinstance(k, bytes) else k).lower(): v.decode("latin-1") if isinstance(v, bytes) else v
        for k, v in pairs
    }
    return Answer(status, decoded, body)


@contextlib.contextmanager
def _portal() -> Iterator[Any]:
    """One event loop in a thread for a framework whose test client is async: every call runs on it."""
    from anyio.from_thread import start_blocking_portal

    with start_blocking_portal() as portal:
        yield portal


# --- a mounted sub-application, framework-neutral (raw ASGI) --------------------------------------


def raw_sub_app(ran: list[str]) -> Any:
    """A plain ASGI app to mount: records the path it got, raises a refusal for ``.../raise``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        ran.append(f"sub:{scope['path']}")
        if "raise" in scope["path"].split("/"):
            raise refusal()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"sub": true}'})

    return app


# --- Starlette, raw ASGI and FastAPI ---------------------------------------------------------------


def _starlette_sub(ran: list[str]) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def sub(request: Request) -> JSONResponse:
        ran.append(f"sub:{request.url.path}")
        if request.url.path.endswith("/raise"):
            raise refusal()
        return JSONResponse({"sub": True})

    return Starlette(routes=[Route("/status", sub), Route("/raise", sub)])


def _starlette_client(app: Any) -> Callable[[], contextlib.AbstractContextManager[Call]]:
    from starlette.testclient import TestClient

    @contextlib.contextmanager
    def client() -> Iterator[Call]:
        with TestClient(app, client=REMOTE_PEER, raise_server_exceptions=False) as test_client:

            def call(method: str, path: str, headers: dict[str, str]) -> Answer:
                response = test_client.request(method, path, headers=headers)
                return _answer(response.status_code, response.headers, response.content)

            yield call

    return client


def _starlette_routes(ran: list[str], static: Path) -> list[Any]:
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route, WebSocketRoute
    from starlette.staticfiles import StaticFiles
    from starlette.websockets import WebSocket

    from cfaccess_mw.integrations.starlette import requires

    async def public(request: Request) -> JSONResponse:
        return JSONResponse({"public": True})

    async def me(request: Request) -> JSONResponse:
        ran.append("me")
        return JSONResponse({"who": request.user.display_name})

    async def slug(request: Request) -> JSONResponse:
        ran.append("slug")
        return JSONResponse({"slug": request.path_params["slug"]})

    async def files(request: Request) -> JSONResponse:
        ran.append("files")
        return JSONResponse({"files": request.path_params["rest"]})

    async def raises(request: Request) -> JSONResponse:
        ran.append("raise")
        raise refusal()

    @requires("admin")
    async def admin(request: Request) -> JSONResponse:
        ran.append("admin")
        return JSONResponse({"admin": True})

    async def ws(websocket: WebSocket) -> None:
        ran.append("ws")
        await websocket.accept()
        await websocket.send_json({"who": websocket.user.display_name})
        await websocket.close()

    return [
        Route("/status", public, methods=["GET", "OPTIONS"]),
        Route("/status/deep", public),
        Route("/me", me, methods=["GET", "OPTIONS"]),
        Route("/raise", raises),
        Route("/admin", admin),
        WebSocketRoute("/ws", ws),
        Mount("/sub", app=_starlette_sub(ran)),
        Mount("/static", app=StaticFiles(directory=static)),
        Route("/files/{rest:path}", files),
        Route("/{slug}", slug),
    ]


_NO_MARKS = "no route marks: only CFACCESS_PUBLIC_PATHS opens a path"
_NO_HOOKS = "Starlette runs no app code before a route but middleware, and the app orders its middleware"
_NO_DEPENDENCIES = "Starlette has no dependency injection (FastAPI's is in its own factory)"


def build_starlette(settings: Settings, events: list[AuditEvent], static: Path) -> Built:
    from starlette.applications import Starlette

    from cfaccess_mw import CloudflareAccessMiddleware

    ran: list[str] = []
    app = Starlette(routes=_starlette_routes(ran, static))
    app.add_middleware(CloudflareAccessMiddleware, settings=settings, audit_hook=events.append)
    return Built(
        app, _starlette_client(app), ran, {"dependency": _NO_DEPENDENCIES, "hooks": _NO_HOOKS, "marked": _NO_MARKS}
    )


def build_raw_asgi(settings: Settings, events: list[AuditEvent], static: Path) -> Built:
    """The middleware wrapped around a whole ASGI app by hand: ``CloudflareAccessMiddleware(app)``."""
    from starlette.applications import Starlette

    from cfaccess_mw import CloudflareAccessMiddleware

    ran: list[str] = []
    app = CloudflareAccessMiddleware(
        Starlette(routes=_starlette_routes(ran, static)), settings=settings, audit_hook=events.append
    )
    return Built(
        app, _starlette_client(app), ran, {"dependency": _NO_DEPENDENCIES, "hooks": _NO_HOOKS, "marked": _NO_MARKS}
    )


def build_fastapi(settings: Settings, events: list[AuditEvent], static: Path) -> Built:
    from fastapi import Depends, FastAPI, WebSocket
    from starlette.staticfiles import StaticFiles

    from cfaccess_mw import CloudflareAccessMiddleware
    from cfaccess_mw.integrations.fastapi import CurrentPrincipal, require

    ran: list[str] = []

    def hook() -> None:
        ran.append("hook:app dependency")

    def refusing() -> None:
        raise refusal()

    app = FastAPI(dependencies=[Depends(hook)])

    @app.get("/status")
    @app.get("/status/deep")
    async def public() -> dict[str, bool]:
        return {"public": True}

    @app.api_route("/me", methods=["GET", "HEAD", "OPTIONS"])
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        ran.append("me")
        return {"who": principal.display_name}

    @app.get("/raise")
    async def raises() -> None:
        ran.append("raise")
        raise refusal()

    @app.get("/admin", dependencies=[Depends(require("user", scopes=["admin"]))])
    async def admin() -> dict[str, bool]:
        ran.append("admin")
        return {"admin": True}

    @app.get("/dep", dependencies=[Depends(refusing)])
    async def dep() -> dict[str, bool]:
        ran.append("dep")
        return {"dep": True}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        ran.append("ws")
        await websocket.accept()
        await websocket.close()

    sub = FastAPI()

    @sub.get("/status")
    @sub.get("/raise")
    async def sub_route(principal: CurrentPrincipal) -> dict[str, bool]:
        ran.append("sub")
        raise refusal()

    app.mount("/sub", sub)
    app.mount("/static", StaticFiles(directory=static))

    @app.get("/files/{rest:path}")
    async def files(rest: str) -> dict[str, str]:
        ran.append("files")
        return {"files": rest}

    @app.get("/{slug}")
    async def slug(slug: str) -> dict[str, str]:
        ran.append("slug")
        return {"slug": slug}

    app.add_middleware(CloudflareAccessMiddleware, settings=settings, audit_hook=events.append)
    return Built(app, _starlette_client(app), ran, {"marked": _NO_MARKS})


# --- Litestar --------------------------------------------------------------------------------------


def build_litestar(settings: Settings, events: list[AuditEvent], static: Path) -> Built:
    from litestar import Litestar, Request, get, route, websocket
    from litestar.di import NamedDependency, Provide
    from litestar.handlers import asgi
    from litestar.params import FromPath
    from litestar.static_files import create_static_files_router
    from litestar.testing import TestClient

    from cfaccess_mw.integrations.litestar import AccessWebSocket, CloudflareAccessAuth, CurrentPrincipal, require

    ran: list[str] = []

    @get(["/status", "/status/deep"])
    async def public() -> dict[str, bool]:
        return {"public": True}

    @route("/me", http_method=["GET", "OPTIONS"])
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        ran.append("me")
        return {"who": principal.display_name}

    @get("/raise")
    async def raises() -> None:
        ran.append("raise")
        raise refusal()

    @get("/admin", guards=[require("user", scopes=["admin"])])
    async def admin() -> dict[str, bool]:
        ran.append("admin")
        return {"admin": True}

    def refusing() -> None:
        raise refusal()

    @get("/dep", dependencies={"refused": Provide(refusing, sync_to_thread=False)})
    async def dep(refused: NamedDependency[None]) -> dict[str, bool]:
        ran.append("dep")
        return {"dep": True}

    @get("/marked", opt={"exclude_from_auth": True})
    async def marked() -> dict[str, bool]:
        return {"marked": True}

    @get("/{slug:str}")
    async def slug(slug: FromPath[str]) -> dict[str, str]:
        ran.append("slug")
        return {"slug": slug}

    @get("/files/{rest:path}")
    async def files(rest: FromPath[Path]) -> dict[str, str]:
        ran.append("files")
        return {"files": str(rest)}

    @websocket("/ws")
    async def ws(socket: AccessWebSocket) -> None:
        ran.append("ws")
        await socket.accept()
        await socket.close()

    sub = asgi("/sub", is_mount=True, copy_scope=True)(raw_sub_app(ran))

    async def before_request(request: Request[Any, Any, Any]) -> None:
        ran.append("hook:before_request")

    access = CloudflareAccessAuth(settings=settings, audit_hook=events.append)
    app = Litestar(
        [
            public,
            me,
            raises,
            admin,
            dep,
            marked,
            slug,
            files,
            ws,
            sub,
            create_static_files_router("/static", directories=[static]),
        ],
        on_app_init=[access.on_app_init],
        before_request=before_request,
    )

    @contextlib.contextmanager
    def client() -> Iterator[Call]:
        with TestClient(app) as test_client:

            def call(method: str, path: str, headers: dict[str, str]) -> Answer:
                response = test_client.request(method, path, headers=headers)
                return _answer(response.status_code, response.headers, response.content)

            yield call

    router_first = (
        "Litestar routes before any middleware runs: an unknown path or method is its router's 404/405, "
        "answered without app code (the route's existence is visible, nothing else)"
    )
    return Built(app, client, ran, {"unknown": router_first, "head": router_first})


# --- Quart -------------------------------------------------------------------------------------------


def build_quart(settings: Settings, events: list[AuditEvent], static: Path) -> Built:
    from quart import Quart, request_started, websocket

    from cfaccess_mw.integrations.quart import CloudflareAccess, current_principal

    ran: list[str] = []
    app = Quart(f"conformance_{uuid.uuid4().hex[:8]}", static_folder=str(static), static_url_path="/static")

    async def started(sender: Any, **extra: Any) -> None:
        ran.append("hook:request_started")

    request_started.connect(started, app, weak=False)  # weakly held, a local function would be gone by the case

    @app.url_value_preprocessor
    def preprocess(endpoint: str | None, values: dict[str, Any] | None) -> None:
        ran.append("hook:url_value_preprocessor")

    @app.before_request
    async def before() -> None:
        ran.append("hook:before_request")

    @app.route("/status", methods=["GET", "OPTIONS"])
    @app.route("/status/deep")
    async def public() -> dict[str, bool]:
        return {"public": True}

    @app.route("/me", methods=["GET", "OPTIONS"])
    async def me() -> dict[str, str]:
        ran.append("me")
        return {"who": current_principal.display_name}

    @app.route("/raise")
    async def raises() -> dict[str, str]:
        ran.append("raise")
        raise refusal()

    @app.route("/<slug>")
    async def slug(slug: str) -> dict[str, str]:
        ran.append("slug")
        return {"slug": slug}

    @app.route("/files/<path:rest>")
    async def files(rest: str) -> dict[str, str]:
        ran.append("files")
        return {"files": rest}

    @app.websocket("/ws")
    async def ws() -> None:
        ran.append("ws")
        await websocket.accept()

    CloudflareAccess(app, settings=settings, audit_hook=events.append)

    @contextlib.contextmanager
    def client() -> Iterator[Call]:
        with _portal() as portal:
            test_client = app.test_client()

            async def request(method: str, path: str, headers: dict[str, str]) -> Answer:
                response = await test_client.open(  # type: ignore[call-arg]  # json is optional in Quart's client
                    path, method=method, headers=headers, scope_base={"client": REMOTE_PEER}
                )
                body = await response.get_data(as_text=False)
                return _answer(response.status_code, list(response.headers.items()), body)

            yield lambda method, path, headers: portal.call(request, method, path, headers)

    skips = {
        "permission": "cfaccess_mw.quart has no permission helper; a view raising Forbidden is the handler case",
        "dependency": "Quart has no dependency injection",
        "mount": "Quart has no mounts (blueprints are routes of the same app, covered by every case)",
        "marked": _NO_MARKS,
        "websocket accept": "Quart 0.22 calls url_value_preprocessors with request.endpoint in a websocket context, "
        "which raises: an app with one (this factory's hook probe) cannot accept a websocket at all",
    }
    return Built(app, client, ran, skips)


# --- Falcon ------------------------------------------------------------------------------------------


def build_falcon(settings: Settings, events: list[AuditEvent], static: Path) -> Built:
    import falcon
    import falcon.asgi
    import falcon.testing

    from cfaccess_mw.integrations.falcon import get_principal, install, require

    ran: list[str] = []

    class Probe:
        async def process_request(self, req: Any, resp: Any) -> None:
            ran.append("hook:process_request")

        async def process_resource(self, req: Any, resp: Any, resource: Any, params: Any) -> None:
            ran.append("hook:process_resource")

    async def refusing(req: Any, resp: Any, resource: Any, params: Any) -> None:
        raise refusal()

    class Public:
        async def on_get(self, req: Any, resp: Any) -> None:
            resp.media = {"public": True}

    class Me:
        async def on_get(self, req: Any, resp: Any) -> None:
            ran.append("me")
            resp.media = {"who": get_principal(req).display_name}

        async def on_websocket(self, req: Any, ws: Any) -> None:
            ran.append("ws")
            await ws.accept()
            await ws.close()

    class Raise:
        async def on_get(self, req: Any, resp: Any) -> None:
            ran.append("raise")
            raise refusal()

    class Admin:
        @falcon.before(require("user", scopes=["admin"]))
        async def on_get(self, req: Any, resp: Any) -> None:
            ran.append("admin")

    class Dep:
        @falcon.before(refusing)
        async def on_get(self, req: Any, resp: Any) -> None:
            ran.append("dep")

    class Slug:
        async def on_get(self, req: Any, resp: Any, slug: str) -> None:
            ran.append("slug")
            resp.media = {"slug": slug}

    class Files:
        async def on_get(self, req: Any, resp: Any, rest: str) -> None:
            ran.append("files")
            resp.media = {"files": rest}

    app: Any = falcon.asgi.App(middleware=[Probe()])
    install(app, settings=settings, audit_hook=events.append)
    app.add_route("/status", Public())
    app.add_route("/status/deep", Public())
    app.add_route("/me", Me())
    app.add_route("/ws", Me())
    app.add_route("/raise", Raise())
    app.add_route("/admin", Admin())
    app.add_route("/dep", Dep())
    app.add_route("/{slug}", Slug())
    app.add_route("/files/{rest:path}", Files())
    app.add_static_route("/static", str(static))

    @contextlib.contextmanager
    def client() -> Iterator[Call]:
        test_client = falcon.testing.TestClient(app)

        def call(method: str, path: str, headers: dict[str, str]) -> Answer:
            result = test_client.simulate_request(method, path, headers=headers, remote_addr=REMOTE_PEER[0])
            return _answer(result.status_code, result.headers, result.content)

        yield call

    return Built(
        app, client, ran, {"mount": "Falcon has no mounts (a sink is a route, covered as one)", "marked": _NO_MARKS}
    )


# --- BlackSheep --------------------------------------------------------------------------------------


def build_blacksheep(settings: Settings, events: list[AuditEvent], static: Path) -> Built:
    from blacksheep import Application, Request, WebSocket
    from blacksheep.server.authorization import allow_anonymous, auth
    from blacksheep.server.routing import Router
    from blacksheep.testing import TestClient

    from cfaccess_mw.integrations.blacksheep import principal_of, use_cloudflare_access

    ran: list[str] = []
    app = Application(router=Router())  # BlackSheep's default router is one per process

    async def probe(request: Request, handler: Any) -> Any:
        ran.append("hook:app middleware")
        return await handler(request)

    use_cloudflare_access(app, settings=settings, audit_hook=events.append)
    app.middlewares.append(probe)
    router = app.router

    @router.get("/status")
    async def public() -> dict[str, bool]:
        return {"public": True}

    @router.get("/status/deep")
    async def public_deep() -> dict[str, bool]:
        return {"public": True}

    @router.route("/me", methods=["GET", "HEAD", "OPTIONS"])
    async def me(request: Request) -> dict[str, str]:
        ran.append("me")
        return {"who": principal_of(request).display_name}

    @router.get("/raise")
    async def raises() -> None:
        ran.append("raise")
        raise refusal()

    @auth(roles=["admin"])
    @router.get("/admin")
    async def admin() -> dict[str, bool]:
        ran.append("admin")
        return {"admin": True}

    @allow_anonymous()
    @router.get("/marked")
    async def marked() -> dict[str, bool]:
        return {"marked": True}

    @router.get("/{slug}")
    async def slug(slug: str) -> dict[str, str]:
        ran.append("slug")
        return {"slug": slug}

    @router.get("/files/*")
    async def files(request: Request) -> dict[str, str]:
        ran.append("files")
        return {"files": str(request.route_values.get("tail"))}

    @router.ws("/ws")
    async def ws(websocket: WebSocket) -> None:
        ran.append("ws")
        await websocket.accept()
        await websocket.close()

    app.serve_files(static, root_path="static")
    app.mount("/sub", raw_sub_app(ran))

    @contextlib.contextmanager
    def client() -> Iterator[Call]:
        with _portal() as portal:
            portal.call(app.start)
            test_client = TestClient(app)

            async def request(method: str, path: str, headers: dict[str, str]) -> Answer:
                simulator = test_client._test_simulator
                response = await simulator.send_request(method=method, path=path, headers=headers, content=None)
                return _answer(response.status, response.headers.items(), await response.read() or b"")

            try:
                yield lambda method, path, headers: portal.call(request, method, path, headers)
            finally:
                portal.call(app.stop)

    skips = {
        "dependency": "BlackSheep's DI (rodi) resolves services, not refusals",
        "mount": "BlackSheep's TestClient calls app.handle directly, past app.mount: mounts are covered live",
    }
    return Built(app, client, ran, skips)


# --- Sanic -------------------------------------------------------------------------------------------


#: Sanic's own ``__call__``, as found before the kit's first sanic-testing client replaced it.
_SANIC_CALL: dict[str, Any] = {}


def build_sanic(settings: Settings, events: list[AuditEvent], static: Path) -> Built:
    from sanic import Request, Sanic, Websocket
    from sanic.response import json as json_response

    with warnings.catch_warnings():  # sanic-testing imports websockets.legacy, deprecated upstream
        warnings.simplefilter("ignore", DeprecationWarning)
        from sanic_testing.testing import SanicASGITestClient

    from cfaccess_mw.integrations.sanic import CloudflareAccess, get_principal

    ran: list[str] = []
    Sanic.test_mode = True
    app: Sanic[Any, Any] = Sanic(f"conformance_{uuid.uuid4().hex[:8]}")

    @app.on_request
    async def probe(request: Request) -> None:
        ran.append("hook:on_request")

    CloudflareAccess(app, settings=settings, audit_hook=events.append)

    @app.route("/status", methods=["GET", "OPTIONS"])
    async def public(request: Request) -> Any:
        return json_response({"public": True})

    @app.get("/status/deep")
    async def public_deep(request: Request) -> Any:
        return json_response({"public": True})

    @app.route("/me", methods=["GET", "OPTIONS"])
    async def me(request: Request) -> Any:
        ran.append("me")
        return json_response({"who": get_principal(request).display_name})

    @app.get("/raise")
    async def raises(request: Request) -> Any:
        ran.append("raise")
        raise refusal()

    @app.get("/<slug>")
    async def slug(request: Request, slug: str) -> Any:
        ran.append("slug")
        return json_response({"slug": slug})

    @app.get("/files/<rest:path>")
    async def files(request: Request, rest: str) -> Any:
        ran.append("files")
        return json_response({"files": rest})

    async def ws(request: Request, socket: Websocket) -> None:
        ran.append("ws")

    app.add_websocket_route(ws, "/ws")  # Sanic's @app.websocket decorator is untyped

    app.static("/static", str(static))
    # sanic-testing's client replaces Sanic.__call__ for the whole class, with one that cannot serve a live
    # server: the live app calls the real one, taken now.
    real_call = _SANIC_CALL.setdefault("call", Sanic.__call__)  # taken before any of this kit's clients

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        await real_call(app, scope, receive, send)

    @contextlib.contextmanager
    def client() -> Iterator[Call]:
        with _portal() as portal:
            test_client = SanicASGITestClient(app)

            async def request(method: str, path: str, headers: dict[str, str]) -> Answer:
                _, response = await test_client.request(method, path, headers=headers)
                return _answer(response.status, response.headers.items(), response.content)

            try:
                yield lambda method, path, headers: portal.call(request, method, path, headers)
            finally:
                Sanic.__call__ = real_call  # type: ignore[method-assign]

    skips = {
        "permission": "cfaccess_mw.sanic has no permission helper; a handler raising Forbidden is the handler case",
        "dependency": "Sanic's ext DI is not part of Sanic; request middleware is the hook case",
        "mount": "Sanic has no mounts (blueprints are routes of the same app)",
        "marked": _NO_MARKS,
    }
    return Built(asgi, client, ran, skips)


# --- Django ------------------------------------------------------------------------------------------

#: What the Django views record into (Django's URLconf is a module: one list, reset per build).
_django_ran: list[str] = []


def _django_views() -> list[Any]:
    from django.http import HttpRequest, JsonResponse
    from django.urls import path

    from cfaccess_mw.integrations.django import get_principal, require

    def public(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"public": True})

    def me(request: HttpRequest) -> JsonResponse:
        _django_ran.append("me")
        return JsonResponse({"who": get_principal(request).display_name})

    def raises(request: HttpRequest) -> JsonResponse:
        _django_ran.append("raise")
        raise refusal()

    @require("user", scopes=["admin"])
    def admin(request: HttpRequest) -> JsonResponse:
        _django_ran.append("admin")
        return JsonResponse({"admin": True})

    def slug(request: HttpRequest, slug: str) -> JsonResponse:
        _django_ran.append("slug")
        return JsonResponse({"slug": slug})

    def files(request: HttpRequest, rest: str) -> JsonResponse:
        _django_ran.append("files")
        return JsonResponse({"files": rest})

    return [
        path("status", public),
        path("status/deep", public),
        path("me", me),
        path("raise", raises),
        path("admin", admin),
        path("<str:slug>", slug),
        path("files/<path:rest>", files),
    ]


def __getattr__(name: str) -> Any:
    if name == "urlpatterns":  # this module is the kit's Django URLconf
        return _django_views()
    raise AttributeError(name)


def django_probe(get_response: Any) -> Any:
    """A middleware placed after the adapter's: Django runs it before the view."""
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction

    if iscoroutinefunction(get_response):

        async def async_probe(request: Any) -> Any:
            _django_ran.append("hook:middleware")
            request.urlconf = __name__  # the live server runs without override_settings (it is process-wide)
            return await get_response(request)

        markcoroutinefunction(async_probe)
        return async_probe

    def probe(request: Any) -> Any:
        _django_ran.append("hook:middleware")
        request.urlconf = __name__
        return get_response(request)

    return probe


def _django_overrides(settings: Settings, events: list[AuditEvent]) -> Any:
    """The kit's Django project: test_django's, with this module as URLconf and the probe after the adapter."""
    from django.conf import settings as django_settings
    from django.test import override_settings

    from examples import django_app

    # One project per process: conftest's django_project fixture configures it (the kit's fixture asks for it).
    assert django_settings.configured, "request the django_project fixture before building the Django app"
    _django_ran.clear()
    return override_settings(
        ROOT_URLCONF=__name__,
        CFACCESS_SETTINGS=settings,
        CFACCESS_AUDIT_HOOK=events.append,
        CFACCESS_USER_LOOKUP=None,
        MIDDLEWARE=[*django_app.MIDDLEWARE, f"{__name__}.django_probe"],
    )


_DJANGO_SKIPS = {
    "dependency": "Django has no dependency injection; @require (the permission case) is its decorator",
    "mount": "Django has no ASGI mounts",
    "static": "Django serves static files only through runserver or ASGIStaticFilesHandler, outside MIDDLEWARE",
    "websocket": "Django has no websockets (Channels is a separate ASGI router, behind the ASGI middleware)",
    "marked": _NO_MARKS,
}


def build_django(settings: Settings, events: list[AuditEvent], static: Path) -> Built:
    from django.core.handlers.asgi import ASGIHandler
    from django.test import AsyncClient

    overrides = _django_overrides(settings, events)
    with overrides:  # the handler reads MIDDLEWARE and the CFACCESS_* settings once, now
        asgi = ASGIHandler()

    @contextlib.contextmanager
    def client() -> Iterator[Call]:
        class RemoteAsyncClient(AsyncClient):
            async def request(self, **request: Any) -> Any:
                request.setdefault("client", list(REMOTE_PEER))  # its default peer is 127.0.0.1
                return await super().request(**request)

        with overrides, _portal() as portal:
            test_client = RemoteAsyncClient()

            async def request(method: str, path: str, headers: dict[str, str]) -> Answer:
                response = await test_client.generic(method, path, headers=headers)
                return _answer(response.status_code, response.items(), response.content)

            yield lambda method, path, headers: portal.call(request, method, path, headers)

    return Built(asgi, client, _django_ran, _DJANGO_SKIPS)


# --- WSGI: a plain PEP 3333 app, Flask, Django under WSGI -------------------------------------------

_NO_WEBSOCKETS = "WSGI has no websockets (PEP 3333 is one request, one answer)"
#: What a WSGI test client reports as the peer (its default REMOTE_ADDR is 127.0.0.1).
_REMOTE_ENVIRON = {"REMOTE_ADDR": REMOTE_PEER[0], "REMOTE_PORT": str(REMOTE_PEER[1])}


def _werkzeug_client(make: Callable[[], Any]) -> Callable[[], contextlib.AbstractContextManager[Call]]:
    """Werkzeug's test client (Flask's is one), as made by ``make``, as the kit's ``call``."""

    @contextlib.contextmanager
    def client() -> Iterator[Call]:
        test_client = make()

        def call(method: str, path: str, headers: dict[str, str]) -> Answer:
            response = test_client.open(path, method=method, headers=headers, environ_base=_REMOTE_ENVIRON)
            try:
                return _answer(response.status_code, response.headers, response.get_data())
            finally:
                response.close()  # the app's iterable (an open file for a static one), as a server closes it

        yield call

    return client


def _wsgi_json(start_response: Any, body: dict[str, Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


def build_raw_wsgi(settings: Settings, events: list[AuditEvent], static: Path) -> Built:
    """``CloudflareAccessWSGIMiddleware`` around a plain PEP 3333 app: Werkzeug's router, its
    ``SharedDataMiddleware`` for the static files and ``DispatcherMiddleware`` for the mount (WSGI's mount)."""
    from werkzeug.exceptions import HTTPException
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.middleware.shared_data import SharedDataMiddleware
    from werkzeug.routing import Map, Rule
    from werkzeug.test import Client

    from cfaccess_mw.integrations.wsgi import PRINCIPAL_KEY, CloudflareAccessWSGIMiddleware

    ran: list[str] = []
    urls = Map(
        [
            Rule("/status", endpoint="public"),
            Rule("/status/deep", endpoint="public"),
            Rule("/me", endpoint="me"),
            Rule("/raise", endpoint="raise"),
            Rule("/<slug>", endpoint="slug"),
        ]
    )

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            endpoint, values = urls.bind_to_environ(environ).match()
        except HTTPException as exc:
            return exc(environ, start_response)
        if endpoint == "public":
            return _wsgi_json(start_response, {"public": True})
        ran.append(endpoint)
        if endpoint == "raise":
            raise refusal()
        if endpoint == "me":
            return _wsgi_json(start_response, {"who": environ[PRINCIPAL_KEY].display_name})
        return _wsgi_json(start_response, {"slug": values["slug"]})

    def sub(environ: dict[str, Any], start_response: Any) -> Any:
        ran.append(f"sub:{environ['PATH_INFO']}")
        if "raise" in environ["PATH_INFO"].split("/"):
            raise refusal()
        return _wsgi_json(start_response, {"sub": True})

    routed = SharedDataMiddleware(DispatcherMiddleware(app, {"/sub": sub}), {"/static": str(static)})
    wsgi = CloudflareAccessWSGIMiddleware(routed, settings=settings, audit_hook=events.append)
    skips = {
        "hooks": "a plain WSGI app runs no app code before its own, and orders its middleware itself",
        "permission": "cfaccess_mw.wsgi has no permission helper; an app raising Forbidden is the handler case",
        "dependency": "WSGI has no dependency injection",
        "marked": _NO_MARKS,
        "websocket": _NO_WEBSOCKETS,
    }
    return Built(None, _werkzeug_client(lambda: Client(wsgi)), ran, skips, wsgi=wsgi)


def build_flask(settings: Settings, events: list[AuditEvent], static: Path) -> Built:
    """The ``CloudflareAccess`` extension; the mount is a blueprint with its own routes under ``/sub``, and
    ``/static`` is Flask's static folder (``send_from_directory``)."""
    from flask import Blueprint, Flask, request_started

    from cfaccess_mw.integrations.flask import CloudflareAccess, current_principal, require

    ran: list[str] = []
    app = Flask(f"conformance_{uuid.uuid4().hex[:8]}", static_folder=str(static), static_url_path="/static")

    def started(sender: Any, **extra: Any) -> None:
        ran.append("hook:request_started")

    request_started.connect(started, app, weak=False)  # weakly held, a local function would be gone by the case

    @app.url_value_preprocessor
    def preprocess(endpoint: str | None, values: dict[str, Any] | None) -> None:
        ran.append("hook:url_value_preprocessor")

    @app.before_request
    def before() -> None:
        ran.append("hook:before_request")

    @app.route("/status", methods=["GET", "OPTIONS"])
    @app.route("/status/deep")
    def public() -> dict[str, bool]:
        return {"public": True}

    @app.route("/me", methods=["GET", "OPTIONS"])
    def me() -> dict[str, str]:
        ran.append("me")
        return {"who": current_principal.display_name}

    @app.route("/raise")
    def raises() -> dict[str, str]:
        ran.append("raise")
        raise refusal()

    @app.route("/admin")
    @require("user", scopes=["admin"])
    def admin() -> dict[str, bool]:
        ran.append("admin")
        return {"admin": True}

    @app.route("/<slug>")
    def slug(slug: str) -> dict[str, str]:
        ran.append("slug")
        return {"slug": slug}

    sub = Blueprint("sub", __name__)

    @sub.before_request
    def sub_before() -> None:
        ran.append("hook:blueprint before_request")

    @sub.route("/status")
    @sub.route("/raise")
    def sub_route() -> dict[str, bool]:
        ran.append("sub")
        raise refusal()

    app.register_blueprint(sub, url_prefix="/sub")
    CloudflareAccess(app, settings=settings, audit_hook=events.append)
    skips = {
        "dependency": "Flask has no dependency injection; @require (the permission case) is its decorator",
        "marked": _NO_MARKS,
        "websocket": _NO_WEBSOCKETS,
    }
    return Built(None, _werkzeug_client(app.test_client), ran, skips, wsgi=app)


def build_django_wsgi(settings: Settings, events: list[AuditEvent], static: Path) -> Built:
    """The Django factory's project as WSGI deployments run it: ``get_wsgi_application()`` served live, Django's
    (sync) test client in process; the adapter's middleware runs in the request's thread."""
    from django.core.wsgi import get_wsgi_application
    from django.test import Client

    overrides = _django_overrides(settings, events)
    with overrides:  # the handler reads MIDDLEWARE and the CFACCESS_* settings once, now
        wsgi = get_wsgi_application()

    @contextlib.contextmanager
    def client() -> Iterator[Call]:
        with overrides:
            test_client = Client(REMOTE_ADDR=REMOTE_PEER[0], REMOTE_PORT=str(REMOTE_PEER[1]))

            def call(method: str, path: str, headers: dict[str, str]) -> Answer:
                response = test_client.generic(method, path, headers=headers)
                return _answer(response.status_code, response.items(), response.content)

            yield call

    skips = {**_DJANGO_SKIPS, "mount": "Django has no mounts", "websocket": _NO_WEBSOCKETS}
    return Built(None, client, _django_ran, skips, wsgi=wsgi)


FACTORIES: dict[str, Factory] = {
    "starlette": build_starlette,
    "raw_asgi": build_raw_asgi,
    "fastapi": build_fastapi,
    "django": build_django,
    "django_wsgi": build_django_wsgi,
    "raw_wsgi": build_raw_wsgi,
    "flask": build_flask,
    "litestar": build_litestar,
    "quart": build_quart,
    "falcon": build_falcon,
    "blacksheep": build_blacksheep,
    "sanic": build_sanic,
}
