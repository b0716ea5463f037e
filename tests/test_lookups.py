"""The README's sqlite3 and SQLAlchemy lookups work from the worker threads a plain ``def`` lookup runs in,
where the obvious module-level sqlite3 connection fails every user; a failing lookup's exception can be seen while
developing, without the email."""

from __future__ import annotations

import importlib
import logging
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest

from cfaccess_mw.testing import LocalIssuer

from . import readme
from .conftest import REMOTE_PEER, build_app, error_of, jwt_header

pytestmark = pytest.mark.anyio
USERS = [(f"user{i}@example.com", f"User {i}") for i in range(8)]


@pytest.fixture
def lookups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The README block saved as lookups.py and imported, in a directory holding its users.sqlite3."""
    monkeypatch.chdir(tmp_path)
    with closing(sqlite3.connect("users.sqlite3")) as db, db:
        db.execute("CREATE TABLE users (email TEXT PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO users VALUES (?, ?)", USERS)
    (tmp_path / "lookups.py").write_text(readme.lookups(), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lookups", raising=False)
    module = importlib.import_module("lookups")
    yield module
    module.engine.dispose()
    sys.modules.pop("lookups", None)


async def call_concurrently(issuer: LocalIssuer, lookup: Callable[[str], Any]) -> list[httpx.Response]:
    """Every user at once, plus a stranger: the plain def lookup runs in several worker threads."""
    app = build_app(issuer.settings(), user_lookup=lookup)
    transport = httpx.ASGITransport(app=app, client=REMOTE_PEER)
    responses: list[httpx.Response] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://app.example") as client:

        async def get(email: str) -> None:
            responses.append(await client.get("/", headers=jwt_header(issuer.identity_token(email))))

        async with anyio.create_task_group() as group:
            for email in [*(e for e, _ in USERS), "stranger@example.com"] * 3:
                group.start_soon(get, email)
    return responses


@pytest.mark.parametrize("name", ["find_user", "find_user_orm"])
async def test_the_readme_lookups_work_from_many_threads(
    lookups: ModuleType, shared_issuer: LocalIssuer, name: str
) -> None:
    threads: set[int] = set()
    lookup = getattr(lookups, name)

    def counted(email: str) -> Any:
        threads.add(threading.get_ident())
        return lookup(email)

    responses = await call_concurrently(shared_issuer, counted)

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 3 * len(USERS) + [403] * 3
    assert {r.json()["email"] for r in responses if r.status_code == 200} == {e for e, _ in USERS}
    assert threading.get_ident() not in threads  # none ran on the thread that ran the import


async def test_a_connection_made_at_import_fails_every_user(lookups: ModuleType, shared_issuer: LocalIssuer) -> None:
    connection = sqlite3.connect("users.sqlite3")  # the obvious mistake: one module-level connection

    def find_user(email: str) -> Any:
        return connection.execute("SELECT name FROM users WHERE email = ?", (email,)).fetchone()

    try:
        responses = await call_concurrently(shared_issuer, find_user)
    finally:
        connection.close()

    assert {(r.status_code, error_of(r)["reason"]) for r in responses} == {(503, "user_lookup_failed")}


async def test_debug_on_cfaccess_mw_users_shows_the_lookups_exception_without_the_email(
    shared_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    def find_user(email: str) -> Any:
        raise LookupError(f"no row for {email.upper()} in users")  # a message quoting the email, in any case

    app = build_app(shared_issuer.settings(), user_lookup=find_user)
    transport = httpx.ASGITransport(app=app, client=REMOTE_PEER)
    caplog.set_level(logging.DEBUG, logger="cfaccess_mw.users")
    async with httpx.AsyncClient(transport=transport, base_url="http://app.example") as client:
        token = shared_issuer.identity_token("alice@example.com")
        response = await client.get("/", headers=jwt_header(token))

    assert response.status_code == 503
    (record,) = [r for r in caplog.records if r.name == "cfaccess_mw.users"]
    text = record.getMessage()
    assert "LookupError: no row for <email> in users" in text
    assert "Traceback" in text
    assert "alice@example.com" not in text.lower()


async def test_debug_everywhere_does_not_show_the_lookups_exception(
    shared_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    def find_user(email: str) -> Any:
        raise ConnectionError("postgres://app:hunter2@db/app refused")

    app = build_app(shared_issuer.settings(), user_lookup=find_user)
    transport = httpx.ASGITransport(app=app, client=REMOTE_PEER)
    caplog.set_level(logging.DEBUG)  # the root at DEBUG, as a verbose deployment runs: not the explicit opt-in
    async with httpx.AsyncClient(transport=transport, base_url="http://app.example") as client:
        response = await client.get("/", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))

    assert response.status_code == 503
    assert "user_lookup raised ConnectionError" in caplog.text
    assert "hunter2" not in caplog.text
