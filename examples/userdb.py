"""The example apps' users, in a real SQLite file. The middleware only ever looks users up here."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class User:
    email: str
    name: str
    role: str


class UserDB:
    """A tiny user table. ``find`` is what the middleware's ``user_lookup`` calls: it never creates a user."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS users ("
                " email TEXT PRIMARY KEY COLLATE NOCASE,"
                " name TEXT NOT NULL,"
                " role TEXT NOT NULL DEFAULT 'member')"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One connection per call (the middleware runs a sync lookup in a worker thread), committed and closed.
        with closing(sqlite3.connect(self.path, timeout=5)) as db, db:
            yield db

    def add(self, email: str, name: str, role: str = "member") -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO users (email, name, role) VALUES (?, ?, ?)", (email.lower(), name, role))

    def find(self, email: str) -> User | None:
        with self._connect() as db:
            row = db.execute("SELECT email, name, role FROM users WHERE email = ?", (email,)).fetchone()
        return User(*row) if row else None
