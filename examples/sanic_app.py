"""A Sanic app behind Cloudflare Access, its users in SQLite, wired as a Sanic extension.

Run it with your own settings (``CFACCESS_*`` in the environment, ``CFACCESS_PUBLIC_PATHS=/healthz``;
``EXAMPLE_DB`` names the SQLite file, default ``users.sqlite3``) under Sanic's own server:

    sanic examples.sanic_app:create_app --factory --host 127.0.0.1 --port 8000

or under an ASGI server (``uvicorn examples.sanic_app:create_app --factory``). ``create_app``
reads the settings before the server starts, so a bad variable stops start-up with a message
naming it. The keys are fetched at ``before_server_start``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from json import dumps
from typing import Any

from sanic import Request, Sanic
from sanic.response import HTTPResponse, json
from sanic.server.websockets.impl import WebsocketImplProtocol

from cfaccess_mw import Forbidden, Principal, Reason, Settings
from cfaccess_mw.sanic import CloudflareAccess, get_principal, get_scopes
from examples.userdb import UserDB


def roles(principal: Principal) -> Iterable[str]:
    """App roles become scopes: a user's role from the database; machines get none."""
    return [principal.user.role] if principal.kind == "user" else []


def create_app(
    *, settings: Settings | None = None, db_path: str | None = None, name: str = "cfaccess_example"
) -> Sanic[Any, Any]:
    """The app; keyword-only, because Sanic's CLI calls a factory with its parsed arguments when it can."""
    users = UserDB(db_path or os.environ.get("EXAMPLE_DB", "users.sqlite3"))
    app: Sanic[Any, Any] = Sanic(name)
    CloudflareAccess(app, settings=settings, user_lookup=users.find, extra_scopes=roles)

    @app.get("/healthz")
    async def healthz(request: Request) -> HTTPResponse:
        return json({"status": "ok"})

    @app.get("/api/me")
    async def me(request: Request) -> HTTPResponse:
        principal = get_principal(request)
        user = principal.user
        return json(
            {
                "kind": principal.kind,
                "display_name": principal.display_name,
                "name": user.name if user else principal.name,
                "role": user.role if user else None,
            }
        )

    @app.get("/api/admin")
    async def admin(request: Request) -> HTTPResponse:
        if "admin" not in get_scopes(request):
            # Answered by the extension's exception handler: our JSON 403, audited as a refusal.
            raise Forbidden(Reason.INSUFFICIENT_SCOPE, "This endpoint is for administrators.", "admin scope missing")
        return json({"secret_plan": "world domination, slowly"})

    async def notes(request: Request) -> HTTPResponse:
        # A body is read only for a proven caller: the extension refuses before Sanic reads it.
        return json({"saved": len(request.body), "by": get_principal(request).display_name}, status=201)

    app.add_route(notes, "/api/notes", methods=["POST"])

    async def ws(request: Request, websocket: WebsocketImplProtocol) -> None:
        await websocket.send(dumps({"hello": get_principal(request).display_name}))

    app.add_websocket_route(ws, "/ws")  # Sanic's @app.websocket decorator is untyped

    async def ws_admin(request: Request, websocket: WebsocketImplProtocol) -> None:
        if "admin" not in get_scopes(request):
            # After the upgrade no HTTP answer is possible: the extension closes the socket with 1008.
            raise Forbidden(Reason.INSUFFICIENT_SCOPE, "This socket is for administrators.", "admin scope missing")
        await websocket.send(dumps({"admin": True}))

    app.add_websocket_route(ws_admin, "/ws/admin")

    return app
