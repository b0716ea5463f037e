"""BlackSheep integration: a guardpost authentication handler, so BlackSheep's own auth sees the caller.

BlackSheep's test client hands requests straight to the application, past any
ASGI middleware; only BlackSheep's own middleware chain runs there, and it is
also where ``request.user``, ``@auth`` and authorization policies live. So the
decision is made in a guardpost :class:`~guardpost.AuthenticationHandler`
returning an :class:`~guardpost.Identity` that carries the :class:`Principal`,
and :func:`use_cloudflare_access` wires the rest::

    from cfaccess_mw.blacksheep import use_cloudflare_access

    app = Application()
    use_cloudflare_access(app, user_lookup=find_user)

    @get("/me")
    async def me(principal: Principal) -> dict[str, str]:   # or principal_of(request), request.user
        return {"who": principal.display_name}

    @auth(roles=["admin"])       # roles are the principal's scopes (extra_scopes included)
    @get("/admin")
    async def admin() -> ...

Authentication only identifies; authorization refuses. A failed credential leaves
the request anonymous (the reason kept with it), and the default policy installed
here requires an authenticated caller on every route except ``CFACCESS_PUBLIC_PATHS``
and ``@allow_anonymous()`` ones; the refusal then answers with the kept reason in
our JSON shape and status (401, 403 or 503), not guardpost's plain-text 401/403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from blacksheep import Content, Request, Response
from blacksheep.exceptions import HTTPException
from blacksheep.middlewares import MiddlewareCategory
from blacksheep.server import Application
from blacksheep.server.authorization import handle_forbidden, handle_unauthorized
from blacksheep.server.bindings import Binder, empty
from blacksheep.server.websocket import WebSocket, WebSocketDisconnectError, WebSocketState
from guardpost import AuthenticationHandler, Identity, Policy, UnauthorizedError
from guardpost.authorization import AuthorizationContext, ForbiddenError, Requirement

from ...core.audit import AuditHook
from ...core.authenticator import Authenticator, ExtraScopes, UserLookup
from ...core.errors import (
    WS_POLICY_VIOLATION,
    AuthError,
    Forbidden,
    Reason,
    Unauthorized,
    framework_error_response,
    send_error,
)
from ...core.permissions import principal_or_401
from ...core.principals import Principal
from ...core.settings import Settings
from ..adapter import check_options
from ..asgi import read_scope
from .mounts import _guard_mounts, _guard_mounts_as_made

__all__ = [
    "SCHEME",
    "AuthenticatedOrPublic",
    "CloudflareAccessHandler",
    "CloudflareAccessIdentity",
    "PrincipalBinder",
    "PublicPathIdentity",
    "principal_of",
    "use_cloudflare_access",
]

SCHEME = "CloudflareAccess"
#: Where the reason a request stayed anonymous is kept (in its ASGI scope), for the refusal to answer with.
_REFUSAL = "cfaccess.refusal"
#: Set once the refusal was audited, so a request is never audited twice.
_AUDITED = "cfaccess.audited"

Handler = Callable[[Request], Awaitable[Response | None]]


class CloudflareAccessIdentity(Identity):
    """The guardpost identity of a caller that proved who it is: ``principal``, and ``scopes`` as its roles.

    ``claims`` are the verified token's (a user's or service token's; none for an
    API key or the local operator), so ``identity.sub`` and ``identity["email"]``
    read as with any JWT handler. ``@auth(roles=[...])`` checks the scopes.
    """

    def __init__(self, principal: Principal, scopes: list[str]) -> None:
        super().__init__(dict(principal.claims or {}), authentication_mode=SCHEME)
        self.principal = principal
        self.scopes = scopes

    @property
    def roles(self) -> list[str]:  # type: ignore[override]  # guardpost annotates it str, and tests membership
        return self.scopes

    def has_role(self, name: str) -> bool:
        return name in self.scopes

    def __repr__(self) -> str:
        return f"CloudflareAccessIdentity({self.principal!r})"


class PublicPathIdentity(Identity):
    """An anonymous caller on one of ``CFACCESS_PUBLIC_PATHS``: not authenticated, but let through by the default
    policy (an explicit ``@auth()`` still refuses it)."""

    def __init__(self) -> None:
        super().__init__({}, authentication_mode=None)


class CloudflareAccessHandler(AuthenticationHandler):
    """The guardpost handler: the caller's :class:`CloudflareAccessIdentity`, or ``None`` with the reason kept.

    Give guardpost this instance (not the class, which it would build per request),
    so the app has one :class:`Authenticator`: one key set and one token cache.
    """

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    @property
    def scheme(self) -> str:
        return SCHEME

    async def authenticate(self, context: Request) -> Identity | None:  # type: ignore[override]
        auth = self.authenticator
        scope = _asgi_scope(context)
        if auth.is_public(scope):
            return PublicPathIdentity()
        try:
            principal, scopes = await auth.authenticate(scope)
        except AuthError as err:
            _state(context)[_REFUSAL] = err
            return None
        return CloudflareAccessIdentity(principal, scopes)

    def __repr__(self) -> str:
        return f"CloudflareAccessHandler({self.authenticator!r})"


class AuthenticatedOrPublic(Requirement):
    """The default policy's requirement: an authenticated caller, or a request on a public path."""

    async def handle(self, context: AuthorizationContext) -> None:
        identity = context.identity
        if isinstance(identity, PublicPathIdentity) or (identity is not None and identity.is_authenticated()):
            context.succeed(self)


def _state(request: Request) -> dict[str, Any]:
    scope: dict[str, Any] = request.scope  # type: ignore[assignment]  # an ASGI scope dict, typed as a protocol
    return scope


def _asgi_scope(request: Request) -> MutableMapping[str, Any]:
    """The request's ASGI scope as the authenticator reads it (:func:`~cfaccess_mw.asgi.read_scope`): header
    names lower case, headers and client sequences.

    BlackSheep's test client passes a dict's keys as written, so
    ``headers={"Cf-Access-Jwt-Assertion": token}`` would otherwise read as no
    credential at all. BlackSheep has already read a headers iterator to build the
    request, so then its parsed headers are used. The headers read are the
    authenticator's copy; BlackSheep's scope keeps its own (the client is written back).
    """
    return read_scope(_state(request), parsed_headers=lambda: list(request.headers), lower=True, write_back=False)


def principal_of(request: Request) -> Principal:
    """The caller of ``request`` (typed), or :class:`Unauthorized` where none was authenticated."""
    identity = request.identity
    return principal_or_401(identity.principal if isinstance(identity, CloudflareAccessIdentity) else None)


class PrincipalBinder(Binder):
    """Lets a handler declare ``principal: Principal`` (or ``principal: Principal | None = None``)."""

    handle = Principal

    async def get_value(self, request: Request) -> Principal | None:
        if self.default is not empty and not isinstance(request.identity, CloudflareAccessIdentity):
            return None
        return principal_of(request)


def _render(error: AuthError) -> Response:
    status, headers, body = framework_error_response(error)
    kept = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    return Response(status, kept, Content(b"application/json", body))


def _error_for(request: Request, exc: Exception) -> AuthError:
    """Our error for a refusal: an :class:`AuthError` as it is; guardpost's by the reason the request stayed
    anonymous (401, 403 or 503) or, for a caller the policy refused, 403 insufficient_scope."""
    if isinstance(exc, AuthError):
        return exc
    if isinstance(exc, ForbiddenError):
        return Forbidden(
            Reason.INSUFFICIENT_SCOPE, "You do not have permission for this endpoint.", f"authorization: {exc}"
        )
    kept: AuthError | None = _state(request).get(_REFUSAL)
    if kept is not None:
        return kept
    return Unauthorized(
        Reason.NO_CREDENTIALS,
        "Authentication required: send a Cloudflare Access token or an API key.",
        f"authorization: {exc}",
    )


def _opened_by_blacksheep(request: Request, handler: Handler) -> bool:
    """Whether ``handler`` is one BlackSheep itself wrote and marked ``allow_anonymous``, on a path not public.

    ``@allow_anonymous()`` skips authorization altogether. On a handler the app wrote,
    it is the app's own explicit decision about that route, and is honoured. BlackSheep
    also marks its own handlers so by default: ``app.serve_files(...)`` (every file,
    and the SPA ``fallback_document``), the OpenAPI documents and UI. Those are
    served, not written, by the app: like everything else the framework serves, they
    are protected unless their path is in ``CFACCESS_PUBLIC_PATHS``.
    """
    if isinstance(request.identity, PublicPathIdentity) or getattr(handler, "allow_anonymous", False) is not True:
        return False
    route_handler = getattr(handler, "root_fn", handler)
    return str(getattr(route_handler, "__module__", "")).startswith("blacksheep.")


class _Wiring:
    """What :func:`use_cloudflare_access` installs: lifecycle hooks, the exception handlers, one middleware."""

    def __init__(self, authenticator: Authenticator, require_authentication: bool = True) -> None:
        self.authenticator = authenticator
        self.require_authentication = require_authentication

    async def on_start(self, app: Application) -> None:
        _guard_mounts(app, self.authenticator)
        await self.authenticator.startup()

    async def on_stop(self, app: Application) -> None:
        await self.authenticator.aclose()

    async def _audit_refusal(self, request: Request, error: AuthError) -> None:
        state = _state(request)
        if not state.get(_AUDITED):
            state[_AUDITED] = True
            await self.authenticator.audit(request, error.status_code, err=error)

    async def handle_refusal(self, app: Application, request: Request, exc: Exception) -> Response:
        """Exception handler for :class:`AuthError` and guardpost's :class:`UnauthorizedError`/``ForbiddenError``."""
        error = _error_for(request, exc)
        await self._audit_refusal(request, error)
        return _render(error)

    async def middleware(self, request: Request, handler: Handler) -> Response | None:
        """Placed right after authentication: audits acceptances with the app's status, refuses websockets.

        An HTTP refusal propagates to the exception handlers (where apps expect to
        find it); a websocket has no response to carry one, so its refusal is
        answered here: the JSON denial or close 1008 before accept, 1008 after.
        """
        identity = request.identity
        principal = identity.principal if isinstance(identity, CloudflareAccessIdentity) else None
        if principal is None and self.require_authentication and _opened_by_blacksheep(request, handler):
            raise _error_for(request, UnauthorizedError("served by BlackSheep and not a public path", []))
        audit = principal is not None and self.authenticator.audits_acceptances
        if isinstance(request, WebSocket):
            await self._websocket(request, handler, principal if audit else None)
            return None
        try:
            response = await handler(request)
        except (AuthError, UnauthorizedError):
            raise  # a refusal: audited by the exception handler that answers it
        except HTTPException as exc:  # NotFound and the like: the handler's answer, by its status
            if audit:
                await self.authenticator.audit(request, exc.status, principal=principal)
            raise
        except Exception:
            if audit:
                await self.authenticator.audit(request, None, principal=principal)
            raise
        if audit:
            await self.authenticator.audit(request, response.status if response else None, principal=principal)
        return response

    async def _websocket(self, ws: WebSocket, handler: Handler, principal: Principal | None) -> None:
        # BlackSheep's WebSocket offers no hook at accept and no way to answer the handshake with an HTTP
        # response, so its ASGI send and receive (_send, _receive) are used directly: the one place this
        # adapter reaches past BlackSheep's public API (tests cover it on the versions the extra allows).
        if principal is not None:
            send = ws._send

            async def audited_send(message: dict[str, Any]) -> None:
                nonlocal principal
                if principal is not None and message["type"] == "websocket.accept":
                    await self.authenticator.audit(ws, None, principal=principal)
                    principal = None
                await send(message)

            ws._send = audited_send
        try:
            await handler(ws)
        except (AuthError, UnauthorizedError) as exc:
            error = _error_for(ws, exc)
            await self._audit_refusal(ws, error)
            if ws.accepted:
                await ws.close(WS_POLICY_VIOLATION, error.code)
                return
            connected = ws.client_state is not WebSocketState.CONNECTING
            try:
                await send_error(_state(ws), ws._receive, ws._send, error, connected=connected)
            except WebSocketDisconnectError:
                return  # the client left before the handshake: nothing to refuse


def use_cloudflare_access(
    app: Application,
    authenticator: Authenticator | None = None,
    *,
    settings: Settings | None = None,
    user_lookup: UserLookup | None = None,
    audit_hook: AuditHook | None = None,
    extra_scopes: ExtraScopes | None = None,
    require_authentication: bool = True,
) -> CloudflareAccessHandler:
    """Wire Cloudflare Access into a BlackSheep app; returns the guardpost handler it installed.

    Adds the handler to the app's authentication strategy (made if absent), makes
    the authorization strategy's default policy require an authenticated caller
    except on ``CFACCESS_PUBLIC_PATHS`` (``require_authentication=False`` keeps the
    app's own default), renders every refusal as our JSON error, prefetches the keys
    at ``on_start`` and installs the middleware that audits and refuses websockets. An
    exception handler the app registered for ``AuthError``, ``UnauthorizedError`` or
    ``ForbiddenError`` before this call is kept.
    ``settings`` defaults to ``Settings.from_env()``: a bad variable raises
    :class:`~cfaccess_mw.errors.ConfigError` here, before the app starts.
    """
    if authenticator is not None:
        check_options(authenticator, {"settings": settings, "user_lookup": user_lookup,
                      "audit_hook": audit_hook, "extra_scopes": extra_scopes})  # fmt: skip
    else:
        authenticator = Authenticator(
            settings, user_lookup=user_lookup, audit_hook=audit_hook, extra_scopes=extra_scopes
        )
    handler = CloudflareAccessHandler(authenticator)
    wiring = _Wiring(authenticator, require_authentication)
    app.use_authentication().add(handler)
    authorization = app.use_authorization()
    if require_authentication:
        authorization.default_policy = Policy("default", AuthenticatedOrPublic())
    # Ours replace guardpost's plain-text defaults that use_authorization() installed, not an app's own handler.
    replaceable = (None, handle_unauthorized, handle_forbidden)
    for exc_type in (AuthError, UnauthorizedError, ForbiddenError):
        if app.exceptions_handlers.get(exc_type) in replaceable:
            app.exceptions_handlers[exc_type] = wiring.handle_refusal
    # Right after authentication (AUTH, priority 0), before authorization (AUTHZ): it sees every refusal.
    middleware = cast("Callable[..., Awaitable[Response]]", wiring.middleware)  # None only for a websocket
    app.middlewares.append(middleware, MiddlewareCategory.AUTH, 1)
    app.on_start += wiring.on_start
    app.on_stop += wiring.on_stop
    _guard_mounts_as_made(app, authenticator)
    return handler
