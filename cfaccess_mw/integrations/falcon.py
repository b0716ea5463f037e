"""Falcon (ASGI): a middleware component that puts the verified caller in ``req.context.principal``.

    import falcon.asgi
    from cfaccess_mw.falcon import AccessRequest, get_principal, install, require

    app = falcon.asgi.App(request_type=AccessRequest)   # request_type only for the typed req.context
    install(app, user_lookup=find_user)                 # the middleware, and the error handler for AuthError

    class Me:
        async def on_get(self, req: AccessRequest, resp: falcon.asgi.Response) -> None:
            resp.media = {"who": get_principal(req).display_name}   # typed Principal, or a 401

    @falcon.before(require("user", scopes=["admin"]))
    class Admin: ...

Falcon has no authentication of its own, so the request context is where its
apps look: ``req.context.principal`` is the
:class:`~cfaccess_mw.principals.Principal` (``None`` on a public path) and
``req.context.scopes`` its scopes (``extra_scopes`` applied). With
``request_type=AccessRequest`` both are typed for mypy.

The component refuses in Falcon's own idiom for short-circuiting a request: it
writes the package's JSON error into ``resp`` and sets ``resp.complete``, so no
responder runs, and Falcon's error serializer (which negotiates an ``HTTPError``'s
media type from the client's ``Accept``: XML for a client that prefers it) never
touches the body. An
:class:`~cfaccess_mw.errors.AuthError` raised by a responder or a hook (:func:`require`)
is answered the same way by the error handler :func:`install` registers. A refused
websocket is closed with 1008 before it is accepted (Falcon has already received
``websocket.connect``, as the ASGI spec asks), which the server answers as an HTTP
403 to the handshake; Falcon's WebSocket object has no way to send the JSON denial.
Falcon has no middleware hook after a websocket responder, so a socket's acceptance
is audited when the middleware lets it through, and a hook refusing it afterwards
adds a refusal event (for HTTP there is one event, as with the ASGI middleware).

Keys are fetched at ``process_startup`` (ASGI lifespan). ASGI only: the component's
methods are coroutines, and a WSGI ``falcon.App`` refuses them when it is built
(``CompatibilityError``), rather than accepting ``*_async`` variants it would never
call and so letting every request through unauthenticated.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

import falcon
import falcon.asgi
import httpx

from ..core.audit import AuditHook
from ..core.authenticator import Authenticator, ExtraScopes, UserLookup
from ..core.errors import WS_POLICY_VIOLATION, AuthError, framework_error_response
from ..core.permissions import admit, principal_or_401, requirement
from ..core.principals import Principal, PrincipalKind
from ..core.settings import Settings
from ..keys.jwks import JWKSClient
from .adapter import check_options
from .asgi import read_scope

__all__ = [
    "AccessContext",
    "AccessRequest",
    "CloudflareAccessMiddleware",
    "get_principal",
    "install",
    "require",
]


class AccessContext(falcon.Context):
    """``req.context`` with the middleware's results typed."""

    principal: Principal | None = None
    scopes: list[str]
    #: Set when a refusal was already audited, so the response is not also audited as an acceptance.
    cfaccess_refused: bool = False


class AccessRequest(falcon.asgi.Request):
    """``falcon.asgi.App(request_type=AccessRequest)`` makes ``req.context`` an :class:`AccessContext`."""

    context_type = AccessContext
    context: AccessContext


def _context(req: falcon.asgi.Request) -> Any:
    return req.context


def _scope(req: falcon.asgi.Request) -> MutableMapping[str, Any]:
    """The request's ASGI scope, with ``headers`` and ``client`` made sequences if they came as iterators.

    Falcon's test client passes both as iterators (on purpose, to catch code that
    indexes them), and Falcon's request has already read the headers by the time
    middleware runs: :func:`~cfaccess_mw.asgi.read_scope` rebuilds them from what it
    parsed, and writes ``client`` back for Falcon's ``req.remote_addr`` to unpack later.
    """
    return read_scope(req.scope, parsed_headers=lambda: req.headers.items())


def _render(resp: falcon.asgi.Response, err: AuthError) -> None:
    status, headers, body = framework_error_response(err)
    resp.status = status
    resp.content_type = "application/json"
    resp.data = body
    resp.set_headers(headers)


class CloudflareAccessMiddleware:
    """Falcon middleware component: authenticate every HTTP and websocket request of a ``falcon.asgi.App``.

    Options are :class:`Authenticator`'s, or ``authenticator=`` to share one (several
    apps in one process, a Starlette app around this one).
    """

    def __init__(
        self,
        *,
        authenticator: Authenticator | None = None,
        settings: Settings | None = None,
        user_lookup: UserLookup | None = None,
        audit_hook: AuditHook | None = None,
        extra_scopes: ExtraScopes | None = None,
        jwks: JWKSClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if authenticator is not None:
            check_options(authenticator, {"settings": settings, "user_lookup": user_lookup, "audit_hook": audit_hook,
                          "extra_scopes": extra_scopes, "jwks": jwks, "transport": transport})  # fmt: skip
            self.authenticator = authenticator
        else:
            # Settings.from_env() runs here, when the app is built: a bad variable stops start-up, naming it.
            self.authenticator = Authenticator(
                settings,
                user_lookup=user_lookup,
                audit_hook=audit_hook,
                extra_scopes=extra_scopes,
                jwks=jwks,
                transport=transport,
                clock=clock,
            )

    def __repr__(self) -> str:
        return f"CloudflareAccessMiddleware({self.authenticator!r})"

    # --- life cycle ----------------------------------------------------------------------------

    async def process_startup(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        await self.authenticator.startup()

    async def process_shutdown(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        await self.authenticator.aclose()

    # --- HTTP ----------------------------------------------------------------------------------

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        auth = self.authenticator
        context = _context(req)
        context.principal = None
        context.scopes = []
        scope = _scope(req)
        if auth.is_public(scope, req.path):  # what Falcon routes: the whole path, root_path included
            return
        try:
            context.principal, context.scopes = await auth.authenticate(scope)
        except AuthError as err:
            context.cfaccess_refused = True
            await auth.audit(scope, err.status_code, err=err)
            _render(resp, err)
            resp.complete = True

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: object, req_succeeded: bool
    ) -> None:
        context = _context(req)
        principal = getattr(context, "principal", None)
        if principal is None or getattr(context, "cfaccess_refused", False):
            return
        if self.authenticator.audits_acceptances:
            await self.authenticator.audit(_scope(req), resp.status_code, principal=principal)

    # --- websockets ----------------------------------------------------------------------------

    async def process_request_ws(self, req: falcon.asgi.Request, ws: falcon.asgi.WebSocket) -> None:
        auth = self.authenticator
        context = _context(req)
        context.principal = None
        context.scopes = []
        scope = _scope(req)
        if auth.is_public(scope, req.path):  # what Falcon routes: the whole path, root_path included
            return
        try:
            principal, context.scopes = await auth.authenticate(scope)
        except AuthError as err:
            await self._refuse_ws(req, ws, err)
            # Stop Falcon before routing; its handler for this exception only tidies up a socket already closed.
            raise falcon.WebSocketDisconnected(WS_POLICY_VIOLATION) from None
        context.principal = principal
        # Falcon has no middleware hook after a websocket responder, so the acceptance is recorded here, when
        # the socket is let through; a hook that then refuses it (require) adds its refusal.
        if auth.audits_acceptances:
            await auth.audit(_scope(req), None, principal=principal)

    async def _refuse_ws(self, req: falcon.asgi.Request, ws: falcon.asgi.WebSocket, err: AuthError) -> None:
        _context(req).cfaccess_refused = True
        await self.authenticator.audit(_scope(req), err.status_code, err=err)
        await ws.close(WS_POLICY_VIOLATION, err.code)

    # --- an AuthError from a responder or hook -------------------------------------------------

    async def handle_auth_error(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response | None,
        error: Exception,
        params: dict[str, Any],
        *,
        ws: falcon.asgi.WebSocket | None = None,
    ) -> None:
        """Falcon error handler for :class:`AuthError` (registered by :func:`install`): the JSON error, audited."""
        assert isinstance(error, AuthError)
        if ws is not None:
            await self._refuse_ws(req, ws, error)
            return
        assert resp is not None
        _context(req).cfaccess_refused = True
        await self.authenticator.audit(_scope(req), error.status_code, err=error)
        _render(resp, error)


def install(
    app: falcon.asgi.App[Any, Any], *, authenticator: Authenticator | None = None, **options: Any
) -> CloudflareAccessMiddleware:
    """Add the middleware to ``app``, first among its components, and register its handler for
    :class:`AuthError`; return the middleware.

    ``options`` are :class:`CloudflareAccessMiddleware`'s. Call it before the app
    serves its first request (Falcon fixes its middleware then).
    """
    if not isinstance(app, falcon.asgi.App):
        raise TypeError(f"cfaccess_mw.falcon supports falcon.asgi.App, not {type(app).__name__} (WSGI)")
    middleware = CloudflareAccessMiddleware(authenticator=authenticator, **options)
    app.add_middleware(middleware)
    _put_first(app, middleware)
    app.add_error_handler(AuthError, middleware.handle_auth_error)
    return middleware


def _put_first(app: falcon.asgi.App[Any, Any], middleware: CloudflareAccessMiddleware) -> None:
    """Make ``middleware`` the first component, so no other component's ``process_request`` sees an unproven caller.

    Falcon runs components in list order and ``add_middleware`` appends, so a component
    given to ``App(middleware=[...])`` (or ``cors_enable``'s) would otherwise run first.
    Falcon has no public way to prepend: its own list is reordered and prepared again,
    as ``add_middleware`` itself prepares it (tests cover the Falcon versions the extra allows).
    """
    components: list[Any] = app._unprepared_middleware
    components.remove(middleware)
    components.insert(0, middleware)
    app._middleware = app._prepare_middleware(components, independent_middleware=app._independent_middleware)


def get_principal(req: falcon.asgi.Request) -> Principal:
    """The authenticated caller; 401 where there is none (a public path)."""
    return principal_or_401(getattr(req.context, "principal", None), "responder")


def require(
    *kinds: PrincipalKind, scopes: Sequence[str] = ()
) -> Callable[[falcon.asgi.Request, Any, Any, dict[str, Any]], Awaitable[None]]:
    """A ``@falcon.before`` hook admitting only the given kinds (any, if none given) holding every scope."""
    needed = requirement(kinds, scopes)

    async def hook(req: falcon.asgi.Request, resp: Any, resource: Any, params: dict[str, Any]) -> None:
        admit(get_principal(req), getattr(req.context, "scopes", ()), kinds, needed, where="responder")

    return hook
