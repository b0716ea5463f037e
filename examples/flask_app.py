"""A Flask app behind Cloudflare Access, its users in SQLite, wired as a Flask extension.

Run it with your own settings (``CFACCESS_*`` in the environment, ``CFACCESS_PUBLIC_PATHS=/healthz``;
``EXAMPLE_DB`` names the SQLite file, default ``users.sqlite3``), under Flask's dev server or any WSGI server:

    flask --app examples.flask_app run
    gunicorn --worker-class gthread --threads 8 'examples.flask_app:create_app()'

``create_app`` reads the settings and fetches the keys before the server takes a
request, so a bad variable stops start-up with a message naming it. The user lookup
is a plain ``def`` (sqlite3), called in the request's thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from flask import Flask

from cfaccess_mw import Principal, Settings
from cfaccess_mw.flask import CloudflareAccess, current_principal, require
from examples.userdb import UserDB


def roles(principal: Principal) -> Iterable[str]:
    """App roles become scopes: a user's role from the database; machines get none."""
    return [principal.user.role] if principal.kind == "user" else []


def create_app(settings: Settings | None = None, db_path: str | None = None) -> Flask:
    users = UserDB(db_path or os.environ.get("EXAMPLE_DB", "users.sqlite3"))
    app = Flask(__name__)
    CloudflareAccess(app, settings, user_lookup=users.find, extra_scopes=roles)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/me")
    def me() -> dict[str, object]:
        user = current_principal.user
        return {
            "kind": current_principal.kind,
            "display_name": current_principal.display_name,
            "name": user.name if user else current_principal.name,
            "role": user.role if user else None,
        }

    @app.get("/api/admin")
    @require(scopes=["admin"])  # others get our JSON 403, audited as a refusal
    def admin() -> dict[str, str]:
        return {"secret_plan": "world domination, slowly"}

    return app
