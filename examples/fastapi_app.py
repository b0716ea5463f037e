"""A FastAPI app behind Cloudflare Access, its users in SQLite.

Run it with your own settings (``CFACCESS_*`` in the environment; ``EXAMPLE_DB``
names the SQLite file, default ``users.sqlite3``):

    CFACCESS_USER_CACHE_SECONDS=30 uvicorn examples.fastapi_app:create_app --factory

``create_app`` reads the settings before the server starts, so a bad variable
stops start-up with a message naming it. ``UserDB.find`` is a plain ``def``
(sqlite3), so the middleware runs it in a worker thread; the user cache
(``CFACCESS_USER_CACHE_SECONDS=30``) spares that hop for 30 seconds per user,
at the price of admitting a user deleted from the database for up to that long.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from fastapi import Depends, FastAPI, WebSocket
from starlette.routing import Route

from cfaccess_mw import AuthConfigEndpoint, CloudflareAccessMiddleware, Principal, Settings
from cfaccess_mw.fastapi import CurrentPrincipal, document_security, require
from examples.userdb import UserDB


def roles(principal: Principal) -> Iterable[str]:
    """App roles become scopes: a user's role from the database; machines get none."""
    return [principal.user.role] if principal.kind == "user" else []


def create_app(settings: Settings | None = None, db_path: str | None = None) -> FastAPI:
    settings = settings if settings is not None else Settings.from_env()
    users = UserDB(db_path or os.environ.get("EXAMPLE_DB", "users.sqlite3"))
    app = FastAPI(title="cfaccess_mw FastAPI example")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/me")
    async def me(principal: CurrentPrincipal) -> dict[str, object]:
        user = principal.user
        return {
            "kind": principal.kind,
            "display_name": principal.display_name,
            "name": user.name if user else principal.name,
            "role": user.role if user else None,
        }

    @app.get("/api/admin", dependencies=[Depends(require("user", scopes=["admin"]))])
    async def admin() -> dict[str, str]:
        return {"secret_plan": "world domination, slowly"}

    @app.get("/api/machines", dependencies=[Depends(require("service", "api_key"))])
    async def machines() -> dict[str, str]:
        return {"status": "machines welcome"}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"hello": websocket.user.display_name})
        await websocket.close()

    app.router.routes.append(Route("/auth/config", AuthConfigEndpoint(settings)))
    app.add_middleware(CloudflareAccessMiddleware, settings=settings, user_lookup=users.find, extra_scopes=roles)
    document_security(app)  # /docs shows the API key scheme beside the Access header
    return app
