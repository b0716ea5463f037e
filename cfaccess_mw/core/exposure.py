"""Peer trust: whether the socket peer is this host, decided from the socket alone.

Only ASGI's ``scope["client"]`` counts. ``X-Forwarded-For``, ``X-Real-IP`` and ``Forwarded`` are written by whoever
sends the request, so their values are never trusted; their mere presence takes local trust away
(:class:`LocalAddressing`). Whether a loopback peer earns anything is the middleware's decision, by exposure mode:
in ``reverse-proxy`` mode it earns nothing, because ``cloudflared`` or the proxy on the same host makes every
request arrive from loopback.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Mapping
from typing import Any


class ExposureMode(str, enum.Enum):
    """Who can reach the origin, and so whether a loopback peer proves anything.

    ``LOCAL``: only this host reaches the app; a loopback peer is the operator.
    ``REVERSE_PROXY``: a proxy or ``cloudflared`` on this host forwards the internet,
    so every request arrives from loopback and loopback proves nothing.
    """

    LOCAL = "local"
    REVERSE_PROXY = "reverse-proxy"

    def __str__(self) -> str:
        return self.value


@functools.lru_cache(maxsize=1024)
def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ``::1`` and IPv4-mapped ``::ffff:127.x``; False for anything not an IP.

    Names are not resolved: a socket peer is an address, and a test client's
    ``"testclient"`` is not loopback.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_loopback_url_host(host: str) -> bool:
    """Whether a URL's host names this machine: ``localhost`` or a loopback address (not ``127.evil.example``).

    For URLs we are told to fetch or send secrets to (a certs URL, a client's API
    URL), where plain ``http://`` is acceptable only if the traffic never leaves the host.
    """
    return host == "localhost" or is_loopback_host(host)


def peer_is_loopback(scope: Mapping[str, Any]) -> bool:
    """Whether the ASGI peer is loopback; a missing ``client`` (unix socket, some servers) is not."""
    client = scope.get("client")
    if not client:
        return False
    host = client[0]
    return isinstance(host, str) and is_loopback_host(host)


def _host_of_authority(authority: str) -> str | None:
    """The host of a ``Host`` header value (``name``, ``name:port``, ``[v6]:port``), lower-cased; ``None`` if
    it is not of that form (userinfo, a path, an empty or non-numeric port)."""
    if authority.startswith("["):
        end = authority.find("]")
        if end == -1:
            return None
        host, rest = authority[1:end], authority[end + 1 :]
    else:
        host, sep, port = authority.partition(":")
        rest = f":{port}" if sep else ""
    if rest and not (rest[0] == ":" and rest[1:].isdigit() and rest[1:].isascii()):
        return None
    if not host or not host.isascii():
        return None
    return host.lower()


#: Headers a proxy adds to what it forwards (nginx, Caddy, Traefik, Apache, HAProxy, Envoy, cloudflared, a dev
#: server's proxy). A program addressing the app directly sends none of them.
_PROXY_HEADERS = frozenset(
    {
        b"forwarded",
        b"via",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-real-ip",
        b"cf-connecting-ip",
        b"true-client-ip",
    }
)


#: ``Sec-Fetch-Site`` values that say no other page made the request: the user's own navigation (a typed URL, a
#: bookmark) and a page of the app's own origin.
_OWN_REQUEST = frozenset({"none", "same-origin"})


def is_browser_trusted_host(host: str) -> bool:
    """Whether browsers treat ``http://host`` as potentially trustworthy: a loopback address, ``localhost`` or a
    ``*.localhost`` name (``host`` lower-cased, without brackets or port).

    Only to such an origin, or to any ``https://`` one, does a browser send Fetch Metadata (``Sec-Fetch-Site``).
    """
    return host == "localhost" or host.endswith(".localhost") or is_loopback_host(host)


class LocalAddressing:
    """Whether a loopback peer addressed this app as a local service, and no other site's page made the request,
    so that it may count as the operator.

    A loopback socket peer alone proves little: the operator's browser is a loopback
    peer too, so any web page it visits could act as the operator (an image, a link,
    a form, a websocket, or with DNS rebinding a page that reads the answers). The
    request must:

    * name this machine in ``Host``: a loopback address, ``localhost`` or a
      ``*.localhost`` name (any port), or one of ``extra_hosts``
      (``CFACCESS_LOCAL_HOSTS``). DNS rebinding shows up here: the browser sends the
      attacker's name;
    * carry no forwarding header (``Forwarded``, ``X-Forwarded-*``, ``X-Real-IP``, ``Via``...):
      a proxy on this host connects from loopback too, and a default nginx even sends
      ``Host: 127.0.0.1``; uvicorn trusting every proxy (``--forwarded-allow-ips='*'``)
      makes a remote caller's ``X-Forwarded-For: 127.0.0.1`` the socket peer. Either
      way the header is the proxy's mark, and its value is never believed;
    * show that no other site's page made it. A browser names the page behind a request in two headers no
      page can set: ``Origin`` (on POSTs, websockets and CORS fetches) and ``Sec-Fetch-Site``, which it
      sends only to a potentially trustworthy origin (``https://``, or ``http://`` to a loopback address,
      ``localhost`` or ``*.localhost``). So: an ``Origin``, if any, must be a local origin;
      ``Sec-Fetch-Site``, if any, must be ``none`` (typed URL, bookmark) or ``same-origin``, or ``same-site``
      beside a local ``Origin``; and a request with neither header is granted only where a browser would
      have sent one (a potentially trustworthy origin), which makes it a program, not a browser. To a
      plain-``http://`` name that is not loopback (``devbox.lan``), a browser sends neither header with
      another site's image, link, form GET or no-cors fetch, exactly as with the operator's typed URL, so
      there only a request carrying a local ``Origin`` passes.

    curl, httpx and scripts addressing 127.0.0.1 or localhost pass, and so does a UI
    served by the app itself. Parsed once; per request only the headers are scanned, once.
    """

    __slots__ = ("extra_hosts",)

    def __init__(self, extra_hosts: tuple[str, ...] = ()) -> None:
        self.extra_hosts = frozenset(host.lower() for host in extra_hosts)

    def is_local_host(self, host: str) -> bool:
        """``localhost``, ``*.localhost``, a loopback address, or a configured name (``host`` lower-cased)."""
        return is_browser_trusted_host(host) or host in self.extra_hosts

    def refusal(self, scope: Mapping[str, Any]) -> str | None:
        """``None`` when the request is the local operator's; else why not, for the refusal's detail."""
        if not peer_is_loopback(scope):
            return "the peer is not a loopback address"
        host_header = origin = fetch_site = None
        for name, value in scope["headers"]:
            if name == b"host":
                if host_header is not None:
                    return "the Host header appears more than once"
                host_header = value.decode("latin-1")
            elif name == b"origin":
                if origin is not None:
                    return "the Origin header appears more than once"
                origin = value.decode("latin-1")
            elif name == b"sec-fetch-site":
                if fetch_site is not None:
                    return "the Sec-Fetch-Site header appears more than once"
                fetch_site = value.decode("latin-1").strip().lower()
            elif bytes(name) in _PROXY_HEADERS:  # bytes(): ASGI allows bytearray names, which cannot be hashed
                return f"the request came through a proxy (it carries {name.decode('latin-1')})"
        if host_header is None:
            return "no Host header"
        host = _host_of_authority(host_header.strip())
        if host is None or not self.is_local_host(host):
            return "the Host header does not name this machine (a browser page or DNS rebinding?)"
        if origin is not None and not self._is_local_origin(origin.strip()):
            return "the Origin is not a local origin (a request made by another site's page)"
        if fetch_site is not None:
            if fetch_site in _OWN_REQUEST or (fetch_site == "same-site" and origin is not None):
                return None
            if fetch_site == "cross-site":
                return "Sec-Fetch-Site says another site's page made this request"
            if fetch_site == "same-site":
                return "Sec-Fetch-Site says a page of another origin made this request, and no local Origin names it"
            return "Sec-Fetch-Site has a value browsers do not send"
        if origin is not None or scope.get("scheme") in ("https", "wss") or is_browser_trusted_host(host):
            return None  # the browser named a local page; or, where a browser would have said, nothing was said
        return (
            "neither Origin nor Sec-Fetch-Site says who made this request; to a plain-http name that is not"
            " loopback a browser sends neither with another site's link or image (CFACCESS_LOCAL_HOSTS)"
        )

    def _is_local_origin(self, origin: str) -> bool:
        scheme, sep, authority = origin.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or "/" in authority or "@" in authority:
            return False  # includes the "null" origin of sandboxed frames and file:// pages
        host = _host_of_authority(authority)
        return host is not None and self.is_local_host(host)
