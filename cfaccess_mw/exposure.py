"""Peer trust: whether the socket peer is this host, decided from the socket alone.

Only ASGI's ``scope["client"]`` counts. ``X-Forwarded-For``, ``X-Real-IP`` and ``Forwarded`` are written by whoever
sends the request, so their values are never trusted; their mere presence takes local trust away
(:class:`LocalAddressing`). Whether a loopback peer earns anything is the middleware's decision, by exposure mode:
in ``reverse-proxy`` mode it earns nothing, because ``cloudflared`` or the proxy on the same host makes every
request arrive from loopback.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from typing import Any


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


class LocalAddressing:
    """Whether a loopback peer addressed this app as a local service, so that it may count as the operator.

    A loopback socket peer alone proves little: the operator's browser is a loopback
    peer too, so any web page it visits could act as the operator (a cross-site form
    POST, a websocket, or with DNS rebinding a page that reads the answers). A program
    on this host that means to talk to this app sends:

    * a ``Host`` naming a loopback address, ``localhost`` or a ``*.localhost`` name
      (any port), or one of ``extra_hosts`` (``CFACCESS_LOCAL_HOSTS``). DNS
      rebinding shows up here: the browser sends the attacker's name;
    * an ``Origin``, when there is one, that is such a loopback origin too: a browser
      adds ``Origin`` to cross-origin requests, websockets and POSTs;
    * no ``Sec-Fetch-Site: cross-site``: what a browser says of a request that another
      site's page made (a plain link or an image from elsewhere carries no ``Origin``);
    * no forwarding header (``Forwarded``, ``X-Forwarded-*``, ``X-Real-IP``, ``Via``...):
      a proxy on this host connects from loopback too, and a default nginx even sends
      ``Host: 127.0.0.1``; uvicorn trusting every proxy (``--forwarded-allow-ips='*'``)
      makes a remote caller's ``X-Forwarded-For: 127.0.0.1`` the socket peer. Either
      way the header is the proxy's mark, and its value is never believed.

    curl, httpx and a UI served by the app itself pass all four. Parsed once; per
    request only the headers are scanned, once.
    """

    __slots__ = ("extra_hosts",)

    def __init__(self, extra_hosts: tuple[str, ...] = ()) -> None:
        self.extra_hosts = frozenset(host.lower() for host in extra_hosts)

    def is_local_host(self, host: str) -> bool:
        """``localhost``, ``*.localhost``, a loopback address, or a configured name (``host`` lower-cased)."""
        return host == "localhost" or host.endswith(".localhost") or is_loopback_host(host) or host in self.extra_hosts

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
                fetch_site = value.decode("latin-1")
            elif bytes(name) in _PROXY_HEADERS:  # bytes(): ASGI allows bytearray names, which cannot be hashed
                return f"the request came through a proxy (it carries {name.decode('latin-1')})"
        if host_header is None:
            return "no Host header"
        host = _host_of_authority(host_header.strip())
        if host is None or not self.is_local_host(host):
            return "the Host header does not name this machine (a browser page or DNS rebinding?)"
        if origin is not None and not self._is_local_origin(origin.strip()):
            return "the Origin is not a loopback origin (a request made by another site's page)"
        if fetch_site is not None and fetch_site.strip().lower() == "cross-site":
            return "Sec-Fetch-Site says another site's page made this request"
        return None

    def _is_local_origin(self, origin: str) -> bool:
        scheme, sep, authority = origin.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or "/" in authority or "@" in authority:
            return False  # includes the "null" origin of sandboxed frames and file:// pages
        host = _host_of_authority(authority)
        return host is not None and self.is_local_host(host)
