"""FastAPI integration: the principal as a dependency, requirements by kind or scope, and OpenAPI schemes.

The middleware does the authentication; these dependencies only read its result
from ``request.scope`` and refuse with the same JSON errors (the middleware turns
an :class:`~cfaccess_mw.errors.AuthError` raised by a dependency into its own
response). The two security schemes make the generated docs show how to call the
API: the ``Cf-Access-Jwt-Assertion`` header the edge adds, and a Bearer API key.

    from cfaccess_mw.fastapi import CurrentPrincipal, require

    @app.get("/me")
    async def me(principal: CurrentPrincipal): ...

    @app.post("/admin", dependencies=[Depends(require("user", scopes=["admin"]))])
    async def admin(): ...
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.requests import HTTPConnection

from .errors import Forbidden, Reason, Unauthorized
from .principals import KINDS, Principal, PrincipalKind


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


async def get_principal(
    connection: HTTPConnection,
    _token: Annotated[None, Security(cloudflare_access_scheme)] = None,
    _api_key: Annotated[None, Security(api_key_scheme)] = None,
) -> Principal:
    """The authenticated caller (HTTP or websocket); 401 on a public path, where the middleware let it through."""
    principal = connection.scope.get("user")
    if isinstance(principal, Principal):
        return principal
    raise Unauthorized(Reason.NO_CREDENTIALS, "Authentication required.", "endpoint requires a principal")


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
"""Annotate an endpoint parameter with this to receive the :class:`Principal`."""


def require(*kinds: PrincipalKind, scopes: Sequence[str] = ()) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting only the given kinds (any, if none given) holding every scope in ``scopes``."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown principal kind {kind!r}; expected one of {', '.join(KINDS)}")
    needed = tuple(scopes)

    async def dependency(connection: HTTPConnection, principal: CurrentPrincipal) -> Principal:
        if kinds and principal.kind not in kinds:
            raise Forbidden(
                Reason.INSUFFICIENT_SCOPE,
                f"This endpoint is only for {' or '.join(kinds)} callers.",
                f"{principal.kind} caller refused; endpoint admits {', '.join(kinds)}",
            )
        held = connection.auth.scopes
        missing = [scope for scope in needed if scope not in held]
        if missing:
            raise Forbidden(
                Reason.INSUFFICIENT_SCOPE,
                "You do not have permission for this endpoint.",
                f"{principal.identity} lacks scopes {missing}",
            )
        return principal

    return dependency
