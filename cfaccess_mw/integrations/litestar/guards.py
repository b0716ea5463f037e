"""How the Litestar integration refuses and admits outside its middleware: its refusals as Litestar exceptions
(rendered as the package's JSON), the ``require(...)`` guard and the principal dependency."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ServiceUnavailableException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Response
from litestar.types import Guard, Scope

from ...core.errors import AuthError, AuthUnavailable, framework_error_response
from ...core.permissions import admit, principal_or_401, requirement
from ...core.principals import Principal, PrincipalKind


def _scope_dict(scope: Scope) -> dict[str, Any]:
    """Litestar types the scope as a TypedDict; our own key in it is not one of its fields."""
    return cast("dict[str, Any]", scope)


class AccessRefused(HTTPException):
    """A refusal as a Litestar exception: the status, headers and detail of the :class:`AuthError` it carries.

    Rendered by :func:`render_refusal` in our JSON shape; without it (the config's
    ``on_app_init`` not used), Litestar's default handler still answers with the
    right status, ``WWW-Authenticate`` / ``Retry-After``, and the reason in ``extra``.
    """

    def __init__(self, error: AuthError) -> None:
        super().__init__(
            detail=error.message,
            status_code=error.status_code,
            headers=framework_error_response(error)[1],
            extra={"code": error.code, "reason": error.reason.value},
        )
        self.error = error


class AccessNotAuthorized(AccessRefused, NotAuthorizedException):
    """401: no credential, or one that does not verify."""


class AccessPermissionDenied(AccessRefused, PermissionDeniedException):
    """403: a proven caller this app does not admit."""


class AccessUnavailable(AccessRefused, ServiceUnavailableException):
    """503: the decision cannot be made now (no signing keys, the user lookup failing)."""


def refusal_for(error: AuthError) -> AccessRefused:
    """The Litestar exception for ``error``, by its status."""
    if isinstance(error, AuthUnavailable):
        return AccessUnavailable(error)
    if error.status_code == 403:
        return AccessPermissionDenied(error)
    return AccessNotAuthorized(error)


def render_refusal(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Litestar exception handler: an :class:`AuthError` (or :class:`AccessRefused`) as our JSON error."""
    error = exc.error if isinstance(exc, AccessRefused) else exc
    if not isinstance(error, AuthError):  # registered only for these two types
        raise TypeError(f"render_refusal cannot render {type(exc).__name__}")
    status, headers, body = framework_error_response(error)
    return Response(content=body, status_code=status, media_type="application/json", headers=headers)


def _principal_in(scope: Scope) -> Principal:
    try:
        return principal_or_401(_scope_dict(scope).get("user"))
    except AuthError as err:
        raise refusal_for(err) from None  # the documented Litestar exception, for after_exception hooks


def provide_principal(scope: Scope) -> Principal:
    """The dependency the config registers as ``principal``: the caller, or 401 on a route the middleware skipped."""
    return _principal_in(scope)


def require(*kinds: PrincipalKind, scopes: Sequence[str] = ()) -> Guard:
    """A Litestar guard admitting only the given kinds (any, if none given) holding every scope in ``scopes``."""
    needed = requirement(kinds, scopes)

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        try:
            admit(_principal_in(connection.scope), _scope_dict(connection.scope).get("auth") or [], kinds, needed)
        except AuthError as err:
            # As the documented Litestar exception, so after_exception hooks and handlers by type see one.
            raise refusal_for(err) from None

    return guard
