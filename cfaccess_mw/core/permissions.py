"""Who may call an endpoint: the checks every framework's ``require``/``requires`` shares.

Every framework's ``require(*kinds, scopes=...)`` (FastAPI, Django, Falcon, Litestar, Flask) and Starlette's
``@requires`` (:mod:`cfaccess_mw.integrations.starlette`) check their declaration with :func:`requirement` and
their caller with :func:`admit` (and :func:`principal_or_401` where no caller was authenticated), and wrap the
view with :func:`guard`: all of them accept the same declarations and refuse with the same errors. Nothing here
knows a framework's request type; each integration hands over the principal and the scopes it stored.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Sequence
from typing import Any, ParamSpec

from .errors import Forbidden, Reason, Unauthorized
from .principals import KINDS, Principal, PrincipalKind

__all__ = [
    "admit",
    "guard",
    "principal_or_401",
    "requirement",
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
