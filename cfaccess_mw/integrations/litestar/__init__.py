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
from typing import TypeAlias

from litestar import Request, WebSocket
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi.spec import Components, Reference, SecurityRequirement, SecurityScheme
from litestar.types import Method, Scope, Scopes

from ...core.audit import AuditHook
from ...core.authenticator import Authenticator, ExtraScopes, UserLookup
from ...core.errors import AuthError
from ...core.principals import Principal
from ...core.providers import PRESETS, token_header
from ...core.settings import Settings
from ..adapter import check_options
from .guards import (
    AccessNotAuthorized,
    AccessPermissionDenied,
    AccessRefused,
    AccessUnavailable,
    _scope_dict,
    provide_principal,
    refusal_for,
    render_refusal,
    require,
)
from .middleware import _REFUSAL, AccessAuthenticationMiddleware

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


SCHEME_TOKEN = "CloudflareAccess"
SCHEME_API_KEY = "ApiKey"


# --- the configuration (the middleware is in middleware.py, refusals and guards in guards.py) ----------


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
