"""A Litestar app behind Cloudflare Access, its users in SQLite.

Run it with your own settings (``CFACCESS_*`` in the environment; ``EXAMPLE_DB``
names the SQLite file, default ``users.sqlite3``):

    uvicorn examples.litestar_app:create_app --factory

``create_app`` reads the settings before the server starts, so a bad variable
stops start-up with a message naming it; the keys are fetched once, at Litestar's
startup, for every route (Litestar builds the middleware once per route).
"""

from __future__ import annotations

import os
from typing import Any

from litestar import Litestar, get, websocket

from cfaccess_mw import Settings
from cfaccess_mw.litestar import AccessRequest, AccessWebSocket, CloudflareAccessAuth, CurrentPrincipal, require
from examples.fastapi_app import roles
from examples.userdb import UserDB


@get("/healthz", opt={"exclude_from_auth": True})
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/api/me")
async def me(request: AccessRequest) -> dict[str, Any]:
    principal = request.user  # typed: Principal; request.auth is its scopes
    user = principal.user
    return {
        "kind": principal.kind,
        "display_name": principal.display_name,
        "name": user.name if user else principal.name,
        "role": user.role if user else None,
        "scopes": request.auth,
    }


@get("/api/admin", guards=[require("user", scopes=["admin"])])
async def admin() -> dict[str, str]:
    return {"secret_plan": "world domination, slowly"}


@get("/api/machines", guards=[require("service", "api_key")])
async def machines(principal: CurrentPrincipal) -> dict[str, str]:  # the `principal` dependency the config provides
    return {"status": "machines welcome", "who": principal.display_name}


@websocket("/ws")
async def ws(socket: AccessWebSocket) -> None:
    await socket.accept()
    await socket.send_json({"hello": socket.user.display_name})
    await socket.close()


def create_app(settings: Settings | None = None, db_path: str | None = None) -> Litestar:
    settings = settings if settings is not None else Settings.from_env()
    users = UserDB(db_path or os.environ.get("EXAMPLE_DB", "users.sqlite3"))
    access = CloudflareAccessAuth(settings=settings, user_lookup=users.find, extra_scopes=roles)
    return Litestar([healthz, me, admin, machines, ws], on_app_init=[access.on_app_init])
