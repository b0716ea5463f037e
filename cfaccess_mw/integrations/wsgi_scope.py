"""A WSGI environ as the decision reads it: an ASGI-shaped scope (:func:`wsgi_scope`), built lazily.

PEP 3333's environ carries the same facts as an ASGI scope under other names: ``REMOTE_ADDR`` is the socket
peer, ``SCRIPT_NAME`` the prefix (ASGI's ``root_path``), the raw target in ``RAW_URI`` or ``REQUEST_URI`` where
the server keeps it. Only what the decision reads is built per request: the credential headers (every header in
local mode, whose rules read the browser's), and the other fields when something asks for them.
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Any
from urllib.parse import quote

from ..core.authenticator import Authenticator
from ..core.providers import token_header
from ..core.settings import ExposureMode
from .asgi import cgi_headers

__all__ = ["HeaderKeys", "WSGIScope", "decision_headers", "wsgi_scope"]

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
