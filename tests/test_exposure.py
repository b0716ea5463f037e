"""Loopback is decided from the socket address alone, parsed strictly."""

from __future__ import annotations

import pytest

from cfaccess_mw.core.exposure import is_loopback_host, is_loopback_url_host, peer_is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:7f00:1", True),
        ("0:0:0:0:0:0:0:1", True),
        ("128.0.0.1", False),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::", False),
        ("0.0.0.0", False),
        ("localhost", False),
        ("testclient", False),
        ("", False),
        ("127.0.0.1 ", False),
        ("127.1", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("scope", "loopback"),
    [
        ({"client": ("127.0.0.1", 1)}, True),
        ({"client": None}, False),
        ({}, False),
        ({"client": (None, 0)}, False),
        ({"client": ("203.0.113.1", 1)}, False),
    ],
)
def test_peer_is_loopback(scope: dict[str, object], loopback: bool) -> None:
    assert peer_is_loopback(scope) is loopback


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("127.evil.example", False),  # a name that merely starts like a loopback address
        ("localhost.evil.example", False),
        ("10.0.0.1", False),
    ],
)
def test_is_loopback_url_host(host: str, local: bool) -> None:
    assert is_loopback_url_host(host) is local
