"""Sanic integration: request middleware, an exception handler and server listeners, native to Sanic.

    from cfaccess_mw.sanic import CloudflareAccess, get_principal

    app = Sanic("app")
    CloudflareAccess(app, user_lookup=find_user)

    @app.get("/me")
    async def me(request: Request) -> HTTPResponse:
        return json({"who": get_principal(request).display_name})   # typed as Principal

Why not the ASGI middleware: Sanic's own server is not an ASGI server, and an app
wrapped in ASGI middleware is no longer a Sanic app it can run (``object has no
attribute 'prepare'``). So this module asks the shared
:class:`~cfaccess_mw.authenticator.Authenticator` directly, handing it the few facts
it reads (type, headers, client, path, root_path, method) built from Sanic's request.
The same code then serves Sanic's own server and Sanic under an ASGI server.

Where it hooks in, and why there: the decision is made at the ``http.routing.after``
signal, because Sanic reads a request's whole body between that signal and request
middleware; request middleware of the highest priority then raises any refusal again,
because Sanic runs request middleware on its error path too and would send whatever
an app's middleware returned there instead of the error. An exception handler for
:class:`~cfaccess_mw.errors.AuthError` answers with the one JSON rendering, for a
handler's refusal as well; a websocket handler's refusal after the upgrade closes
with 1008; ``before_server_start`` fetches the keys.

What lands where: ``request.ctx.principal`` (a :class:`Principal`, or ``None`` on a
public path) and ``request.ctx.scopes``; :func:`get_principal` and
:func:`get_scopes` read them typed. Sanic has no authentication of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import httpx
from sanic import Sanic
from sanic.models.asgi import MockTransport
from sanic.request import Request
from sanic.response import BaseHTTPResponse, HTTPResponse, raw

from ..core.audit import AuditHook
from ..core.authenticator import Authenticator, ExtraScopes, UserLookup
from ..core.errors import WS_POLICY_VIOLATION, AuthError, framework_error_response, send_error
from ..core.permissions import principal_or_401
from ..core.principals import Principal
from ..core.settings import Settings
from ..keys.jwks import JWKSClient
from .adapter import DeferredAuthenticator

__all__ = ["CloudflareAccess", "get_principal", "get_scopes", "scope_of_request"]

#: Request middleware with a higher priority runs earlier in Sanic; ours runs before the app's own.
PRIORITY = 1_000_000

AnyRequest = Request[Any, Any]


def scope_of_request(request: AnyRequest) -> dict[str, Any]:
    """The ASGI-shaped facts the authenticator reads, from a Sanic request.

    Headers go back to the bytes that arrived: Sanic decodes them as UTF-8 with
    ``surrogateescape`` (its own server and its ASGI adapter alike), which this
    reverses exactly, so a header the authenticator would find malformed stays so.
    The path is what Sanic's router matches, still percent-encoded, and there is no
    ``root_path``: Sanic routes on the whole path under an ASGI server too. The client
    is the socket's peer (``request.ip``), never a forwarded address.
    """
    headers = [
        (name.encode("utf-8", "surrogateescape").lower(), value.encode("utf-8", "surrogateescape"))
        for name, value in request.headers.items()
    ]
    route = request.route
    websocket = route is not None and getattr(route.handler, "is_websocket", False)
    return {
        "type": "websocket" if websocket else "http",
        "headers": headers,
        "client": (request.ip, request.port) if request.ip else None,
        "path": request.path,
        "root_path": "",
        "method": request.method,
    }


def _asgi_scope(request: AnyRequest) -> Mapping[str, Any]:
    """The ASGI scope when Sanic runs under an ASGI server; empty under Sanic's own server.

    Told by the transport, not ``app.asgi``: Sanic sets that flag only when the server runs its lifespan.
    """
    transport = request.transport
    return transport.scope if isinstance(transport, MockTransport) else {}


class _AsgiWebsocketRefusal(HTTPResponse):
    """Our refusal of a websocket handshake under an ASGI server, where Sanic would send it as
    ``http.response.start``, which an ASGI server refuses on a websocket (uvicorn answers 500).

    Sanic delivers an exception handler's response by calling its ``send``; this one hands the
    refusal to :func:`~cfaccess_mw.errors.send_error` on the raw ASGI channel instead, as the ASGI
    middleware does: the JSON error as ``websocket.http.response`` where the server offers that
    extension, else close 1008, after ``websocket.connect`` has been received.
    """

    def __init__(self, request: AnyRequest, err: AuthError) -> None:
        status, _, body = framework_error_response(err)
        super().__init__(body, status=status, content_type="application/json")
        self._transport = cast("MockTransport", request.transport)  # only built where _asgi_scope is not empty
        # Sanic's ASGI adapter reads a request body from receive(), on a websocket too, where the message it
        # gets is websocket.connect: it has consumed it when it has read the "body".
        self._connected = not getattr(request.stream, "request_body", True)
        self._err = err
        self._sent = False

    async def send(self, data: Any = None, end_stream: bool | None = None) -> None:
        if self._sent:
            return
        self._sent = True
        transport = self._transport
        await send_error(transport.scope, transport.receive, transport.send, self._err, connected=self._connected)


def get_principal(request: AnyRequest) -> Principal:
    """The caller of ``request``; 401 where none was authenticated (a public path, or no extension)."""
    return principal_or_401(getattr(request.ctx, "principal", None), "handler")


def get_scopes(request: AnyRequest) -> list[str]:
    """The caller's scopes (``extra_scopes`` applied); 401 where none was authenticated."""
    get_principal(request)
    return list(request.ctx.scopes)


class CloudflareAccess(DeferredAuthenticator):
    """Authenticate every request and websocket handshake of a Sanic app behind Cloudflare Access.

    Takes :class:`~cfaccess_mw.authenticator.Authenticator`'s options, or
    ``authenticator=`` to share one key set and token cache. The authenticator is
    built at :meth:`init_app`, so a bad ``CFACCESS_*`` variable raises
    :class:`~cfaccess_mw.errors.ConfigError`, naming it, from the app factory.
    """

    def __init__(
        self,
        app: Sanic[Any, Any] | None = None,
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
        options = {"settings": settings, "user_lookup": user_lookup, "audit_hook": audit_hook,
                   "extra_scopes": extra_scopes, "jwks": jwks, "transport": transport}  # fmt: skip
        super().__init__(authenticator, options, clock=clock)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Sanic[Any, Any]) -> None:
        """Register on ``app``: authentication once routing is done (the ``http.routing.after`` signal,
        before Sanic reads a request body) and again as request middleware ahead of the app's own (the
        gate Sanic always runs, also on its error path); the acceptance audit as response middleware;
        the JSON answer to every :class:`AuthError`; the key prefetch and release."""
        self.authenticator  # noqa: B018 - settings are read and checked now, in the app factory
        app.ctx.cfaccess_mw = self
        app.signal("http.routing.after")(self._on_routing)
        app.middleware(self._on_request, "request", priority=PRIORITY)
        app.middleware(self._on_response, "response")
        app.error_handler.add(AuthError, self._handle_auth_error)
        app.signal("websocket.handler.exception")(self._on_websocket_exception)
        app.before_server_start(self._startup)
        app.after_server_stop(self._shutdown)

    # --- listeners -----------------------------------------------------------------------------

    async def _startup(self, app: Sanic[Any, Any]) -> None:
        await self.authenticator.startup()

    async def _shutdown(self, app: Sanic[Any, Any]) -> None:
        await self.authenticator.aclose()

    # --- the decision --------------------------------------------------------------------------

    async def _on_routing(self, request: AnyRequest, **context: Any) -> None:
        """Decide as soon as the route is known: Sanic reads a POST's whole body (up to
        ``REQUEST_MAX_SIZE``) after this signal but before request middleware, and an unproven
        caller must not get that far. A refusal raised here comes back through the middleware."""
        await self._decide(request)

    async def _on_request(self, request: AnyRequest) -> None:
        """The gate: Sanic runs request middleware on every route, and on its error path (an unknown
        route's 404, a refusal from :meth:`_on_routing`) before any exception handler. Ours runs first."""
        await self._decide(request)

    async def _decide(self, request: AnyRequest) -> None:
        """Authenticate once per request; a refusal is kept and raised again at every later call."""
        ctx = request.ctx
        decided = getattr(ctx, "_cfaccess_mw", None)
        if decided is not None:
            if isinstance(decided, AuthError):
                raise decided
            return
        ctx.principal = None
        ctx.scopes = []
        self._answer_refusals_on(request)
        auth = self.authenticator
        scope = scope_of_request(request)
        if auth.is_public(scope):
            ctx._cfaccess_mw = True
            return
        try:
            principal, scopes = await auth.authenticate(scope)
        except AuthError as err:
            ctx._cfaccess_mw = err
            raise  # answered by _handle_auth_error
        ctx._cfaccess_mw = True
        ctx.principal = principal
        ctx.scopes = scopes
        if scope["type"] == "websocket" and auth.audits_acceptances:
            await auth.audit(scope, None, principal=principal)  # a websocket gets no response middleware

    def _answer_refusals_on(self, request: AnyRequest) -> None:
        """Make ours the handler for an :class:`AuthError` on this request's route, unless the app gave one.

        Sanic looks a handler up for the route's name across the exception's whole MRO
        before it looks at app-wide handlers: a blueprint's ``@bp.exception(Exception)``
        (registered for its routes' names) would come before our app-wide one and answer
        every refusal on those routes with its own page (a 500, say). Registered per route
        name when a request first reaches it, before any refusal there is looked up (Sanic
        remembers what a lookup found).
        """
        name = request.name
        if name is None:
            return  # not routed: only app-wide handlers apply, ours among them
        error_handler = request.app.error_handler
        if (AuthError, name) not in error_handler.cached_handlers:
            error_handler.add(AuthError, self._handle_auth_error, route_names=[name])

    # --- answers -------------------------------------------------------------------------------

    async def _on_response(self, request: AnyRequest, response: BaseHTTPResponse) -> None:
        """Audit an acceptance with the status the app answered, unless the request was refused after all."""
        principal = getattr(request.ctx, "principal", None)
        auth = self.authenticator
        if isinstance(principal, Principal) and not getattr(request.ctx, "refused", False) and auth.audits_acceptances:
            await auth.audit(scope_of_request(request), response.status, principal=principal)

    async def _handle_auth_error(self, request: AnyRequest, err: AuthError) -> HTTPResponse:
        """Answer an :class:`AuthError` from the decision or a handler: audited, then our JSON refusal."""
        request.ctx.refused = True
        await self.authenticator.audit(scope_of_request(request), err.status_code, err=err)
        if _asgi_scope(request).get("type") == "websocket":
            return _AsgiWebsocketRefusal(request, err)
        status, headers, body = framework_error_response(err)
        return raw(body, status=status, headers=headers, content_type="application/json")

    async def _on_websocket_exception(self, request: AnyRequest, websocket: Any, exception: Exception) -> None:
        """A websocket handler that raises an :class:`AuthError` after the upgrade: audited, closed with 1008
        (Sanic would log the error and close with 1000)."""
        if not isinstance(exception, AuthError):
            return
        request.ctx.refused = True
        await self.authenticator.audit(scope_of_request(request), exception.status_code, err=exception)
        if _asgi_scope(request):
            # Sanic's ASGI websocket ignores close(): say it to the server directly.
            transport = cast("MockTransport", request.transport)
            await transport.send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
        else:
            await websocket.close(WS_POLICY_VIOLATION, exception.code)
