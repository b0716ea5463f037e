"""Starlette's ``@requires``, refusing the way the middleware does.

Starlette's own ``requires`` raises ``HTTPException(403)``: Starlette answers it as
plain text, and the middleware, which sees the app answer, audits the request as
``accepted 403``. This one raises :class:`~cfaccess_mw.errors.Forbidden`
(``insufficient_scope``) instead. The middleware turns an ``AuthError`` raised
before the app starts answering into its own JSON refusal and audits it as
``refused``, so an endpoint's refusal looks and logs like the middleware's.
A websocket is refused before ``accept``, as the middleware refuses one.

    from cfaccess_mw.permissions import requires

    @requires("admin")                # a scope from extra_scopes
    async def admin(request): ...

    @requires(["user", "admin"])      # the kinds are scopes too: user, service, api_key, local
    def report(request): ...

The FastAPI counterpart is the :func:`cfaccess_mw.fastapi.require` dependency; both check with
:mod:`cfaccess_mw.core.permissions`, as every framework's ``require`` does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec

from starlette.requests import HTTPConnection

from ..core.permissions import admit, guard, principal_or_401
from ..core.principals import Principal

__all__ = ["check_scopes", "requires"]

_P = ParamSpec("_P")


def check_scopes(connection: HTTPConnection, scopes: Sequence[str]) -> Principal:
    """The caller, if it holds every scope in ``scopes``; else the refusal the middleware renders.

    A public path has no principal (the middleware let the request through unauthenticated): 401.
    """
    return admit(principal_or_401(connection.scope.get("user")), connection.auth.scopes, needed=scopes)


def requires(scopes: str | Sequence[str]) -> Callable[[Callable[_P, Any]], Callable[_P, Any]]:
    """Decorate a Starlette endpoint (sync or async, HTTP or websocket, function or method) to admit only
    callers holding every scope in ``scopes``; the others get this package's JSON 401/403."""
    needed = [scopes] if isinstance(scopes, str) else list(scopes)

    def decorator(func: Callable[_P, Any]) -> Callable[_P, Any]:
        parameters = list(inspect.signature(func).parameters)
        name = next((p for p in parameters if p in ("request", "websocket")), None)
        if name is None:
            raise TypeError(f'{func!r} has no "request" or "websocket" argument for @requires to check')
        index = parameters.index(name)

        def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            connection = kwargs.get(name, args[index] if index < len(args) else None)
            if not isinstance(connection, HTTPConnection):
                raise TypeError(f"the {name!r} argument is a {type(connection).__name__}, not a Request or WebSocket")
            check_scopes(connection, needed)

        return guard(func, check)

    return decorator
