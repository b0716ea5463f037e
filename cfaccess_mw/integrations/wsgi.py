"""WSGI: the :class:`~cfaccess_mw.authenticator.Authenticator`'s decision in front of any PEP 3333 app.

    from cfaccess_mw.wsgi import CloudflareAccessWSGIMiddleware

    application = CloudflareAccessWSGIMiddleware(application, user_lookup=find_user)

Per request, as the ASGI middleware does: a public path passes through
unauthenticated; everything else is authenticated and either reaches the app with
``environ["cfaccess_mw.principal"]`` (a :class:`~cfaccess_mw.principals.Principal`,
``None`` on a public path) and ``environ["cfaccess_mw.scopes"]`` set, or is refused
with the package's JSON error (:func:`~cfaccess_mw.errors.error_response`, the one
place a refusal is rendered). Every method is judged alike, ``HEAD`` and
``OPTIONS`` included (a CORS preflight without credentials is refused: list its
path as public, or answer it in front of this middleware).

The decision runs in the request's own thread (``Authenticator.identify_sync``), so
the user lookup must be a plain ``def``: an ``async def`` one is refused when the
middleware is built. WSGI has no lifespan, so the settings are read and the keys
fetched when the middleware is built: a bad ``CFACCESS_*`` variable raises
:class:`~cfaccess_mw.errors.ConfigError` naming it, and the server does not start.

Nothing this module does becomes a 500: an error of its own while deciding is a 503
``internal_error`` (logged by type only), as a failing lookup is a 503
``user_lookup_failed``. What the app raises is the app's, except an
:class:`~cfaccess_mw.errors.AuthError` raised before it starts its answer, which
becomes the same JSON refusal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from types import TracebackType
from typing import Any, TypeAlias

from ..core.audit import AuditHook, request_facts
from ..core.authenticator import Authenticator, ExtraScopes
from ..core.errors import AuthError, error_response, internal_error
from ..core.principals import Principal
from ..core.settings import Settings
from ..core.users import UserLookup, is_async_callable
from ..keys.sources import KeyStore
from .adapter import DeferredAuthenticator
from .wsgi_scope import WSGIScope, decision_headers, wsgi_scope

__all__ = [
    "PRINCIPAL_KEY",
    "SCOPES_KEY",
    "CloudflareAccessWSGIMiddleware",
    "WSGIScope",
    "check_sync",
    "decide",
    "decision_headers",
    "refusal",
    "status_code",
    "wsgi_scope",
]

#: Where the caller is left for the app: the Principal (``None`` on a public path) and its scopes.
PRINCIPAL_KEY = "cfaccess_mw.principal"
SCOPES_KEY = "cfaccess_mw.scopes"

ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIEnviron = dict[str, Any]
WSGIApp = Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]

# --- the decision, for every sync adapter -------------------------------------------------------


def check_sync(auth: Authenticator) -> None:
    """Refuse, when a sync adapter is built, what only an event loop could call: an ``async def`` lookup or
    audit hook (a coroutine from a request thread would never run, and a lookup's would be taken for a user)."""
    for name, function in (("user_lookup", auth.user_lookup), ("audit_hook", auth.audit_hook)):
        if function is not None and is_async_callable(function):
            raise TypeError(
                f"{name} is an 'async def', which a WSGI app cannot await: give a plain 'def' "
                f"(or use the ASGI middleware, cfaccess_mw.CloudflareAccessMiddleware)"
            )


def decide(auth: Authenticator, scope: Mapping[str, Any]) -> tuple[Principal, list[str]] | None:
    """The caller of a request and its scopes, ``None`` on a public path, or the :class:`AuthError` refusing it.

    A plain pair rather than an :class:`~cfaccess_mw.authenticator.Authenticated` (a
    named tuple's constructor is a Python call, on every request). Anything else raised
    while deciding is a bug (ours, or an odd object from the app): it is logged by type
    only and becomes a 503 ``internal_error``, never a 500 and never a pass.
    """
    try:
        if auth.is_public(scope):
            return None
        principal = auth.identify_sync(scope)
        return principal, auth.scopes_for(principal)
    except AuthError:
        raise
    except Exception as exc:
        raise internal_error(exc) from None


def refusal(err: AuthError, method: str) -> tuple[str, list[tuple[str, str]], list[bytes]]:
    """WSGI's status line, headers and body for a refusal (:func:`error_response`'s; no body for ``HEAD``)."""
    status, headers, body = error_response(err)
    status_line = f"{status} {HTTPStatus(status).phrase}"
    pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
    return status_line, pairs, [] if method == "HEAD" else [body]


def status_code(status: str) -> int | None:
    """The number of a WSGI status line (``None`` if it has none), for an audit event."""
    code = status[:3]
    return int(code) if code.isdigit() else None


class CloudflareAccessWSGIMiddleware:
    """Authenticate every request to a WSGI app behind Cloudflare Access (or another proxy's preset).

    The options are the ASGI middleware's (:class:`~cfaccess_mw.middleware.CloudflareAccessMiddleware`):
    ``settings=None`` reads ``CFACCESS_*``; ``authenticator=`` shares one key set and token
    cache with other middleware, never beside the options that would build one.
    """

    def __init__(
        self,
        app: WSGIApp,
        settings: Settings | None = None,
        *,
        authenticator: Authenticator | None = None,
        user_lookup: UserLookup | None = None,
        audit_hook: AuditHook | None = None,
        extra_scopes: ExtraScopes | None = None,
        jwks: KeyStore | None = None,
        clock: Callable[[], float] = time.time,
        user_cache_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        options = {"settings": settings, "user_lookup": user_lookup, "audit_hook": audit_hook,
                   "extra_scopes": extra_scopes, "jwks": jwks}  # fmt: skip
        # Built now, not deferred as in an extension: a bad CFACCESS_* variable stops the app where it is wrapped.
        authenticator = DeferredAuthenticator(
            authenticator, options, clock=clock, user_cache_clock=user_cache_clock
        ).authenticator
        check_sync(authenticator)
        self.authenticator = authenticator
        self._headers = decision_headers(authenticator)
        # No lifespan in WSGI: fetch now, so a wrong team domain is logged at start-up and the first request
        # does not wait (a failure is logged; requests then get 503 until a fetch succeeds).
        authenticator.startup_sync()

    @property
    def settings(self) -> Settings:
        return self.authenticator.settings

    def forget_user(self, email: str) -> None:
        """Drop ``email``'s user from the user cache (:meth:`Authenticator.forget_user`)."""
        self.authenticator.forget_user(email)

    def close(self) -> None:
        """Let a background key refresh finish (call it when the app stops, if you can)."""
        self.authenticator.close_sync()

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        auth = self.authenticator
        scope = wsgi_scope(environ, self._headers)
        try:
            decided = decide(auth, scope)
        except AuthError as err:
            return self._refuse(auth, scope, err, start_response)
        if decided is None:
            environ[PRINCIPAL_KEY] = None
            environ[SCOPES_KEY] = []
            return self.app(environ, start_response)
        principal, scopes = decided
        environ[PRINCIPAL_KEY] = principal
        environ[SCOPES_KEY] = scopes
        return self._call_app(auth, scope, principal, environ, start_response)

    def _call_app(
        self,
        auth: Authenticator,
        scope: Mapping[str, Any],
        principal: Principal,
        environ: WSGIEnviron,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        """Run the app; audit the acceptance with the status it answers (when it calls ``start_response``).

        An :class:`AuthError` the app raises before it starts its answer becomes our refusal,
        audited as one; after that it propagates (a refusal cannot replace an answer under way).
        """
        started = False
        audit = auth.audits_acceptances
        if audit:
            # The audit's facts as the decision saw them, read now: the scope reads the environ lazily, and the app
            # may rewrite it in place before it answers (ProxyFix sets REMOTE_ADDR from X-Forwarded-For).
            request_facts(scope)

        def tracking_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Any:
            nonlocal started
            if not started:
                started = True
                if audit:
                    auth.audit_sync(scope, status_code(status), principal=principal)
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, tracking_start_response)
        except AuthError as err:
            if started:
                raise
            return self._refuse(auth, scope, err, start_response)
        except Exception:
            if audit and not started:
                auth.audit_sync(scope, None, principal=principal)
            raise

    @staticmethod
    def _refuse(
        auth: Authenticator, scope: Mapping[str, Any], err: AuthError, start_response: StartResponse
    ) -> list[bytes]:
        auth.audit_sync(scope, err.status_code, err=err)
        status_line, headers, body = refusal(err, scope["method"])
        start_response(status_line, headers)
        return body

    def __repr__(self) -> str:
        return f"CloudflareAccessWSGIMiddleware({self.authenticator!r})"
