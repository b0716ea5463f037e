"""The example apps, with users in a real SQLite file, and the README's demo command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from cfaccess_mw import ApiKey
from cfaccess_mw.testing import LocalIssuer
from examples import demo, fastapi_app, starlette_app
from examples.userdb import UserDB

from .conftest import REMOTE_PEER, jwt_header
from .live_examples import free_port, wait_until_up

API_KEY = "example-operator-key"


@pytest.fixture(params=["fastapi", "starlette"])
def example(request: pytest.FixtureRequest, shared_issuer: LocalIssuer, tmp_path: Path) -> Any:
    db = tmp_path / "users.sqlite3"
    users = UserDB(db)
    users.add("alice@example.com", "Alice", role="admin")
    users.add("bob@example.com", "Bob")
    settings = shared_issuer.settings(
        api_keys=(ApiKey.from_secret("operator", API_KEY),), public_paths=("/healthz", "/auth/config")
    )
    module = {"fastapi": fastapi_app, "starlette": starlette_app}[request.param]
    with TestClient(module.create_app(settings, str(db)), client=REMOTE_PEER) as client:
        yield client


def test_example_admits_users_in_the_database(example: TestClient, shared_issuer: LocalIssuer) -> None:
    response = example.get("/api/me", headers=jwt_header(shared_issuer.identity_token("Bob@Example.com")))
    assert response.status_code == 200
    assert response.json()["display_name"] == "bob@example.com"


def test_example_refuses_people_not_in_the_database(example: TestClient, shared_issuer: LocalIssuer) -> None:
    response = example.get("/api/me", headers=jwt_header(shared_issuer.identity_token("eve@example.com")))
    assert response.status_code == 403


def test_example_roles_come_from_the_database(example: TestClient, shared_issuer: LocalIssuer) -> None:
    alice = jwt_header(shared_issuer.identity_token("alice@example.com"))
    bob = jwt_header(shared_issuer.identity_token("bob@example.com"))
    assert example.get("/api/admin", headers=alice).status_code == 200
    assert example.get("/api/admin", headers=bob).status_code == 403


def test_example_public_paths_and_auth_config(example: TestClient, shared_issuer: LocalIssuer) -> None:
    assert example.get("/healthz").status_code == 200
    config = example.get("/auth/config").json()
    assert config == {
        "mode": "reverse-proxy",
        "methods": ["cloudflare_access", "api_key"],
        "cloudflare_access": True,
        "team_domain": shared_issuer.team_domain,
        "logout_url": f"https://{shared_issuer.team_domain}/cdn-cgi/access/logout",
    }


def test_example_websocket(example: TestClient) -> None:
    with example.websocket_connect("/ws", headers={"Authorization": f"Bearer {API_KEY}"}) as ws:
        assert ws.receive_json() == {"hello": "operator"}


def test_user_lookup_never_creates_users(tmp_path: Path) -> None:
    users = UserDB(tmp_path / "u.sqlite3")
    assert users.find("nobody@example.com") is None
    assert users.find("nobody@example.com") is None
    users.add("Someone@Example.com", "Someone")
    found = users.find("someone@example.com")
    assert found is not None
    assert found.name == "Someone"


def test_demo_self_check_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--self-check"]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out
    assert "FAIL" not in out


def test_demo_prints_curl_lines_with_expected_statuses(shared_issuer: LocalIssuer) -> None:
    calls = demo.build_calls(shared_issuer, "the-key", "ci.access")
    lines = [call.curl("http://127.0.0.1:8000") for call in calls]
    assert all(line.startswith("curl -i ") for line in lines)
    assert {call.expect for call in calls} == {200, 401, 403}


def test_fastapi_example_documents_both_schemes(shared_issuer: LocalIssuer, tmp_path: Path) -> None:
    app = fastapi_app.create_app(shared_issuer.settings(), str(tmp_path / "u.sqlite3"))
    schema = app.openapi()
    assert schema["paths"]["/api/me"]["get"]["security"] == [{"CloudflareAccess": []}, {"ApiKey": []}]
    assert set(schema["components"]["securitySchemes"]) == {"CloudflareAccess", "ApiKey"}


def test_dev_py_demo_stops_on_ctrl_c_without_a_traceback() -> None:
    """``python3 dev.py demo`` then Ctrl-C: the terminal sends SIGINT to the whole foreground process group."""
    root = Path(__file__).resolve().parent.parent
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, str(root / "dev.py"), "demo", "--port", str(port)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    killer = threading.Timer(60, lambda: os.killpg(demo.pid, signal.SIGKILL))
    killer.daemon = True
    killer.start()
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", lambda: demo.poll() is None)  # Ctrl-C meets a server
        os.killpg(demo.pid, signal.SIGINT)
        _, err = demo.communicate(timeout=30)
    finally:
        killer.cancel()

    assert "Traceback" not in err, err
    assert "KeyboardInterrupt" not in err
    assert demo.returncode in (0, 130)  # dev.py itself was interrupted too: 130, as a shell reports Ctrl-C
