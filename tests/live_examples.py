"""Real servers on 127.0.0.1 for the Quart and Sanic example apps: hypercorn in a thread of this process,
granian, uvicorn and Sanic's own server in a subprocess, and the one contract every example app is checked against
(tests/live_servers.py has the in-process uvicorn and hypercorn the other adapters' tests use). Each is bounded
in time and stopped by the test that started it; subprocess servers are stopped by their own process id.

Every server here runs its ASGI lifespan, so a test can count the key fetches made at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from cfaccess_mw import ApiKey
from cfaccess_mw.testing import LocalIssuer
from examples.userdb import UserDB

from .client_helpers import serve as serve_uvicorn

__all__ = [
    "check_example_app",
    "check_example_http",
    "example_db",
    "example_env",
    "granian_argv",
    "serve_command",
    "serve_hypercorn",
    "serve_uvicorn",
    "wait_until_up",
]

ROOT = Path(__file__).resolve().parent.parent
#: A live server stops itself (or is killed) after this long, whatever the test does.
MAX_SECONDS = 60.0
START_SECONDS = 20.0


def wait_until_up(url: str, alive: Any = None, deadline: float = START_SECONDS) -> None:
    """Poll ``url`` until it answers at all (any status); ``alive()`` false means the server died."""
    end = time.monotonic() + deadline
    while True:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            if time.monotonic() > end or (alive is not None and not alive()):
                raise RuntimeError(f"the server at {url} did not start") from None
            time.sleep(0.05)


@contextmanager
def serve_hypercorn(app: ASGIApp) -> Iterator[str]:
    """Run ``app`` with hypercorn on 127.0.0.1 (a socket bound to a free port first) in a thread."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{os.dup(listener.fileno())}"]  # hypercorn takes ownership of the duplicate
    listener.close()
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    timer = threading.Timer(MAX_SECONDS, lambda: loop.call_soon_threadsafe(stop.set))
    timer.daemon = True
    timer.start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base, thread.is_alive)
        yield base
    finally:
        timer.cancel()
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)


def free_port() -> int:
    """A port free on 127.0.0.1 now (for servers that take a port number, not a socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def granian_argv(target: str, port: int, *, factory: bool = True) -> list[str] | None:
    """The command line serving ``target`` with granian on 127.0.0.1, or ``None`` where granian is missing."""
    if shutil.which("granian", path=str(Path(sys.executable).parent)) is None:
        return None
    argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", "1", "--log-level", "warning"]
    return [*argv, *(["--factory"] if factory else []), target]


@contextmanager
def serve_command(argv: Sequence[str], port: int, env: Mapping[str, str], probe: str = "/") -> Iterator[str]:
    """Run a server command in a subprocess (cwd: the repository), wait until ``probe`` answers, stop it after.

    The process gets SIGINT first (a graceful stop runs the app's shutdown hooks), then its process group
    SIGKILL after 10 s.
    """
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    # The output goes to a file, not a pipe: nobody reads it while the server runs, and a full pipe blocks.
    with tempfile.TemporaryFile() as log:
        # Its own process group, so that a server which forks workers can be killed whole, by this group's id.
        process = subprocess.Popen(
            list(argv), cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

        timer = threading.Timer(MAX_SECONDS, kill)
        timer.daemon = True
        timer.start()
        base = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_until_up(base + probe, lambda: process.poll() is None)
            except RuntimeError:
                kill()
                process.wait(timeout=10)
                log.seek(0)
                output = log.read().decode(errors="replace")
                raise RuntimeError(f"{' '.join(argv[1:4])} did not start:\n{output[-3000:]}") from None
            yield base
        finally:
            timer.cancel()
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    kill()
                    process.wait(timeout=10)


# --- the example apps' contract, checked the same way on every server ---------------------------
# examples/<framework>_app.py all serve: public /healthz; /api/me reporting the caller; /api/admin, whose
# handler raises Forbidden unless the caller holds the admin scope; a websocket /ws greeting the caller; a
# websocket /ws/admin whose handler raises Forbidden after the upgrade unless the caller is an admin.

EXAMPLE_API_KEY = "live-operator-key-0123456789"
EXAMPLE_CLIENT_ID = "0123abcd.access"
EXAMPLE_USERS = (("alice@example.com", "Alice", "admin"), ("bob@example.com", "Bob", "member"))


def example_env(issuer: LocalIssuer, db: Path) -> dict[str, str]:
    """The environment a deployer would give an example app for ``issuer`` (users in ``db``)."""
    return issuer.env(
        CFACCESS_API_KEYS=ApiKey.from_secret("operator", EXAMPLE_API_KEY).line(),
        CFACCESS_SERVICE_TOKENS=f"ci={EXAMPLE_CLIENT_ID}",
        CFACCESS_PUBLIC_PATHS="/healthz",
        EXAMPLE_DB=str(db),
    )


def example_db(folder: Path) -> Path:
    """A SQLite user table with Alice (admin) and Bob (member), as the examples' ``user_lookup`` reads it."""
    db = folder / "users.sqlite3"
    users = UserDB(db)
    for email, name, role in EXAMPLE_USERS:
        users.add(email, name, role)
    return db


def _error(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"}
    return dict(body["error"])


def check_example_http(base: str, issuer: LocalIssuer) -> tuple[dict[str, str], dict[str, str]]:
    """The HTTP part of the examples' contract (all of it for a WSGI app); returns Alice's and Bob's headers."""
    alice = {"Cf-Access-Jwt-Assertion": issuer.identity_token("alice@example.com")}
    bob = {"Cf-Access-Jwt-Assertion": issuer.identity_token("bob@example.com")}
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/healthz").status_code == 200

        refused = http.get("/api/me")
        assert refused.status_code == 401
        assert _error(refused)["reason"] == "no_credentials"
        assert refused.headers["www-authenticate"] == 'Bearer realm="cfaccess"'
        assert refused.headers["content-type"].startswith("application/json")

        me = http.get("/api/me", headers=alice)
        assert me.status_code == 200
        assert me.json()["display_name"] == "alice@example.com"
        assert me.json()["role"] == "admin"

        stranger = http.get("/api/me", headers={"Cf-Access-Jwt-Assertion": issuer.identity_token("eve@example.com")})
        assert stranger.status_code == 403
        assert _error(stranger)["reason"] == "unknown_user"

        service = http.get("/api/me", headers={"Cf-Access-Jwt-Assertion": issuer.service_token(EXAMPLE_CLIENT_ID)})
        assert service.json()["kind"] == "service"
        key = http.get("/api/me", headers={"Authorization": f"Bearer {EXAMPLE_API_KEY}"})
        assert key.json()["kind"] == "api_key"
        bad_key = http.get("/api/me", headers={"Authorization": "Bearer not-the-key"})
        assert bad_key.status_code == 401
        assert _error(bad_key)["reason"] == "api_key_invalid"

        assert http.get("/api/admin", headers=alice).status_code == 200
        by_handler = http.get("/api/admin", headers=bob)
        assert by_handler.status_code == 403
        assert _error(by_handler)["reason"] == "insufficient_scope"
        assert by_handler.headers["cache-control"] == "no-store"
    return alice, bob


def check_example_app(base: str, issuer: LocalIssuer, *, ws_denial: int) -> None:
    """Every decision of the examples' contract over real HTTP and a real websocket handshake.

    ``ws_denial`` is the status a refused websocket handshake gets: our JSON error's (401 for no
    credentials) where the server takes the denial as ASGI's ``websocket.http.response``, else the 403 a
    server answers when the app closes before accepting (or when it cannot take the denial the app sent).
    """
    alice, bob = check_example_http(base, issuer)
    ws_url = base.replace("http://", "ws://") + "/ws"
    # The websockets client logs every handshake header at DEBUG, tokens included: that is the test's client
    # talking, not the code under test, so it is kept quiet; the suite's leak check still covers the server.
    client_log = logging.getLogger("websockets.client")
    level = client_log.level
    client_log.setLevel(logging.INFO)
    try:
        _check_websockets(ws_url, alice, bob, ws_denial)
    finally:
        client_log.setLevel(level)


def _check_websockets(ws_url: str, alice: dict[str, str], bob: dict[str, str], ws_denial: int) -> None:
    from websockets.exceptions import ConnectionClosedError, InvalidStatus
    from websockets.sync.client import connect

    with connect(ws_url, additional_headers={"Authorization": f"Bearer {EXAMPLE_API_KEY}"}, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"hello": "operator"}
    with pytest.raises(InvalidStatus) as caught, connect(ws_url, open_timeout=10) as ws:
        ws.recv(timeout=10)  # pragma: no cover - the handshake is refused
    status = caught.value.response.status_code
    assert status == ws_denial, f"the refused handshake got {status}, not {ws_denial}"
    if ws_denial == 401:
        assert json.loads(caught.value.response.body or b"")["error"]["reason"] == "no_credentials"

    with connect(ws_url + "/admin", additional_headers=alice, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"admin": True}
    with pytest.raises(ConnectionClosedError) as closed, connect(ws_url + "/admin", additional_headers=bob) as ws:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
