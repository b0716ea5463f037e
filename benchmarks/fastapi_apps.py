"""FastAPI apps for the dependency rows (issue 11): what a route pays to receive the principal.

Each app has one route, ``GET /``, like the bare apps; they differ only in how the endpoint gets the
principal. The old ``CurrentPrincipal`` and ``require`` are replicated here as they were before issue 11
(``get_principal`` with two ``Security`` sub-dependencies that only documented the schemes, and ``require``
depending on it), so one run measures before and after side by side.

No ``from __future__ import annotations`` here: FastAPI resolves a dependency's string annotations in
the module's globals, and these functions are defined inside factories.
"""

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Security
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse

from cfaccess_mw import Forbidden, Principal, Reason, Unauthorized
from cfaccess_mw.integrations.fastapi import CurrentPrincipal, api_key_scheme, cloudflare_access_scheme, require


def _app() -> FastAPI:
    return FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


def bare() -> FastAPI:
    app = _app()

    @app.get("/")
    async def home() -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


async def old_get_principal(
    connection: HTTPConnection,
    _token: Annotated[None, Security(cloudflare_access_scheme)] = None,
    _api_key: Annotated[None, Security(api_key_scheme)] = None,
) -> Principal:
    """``cfaccess_mw.fastapi.get_principal`` before issue 11: three dependencies resolved per request."""
    principal = connection.scope.get("user")
    if isinstance(principal, Principal):
        return principal
    raise Unauthorized(Reason.NO_CREDENTIALS, "Authentication required.", "endpoint requires a principal")


OldCurrentPrincipal = Annotated[Principal, Depends(old_get_principal)]


def old_require_user() -> Any:
    """``require("user")`` before issue 11: a dependency on top of the old ``CurrentPrincipal``."""

    async def dependency(connection: HTTPConnection, principal: OldCurrentPrincipal) -> Principal:
        if principal.kind != "user":
            raise Forbidden(Reason.INSUFFICIENT_SCOPE, "user callers only")
        return principal

    return dependency


async def user_from_scope(connection: HTTPConnection) -> Any:
    """The least a FastAPI dependency can do: one plain ``Depends`` reading ``scope["user"]``."""
    return connection.scope["user"]


def current_principal() -> FastAPI:
    app = _app()

    @app.get("/")
    async def home(principal: CurrentPrincipal) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


def old_current_principal() -> FastAPI:
    app = _app()

    @app.get("/")
    async def home(principal: OldCurrentPrincipal) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


def required_user() -> FastAPI:
    app = _app()

    @app.get("/", dependencies=[Depends(require("user"))])
    async def home() -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


def old_required_user() -> FastAPI:
    app = _app()

    @app.get("/", dependencies=[Depends(old_require_user())])
    async def home() -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


def plain_depends() -> FastAPI:
    app = _app()

    @app.get("/")
    async def home(user: Annotated[Any, Depends(user_from_scope)]) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app
