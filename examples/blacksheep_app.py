"""A BlackSheep app behind Cloudflare Access, its users in SQLite.

Run it with your own settings (``CFACCESS_*`` in the environment; ``EXAMPLE_DB``
names the SQLite file, default ``users.sqlite3``):

    uvicorn examples.blacksheep_app:create_app --factory

``create_app`` reads the settings before the server starts, so a bad variable
stops start-up with a message naming it; the keys are fetched at ``on_start``.
Every route requires an authenticated caller unless it is ``@allow_anonymous()``
or under ``CFACCESS_PUBLIC_PATHS``.
"""

from __future__ import annotations

import os
from typing import Any

from blacksheep import Application, Request, WebSocket
from blacksheep.server.authorization import allow_anonymous, auth
from blacksheep.server.routing import Router

from cfaccess_mw import Principal, Settings
from cfaccess_mw.blacksheep import principal_of, use_cloudflare_access
from examples.fastapi_app import roles
from examples.userdb import UserDB


def create_app(settings: Settings | None = None, db_path: str | None = None) -> Application:
    settings = settings if settings is not None else Settings.from_env()
    users = UserDB(db_path or os.environ.get("EXAMPLE_DB", "users.sqlite3"))
    router = Router()  # the app's own, not BlackSheep's process-wide default router: one app per call
    app = Application(router=router)
    use_cloudflare_access(app, settings=settings, user_lookup=users.find, extra_scopes=roles)
    get = router.get

    @allow_anonymous()
    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/api/me")
    async def me(request: Request) -> dict[str, Any]:
        principal = principal_of(request)  # typed Principal (request.user is its guardpost Identity)
        user = principal.user
        return {
            "kind": principal.kind,
            "display_name": principal.display_name,
            "name": user.name if user else principal.name,
            "role": user.role if user else None,
        }

    @auth(roles=["admin"])  # roles are the principal's scopes, extra_scopes included
    @get("/api/admin")
    async def admin() -> dict[str, str]:
        return {"secret_plan": "world domination, slowly"}

    @auth(roles=["service", "api_key"])
    @get("/api/machines")
    async def machines(principal: Principal) -> dict[str, str]:  # bound from the identity
        return {"status": "machines welcome", "who": principal.display_name}

    @router.ws("/ws")
    async def ws(websocket: WebSocket, principal: Principal) -> None:
        await websocket.accept()
        await websocket.send_json({"hello": principal.display_name})
        await websocket.close()

    return app
