"""Shared fixtures: a local issuer with real keys on a loopback certs server, and one app factory.

Every app is a real Starlette app behind the real middleware; every client names
its peer explicitly, because Starlette's TestClient otherwise reports
``"testclient"`` (and httpx's ASGITransport ``127.0.0.1``), which would make a
loopback test prove nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

import cfaccess_mw
from cfaccess_mw import CloudflareAccessMiddleware, Settings
from cfaccess_mw.testing import LocalIssuer

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run against any cfaccess_mw but this checkout's own ``cfaccess_mw/``.

    In-process the package comes from the checkout (pytest puts it on ``sys.path``). The
    console script and other subprocesses import whatever is installed; a leftover install of
    another tree, or of the old ``src/`` layout, would have them test stale code, so that is
    checked too, the way the ``cfaccess-mw`` script would see it (from outside the checkout).
    """
    expected = ROOT / "cfaccess_mw"
    imported = Path(cfaccess_mw.__file__).resolve().parent
    if imported != expected:
        raise pytest.UsageError(f"tests import cfaccess_mw from {imported}, not this checkout's {expected}")
    probe = "import importlib.util as u; spec = u.find_spec('cfaccess_mw'); print(spec.origin if spec else '')"
    found = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.strip()
    if found and Path(found).resolve().parent != expected:
        raise pytest.UsageError(
            f"the cfaccess_mw installed for {sys.executable} is {Path(found).parent}, not this checkout's "
            f"{expected}: subprocess tests would run stale code. Run the tests with `python3 dev.py test`, "
            "which installs this checkout editable."
        )


REMOTE_PEER = ("203.0.113.7", 51000)  # TEST-NET-3: never loopback
LOOPBACK_PEER = ("127.0.0.1", 51000)
#: What a program on this host addressing the app sends as Host (TestClient's default "testserver" is not local).
LOCAL_BASE_URL = "http://localhost:8000"

USERS: dict[str, dict[str, str]] = {
    "alice@example.com": {"name": "Alice", "role": "admin"},
    "bob@example.com": {"name": "Bob", "role": "member"},
}


def find_user(email: str) -> dict[str, str] | None:
    return USERS.get(email)


async def whoami(request: Request) -> JSONResponse:
    user = request.user
    return JSONResponse(
        {
            "kind": user.kind,
            "display_name": user.display_name,
            "email": user.email,
            "name": user.name,
            "scopes": request.auth.scopes,
        }
    )


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@requires("admin")
async def admin(request: Request) -> PlainTextResponse:
    return PlainTextResponse("admin area")


async def ws_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"hello": websocket.user.display_name})
    await websocket.close()


def build_app(settings: Settings, **middleware_options: Any) -> Starlette:
    """The shared test app: ``/`` reports the principal, ``/healthz`` and below are public candidates."""
    app = Starlette(
        routes=[
            Route("/", whoami),
            Route("/api/thing", whoami),
            Route("/admin", admin),
            Route("/healthz", health),
            Route("/healthz/live", health),
            Route("/healthzz", health),
            Route("/healthz-admin", health),
            WebSocketRoute("/ws", ws_endpoint),
        ]
    )
    middleware_options.setdefault("user_lookup", find_user)
    app.add_middleware(CloudflareAccessMiddleware, settings=settings, **middleware_options)
    return app


@pytest.fixture(scope="session")
def shared_issuer() -> Iterator[LocalIssuer]:
    """One issuer for tests that only read from it (key generation is the slow part)."""
    with LocalIssuer() as issuer:
        yield issuer


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    """A fresh issuer for tests that rotate keys, count fetches or make the certs endpoint misbehave."""
    with LocalIssuer() as fresh:
        yield fresh


ClientFactory = Callable[..., TestClient]


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    """``make_client(settings, peer=REMOTE_PEER, **middleware_options)``: a started TestClient (lifespan run)."""
    clients: list[TestClient] = []

    def factory(settings: Settings, peer: tuple[str, int] | None = REMOTE_PEER, **options: Any) -> TestClient:
        app = build_app(settings, **options)
        client = TestClient(app, base_url=LOCAL_BASE_URL, client=peer)  # type: ignore[arg-type]
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """A monotonic clock the test moves by hand, so no test sleeps to expire a cache."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def jwt_header(token: str) -> dict[str, str]:
    return {"Cf-Access-Jwt-Assertion": token}


def error_of(response: Any) -> dict[str, str]:
    """The ``error`` object of a refusal, checking the shape every refusal shares."""
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "reason", "message"}
    return dict(body["error"])


# --- the whole suite's logs never carry a secret (issue 5) ------------------------------------
# Every test runs with the root logger at DEBUG and a handler that keeps each record's text. At
# teardown the test fails if that text holds a complete JWT or any secret a test registered.

_COMPLETE_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
#: Secrets (API keys, client secrets) that must never appear in any log; tests add theirs.
REGISTERED_SECRETS: set[str] = set()


@pytest.fixture
def register_secret() -> Callable[[str], str]:
    """``register_secret(value)``: from now on, every test fails if ``value`` appears in the logs."""

    def register(secret: str) -> str:
        REGISTERED_SECRETS.add(secret)
        return secret

    return register


class _LogText(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.parts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.parts.append(record.getMessage())
        except Exception:  # a broken format string is the test's problem, not a leak
            self.parts.append(f"{record.msg!r} {record.args!r}")
        if record.exc_info:
            self.parts.append(logging.Formatter().formatException(record.exc_info))
        extra = record.__dict__.get("cfaccess")
        if extra is not None:
            self.parts.append(repr(extra))


@pytest.fixture(autouse=True)
def _logs_never_carry_secrets() -> Iterator[None]:
    root = logging.getLogger()
    handler = _LogText()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = "\n".join(handler.parts)
    if _COMPLETE_JWT.search(text):
        pytest.fail("a complete JWT appeared in the logs of this test", pytrace=False)
    leaked = sum(1 for secret in REGISTERED_SECRETS if secret in text)
    if leaked:
        pytest.fail(f"{leaked} registered secret(s) appeared in the logs of this test", pytrace=False)


@pytest.fixture(params=["audited", "quiet"])
def audit_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test both with the audit logger listening (the suite's default, DEBUG everywhere) and with it
    quiet, which is production's default and takes the middleware's path that does not wrap ``send``."""
    audit = logging.getLogger("cfaccess_mw.audit")
    old_level = audit.level
    if request.param == "quiet":
        audit.setLevel(logging.WARNING)
    try:
        yield request.param
    finally:
        audit.setLevel(old_level)


@pytest.fixture(scope="session")
def django_project(shared_issuer: LocalIssuer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Django configured once per process (its settings are global) as test_django's project; its database path.

    test_django and the conformance kit both use it, whichever runs first; the kit
    overrides the settings it needs for its own app with ``override_settings``.
    """
    pytest.importorskip("django")
    from .test_django import configure_project

    return configure_project(shared_issuer, tmp_path_factory)


@pytest.fixture
def falcons_loop() -> Iterator[None]:
    """Before Python 3.11, Falcon's sync TestClient runs the app on the thread's default event loop and never
    closes it; an async test then replaces it, and the orphan's ResourceWarning fails some later test. So each
    test gets a loop of its own there, closed after it."""
    if sys.version_info >= (3, 11):
        yield
        return
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        loop.close()
        asyncio.set_event_loop(None)
