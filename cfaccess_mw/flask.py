"""Flask integration: an ``init_app`` extension that authenticates before any of the app's own hooks, a typed
``current_principal``, ``require(...)`` for views, and refusals answered through Flask's error handling.

    from cfaccess_mw.flask import CloudflareAccess, current_principal, require

    app = Flask(__name__)
    CloudflareAccess(app, user_lookup=find_user)     # or: cfaccess = CloudflareAccess(); cfaccess.init_app(app)

    @app.get("/me")
    def me() -> dict[str, str]:
        return {"who": current_principal.display_name}   # typed as Principal

    @app.get("/reports")
    @require("user", scopes=["admin"])
    def reports() -> str: ...

Where it hooks in: Flask's ``request_started`` signal, which ``full_dispatch_request``
sends after routing and before ``preprocess_request`` runs the app's
``url_value_preprocessor`` and ``before_request`` functions (a first
``before_request`` would run after the URL value preprocessors, which may already
load a row named by the URL). A refusal raised there goes through Flask's error
handling like a view's: this extension's ``errorhandler(AuthError)`` answers it with
the package's JSON (``after_request`` hooks still run on it, so CORS or security
headers the app adds are there). :class:`~cfaccess_mw.errors.AuthError` is not a
Werkzeug ``HTTPException``, so an app's ``errorhandler(403)`` (or one for
``HTTPException``) never turns a refusal into its HTML page, and an app-level
``errorhandler(Exception)`` is less specific than ours. A blueprint's own
``errorhandler(Exception)`` does come first in Flask's lookup: the request is still
refused (the view never runs), but that handler writes the answer.

What runs before the decision is Flask's own request set-up: routing and opening
the session (a server-side session store is asked about the cookie's session id),
and other receivers of ``request_started`` (blinker does not order receivers).

Static files are served by a view like any other and so are protected, unless
their path is in ``CFACCESS_PUBLIC_PATHS``. Refusals and acceptances are audited
once per request, at ``request_finished``, with the status Flask answered.

The caller lands where the WSGI middleware puts it (``request.environ
["cfaccess_mw.principal"]`` and ``["cfaccess_mw.scopes"]``), so
:data:`current_principal`, :func:`get_scopes` and :func:`require` also work behind
:class:`~cfaccess_mw.wsgi.CloudflareAccessWSGIMiddleware` around ``app.wsgi_app``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from flask import Flask, Response, g, request, request_finished, request_started
from werkzeug.local import LocalProxy

from .adapter import DeferredAuthenticator
from .audit import AuditHook
from .authenticator import Authenticator, ExtraScopes, UserLookup
from .errors import AuthError, Reason, Unauthorized, framework_error_response
from .keysources import KeyStore
from .permissions import admit, guard, requirement
from .principals import Principal, PrincipalKind
from .settings import Settings
from .wsgi import PRINCIPAL_KEY, SCOPES_KEY, check_sync, decide, wsgi_scope

__all__ = ["CloudflareAccess", "current_principal", "get_principal", "get_scopes", "require"]

View = TypeVar("View", bound=Callable[..., Any])

#: On ``g``: the request's scope as the decision read it, and the refusal it got (if any).
_SCOPE = "_cfaccess_mw_scope"
_REFUSED = "_cfaccess_mw_refused"


def get_principal() -> Principal:
    """The caller of the current request; 401 where none was authenticated (a public path)."""
    principal = request.environ.get(PRINCIPAL_KEY)
    if isinstance(principal, Principal):
        return principal
    raise Unauthorized(Reason.NO_CREDENTIALS, "Authentication required.", "view requires a principal")


def get_scopes() -> list[str]:
    """The caller's scopes (``extra_scopes`` applied); 401 where none was authenticated."""
    get_principal()
    return list(request.environ.get(SCOPES_KEY) or ())


current_principal: Principal = cast("Principal", LocalProxy(get_principal))
"""The current caller, as Flask's ``request`` is the current request: a proxy typed as :class:`Principal`."""


def require(*kinds: PrincipalKind, scopes: Sequence[str] = ()) -> Callable[[View], View]:
    """A view decorator admitting only the given kinds (any, if none given) holding every scope in ``scopes``;
    the others get the package's JSON 401/403. Put it below ``@app.route`` (nearest the function)."""
    needed = requirement(kinds, scopes)

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        admit(get_principal(), get_scopes(), kinds, needed, where="view")

    def decorate(view: View) -> View:
        return cast(View, guard(view, check))

    return decorate


class CloudflareAccess(DeferredAuthenticator):
    """Authenticate every request of a Flask app behind Cloudflare Access (or another proxy's preset).

    Takes the WSGI middleware's options, or ``authenticator=`` to share one key set and
    token cache. The authenticator is built at :meth:`init_app`, so a module-level
    ``CloudflareAccess()`` reads no settings at import; a bad ``CFACCESS_*`` variable
    raises :class:`~cfaccess_mw.errors.ConfigError` from the app factory, naming it, and
    an ``async def`` user lookup raises ``TypeError`` there (Flask calls it from a
    request thread, where nothing could await it).
    """

    def __init__(
        self,
        app: Flask | None = None,
        settings: Settings | None = None,
        *,
        authenticator: Authenticator | None = None,
        user_lookup: UserLookup | None = None,
        audit_hook: AuditHook | None = None,
        extra_scopes: ExtraScopes | None = None,
        jwks: KeyStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        options = {"settings": settings, "user_lookup": user_lookup, "audit_hook": audit_hook,
                   "extra_scopes": extra_scopes, "jwks": jwks}  # fmt: skip
        super().__init__(authenticator, options, clock=clock)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Hook into ``app``: the decision at ``request_started``, the JSON answer to every :class:`AuthError`,
        the audit at ``request_finished``; the keys are fetched now (no request waits for them)."""
        auth = self.authenticator  # settings are read and checked now, in the app factory
        check_sync(auth)
        app.extensions["cfaccess_mw"] = self
        # weak=False: blinker holds bound methods weakly, and nothing else need keep this object alive.
        request_started.connect(self._authenticate, app, weak=False)
        request_finished.connect(self._audit, app, weak=False)
        app.register_error_handler(AuthError, self._handle_auth_error)
        auth.startup_sync()

    # --- hooks ---------------------------------------------------------------------------------

    def _authenticate(self, sender: Flask, **extra: Any) -> None:
        """Decide the request (a refusal is raised into Flask's error handling); leave the caller in environ."""
        environ = request.environ
        scope = wsgi_scope(environ)
        setattr(g, _SCOPE, scope)
        decided = decide(self.authenticator, scope)
        if decided is None:
            environ[PRINCIPAL_KEY] = None
            environ[SCOPES_KEY] = []
        else:
            environ[PRINCIPAL_KEY], environ[SCOPES_KEY] = decided

    def _handle_auth_error(self, err: AuthError) -> Response:
        """Answer an :class:`AuthError` from the decision or from a view with our JSON (audited at the end)."""
        setattr(g, _REFUSED, err)
        status, headers, body = framework_error_response(err)
        return Response(body, status=status, headers=headers, content_type="application/json")

    def _audit(self, sender: Flask, response: Response, **extra: Any) -> None:
        """One audit event per request: the refusal, or the acceptance with the status Flask answered."""
        scope = g.get(_SCOPE)
        if scope is None:  # the app answered before request_started (nothing was decided)
            return
        auth = self.authenticator
        refused: AuthError | None = g.get(_REFUSED)
        if refused is not None:
            auth.audit_sync(scope, refused.status_code, err=refused)
            return
        principal = request.environ.get(PRINCIPAL_KEY)
        if isinstance(principal, Principal) and auth.audits_acceptances:
            auth.audit_sync(scope, response.status_code, principal=principal)
