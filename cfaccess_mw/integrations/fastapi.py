"""FastAPI integration: the principal as a dependency, requirements by kind or scope, and OpenAPI schemes.

The middleware does the authentication; these dependencies only read its result
from ``request.scope`` and refuse with the same JSON errors (the middleware turns
an :class:`~cfaccess_mw.errors.AuthError` raised by a dependency into its own
response).

    from cfaccess_mw.fastapi import CurrentPrincipal, document_security, require

    @app.get("/me")
    async def me(principal: CurrentPrincipal): ...

    @app.post("/admin", dependencies=[Depends(require("user", scopes=["admin"]))])
    async def admin(): ...

    document_security(app)   # the API key scheme in /docs too (once, when the document is generated)

Cost: FastAPI resolves every dependency of a route on every request, about as much work per dependency as
the whole middleware on a cached token (benchmarks/README.md). So each of these is exactly one dependency
that reads ``scope["user"]``, with no sub-dependencies. The OpenAPI document still learns how to call the
API without code running per request: each dependency object *is* the ``CloudflareAccess`` security scheme
(FastAPI documents a dependency that is a ``SecurityBase``), and :func:`document_security` adds the second
scheme, the Bearer ``ApiKey``, next to it once when FastAPI builds the document. (Until issue 11 the
principal dependency carried both schemes as two sub-dependencies, which FastAPI ran on every request.)

This module does not use ``from __future__ import annotations``: FastAPI reads the annotations of a
dependency's ``__call__`` at run time, and older FastAPI versions resolve string annotations only for
plain functions, not for callable objects.
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.security import APIKeyHeader, HTTPBearer
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection

from ..core.permissions import admit, principal_or_401, requirement
from ..core.principals import Principal, PrincipalKind

__all__ = [
    "CurrentPrincipal",
    "api_key_scheme",
    "cloudflare_access_scheme",
    "document_security",
    "get_principal",
    "require",
]


class _DocumentedHeader(APIKeyHeader):
    """The edge's token header, for the OpenAPI document only: the middleware has already checked it.

    FastAPI's own scheme classes take a ``Request``, which a websocket route cannot
    supply; these take an ``HTTPConnection`` so the same dependency serves both.
    """

    async def __call__(self, request: HTTPConnection) -> None:
        return None


class _DocumentedBearer(HTTPBearer):
    """The API key scheme, for the OpenAPI document only (see :class:`_DocumentedHeader`)."""

    async def __call__(self, request: HTTPConnection) -> None:
        return None


cloudflare_access_scheme = _DocumentedHeader(
    name="Cf-Access-Jwt-Assertion",
    scheme_name="CloudflareAccess",
    description="Application token added by Cloudflare Access at the edge (RS256 JWT, verified at the origin).",
    auto_error=False,
)
api_key_scheme = _DocumentedBearer(
    scheme_name="ApiKey",
    description="An API key configured in CFACCESS_API_KEYS, for CLIs, agents and the local operator.",
    auto_error=False,
)


def _principal_of(connection: HTTPConnection) -> Principal:
    # None on a public path: the middleware let the request through without deciding who it is.
    return principal_or_401(connection.scope.get("user"))


class _AccessDependency(SecurityBase):
    """A dependency that is also the ``CloudflareAccess`` scheme, so FastAPI documents the route as secured
    without resolving a separate scheme dependency on every request."""

    def __init__(self) -> None:
        self.model = cloudflare_access_scheme.model
        self.scheme_name = cloudflare_access_scheme.scheme_name


class _PrincipalDependency(_AccessDependency):
    """``get_principal``: the authenticated caller (HTTP or websocket); 401 on a public path."""

    async def __call__(self, connection: HTTPConnection) -> Principal:
        return _principal_of(connection)

    def __repr__(self) -> str:
        return "get_principal"


get_principal = _PrincipalDependency()
"""The dependency behind :data:`CurrentPrincipal`: ``Depends(get_principal)``."""

CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
"""Annotate an endpoint parameter with this to receive the :class:`Principal`."""


class _Requirement(_AccessDependency):
    """What :func:`require` returns: admits only some kinds, holding every scope in ``needed``."""

    def __init__(self, kinds: tuple[PrincipalKind, ...], needed: tuple[str, ...]) -> None:
        super().__init__()
        self.kinds = kinds
        self.needed = needed

    async def __call__(self, connection: HTTPConnection) -> Principal:
        principal = _principal_of(connection)
        return admit(principal, connection.scope["auth"].scopes if self.needed else (), self.kinds, self.needed)

    def __repr__(self) -> str:
        return f"require({', '.join(map(repr, self.kinds))}, scopes={list(self.needed)!r})"


def require(*kinds: PrincipalKind, scopes: Sequence[str] = ()) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting only the given kinds (any, if none given) holding every scope in ``scopes``.

    Use it as ``Depends(require(...))``; it returns the :class:`Principal`, so
    ``Annotated[Principal, Depends(require("service"))]`` works as a parameter too.
    """
    return _Requirement(tuple(kinds), requirement(kinds, scopes))


def document_security(app: FastAPI) -> None:
    """Show the API key scheme in the app's OpenAPI document (``/docs``) beside ``CloudflareAccess``.

    Every operation that FastAPI documents with the ``CloudflareAccess`` scheme (each route using
    :data:`CurrentPrincipal`, :func:`require` or ``Security(cloudflare_access_scheme)``) also gets the
    ``ApiKey`` alternative, and ``components.securitySchemes`` gets its definition. It wraps ``app.openapi``
    and edits the document once, when FastAPI first builds it; nothing runs per request. Calling it twice
    is harmless.
    """
    generate = app.openapi
    if getattr(generate, "_cfaccess_documented", False):
        return
    done: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        schema = generate()
        if not done or done[0] is not schema:
            _add_api_key_scheme(schema)
            done[:] = [schema]
        return schema

    openapi._cfaccess_documented = True  # type: ignore[attr-defined]
    app.openapi = openapi  # type: ignore[method-assign]


def _add_api_key_scheme(schema: dict[str, Any]) -> None:
    access, api_key = cloudflare_access_scheme.scheme_name, api_key_scheme.scheme_name
    documented = False
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            security = operation.get("security") if isinstance(operation, dict) else None
            if not isinstance(security, list) or not any(access in requirement for requirement in security):
                continue
            documented = True
            if not any(api_key in requirement for requirement in security):
                security.append({api_key: []})
    if documented:
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes.setdefault(api_key, jsonable_encoder(api_key_scheme.model, by_alias=True, exclude_none=True))
