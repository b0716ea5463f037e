"""A plain Starlette app behind Cloudflare Access, its users in SQLite, using ``@requires``.

CFACCESS_USER_CACHE_SECONDS=30 uvicorn examples.starlette_app:create_app --factory

``UserDB.find`` is a plain ``def`` (sqlite3), which the middleware runs in a worker thread; with
``CFACCESS_USER_CACHE_SECONDS=30`` a found user is remembered for 30 seconds, so a user deleted from the
database is admitted for at most that long.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from cfaccess_mw import AuthConfigEndpoint, CloudflareAccessMiddleware, Settings
from examples.fastapi_app import roles
from examples.userdb import UserDB


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


@requires("authenticated")
async def me(request: Request) -> JSONResponse:
    principal = request.user
    return JSONResponse({"kind": principal.kind, "display_name": principal.display_name})


@requires(["authenticated", "admin"])
async def admin(request: Request) -> JSONResponse:
    return JSONResponse({"secret_plan": "world domination, slowly"})


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"hello": websocket.user.display_name})
    await websocket.close()


def create_app(settings: Settings | None = None, db_path: str | None = None) -> Starlette:
    settings = settings if settings is not None else Settings.from_env()
    users = UserDB(db_path or os.environ.get("EXAMPLE_DB", "users.sqlite3"))
    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/auth/config", AuthConfigEndpoint(settings)),
            Route("/api/me", me),
            Route("/api/admin", admin),
            WebSocketRoute("/ws", ws),
        ]
    )
    app.add_middleware(CloudflareAccessMiddleware, settings=settings, user_lookup=users.find, extra_scopes=roles)
    return app
