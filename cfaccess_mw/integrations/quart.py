"""Quart integration: an extension in Flask's ``init_app`` style, a typed ``current_principal``, and refusals
answered by an ``errorhandler(AuthError)`` in the package's JSON shape.

    from cfaccess_mw.quart import CloudflareAccess, current_principal

    app = Quart(__name__)
    CloudflareAccess(app, user_lookup=find_user)     # or: cfaccess = CloudflareAccess(); cfaccess.init_app(app)

    @app.get("/me")
    async def me() -> dict[str, str]:
        return {"who": current_principal.display_name}   # typed as Principal

Why an extension and not the ASGI middleware around ``app.asgi_app`` (which also
works, and is tested): Quart's own hooks see the decision. A refusal goes through
Quart's error handling (``after_request`` hooks, its response class), an
``AuthError`` raised in a view becomes the same JSON refusal instead of Quart's 500,
``before_serving`` fetches the keys (Quart's test client runs it in ``test_app()``),
and views read the caller from a typed proxy rather than an untyped
``request.scope["user"]``, which Quart's scope type does not even declare.

What lands where: ``request.scope["user"]`` and ``["auth"]`` as the ASGI middleware
sets them (a :class:`Principal` and Starlette's ``AuthCredentials``), read back by
:data:`current_principal` and :func:`get_scopes`, which therefore also work
behind the raw middleware. The scopes are a function, not a proxy: a proxy typed
``list[str]`` would fail where a real list is needed (``json.dumps``).

Quart has no authentication of its own; Quart-Auth's ``current_user`` (its cookie
login) does not see this caller.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, MutableMapping
from typing import Any, cast

import httpx
from quart import Quart, Response, g, has_websocket_context, request, websocket
from quart.typing import ResponseReturnValue, ResponseTypes
from starlette.authentication import AuthCredentials
from werkzeug.local import LocalProxy

from ..core.audit import AuditHook
from ..core.authenticator import Authenticator, ExtraScopes, UserLookup
from ..core.errors import WS_POLICY_VIOLATION, AuthError, framework_error_response
from ..core.permissions import principal_or_401
from ..core.principals import Principal
from ..core.settings import Settings
from ..keys.jwks import JWKSClient
from .adapter import DeferredAuthenticator

__all__ = ["CloudflareAccess", "current_principal", "get_principal", "get_scopes"]

#: Whether the current request was refused, on ``g`` (one app context per request or websocket in Quart).
_REFUSED = "_cfaccess_mw_refused"


def _scope() -> MutableMapping[str, Any]:
    """The current request's or websocket's ASGI scope (Quart types it as a TypedDict without ``user``)."""
    source = websocket if has_websocket_context() else request
    return cast("MutableMapping[str, Any]", source.scope)


def get_principal() -> Principal:
    """The caller of the current request or websocket; 401 where none was authenticated (a public path)."""
    return principal_or_401(_scope().get("user"), "view")


def get_scopes() -> list[str]:
    """The caller's scopes (``extra_scopes`` applied); 401 where none was authenticated."""
    get_principal()
    credentials = _scope().get("auth")
    return list(credentials.scopes) if isinstance(credentials, AuthCredentials) else []


current_principal: Principal = cast("Principal", LocalProxy(get_principal))
"""The current caller, as Quart's ``request`` is the current request: a proxy typed as :class:`Principal`."""


class CloudflareAccess(DeferredAuthenticator):
    """Authenticate every request and websocket of a Quart app behind Cloudflare Access.

    Takes :class:`~cfaccess_mw.authenticator.Authenticator`'s options, or
    ``authenticator=`` to share one key set and token cache (several apps, or this
    and the ASGI middleware). The authenticator is built at :meth:`init_app`, so a
    module-level ``CloudflareAccess()`` reads no settings at import; a bad
    ``CFACCESS_*`` variable raises :class:`~cfaccess_mw.errors.ConfigError` from the
    app factory, naming it, before the server starts.
    """

    def __init__(
        self,
        app: Quart | None = None,
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

    def init_app(self, app: Quart) -> None:
        """Wire ``app``: authentication before any of its own code for a request or websocket (see
        :meth:`_authenticate_first`), the key prefetch at ``before_serving``, and the JSON answer to
        every :class:`AuthError`."""
        self.authenticator  # noqa: B018 - settings are read and checked now, in the app factory
        app.extensions["cfaccess_mw"] = self
        self._authenticate_first(app)
        app.after_request(self._after_request)
        app.register_error_handler(AuthError, self._handle_auth_error)
        app.before_serving(self.authenticator.startup)
        app.after_serving(self.authenticator.aclose)

    # --- hooks ---------------------------------------------------------------------------------

    def _authenticate_first(self, app: Quart) -> None:
        """Decide before Quart runs any of the app's code for the request or websocket.

        Quart's ``full_dispatch_request`` sends ``request_started``, then runs every
        ``url_value_preprocessor`` (plain functions, which cannot await a decision), and
        only then the ``before_request`` hooks; an app's "load the object, 404 if missing"
        preprocessor would tell an unproven caller which ids exist. So authentication
        wraps ``full_dispatch_request`` and ``full_dispatch_websocket`` themselves, on this
        app: a refusal is answered through Quart's own ``handle_user_exception`` and
        ``finalize_request`` (so ``after_request`` hooks and error handlers still see it),
        and none of the app's signals, preprocessors or hooks run.
        """
        dispatch_request = app.full_dispatch_request
        dispatch_websocket = app.full_dispatch_websocket
        # Quart 0.23 passes the app context first to these methods (full_dispatch_request(ctx),
        # handle_user_exception(ctx, error), finalize_request(ctx, result)); 0.20-0.22 pass an optional request
        # context last (full_dispatch_request(request_context), finalize_request(result, request_context)).
        ctx_first = "ctx" in inspect.signature(app.handle_user_exception).parameters
        quart: Any = app  # typed against one Quart version; called here in the form of either

        async def full_dispatch_request(*context: Any) -> ResponseTypes:
            self._answer_refusals_in(app, request.blueprints)
            try:
                await self._authenticate(request.scope, request.path)
            except AuthError as err:
                if ctx_first:
                    answer = await quart.finalize_request(*context, await quart.handle_user_exception(*context, err))
                else:
                    answer = await quart.finalize_request(await quart.handle_user_exception(err), *context)
                return cast(ResponseTypes, answer)
            return await dispatch_request(*context)

        async def full_dispatch_websocket(*context: Any) -> ResponseTypes | None:
            self._answer_refusals_in(app, websocket.blueprints)
            refusal = await self._authenticate_websocket()
            if refusal is not None:
                finalize = quart.finalize_websocket
                done = await (finalize(*context, refusal) if ctx_first else finalize(refusal, *context))
                return cast("ResponseTypes | None", done)
            return await dispatch_websocket(*context)

        quart.full_dispatch_request = full_dispatch_request
        quart.full_dispatch_websocket = full_dispatch_websocket

    def _answer_refusals_in(self, app: Quart, blueprints: list[str]) -> None:
        """Make ours the handler for an :class:`AuthError` in each blueprint of the request that has handlers of
        its own, unless it has one for AuthError already.

        Quart (as Flask) tries a blueprint's handlers for every class of the error before
        the app's: a blueprint's ``errorhandler(Exception)`` would come before our app-wide
        handler and answer every refusal on its routes with its own page (a 500, say).
        Blueprints may be registered after ``init_app``, so this is checked per request.
        """
        for name in blueprints:
            handlers = app.error_handler_spec[name][None]
            if handlers and AuthError not in handlers:
                handlers[AuthError] = self._handle_auth_error

    async def _authenticate_websocket(self) -> Response | None:
        """``None`` for an accepted (or public) websocket; else the refusal, sent before any accept."""
        scope = cast("MutableMapping[str, Any]", websocket.scope)
        try:
            principal = await self._authenticate(scope, websocket.path)
        except AuthError as err:
            # Before the handler, so before any accept: the JSON answer where the server can send one.
            response = await self._refusal(scope, err)
            if "websocket.http.response" not in (scope.get("extensions") or {}):
                await websocket.close(WS_POLICY_VIOLATION, err.code)
            return response
        if principal is not None and self.authenticator.audits_acceptances:
            # Now, not at the end: a websocket may last hours, and a client that leaves cancels Quart's hooks.
            await self.authenticator.audit(scope, None, principal=principal)
        return None

    async def _authenticate(self, raw_scope: Any, routed: str) -> Principal | None:
        """Set ``scope["user"]`` and ``["auth"]`` for the caller (``None`` on a public path), or raise.

        Public paths are matched on ``routed``, the path Quart's router matches (``request.path``), not
        the scope's: Quart removes ``root_path`` itself and makes a path outside it ``"/ "`` (which a
        ``/<name>`` route matches), and werkzeug drops a run of leading slashes.
        """
        scope = cast("MutableMapping[str, Any]", raw_scope)
        auth = self.authenticator
        if auth.is_public(scope, routed):
            return None
        principal, scopes = await auth.authenticate(scope)
        scope["user"] = principal
        scope["auth"] = AuthCredentials(scopes)
        return principal

    async def _after_request(self, response: ResponseTypes) -> ResponseTypes:
        """Audit an acceptance with the status the app answered, unless the request was refused after all."""
        principal = request.scope.get("user")
        auth = self.authenticator
        if isinstance(principal, Principal) and not getattr(g, _REFUSED, False) and auth.audits_acceptances:
            await auth.audit(request.scope, response.status_code, principal=principal)
        return response

    async def _handle_auth_error(self, err: AuthError) -> ResponseReturnValue:
        """Answer an :class:`AuthError` from our hook or from a view: audited, then our JSON refusal.

        A view's refusal on a websocket may come after ``accept``, when no HTTP answer is
        possible: the socket is closed with 1008 (before ``accept`` the server turns that
        close into a 403), and the JSON body is what Quart would have sent otherwise.
        """
        if not has_websocket_context():
            return await self._refusal(cast("MutableMapping[str, Any]", request.scope), err)
        scope = cast("MutableMapping[str, Any]", websocket.scope)
        response = await self._refusal(scope, err)
        with contextlib.suppress(RuntimeError):  # raised when the view closed it already
            await websocket.close(WS_POLICY_VIOLATION, err.code)
        return response

    async def _refusal(self, scope: MutableMapping[str, Any], err: AuthError) -> Response:
        setattr(g, _REFUSED, True)
        await self.authenticator.audit(scope, err.status_code, err=err)
        status, headers, body = framework_error_response(err)
        return Response(body, status=status, headers=headers, content_type="application/json")
