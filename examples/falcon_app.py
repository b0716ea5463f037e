"""A Falcon (ASGI) app behind Cloudflare Access, its users in SQLite.

Run it with your own settings (``CFACCESS_*`` in the environment; ``EXAMPLE_DB``
names the SQLite file, default ``users.sqlite3``):

    uvicorn examples.falcon_app:create_app --factory

``create_app`` reads the settings before the server starts, so a bad variable
stops start-up with a message naming it; the keys are fetched at lifespan start-up.
"""

from __future__ import annotations

import os

import falcon
import falcon.asgi

from cfaccess_mw import Settings
from cfaccess_mw.falcon import AccessRequest, get_principal, install, require
from examples.fastapi_app import roles
from examples.userdb import UserDB


class Health:
    async def on_get(self, req: AccessRequest, resp: falcon.asgi.Response) -> None:
        resp.media = {"status": "ok"}


class Me:
    async def on_get(self, req: AccessRequest, resp: falcon.asgi.Response) -> None:
        principal = get_principal(req)  # typed Principal; 401 had the middleware not set one
        user = principal.user
        resp.media = {
            "kind": principal.kind,
            "display_name": principal.display_name,
            "name": user.name if user else principal.name,
            "role": user.role if user else None,
            "scopes": req.context.scopes,
        }


@falcon.before(require("user", scopes=["admin"]))
class Admin:
    async def on_get(self, req: AccessRequest, resp: falcon.asgi.Response) -> None:
        resp.media = {"secret_plan": "world domination, slowly"}


@falcon.before(require("service", "api_key"))
class Machines:
    async def on_get(self, req: AccessRequest, resp: falcon.asgi.Response) -> None:
        resp.media = {"status": "machines welcome"}


class Socket:
    async def on_websocket(self, req: AccessRequest, ws: falcon.asgi.WebSocket) -> None:
        await ws.accept()
        await ws.send_media({"hello": get_principal(req).display_name})
        await ws.receive_text()  # until the client speaks or leaves (Falcon handles the disconnect)


def create_app(
    settings: Settings | None = None, db_path: str | None = None
) -> falcon.asgi.App[AccessRequest, falcon.asgi.Response]:
    settings = settings if settings is not None else Settings.from_env()
    users = UserDB(db_path or os.environ.get("EXAMPLE_DB", "users.sqlite3"))
    app: falcon.asgi.App[AccessRequest, falcon.asgi.Response] = falcon.asgi.App(request_type=AccessRequest)
    app.add_route("/healthz", Health())
    app.add_route("/api/me", Me())
    app.add_route("/api/admin", Admin())
    app.add_route("/api/machines", Machines())
    app.add_route("/ws", Socket())
    install(app, settings=settings, user_lookup=users.find, extra_scopes=roles)
    return app
