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

The FastAPI counterpart is the :func:`cfaccess_mw.fastapi.require` dependency. Every
framework's ``require(*kinds, scopes=...)`` (FastAPI, Django, Falcon, Litestar) checks
its declaration with :func:`requirement` and its caller with :func:`admit`, so all of
them accept the same declarations and refuse with the same errors.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Sequence
from typing import Any, ParamSpec

from starlette.requests import HTTPConnection

from .errors import Forbidden, Reason, Unauthorized
from .principals import KINDS, Principal, PrincipalKind

__all__ = [
    "admit",
    "check_scopes",
    "guard",
    "principal_or_401",
    "requirement",
    "requires",
]


_P = ParamSpec("_P")


def requirement(kinds: Sequence[str], scopes: Sequence[str]) -> tuple[str, ...]:
    """Check a ``require(*kinds, scopes=...)`` declaration when the app is built; return the scopes it needs.

    An unknown kind, or one scope name given as a string (which would otherwise
    require each of its letters), is a programming error: ``ValueError`` at import,
    not a refusal of every request.
    """
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown principal kind {kind!r}; expected one of {', '.join(KINDS)}")
    if isinstance(scopes, str):
        raise ValueError("scopes must be a list of scope names, not one string")
    return tuple(scopes)


def admit(
    principal: Principal,
    held: Collection[str],
    kinds: Sequence[PrincipalKind] = (),
    needed: Sequence[str] = (),
    *,
    where: str = "endpoint",
) -> Principal:
    """``principal`` if it is one of ``kinds`` (any, if none) and ``held`` has every scope in ``needed``; else
    the 403 ``insufficient_scope`` refusal. ``where`` names what refused, in the operators' detail."""
    if kinds and principal.kind not in kinds:
        raise Forbidden(
            Reason.INSUFFICIENT_SCOPE,
            f"This endpoint is only for {' or '.join(kinds)} callers.",
            f"{principal.kind} caller refused; {where} admits {', '.join(kinds)}",
        )
    missing = [scope for scope in needed if scope not in held]
    if missing:
        raise Forbidden(
            Reason.INSUFFICIENT_SCOPE,
            "You do not have permission for this endpoint.",
            f"{principal.identity} lacks scopes {missing}",
        )
    return principal


def principal_or_401(candidate: object, where: str = "endpoint") -> Principal:
    """``candidate`` if it is the authenticated :class:`Principal`; else the 401 every adapter answers.

    What an adapter stored for the request (``scope["user"]``, ``request.principal``,
    ``req.context.principal``, ...) is passed in; where no caller was authenticated (a
    public path, a route the framework's own mark opened, no middleware at all) code
    that needs one gets ``no_credentials``. Every adapter's principal accessor and
    ``require`` go through here, so that refusal is written once.
    """
    if isinstance(candidate, Principal):
        return candidate
    raise Unauthorized(Reason.NO_CREDENTIALS, "Authentication required.", f"{where} requires a principal")


def guard(
    func: Callable[_P, Any],
    check: Callable[[tuple[Any, ...], dict[str, Any]], None],
    is_async: Callable[[Any], bool] = inspect.iscoroutinefunction,
) -> Callable[_P, Any]:
    """``func`` with ``check(args, kwargs)`` run before it, as a plain or an ``async def`` function like ``func``.

    The one wrapper behind every framework's ``require``/``requires`` decorator, so a
    refusal is raised before the view runs whichever kind of function it is. ``is_async``
    decides which (Django passes asgiref's, which also sees ``markcoroutinefunction``).
    """
    if is_async(func):

        @functools.wraps(func)
        async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
            check(args, kwargs)
            return await func(*args, **kwargs)

        return async_wrapper

    @functools.wraps(func)
    def sync_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
        check(args, kwargs)
        return func(*args, **kwargs)

    return sync_wrapper


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
