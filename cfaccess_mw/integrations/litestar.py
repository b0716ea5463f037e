"""Litestar integration: one security config, one :class:`Authenticator`, however many middleware Litestar builds.

Litestar builds app-level middleware once per route handler, after routing (a
single route gave 22 instances, 20 of them for the OpenAPI routes), and lifespan
never reaches them. A middleware that built its own key set would fetch the
certs once per route and never at startup. So the configuration lives in one
object, like Litestar's own ``JWTAuth``, that owns the one Authenticator and hands
it to every middleware instance; its ``on_app_init`` also prefetches the keys at
startup, renders every refusal in our JSON shape and documents the schemes in
OpenAPI::

    from cfaccess_mw.litestar import AccessRequest, CloudflareAccessAuth

    access = CloudflareAccessAuth(user_lookup=find_user)     # reads CFACCESS_*; a bad variable raises here

    @get("/me")
    async def me(request: AccessRequest) -> dict[str, str]:
        return {"who": request.user.display_name}      # request.user is a Principal, request.auth its scopes

    app = Litestar([me], on_app_init=[access.on_app_init])     # or plugins=[access]

Refusals are raised as Litestar's own exceptions (:class:`NotAuthorizedException`,
:class:`PermissionDeniedException`, :class:`ServiceUnavailableException`, each
carrying the :class:`~cfaccess_mw.errors.AuthError`), so ``after_exception`` hooks
see them as they see any other; the handlers installed here render them, and an
``AuthError`` raised by a handler or guard, with
:func:`~cfaccess_mw.errors.error_response` (an app's own handler for status 401,
403 or 503 takes precedence: Litestar looks status codes up before types). A
refused websocket handshake is answered by the core (the JSON denial where the
server supports it, else close 1008).
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import copy
from typing import Any, TypeAlias, cast
from urllib.parse import unquote

from litestar import Request, WebSocket
from litestar.config.app import AppConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import Headers, State
from litestar.di import NamedDependency, Provide
from litestar.enums import ScopeType
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ServiceUnavailableException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.middleware._utils import should_bypass_middleware
from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.openapi.spec import Components, Reference, SecurityRequirement, SecurityScheme
from litestar.response import Response
from litestar.types import ASGIApp, Guard, Message, Method, Receive, ReceiveMessage, Scope, Scopes, Send
from litestar.utils import normalize_path

from ..core.audit import REQUESTED_PATH, AuditHook
from ..core.authenticator import Authenticator, ExtraScopes, UserLookup
from ..core.errors import AuthError, AuthUnavailable, framework_error_response, send_error
from ..core.permissions import admit, principal_or_401, requirement
from ..core.principals import Principal, PrincipalKind
from ..core.providers import PRESETS, token_header
from ..core.settings import Settings
from .adapter import check_options
from .asgi import read_scope

__all__ = [
    "AccessAuthenticationMiddleware",
    "AccessNotAuthorized",
    "AccessPermissionDenied",
    "AccessRefused",
    "AccessRequest",
    "AccessUnavailable",
    "AccessWebSocket",
    "CloudflareAccessAuth",
    "CurrentPrincipal",
    "provide_principal",
    "refusal_for",
    "render_refusal",
    "require",
]

AccessRequest: TypeAlias = Request[Principal, list[str], State]
"""A request on a protected route: ``request.user`` is the :class:`Principal`, ``request.auth`` its scopes."""
AccessWebSocket: TypeAlias = WebSocket[Principal, list[str], State]
"""A websocket on a protected route: ``socket.user`` is the :class:`Principal`, ``socket.auth`` its scopes."""

CurrentPrincipal: TypeAlias = NamedDependency[Principal]
"""Annotate a handler parameter named ``principal`` with this to receive the caller (the config's dependency)."""

#: Where a refusal decided for this connection is kept, so it is audited once and never counted as an acceptance.
_REFUSAL = "cfaccess.refusal"
#: What a websocket app sends to start (or refuse) its answer.
_WS_STARTS = frozenset({"websocket.accept", "websocket.close", "websocket.http.response.start"})

SCHEME_TOKEN = "CloudflareAccess"
SCHEME_API_KEY = "ApiKey"


# --- refusals as Litestar exceptions ---------------------------------------------------------


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


def _scope_dict(scope: Scope) -> dict[str, Any]:
    """Litestar types the scope as a TypedDict; our own key in it is not one of its fields."""
    return cast("dict[str, Any]", scope)


def _read_once(scope: Scope) -> None:
    """ASGI allows any iterable for ``headers`` and ``client``; the authenticator must not use one up before the
    route reads it (:func:`~cfaccess_mw.asgi.read_scope`). Litestar's router has already iterated the headers
    looking for ``Host``, so a spent iterator is replaced by Litestar's own parsed copy (repeated headers kept)."""
    read_scope(_scope_dict(scope), parsed_headers=lambda: Headers.from_scope(scope).to_header_list())


#: The requested path of a mounted app's request whose raw path is missing (never public, never excluded).
_UNKNOWN_PATH = "/<mount>"


def _record_requested_path(scope: Scope) -> None:
    """Keep the path as requested (:data:`~cfaccess_mw.audit.REQUESTED_PATH`), ``root_path`` included as the
    server gave it, for the audit and for judging a mounted app.

    Litestar's router rewrites ``scope["path"]`` before any middleware runs: to the path
    with ``root_path`` removed, and for a mount (``asgi(..., is_mount=True)``,
    ``StaticFilesConfig``) to only the part below it. Judged on that,
    ``/private/healthz`` would match a public ``/healthz``, and ``exclude`` patterns and
    audit events would see ``/healthz``. The path as requested comes back from
    ``raw_path`` (decoded as servers decode it); without one a route keeps Litestar's
    path, and a mount's cannot be known: it is judged on no path at all, authenticated
    whatever ``exclude`` or ``CFACCESS_PUBLIC_PATHS`` say.
    """
    state = _scope_dict(scope)
    raw = state.get("raw_path")
    if isinstance(raw, bytes):
        state[REQUESTED_PATH] = unquote(raw.split(b"?", 1)[0].decode("latin-1"))
    elif getattr(state.get("route_handler"), "is_mount", False):
        state[REQUESTED_PATH] = _UNKNOWN_PATH


def _routed_path(scope: Scope) -> str | None:
    """The whole path Litestar's router matched, below ``root_path``; ``None`` for a mount without a raw path.

    Litestar removes ``root_path`` itself, by splitting the path at its first occurrence
    *anywhere* (``path.split(root_path, 1)[-1]``), and collapses repeated slashes, before
    any middleware runs. Judged on the scope's ``path`` and ``root_path`` instead, a
    request would be read twice: under uvicorn ``--root-path /api``, ``/api/healthz/x``
    routes to ``/api/healthz/x`` (a catch-all route) but, ``/api`` removed once more, would
    match a public ``/healthz``; under hypercorn, which does not put ``root_path`` in the
    path, ``/healthz/api/private/x`` routes to the mount at ``/private``. So for a route the
    path is Litestar's own result (``scope["path"]`` after routing); for a mount, whose
    ``scope["path"]`` is only the part below it, Litestar's steps are repeated on the path
    as requested (``raw_path``, decoded as servers decode it).
    """
    state = _scope_dict(scope)
    if not getattr(state.get("route_handler"), "is_mount", False):
        return state["path"]  # type: ignore[no-any-return]
    requested = state.get(REQUESTED_PATH)
    if requested is None or requested == _UNKNOWN_PATH:
        return None
    root_path: str = state.get("root_path", "")
    return normalize_path(requested.split(root_path, 1)[-1] if root_path else requested)


# --- the middleware --------------------------------------------------------------------------


class AccessAuthenticationMiddleware(AbstractAuthenticationMiddleware):
    """Authenticate each request with the shared :class:`Authenticator`; built by Litestar once per route.

    Never construct one by hand: :attr:`CloudflareAccessAuth.middleware` defines it
    with the config's one Authenticator, so every instance shares one key set and
    one token cache. Bypassed (as Litestar's own auth middleware is) for ``exclude``
    patterns, a route whose ``opt`` holds ``exclude_opt_key``, ``exclude_http_methods``
    (none by default: unlike Litestar's default, OPTIONS is not exempt), and
    ``CFACCESS_PUBLIC_PATHS``; there ``request.user`` is unset.
    """

    __slots__ = ("authenticator",)

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        exclude: str | list[str] | None = None,
        exclude_from_auth_key: str = "exclude_from_auth",
        exclude_http_methods: Sequence[Method] = (),
        scopes: Scopes | None = None,
    ) -> None:
        super().__init__(
            app,
            exclude=exclude,
            exclude_from_auth_key=exclude_from_auth_key,
            exclude_http_methods=exclude_http_methods,
            scopes=scopes,
        )
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _record_requested_path(scope)
        if self._bypass(scope):
            await self.app(scope, receive, send)
            return
        _read_once(scope)
        try:
            result = await self.authenticate_request(ASGIConnection(scope))
        except AccessRefused as exc:
            if scope["type"] == ScopeType.WEBSOCKET:
                await send_error(_scope_dict(scope), receive, send, exc.error)  # type: ignore[arg-type]
                return
            raise  # Litestar's exception handling renders it (with render_refusal) and runs its hooks
        scope["user"] = result.user
        scope["auth"] = result.auth
        await self._call_app(scope, receive, send, result.user)

    def _bypass(self, scope: Scope) -> bool:
        routed = _routed_path(scope)
        if routed is None:
            return False  # a mount whose full path cannot be known: neither public nor excluded
        return should_bypass_middleware(
            exclude_http_methods=self.exclude_http_methods,
            exclude_opt_key=self.exclude_opt_key,
            exclude_path_pattern=self.exclude,
            scope=cast("Scope", {**scope, "path": routed}),  # exclude patterns see the full path too
            scopes=self.scopes,
        ) or self.authenticator.is_public(scope, routed)

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        """The principal and its scopes, or the refusal (audited here) as a Litestar exception."""
        auth = self.authenticator
        try:
            principal, scopes = await auth.authenticate(connection)
        except AuthError as err:
            _scope_dict(connection.scope)[_REFUSAL] = err
            await auth.audit(connection, err.status_code, err=err)
            raise refusal_for(err) from None
        return AuthenticationResult(user=principal, auth=scopes)

    async def _call_app(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        """Run the route; audit the acceptance with the status it answers, unless a handler refused instead.

        A refusal raised in the handler or a guard is audited by the config's
        ``after_exception`` hook, which records it in the scope before Litestar answers;
        so the answer is not also counted as an acceptance. In a websocket Litestar
        answers any exception with close code 4500: a refusal's close is replaced by
        ours (the JSON denial or 1008 before accept, 1008 after).
        """
        auth = self.authenticator
        audit = auth.audits_acceptances
        websocket = scope["type"] == ScopeType.WEBSOCKET
        if not audit and not websocket:
            await self.app(scope, receive, send)
            return
        state = _scope_dict(scope)
        started = False
        connected = False

        async def tracking_receive() -> ReceiveMessage:
            nonlocal connected
            message = await receive()
            if message["type"] == "websocket.connect":
                connected = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            refused: AuthError | None = state.get(_REFUSAL)
            if websocket and refused is not None and message["type"] == "websocket.close":
                if not started:
                    started = True
                    await send_error(state, receive, send, refused, connected=connected)  # type: ignore[arg-type]
                    return
                message = {"type": "websocket.close", "code": 1008, "reason": refused.code}
            if not started and (not websocket or message["type"] in _WS_STARTS):
                started = True
                if audit and refused is None:
                    await auth.audit(scope, cast("int | None", message.get("status")), principal=principal)
            await send(message)

        try:
            await self.app(scope, tracking_receive if websocket else receive, tracking_send)
        except Exception:
            if audit and not started and state.get(_REFUSAL) is None:
                await auth.audit(scope, None, principal=principal)
            raise
        if audit and not started and state.get(_REFUSAL) is None:
            await auth.audit(scope, None, principal=principal)


# --- guards and the principal dependency -----------------------------------------------------


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


# --- the configuration ---------------------------------------------------------------------


class CloudflareAccessAuth:
    """The Litestar security config: one :class:`Authenticator` for the app, and everything Litestar needs.

    Pass ``authenticator=Authenticator(...)``, or the Authenticator's own options
    (``settings`` defaults to ``Settings.from_env()``, so a bad ``CFACCESS_*`` variable
    raises :class:`~cfaccess_mw.errors.ConfigError` here, before the app exists).

    ``exclude`` (regular expressions *searched* in the path, Litestar's semantics:
    anchor them, ``"^/healthz$"``), ``exclude_opt_key`` (a route whose ``opt`` sets it
    is public), ``exclude_http_methods`` (none by default) and ``scopes`` are those of
    Litestar's auth middleware; ``CFACCESS_PUBLIC_PATHS`` is honoured as well.
    ``dependency_key`` names the :class:`Principal` dependency (``None``: none); a handler
    takes it as ``principal: CurrentPrincipal``.
    """

    def __init__(
        self,
        authenticator: Authenticator | None = None,
        *,
        settings: Settings | None = None,
        user_lookup: UserLookup | None = None,
        audit_hook: AuditHook | None = None,
        extra_scopes: ExtraScopes | None = None,
        exclude: str | list[str] | None = None,
        exclude_opt_key: str = "exclude_from_auth",
        exclude_http_methods: Sequence[Method] = (),
        scopes: Scopes | None = None,
        dependency_key: str | None = "principal",
        openapi: bool = True,
    ) -> None:
        if authenticator is not None:
            check_options(authenticator, {"settings": settings, "user_lookup": user_lookup,
                          "audit_hook": audit_hook, "extra_scopes": extra_scopes})  # fmt: skip
        else:
            authenticator = Authenticator(
                settings, user_lookup=user_lookup, audit_hook=audit_hook, extra_scopes=extra_scopes
            )
        self.authenticator = authenticator
        self.exclude = exclude
        self.exclude_opt_key = exclude_opt_key
        self.exclude_http_methods = tuple(exclude_http_methods)
        self.scopes = scopes
        self.dependency_key = dependency_key
        self.openapi = openapi

    def __repr__(self) -> str:
        return f"CloudflareAccessAuth({self.authenticator!r})"

    @property
    def middleware(self) -> DefineMiddleware:
        """The middleware definition, every instance sharing this config's Authenticator."""
        return DefineMiddleware(
            AccessAuthenticationMiddleware,
            authenticator=self.authenticator,
            exclude=self.exclude,
            exclude_from_auth_key=self.exclude_opt_key,
            exclude_http_methods=self.exclude_http_methods,
            scopes=self.scopes,
        )

    @property
    def openapi_components(self) -> Components:
        """The two ways to call the API, for the generated docs: the proxy's token header and a Bearer API key."""
        schemes: dict[str, SecurityScheme | Reference] = {}
        settings = self.authenticator.settings
        header = token_header(settings)
        preset_header = PRESETS[settings.provider].header
        if preset_header.lower() == header:
            header = preset_header  # as the proxy spells it: Cf-Access-Jwt-Assertion
        if header.lower() != "authorization":  # an OIDC ID token sent as Bearer is covered by the API key's scheme
            schemes[SCHEME_TOKEN] = SecurityScheme(
                type="apiKey",
                name=header,
                security_scheme_in="header",
                description="The identity token the authenticating proxy adds at the edge, verified at the origin.",
            )
        schemes[SCHEME_API_KEY] = SecurityScheme(
            type="http",
            scheme="bearer",
            description="An API key configured in CFACCESS_API_KEYS, for CLIs, agents and the local operator.",
        )
        return Components(security_schemes=schemes)

    @property
    def security_requirements(self) -> list[SecurityRequirement]:
        return [{name: []} for name in self.openapi_components.security_schemes or {}]

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Wire the app: the middleware first, key prefetch at startup, our refusals, the dependency, OpenAPI.

        Works as ``Litestar(on_app_init=[access.on_app_init])`` and as ``Litestar(plugins=[access])``.
        """
        app_config.middleware.insert(0, self.middleware)
        app_config.on_startup.append(self.on_startup)
        app_config.on_shutdown.append(self.on_shutdown)
        app_config.after_exception.append(self.after_exception)
        for exc_type in (AuthError, AccessRefused):
            app_config.exception_handlers.setdefault(exc_type, render_refusal)
        if self.dependency_key is not None:
            app_config.dependencies.setdefault(self.dependency_key, Provide(provide_principal, sync_to_thread=False))
        if self.openapi and app_config.openapi_config is not None:
            openapi_config = app_config.openapi_config = copy(app_config.openapi_config)
            components = openapi_config.components
            if isinstance(components, list):
                components.append(self.openapi_components)
            else:
                openapi_config.components = [self.openapi_components, components]
            openapi_config.security = [*(openapi_config.security or []), *self.security_requirements]
        return app_config

    async def on_startup(self) -> None:
        """Fetch the signing keys once, at startup (however many middleware instances exist)."""
        await self.authenticator.startup()

    async def on_shutdown(self) -> None:
        await self.authenticator.aclose()

    async def after_exception(self, exc: Exception, scope: Scope) -> None:
        """Audit a refusal raised by a handler or guard, once, and mark it so it is not also an acceptance."""
        error = exc.error if isinstance(exc, AccessRefused) else exc
        if not isinstance(error, AuthError):
            return
        state = _scope_dict(scope)
        if state.get(_REFUSAL) is error:  # the middleware's own refusal, audited where it was decided
            return
        state[_REFUSAL] = error
        await self.authenticator.audit(scope, error.status_code, err=error)
