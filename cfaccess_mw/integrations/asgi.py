"""A request as the authenticator reads it: one ASGI scope whose ``headers`` and ``client`` can be read again.

The :class:`~cfaccess_mw.authenticator.Authenticator` reads ``scope["headers"]`` and
``scope["client"]``, and the app after it reads them again. ASGI types both as any
iterable, and some callers pass iterators (Falcon's test client does on purpose, to
catch code that indexes them): read twice, an iterator is empty the second time, and
the request looks as if it came with no credential. The ASGI middleware and every
framework adapter go through :func:`read_scope`, so the rule is kept in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

__all__ = ["HeaderPairs", "cgi_headers", "read_scope"]

#: Header name and value pairs as a framework keeps them: bytes as ASGI has them, or ``str`` (latin-1, as HTTP).
HeaderPairs = Iterable[tuple[bytes | str, bytes | str]]


def read_scope(
    scope: MutableMapping[str, Any],
    *,
    parsed_headers: Callable[[], HeaderPairs] | None = None,
    lower: bool = False,
    write_back: bool = True,
) -> MutableMapping[str, Any]:
    """``scope`` with ``headers`` a list of ``(bytes, bytes)`` pairs and ``client`` a tuple (or ``None``).

    A scope that already has them (what every ASGI server passes) comes back as it
    is, unchanged. Otherwise:

    * ``client`` is read once into a tuple and written back (a framework unpacks it
      later for its own remote address).
    * ``headers`` given as anything but a list of pairs is read once into one. Where
      the framework has already read it to build its request (Falcon, Litestar,
      BlackSheep, Django and Quart all do before any middleware runs), an iterator is
      spent: ``parsed_headers`` returns the framework's parsed copy instead (``str``
      names and values are encoded as latin-1). A parsed copy may have joined a
      repeated header with commas; a joined token or key fails its check, so that
      stays closed.
    * ``lower=True`` lower-cases header names, as ASGI servers do, for a framework
      whose test client passes them as written (``Cf-Access-Jwt-Assertion`` would
      otherwise read as no credential, and a header sent in two spellings as one).

    The new headers are written back (``write_back=False``: a copy of the scope carries
    them, for a framework that reads its scope again and must find it as it was).
    """
    client = scope.get("client")
    if client is not None and type(client) is not tuple:
        scope["client"] = tuple(client)
    headers: Any = scope["headers"]
    if type(headers) is list and all(type(pair) is tuple or type(pair) is list for pair in headers):
        if not lower or all(name == name.lower() for name, _ in headers):
            return scope
    elif type(headers) is not tuple and parsed_headers is not None:
        headers = parsed_headers()
    read = [(_bytes(name), _bytes(value)) for name, value in headers]
    if lower:
        read = [(name.lower(), value) for name, value in read]
    if not write_back:
        return {**scope, "headers": read}
    scope["headers"] = read
    return scope


def _bytes(text: bytes | str) -> bytes:
    return text.encode("latin-1") if isinstance(text, str) else bytes(text)


#: What each environ key is as a header name (``b""`` for a key that is none), remembered for the keys servers
#: send on every request; bounded, since a client chooses its header names.
_CGI_NAMES: dict[str, bytes] = {}
_CGI_NAMES_MAX = 1024


def _cgi_name(key: object) -> bytes:
    if type(key) is not str:  # PEP 3333 keys are str; anything else is no header
        return b""
    if key.startswith("HTTP_"):
        name = key[5:].lower().replace("_", "-").encode("latin-1", "replace")
    elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        name = key.lower().replace("_", "-").encode("latin-1")
    else:
        name = b""
    if len(_CGI_NAMES) < _CGI_NAMES_MAX:
        _CGI_NAMES[key] = name
    return name


def cgi_headers(environ: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
    """The request headers a WSGI environ (or Django's ``META``) holds, as ASGI has them: ``HTTP_X_Y`` becomes
    ``x-y``, and ``CONTENT_TYPE`` and ``CONTENT_LENGTH`` (which CGI keeps without the prefix) come back too.

    The server has already joined a repeated header with commas (a joined token or key fails its check, so
    that stays closed), and some fold ``X_Y`` into ``HTTP_X_Y`` beside ``X-Y`` (gunicorn drops such headers).
    """
    names = _CGI_NAMES
    headers: list[tuple[bytes, bytes]] = []
    for key, value in environ.items():
        name = names.get(key)
        if name is None:
            name = _cgi_name(key)
        if name:
            headers.append((name, (value if type(value) is str else str(value)).encode("latin-1", "replace")))
    return headers
