"""Shared by the example tests: the example apps' users in a real SQLite file.

The fixtures that stand in for the proxy (``cfaccess_issuer``, ``cfaccess_env``, ``cfaccess_settings``)
come from cfaccess_mw's pytest plugin, which pytest loads by itself wherever cfaccess_mw is installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.userdb import UserDB


@pytest.fixture
def users_db(tmp_path: Path) -> str:
    """alice@example.com (admin) and bob@example.com (member); anyone else is not a user of the app."""
    path = tmp_path / "users.sqlite3"
    users = UserDB(path)
    users.add("alice@example.com", "Alice", role="admin")
    users.add("bob@example.com", "Bob")
    return str(path)


@pytest.fixture
def anyio_backend() -> str:
    """The async tests (``pytest.mark.anyio``) run on asyncio, the loop these frameworks run on."""
    return "asyncio"
