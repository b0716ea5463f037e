"""A Quart app behind Cloudflare Access, its users in SQLite, wired as a Quart extension.

Run it with your own settings (``CFACCESS_*`` in the environment, ``CFACCESS_PUBLIC_PATHS=/healthz``;
``EXAMPLE_DB`` names the SQLite file, default ``users.sqlite3``), under any ASGI server:

    hypercorn 'examples.quart_app:create_app()'
    uvicorn examples.quart_app:create_app --factory

``create_app`` reads the settings before the server starts, so a bad variable
stops start-up with a message naming it. The keys are fetched at ``before_serving``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from quart import Quart, websocket

from cfaccess_mw import Forbidden, Principal, Reason, Settings
from cfaccess_mw.quart import CloudflareAccess, current_principal, get_scopes
from examples.userdb import UserDB


def roles(principal: Principal) -> Iterable[str]:
    """App roles become scopes: a user's role from the database; machines get none."""
    return [principal.user.role] if principal.kind == "user" else []


def create_app(settings: Settings | None = None, db_path: str | None = None) -> Quart:
    users = UserDB(db_path or os.environ.get("EXAMPLE_DB", "users.sqlite3"))
    app = Quart(__name__)
    CloudflareAccess(app, settings=settings, user_lookup=users.find, extra_scopes=roles)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/me")
    async def me() -> dict[str, object]:
        user = current_principal.user
        return {
            "kind": current_principal.kind,
            "display_name": current_principal.display_name,
            "name": user.name if user else current_principal.name,
            "role": user.role if user else None,
        }

    @app.get("/api/admin")
    async def admin() -> dict[str, str]:
        if "admin" not in get_scopes():
            # Answered by the extension's error handler: our JSON 403, audited as a refusal.
            raise Forbidden(Reason.INSUFFICIENT_SCOPE, "This endpoint is for administrators.", "admin scope missing")
        return {"secret_plan": "world domination, slowly"}

    @app.websocket("/ws")
    async def ws() -> None:
        await websocket.accept()
        await websocket.send_json({"hello": current_principal.display_name})

    @app.websocket("/ws/admin")
    async def ws_admin() -> None:
        await websocket.accept()
        if "admin" not in get_scopes():
            # After accept no HTTP answer is possible: the extension closes the socket with 1008.
            raise Forbidden(Reason.INSUFFICIENT_SCOPE, "This socket is for administrators.", "admin scope missing")
        await websocket.send_json({"admin": True})

    return app
