"""Issue 10's fresh review: what got through the middleware's surroundings after the issue's own fixes.

Each test goes through a real app (a Starlette app under its TestClient, uvicorn's own proxy-headers
middleware, a live hypercorn on 127.0.0.1, a real SQLite file) and failed before its fix.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from cfaccess_mw import ExposureMode, Settings
from cfaccess_mw.testing import LocalIssuer

from .conftest import LOCAL_BASE_URL, LOOPBACK_PEER, REMOTE_PEER, ClientFactory, build_app, error_of, jwt_header
from .live_servers import serve_hypercorn

ALICE = "alice@example.com"
STRANGER = "mallory@example.com"
LOCAL = Settings(exposure_mode=ExposureMode.LOCAL)


def lookup_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cfaccess_mw" and r.levelno >= logging.ERROR]


# --- a lookup that returns the query's cursor instead of its row ------------------------------------------
# Forgetting .fetchone() (sqlite3), .first() / .scalar_one_or_none() (SQLAlchemy) or next() (filter) hands the
# middleware a cursor or iterator: truthy whether or not a row matched, so every verified identity got in.


@pytest.fixture
def users_db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "users.db", check_same_thread=False)
    connection.execute("create table users (email text primary key, name text)")
    connection.execute("insert into users values (?, ?)", (ALICE, "Alice"))
    connection.commit()
    yield connection
    connection.close()


class AsyncRows:
    """An async iterator that is not an async generator, like SQLAlchemy's ``AsyncResult`` from ``stream()``."""

    def __aiter__(self) -> AsyncRows:
        return self

    async def __anext__(self) -> Any:
        raise StopAsyncIteration


def test_a_lookup_returning_its_cursor_admits_no_one(
    shared_issuer: LocalIssuer,
    make_client: ClientFactory,
    users_db: sqlite3.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def find_user(email: str) -> Any:
        return users_db.execute("select email, name from users where email = ?", (email,))  # no .fetchone()

    client = make_client(shared_issuer.settings(), user_lookup=find_user)
    for email in (ALICE, STRANGER):
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            response = client.get("/", headers=jwt_header(shared_issuer.identity_token(email)))
        assert response.status_code == 503, email
        assert error_of(response)["reason"] == "user_lookup_failed"
        (line,) = lookup_errors(caplog)
        assert "returned an iterator (Cursor), not a user" in line
        assert "fetch" in line  # names the likely mistake
        assert email not in line


def test_the_same_lookup_fetching_its_row_works(
    shared_issuer: LocalIssuer, make_client: ClientFactory, users_db: sqlite3.Connection
) -> None:
    def find_user(email: str) -> Any:
        return users_db.execute("select email, name from users where email = ?", (email,)).fetchone()

    client = make_client(shared_issuer.settings(), user_lookup=find_user)
    assert client.get("/", headers=jwt_header(shared_issuer.identity_token(ALICE))).status_code == 200
    assert client.get("/", headers=jwt_header(shared_issuer.identity_token(STRANGER))).status_code == 403


@pytest.mark.parametrize(
    ("lookup", "what"),
    [
        (lambda email: filter(lambda known: known == email, [ALICE]), "an iterator (filter)"),
        (lambda email: iter([]), "an iterator (list_iterator)"),
        (lambda email: AsyncRows(), "an async iterator (AsyncRows)"),
    ],
    ids=["filter", "empty-iterator", "async-iterator"],
)
def test_a_lookup_returning_an_iterator_admits_no_one(
    shared_issuer: LocalIssuer, make_client: ClientFactory, caplog: pytest.LogCaptureFixture, lookup: Any, what: str
) -> None:
    client = make_client(shared_issuer.settings(), user_lookup=lookup)
    with caplog.at_level(logging.DEBUG):
        response = client.get("/", headers=jwt_header(shared_issuer.identity_token(STRANGER)))
    assert response.status_code == 503
    assert error_of(response)["reason"] == "user_lookup_failed"
    (line,) = lookup_errors(caplog)
    assert f"returned {what}, not a user" in line


# --- local mode: a request that came through a proxy is not the local operator ------------------------
# A proxy on this host (nginx, Caddy, cloudflared, a dev server's proxy) connects from loopback, and a default
# nginx ``proxy_pass http://127.0.0.1:8000`` even sends ``Host: 127.0.0.1:8000``: the peer and Host rules both
# pass for a caller on the internet. uvicorn with ``--forwarded-allow-ips='*'`` (``FORWARDED_ALLOW_IPS=*``, set by
# popular Docker images) goes further and makes any remote caller's ``X-Forwarded-For: 127.0.0.1`` the socket
# peer. A forwarding header is the proxy's own mark, so its presence withdraws local trust.

PROXY_HEADERS = [
    {"X-Forwarded-For": "203.0.113.7"},
    {"X-Forwarded-For": "127.0.0.1"},
    {"Forwarded": "for=203.0.113.7"},
    {"X-Real-IP": "203.0.113.7"},
    {"X-Forwarded-Host": "app.example.com"},
    {"X-Forwarded-Proto": "https"},
    {"Cf-Connecting-Ip": "203.0.113.7"},
    {"True-Client-IP": "203.0.113.7"},
    {"Via": "1.1 proxy"},
]


@pytest.mark.parametrize(
    "headers", PROXY_HEADERS, ids=[next(iter(h)) + "=" + next(iter(h.values())) for h in PROXY_HEADERS]
)
def test_a_forwarded_request_from_loopback_is_not_the_operator(headers: dict[str, str]) -> None:
    with TestClient(build_app(LOCAL), base_url="http://127.0.0.1:8000", client=LOOPBACK_PEER) as client:
        assert client.get("/").json()["kind"] == "local"  # the same request, not forwarded
        response = client.get("/", headers=headers)
    assert response.status_code == 401
    assert error_of(response)["reason"] == "no_credentials"


def test_uvicorn_trusting_every_proxy_does_not_make_a_remote_caller_the_operator() -> None:
    inner: Any = build_app(LOCAL)
    app: Any = ProxyHeadersMiddleware(inner, trusted_hosts="*")  # what --forwarded-allow-ips='*' builds
    with TestClient(app, base_url=LOCAL_BASE_URL, client=REMOTE_PEER) as client:
        assert client.get("/").status_code == 401
        response = client.get("/", headers={"X-Forwarded-For": "127.0.0.1"})
    assert response.status_code == 401
    assert error_of(response)["reason"] == "no_credentials"


def test_a_same_host_proxy_in_front_of_a_live_server_is_not_the_operator() -> None:
    """Under hypercorn (which reads no forwarding header), as a default nginx on this host would forward."""
    with serve_hypercorn(build_app(LOCAL)) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/").json()["kind"] == "local"  # curl on this host
        forwarded = client.get("/", headers={"X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.7"})
        assert forwarded.status_code == 401
        assert error_of(forwarded)["reason"] == "no_credentials"


@pytest.mark.anyio
@pytest.mark.parametrize(("proxy_header", "status"), [(b"x-real-ip", 401), (b"accept", 200)])
async def test_header_names_as_bytearray_are_read_in_local_mode(proxy_header: bytes, status: int) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    headers = [(bytearray(b"host"), bytearray(b"localhost")), (bytearray(proxy_header), bytearray(b"203.0.113.7"))]
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers, "client": LOOPBACK_PEER}
    await build_app(LOCAL)(scope, receive, send)
    assert sent[0]["status"] == status


# --- extra_scopes returning something that is not a collection of scope names ---------------------------
# list() of a mapping keeps its keys, so {"admin": user.is_admin} granted "admin" to everyone; list() of a
# string grants its letters; an ``async def`` left a coroutine never awaited. Each is a 503 with one log line.


async def async_scopes(principal: Any) -> list[str]:
    return ["admin"]  # pragma: no cover - never awaited


@pytest.mark.parametrize(
    ("extra_scopes", "what"),
    [
        (lambda principal: {"admin": False, "editor": False}, "a dict"),
        (lambda principal: "admin", "a str"),
        (lambda principal: b"admin", "a bytes"),
        (async_scopes, "a coroutine"),
    ],
    ids=["mapping-of-flags", "one-string", "bytes", "async-def"],
)
def test_extra_scopes_that_are_not_scope_names_are_503(
    caplog: pytest.LogCaptureFixture, extra_scopes: Any, what: str
) -> None:
    app = build_app(LOCAL, extra_scopes=extra_scopes)
    with (
        TestClient(app, base_url=LOCAL_BASE_URL, client=LOOPBACK_PEER) as client,
        caplog.at_level(logging.DEBUG),
    ):
        response = client.get("/admin")
    assert response.status_code == 503
    assert error_of(response)["reason"] == "user_lookup_failed"
    (line,) = lookup_errors(caplog)
    assert f"extra_scopes returned {what}" in line


def test_extra_scopes_as_a_set_or_generator_still_work() -> None:
    for extra_scopes in (lambda principal: {"admin"}, lambda principal: (s for s in ["admin"])):
        with TestClient(
            build_app(LOCAL, extra_scopes=extra_scopes), base_url=LOCAL_BASE_URL, client=LOOPBACK_PEER
        ) as client:
            assert client.get("/admin").text == "admin area"
