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

import logging
import time
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from http import HTTPStatus
from types import TracebackType
from typing import Any, TypeAlias
from urllib.parse import quote

from ..core.audit import AuditHook
from ..core.authenticator import Authenticator, ExtraScopes
from ..core.errors import AuthError, AuthUnavailable, Reason, error_response
from ..core.principals import Principal
from ..core.providers import token_header
from ..core.settings import ExposureMode, Settings
from ..core.users import UserLookup, is_async_callable
from ..keys.sources import KeyStore
from .adapter import DeferredAuthenticator
from .asgi import cgi_headers

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

logger = logging.getLogger("cfaccess_mw")

#: Where the caller is left for the app: the Principal (``None`` on a public path) and its scopes.
PRINCIPAL_KEY = "cfaccess_mw.principal"
SCOPES_KEY = "cfaccess_mw.scopes"

ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIEnviron = dict[str, Any]
WSGIApp = Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]

#: Characters a request target keeps unescaped in a path (RFC 3986 pchar and "/"), when it must be rebuilt.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


# --- the request, as the authenticator reads it ------------------------------------------------


def _decoded(native: str) -> str:
    """A PEP 3333 "native string" (bytes read as latin-1) as the text ASGI and Werkzeug give a router: UTF-8,
    with undecodable bytes replaced, as Werkzeug decodes ``PATH_INFO``. A server that already put real
    text there (characters beyond latin-1) is taken at its word."""
    if native.isascii():  # nearly every path: the same text either way
        return native
    try:
        return native.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return native


def _raw_path(environ: Mapping[str, Any], path: str) -> bytes:
    """The path as the client sent it, still percent-encoded.

    ``RAW_URI`` (gunicorn, Werkzeug's dev server) and ``REQUEST_URI`` (uWSGI, mod_wsgi,
    Werkzeug too) hold the request target as sent, query included, in origin form
    (``/a%2Fb?x``) or absolute form (``http://host/a?x``). Where the server gives
    neither (wsgiref), it is rebuilt from ``SCRIPT_NAME`` + ``PATH_INFO`` (``path``), which
    are already decoded: an encoded ``%2F`` comes back as ``/`` there.
    """
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if type(target) is str and target:
        raw = target.encode("latin-1", "replace").partition(b"?")[0]
        if raw[:1] != b"/" and b"://" in raw:
            raw = b"/" + raw.partition(b"://")[2].partition(b"/")[2]
        return raw
    return quote(path.encode("latin-1", "replace"), safe=_PATH_SAFE).encode("ascii")


def _port(value: object) -> int:
    text = value if type(value) is str else str(value or "")
    return int(text) if text.isdigit() and len(text) <= 5 else 0


def _text(value: object, default: str) -> str:
    return value if type(value) is str and value else (str(value) if value else default)


def _paths(environ: Mapping[str, Any]) -> dict[str, Any]:
    script_name = _text(environ.get("SCRIPT_NAME"), "")
    path = script_name + _text(environ.get("PATH_INFO"), "")
    return {"path": _decoded(path) or "/", "raw_path": _raw_path(environ, path), "root_path": _decoded(script_name)}


def _client(environ: Mapping[str, Any]) -> dict[str, Any]:
    address = environ.get("REMOTE_ADDR")
    return {"client": (str(address), _port(environ.get("REMOTE_PORT"))) if address else None}


def _server(environ: Mapping[str, Any]) -> dict[str, Any]:
    name = environ.get("SERVER_NAME")
    return {"server": (str(name), _port(environ.get("SERVER_PORT"))) if name else None}


#: How each scope field (or group of fields read together) comes from the environ, for :class:`WSGIScope`.
_FIELDS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "method": lambda environ: {"method": _text(environ.get("REQUEST_METHOD"), "GET").upper()},
    "scheme": lambda environ: {"scheme": _text(environ.get("wsgi.url_scheme"), "http")},
    "path": _paths,
    "raw_path": _paths,
    "root_path": _paths,
    "query_string": lambda environ: {
        "query_string": _text(environ.get("QUERY_STRING"), "").encode("latin-1", "replace")
    },
    "client": _client,
    "server": _server,
}


class WSGIScope(dict[str, Any]):
    """An ASGI-shaped scope over a WSGI environ whose fields are read from the environ when first asked for.

    The decision on a repeated token reads ``headers`` and nothing else (the path only where public paths
    are set, the peer only in ``local`` mode, the rest only for an audit event), and reading every field
    up front cost more than the decision itself. ``type`` and ``headers`` are there from the start; any
    other field is read on its first ``[]`` or ``get`` and kept. Anything that looks at the whole mapping
    (iterating it, ``len``, ``==``, ``dict(scope)``, ``{**scope}``, ``repr``) reads every field first, so
    it sees exactly what an eagerly built scope would hold.
    """

    __slots__ = ("environ",)

    environ: Mapping[str, Any]

    def __missing__(self, key: str) -> Any:
        read = _FIELDS.get(key)
        if read is None:
            raise KeyError(key)
        self.update(read(self.environ))
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        if dict.__contains__(self, key) or key in _FIELDS:
            return self[key]
        return default

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in _FIELDS

    def complete(self) -> WSGIScope:
        """Read every field not read yet; returns the scope itself."""
        for key in _FIELDS:
            if not dict.__contains__(self, key):
                self.__missing__(key)
        return self

    def __iter__(self) -> Iterator[str]:
        return dict.__iter__(self.complete())

    def __len__(self) -> int:
        return dict.__len__(self.complete())

    def keys(self) -> KeysView[str]:  # type: ignore[override]
        return dict.keys(self.complete())

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        return dict.values(self.complete())

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        return dict.items(self.complete())

    def copy(self) -> dict[str, Any]:
        return dict(self.complete())

    def __eq__(self, other: object) -> bool:
        return dict.__eq__(self.complete(), other)

    def __repr__(self) -> str:
        return dict.__repr__(self.complete())


#: Which headers to read from an environ: ``(environ key, header name)`` pairs (:func:`decision_headers`).
HeaderKeys = tuple[tuple[str, bytes], ...]


def decision_headers(auth: Authenticator) -> HeaderKeys | None:
    """The headers ``auth``'s decision reads, as environ keys, or ``None`` where it reads them all.

    Outside ``local`` mode the decision (:meth:`Authenticator.credential`) reads three
    headers and skips every other: the preset's token header, ``Authorization`` (a Bearer
    API key, or the oidc preset's token) and ``Cookie`` when ``CFACCESS_ALLOW_COOKIE`` is
    on. Turning every ``HTTP_*`` variable back into a header cost more than the decision
    on a repeated token, so only these are read. In ``local`` mode the decision also
    reads ``Host``, ``Origin``, ``Sec-Fetch-Site`` and any proxy header (one of them
    missing would make a proxied request look local), so it gets them all.

    A header's environ key is the one CGI prescribes (``HTTP_`` + the name upper-cased,
    ``-`` as ``_``), which every WSGI server writes (gunicorn, uWSGI, mod_wsgi, waitress,
    Werkzeug, wsgiref), and a server writes each once (a repeated header joined with
    commas, which fails its check). ``tests/test_wsgi.py`` decides the same requests
    from these headers and from all of them, for every preset, and compares.
    """
    settings = auth.settings
    if settings.exposure_mode is ExposureMode.LOCAL:
        return None
    names = [token_header(settings), "authorization"]
    if settings.allow_cookie:
        names.append("cookie")
    keys = {"HTTP_" + name.upper().replace("-", "_") for name in names}
    return tuple((key, key[5:].lower().replace("_", "-").encode("latin-1")) for key in sorted(keys))


def _headers(environ: Mapping[str, Any], keys: HeaderKeys) -> list[tuple[bytes, bytes]]:
    headers = []
    for key, name in keys:
        value = environ.get(key)
        if value is not None:
            headers.append((name, (value if type(value) is str else str(value)).encode("latin-1", "replace")))
    return headers


def wsgi_scope(environ: Mapping[str, Any], headers: HeaderKeys | None = None) -> WSGIScope:
    """The ASGI-shaped scope of a WSGI request: the one place a WSGI environ is read for the decision.

    * ``client`` is ``REMOTE_ADDR``, which PEP 3333 servers set to the socket peer (never
      a forwarded address, unless a proxy-fix middleware sits in front of this one and
      rewrites it: put this middleware outermost). No address (a unix socket) is ``None``.
    * ``path`` is ``SCRIPT_NAME`` + ``PATH_INFO`` and ``root_path`` is ``SCRIPT_NAME`` (the
      mount prefix), both decoded as the router decodes them, so public paths are judged
      on the path the app routes; ``raw_path`` is only informational (see :func:`_raw_path`).
    * ``headers`` come back from ``HTTP_*``, ``CONTENT_TYPE`` and ``CONTENT_LENGTH``; with
      ``headers=`` (:func:`decision_headers`), only those named there.

    Never raises on an odd environ (a missing or malformed key has a default), so a
    request can always be decided and, if need be, refused. It runs on every request,
    so the common case (ASCII text where PEP 3333 says text) takes no detour, and the
    fields other than ``headers`` are read only if something asks for them (:class:`WSGIScope`).
    """
    scope = WSGIScope(type="http", headers=cgi_headers(environ) if headers is None else _headers(environ, headers))
    scope.environ = environ
    return scope


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
        logger.error("cfaccess_mw: unexpected %s while deciding a request", type(exc).__name__)
        raise AuthUnavailable(
            Reason.INTERNAL_ERROR,
            "The server cannot decide this request now; try again shortly.",
            f"unexpected {type(exc).__name__} while deciding",
        ) from None


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
