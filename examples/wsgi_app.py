"""A plain WSGI app (no framework) behind Cloudflare Access, its users in SQLite.

Run it with your own settings (``CFACCESS_*`` in the environment, ``CFACCESS_PUBLIC_PATHS=/healthz``;
``EXAMPLE_DB`` names the SQLite file, default ``users.sqlite3``) under any WSGI server:

    gunicorn --worker-class gthread --threads 8 'examples.wsgi_app:create_app()'

The middleware leaves the caller at ``environ["cfaccess_mw.principal"]`` and its
scopes at ``environ["cfaccess_mw.scopes"]``; an ``AuthError`` the app raises before
it answers becomes the same JSON refusal as the middleware's own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from cfaccess_mw import Forbidden, Principal, Reason, Settings
from cfaccess_mw.wsgi import PRINCIPAL_KEY, SCOPES_KEY, CloudflareAccessWSGIMiddleware
from examples.userdb import UserDB


def roles(principal: Principal) -> Iterable[str]:
    """App roles become scopes: a user's role from the database; machines get none."""
    return [principal.user.role] if principal.kind == "user" else []


def _json(start_response: Callable[..., Any], status: str, body: object) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/healthz":
        return _json(start_response, "200 OK", {"status": "ok"})
    principal: Principal = environ[PRINCIPAL_KEY]
    if path == "/api/me":
        user = principal.user
        return _json(
            start_response,
            "200 OK",
            {
                "kind": principal.kind,
                "display_name": principal.display_name,
                "name": user.name if user else principal.name,
                "role": user.role if user else None,
            },
        )
    if path == "/api/admin":
        if "admin" not in environ[SCOPES_KEY]:
            raise Forbidden(Reason.INSUFFICIENT_SCOPE, "This endpoint is for administrators.", "admin scope missing")
        return _json(start_response, "200 OK", {"secret_plan": "world domination, slowly"})
    return _json(start_response, "404 Not Found", {"error": "not found"})


def create_app(settings: Settings | None = None, db_path: str | None = None) -> CloudflareAccessWSGIMiddleware:
    users = UserDB(db_path or os.environ.get("EXAMPLE_DB", "users.sqlite3"))
    return CloudflareAccessWSGIMiddleware(app, settings, user_lookup=users.find, extra_scopes=roles)
