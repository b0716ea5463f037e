"""Peer trust: whether the socket peer is this host, decided from the socket alone.

Only ASGI's ``scope["client"]`` counts. ``X-Forwarded-For``, ``X-Real-IP`` and
``Forwarded`` are written by whoever sends the request, so they are never read
here. Whether a loopback peer earns anything is the middleware's decision, by
exposure mode: in ``reverse-proxy`` mode it earns nothing, because ``cloudflared``
or the proxy on the same host makes every request arrive from loopback.
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
