"""Django: a middleware that makes the verified caller Django's ``request.user``.

Django's own authentication reads ``request.user`` (``@login_required``,
``@permission_required``, ``LoginRequiredMiddleware``, the admin), so that is
where the caller must be. Put the middleware right after
``AuthenticationMiddleware``, which it overrides::

    MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "cfaccess_mw.django.CloudflareAccessMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ]
    # Optional; the defaults are shown. Each is a callable or its dotted path.
    CFACCESS_SETTINGS = None          # a cfaccess_mw.Settings; None reads the CFACCESS_* environment variables
    CFACCESS_USER_LOOKUP = "cfaccess_mw.django.user_model_lookup"
    CFACCESS_EXTRA_SCOPES = None      # principal -> scopes; must not query the database (it runs in the loop)
    CFACCESS_AUDIT_HOOK = None

What a request carries afterwards:

* ``request.principal`` is the :class:`~cfaccess_mw.principals.Principal` (``None`` on
  a public path) and ``request.principal_scopes`` its scopes (``extra_scopes`` applied).
* ``request.user`` (and ``await request.auser()``) is the app's user object for a
  ``user`` principal, as ``user_lookup`` found it, and ``AnonymousUser`` for everyone
  else: a service token, an API key or the local operator is not a row of the user
  table, and a stand-in object claiming ``is_authenticated`` would pass
  ``@login_required`` only to break the first view that stores ``request.user`` in a
  foreign key. Views for machines check ``request.principal`` (see :func:`require`).
  On a public path ``request.user`` is ``AnonymousUser`` too, whatever session cookie
  came along: the only identity the app ever sees is the one this middleware proved.
* An inactive user (``is_active`` false) is refused (403 ``unknown_user``), as
  Django's ``ModelBackend`` refuses one.

No session is created and ``django.contrib.auth.login`` is never called: every
request proves itself again (its token is checked; its user looked up, so a user
deactivated a second ago is refused now), and ``last_login`` is not updated.

Refusals are the package's JSON errors, from this middleware or from a view that
raises an :class:`~cfaccess_mw.errors.AuthError` (``process_exception``), and are
audited as refusals. An ``AuthError`` raised by another middleware below this one
never reaches it (Django turns it into a 500 at that middleware): raise it in views.

Django refuses ASGI's lifespan protocol, so nothing tells the app it is starting:
the keys are fetched when Django builds its middleware chain, which
``get_asgi_application()`` does at import, before the server takes a request, a WSGI
server when it loads the app (and Django's test client at its first request). Django
has no shutdown hook; ``Authenticator.aclose`` holds nothing today. The middleware is
sync and async capable: ASGI servers (uvicorn, hypercorn, granian, daphne) run it on
their loop, WSGI servers (``manage.py runserver``, gunicorn's sync and gthread
workers, uWSGI, mod_wsgi) in their threads, with no event loop and no
``async_to_sync``; keys are fetched once for a burst however many threads ask. Django
has no websockets (Channels routes them outside Django's
middleware: wrap its router in :class:`cfaccess_mw.CloudflareAccessMiddleware`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.apps import apps
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils.module_loading import import_string

from ...core.authenticator import Authenticated
from ...core.errors import AuthError, AuthUnavailable, Forbidden, Reason, error_response
from ...core.permissions import admit, guard, principal_or_401, requirement
from ...core.principals import Principal, PrincipalKind
from ..asgi import cgi_headers, read_scope

if TYPE_CHECKING:
    pass
from .config import authenticator_from_settings
from .lookup import user_model_lookup

__all__ = [
    "AccessRequest",
    "CloudflareAccessMiddleware",
    "authenticator_from_settings",
    "get_principal",
    "json_error",
    "request_scope",
    "require",
    "user_model_lookup",
]

logger = logging.getLogger("cfaccess_mw")

AUTHENTICATION_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
_REFUSAL = "_cfaccess_refusal"

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase] | HttpResponseBase]
View = TypeVar("View", bound=Callable[..., Any])


class AccessRequest(HttpRequest):
    """An ``HttpRequest`` as the middleware leaves it, for annotating views (never instantiated)::

    async def me(request: AccessRequest) -> JsonResponse:
        principal = request.principal
    """

    principal: Principal | None
    principal_scopes: list[str]


# --- the middleware (the default lookup is in lookup.py, the shared Authenticator in config.py) ---------


def request_scope(request: HttpRequest) -> Mapping[str, Any]:
    """What the authenticator reads of a request: the ASGI scope under ASGI, else one built from ``META``.

    Under ASGI (servers, ``AsyncClient``) the scope is exact, repeated headers
    included; where a server passed the headers as an iterator, Django has read it
    when it built the request, so :func:`~cfaccess_mw.asgi.read_scope` takes them from
    ``META``. Under WSGI (the sync test ``Client``) the whole scope is built from
    ``META``. In ``META`` a repeated header is already joined with commas (a joined
    token or key fails its check, so this stays closed).
    """
    scope = getattr(request, "scope", None)
    meta = request.META
    if isinstance(scope, MutableMapping):
        return read_scope(scope, parsed_headers=lambda: cgi_headers(meta))
    address, port = meta.get("REMOTE_ADDR"), str(meta.get("REMOTE_PORT") or "0")
    prefix_length = len(request.path) - len(request.path_info)
    return {
        "type": "http",
        "method": request.method or "GET",
        "path": request.path,
        "root_path": request.path[:prefix_length] if prefix_length > 0 else "",
        "headers": cgi_headers(meta),
        "client": (address, int(port) if port.isdigit() else 0) if address else None,
        "scheme": meta.get("wsgi.url_scheme") or "http",  # the WSGI server's own, not a forwarded one
    }


def json_error(err: AuthError) -> HttpResponse:
    """The refusal as Django's response: the package's JSON error, its status and headers."""
    status, headers, body = error_response(err)
    response = HttpResponse(body, status=status)
    for name, value in headers:
        response[name.decode("latin-1")] = value.decode("latin-1")
    return response


def _anonymous() -> Any:
    from django.contrib.auth.models import AnonymousUser  # needs the app registry: import at request time

    return AnonymousUser()


def _django_user(principal: Principal) -> Any:
    """What ``request.user`` becomes for ``principal`` (see the module docstring)."""
    if principal.kind != "user":
        return _anonymous()
    user = principal.user
    if getattr(user, "is_authenticated", False) is not True:
        logger.error("cfaccess_mw: user_lookup returned a %s, not a Django user", type(user).__name__)
        raise AuthUnavailable(
            Reason.USER_LOOKUP_FAILED,
            "The user directory is unavailable; try again shortly.",
            f"user_lookup returned a {type(user).__name__}, which is not a Django user (no is_authenticated)",
        )
    if not getattr(user, "is_active", True):
        raise Forbidden(
            Reason.UNKNOWN_USER,
            "This account is not a user of this application; ask an administrator to add it.",
            f"user {principal.email!r} is inactive",
        )
    return user


def _set_user(request: HttpRequest, user: Any, principal: Principal | None, scopes: list[str]) -> None:
    async def auser() -> Any:
        return user

    access = cast(AccessRequest, request)
    access.principal = principal
    access.principal_scopes = scopes
    access.user = user
    access.auser = auser


def _check_order() -> None:
    """Refuse a ``MIDDLEWARE`` where ``AuthenticationMiddleware`` would run after this one and put the session's
    user back over the verified one; and an app without ``django.contrib.auth``, whose user model this needs."""
    if not apps.is_installed("django.contrib.auth"):
        raise ImproperlyConfigured("cfaccess_mw.django needs 'django.contrib.auth' in INSTALLED_APPS")
    from django.contrib.auth.middleware import AuthenticationMiddleware

    ours: list[int] = []
    theirs: list[int] = []
    for index, path in enumerate(django_settings.MIDDLEWARE):
        try:
            cls = import_string(path)
        except ImportError:  # Django itself reports it when it builds the chain
            continue
        if isinstance(cls, type) and issubclass(cls, CloudflareAccessMiddleware):
            ours.append(index)
        if isinstance(cls, type) and issubclass(cls, AuthenticationMiddleware):
            theirs.append(index)
    if ours and theirs and max(theirs) > min(ours):
        raise ImproperlyConfigured(
            f"MIDDLEWARE: put cfaccess_mw.django.CloudflareAccessMiddleware after {AUTHENTICATION_MIDDLEWARE}, "
            "which would otherwise replace the verified user with the session's"
        )


class CloudflareAccessMiddleware:
    """Authenticate every request; set ``request.user``, ``request.auser``, ``request.principal`` (see module).

    Sync and async: under ASGI (uvicorn, hypercorn, daphne) Django builds an async chain
    and this runs on the server's loop; under WSGI (``runserver``, gunicorn's sync and
    gthread workers, uWSGI, mod_wsgi) it runs in the worker thread with the sync core
    (keys fetched with a sync client, single-flight across threads; the lookup's sync
    twin), so neither needs the other's event loop.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        _check_order()
        self.get_response = get_response
        self.authenticator = authenticator_from_settings()
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        auth = self.authenticator
        scope = request_scope(request)
        try:
            principal = None if auth.is_public(scope) else self._enter(request, auth.authenticate_sync(scope))
        except AuthError as err:
            auth.audit_sync(scope, err.status_code, err=err)
            return json_error(err)
        if principal is None:
            _set_user(request, _anonymous(), None, [])
        response = cast(HttpResponseBase, self.get_response(request))
        audit = self._audit(request, principal, response)
        if audit is not None:
            auth.audit_sync(scope, audit[0], principal=audit[1], err=audit[2])
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        auth = self.authenticator
        scope = request_scope(request)
        try:
            principal = None if auth.is_public(scope) else self._enter(request, await auth.authenticate(scope))
        except AuthError as err:
            await auth.audit(scope, err.status_code, err=err)
            return json_error(err)
        if principal is None:
            _set_user(request, _anonymous(), None, [])
        response = await cast(Callable[[HttpRequest], Awaitable[HttpResponseBase]], self.get_response)(request)
        audit = self._audit(request, principal, response)
        if audit is not None:
            await auth.audit(scope, audit[0], principal=audit[1], err=audit[2])
        return response

    @staticmethod
    def _enter(request: HttpRequest, authenticated: Authenticated) -> Principal:
        """Make the caller the request's: ``request.user`` (refusing an inactive user), the principal, its scopes."""
        principal, scopes = authenticated
        _set_user(request, _django_user(principal), principal, scopes)
        return principal

    def _audit(
        self, request: HttpRequest, principal: Principal | None, response: HttpResponseBase
    ) -> tuple[int, Principal | None, AuthError | None] | None:
        """What to record once the view has answered: a view's refusal, an acceptance, or nothing (public path)."""
        refused: AuthError | None = getattr(request, _REFUSAL, None)
        if refused is not None:
            return refused.status_code, None, refused
        if principal is not None and self.authenticator.audits_acceptances:
            return response.status_code, principal, None
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A view's :class:`AuthError` becomes the JSON refusal (audited in ``__call__``), not Django's 500."""
        if not isinstance(exception, AuthError):
            return None
        setattr(request, _REFUSAL, exception)  # a private mark, not an attribute of HttpRequest
        return json_error(exception)

    def __repr__(self) -> str:
        return f"CloudflareAccessMiddleware({self.authenticator!r})"


# --- for views ---------------------------------------------------------------------------------


def get_principal(request: HttpRequest) -> Principal:
    """The authenticated caller; 401 where there is none (a public path, or no middleware)."""
    return principal_or_401(getattr(request, "principal", None), "view")


def require(*kinds: PrincipalKind, scopes: Sequence[str] = ()) -> Callable[[View], View]:
    """A view decorator admitting only the given kinds (any, if none given) holding every scope in ``scopes``.

    For machine callers, whom ``@login_required`` cannot admit (their ``request.user``
    is ``AnonymousUser``); refusals are the JSON errors. Sync and async views alike.
    """
    needed = requirement(kinds, scopes)

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        request: HttpRequest = args[0]
        admit(get_principal(request), getattr(request, "principal_scopes", ()), kinds, needed, where="view")

    def decorate(view: View) -> View:
        return cast(View, guard(view, check, iscoroutinefunction))

    return decorate
