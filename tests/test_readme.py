"""README.md (and the docs pages these tests name) stay true: what a reader copies runs, what they state holds.

The quick start is saved as ``myapp.py`` and served by uvicorn against a :class:`LocalIssuer`'s
environment; the pytest file from "Testing your own app" is saved next to it and run by pytest in a
fresh directory, where it must pass as written; the logging example is run in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from cfaccess_mw import AuthConfigEndpoint, CloudflareAccessMiddleware, Principal, Settings
from cfaccess_mw.integrations.fastapi import CurrentPrincipal
from cfaccess_mw.testing import LocalIssuer

from . import readme
from .conftest import REMOTE_PEER, error_of, find_user, jwt_header


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any CFACCESS_* or pytest variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CFACCESS_", "PYTEST_", "PYTHONPATH"))}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- the quick start ----------------------------------------------------------------------------


def quick_start_commands() -> tuple[dict[str, str], list[list[str]]]:
    """The variables the quick start exports, and its commands in order."""
    (shell,) = [b for b in readme.blocks("sh", only=readme.README) if "uvicorn myapp:app" in b]
    exports: dict[str, str] = {}
    commands: list[list[str]] = []
    for line in shell.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "export":
            name, _, value = words[1].partition("=")
            exports[name] = value
        elif words:
            commands.append(words)
    return exports, commands


def quick_start_shell() -> tuple[dict[str, str], list[str]]:
    """The variables the quick start exports, and its server command (the last one)."""
    exports, commands = quick_start_commands()
    return exports, commands[-1]


def test_the_install_lines_install_what_the_quick_start_imports() -> None:
    installs = [
        line
        for block in readme.blocks("sh", only=readme.README)
        for line in block.splitlines()
        if 'pip install "' in line
    ]

    assert len(installs) == 3  # from a clone, from a built wheel, from the index once published
    for line in installs:
        assert '[fastapi]"' in line, line
        assert line.split("#")[0].split()[-1] == "uvicorn", line
    assert "pip install pytest httpx2" in readme.README.read_text(encoding="utf-8")


def test_the_quick_start_sets_three_variables_and_runs_uvicorn() -> None:
    exports, command = quick_start_shell()

    assert set(exports) == {
        "CFACCESS_TEAM_DOMAIN",
        "CFACCESS_AUD",
        "CFACCESS_PUBLIC_PATHS",
        "CFACCESS_USER_CACHE_SECONDS",  # optional, shown because most user stores are synchronous
        "CFACCESS_STRICT",  # a typo stops start-up: with no logging set up, a warning is easy to miss
    }
    assert exports["CFACCESS_STRICT"] == "true"
    Settings.from_env(exports, strict=True)  # the example values themselves are valid
    assert command == ["uvicorn", "myapp:app"]
    assert quick_start_commands()[1] == [["cfaccess-mw", "check"], ["uvicorn", "myapp:app"]]  # check first


def test_the_quick_start_check_passes_against_an_issuer_and_fails_on_a_typo() -> None:
    exports, _ = quick_start_commands()
    cli = str(Path(sys.executable).with_name("cfaccess-mw"))
    with LocalIssuer(max_requests=10, max_seconds=60) as issuer:
        env = clean_env(**{**exports, **issuer.env()})
        ok = subprocess.run([cli, "check"], env=env, capture_output=True, text=True, timeout=60, check=False)
        typo = subprocess.run(
            [cli, "check"], env={**env, "CFACCESS_PUBLIC_PATH": "/healthz"}, capture_output=True, text=True, timeout=60
        )

    assert ok.returncode == 0, ok.stderr
    assert "OK: configuration is valid" in ok.stdout
    assert typo.returncode == 2
    assert "did you mean CFACCESS_PUBLIC_PATHS?" in typo.stderr


@pytest.fixture
def quick_start_server(tmp_path: Path) -> Iterator[tuple[LocalIssuer, str]]:
    """``uvicorn myapp:app`` as the README runs it, with the README's variables pointed at a local issuer."""
    readme.write_app(tmp_path)
    exports, command = quick_start_shell()
    port = free_port()
    with LocalIssuer(max_requests=100, max_seconds=120) as issuer:
        env = clean_env(**{**exports, **issuer.env()})
        uvicorn = [str(Path(sys.executable).with_name(command[0])), *command[1:]]
        with (tmp_path / "server.log").open("wb") as log:
            server = subprocess.Popen(
                [*uvicorn, "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path, env=env, stdout=log, stderr=log
            )
            try:
                base = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 30
                while True:
                    assert server.poll() is None, (tmp_path / "server.log").read_text()
                    try:
                        if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    assert time.monotonic() < deadline, "uvicorn did not answer /healthz within 30 s"
                    time.sleep(0.1)
                yield issuer, base
            finally:
                server.terminate()
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait(timeout=10)


def test_the_quick_start_admits_its_user_and_refuses_the_rest(quick_start_server: tuple[LocalIssuer, str]) -> None:
    issuer, base = quick_start_server

    alice = httpx.get(f"{base}/me", headers=jwt_header(issuer.identity_token("alice@example.com")), timeout=10)
    mallory = httpx.get(f"{base}/me", headers=jwt_header(issuer.identity_token("mallory@example.com")), timeout=10)
    nobody = httpx.get(f"{base}/me", timeout=10)

    assert (alice.status_code, alice.json()) == (200, {"kind": "user", "who": "alice@example.com"})
    assert (mallory.status_code, error_of(mallory)["reason"]) == (403, "unknown_user")
    assert (nobody.status_code, error_of(nobody)["reason"]) == (401, "no_credentials")


def test_the_quick_start_pytest_file_passes_as_written(tmp_path: Path) -> None:
    readme.write_app(tmp_path)
    tests = readme.quick_start_test().count("\ndef test_")

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        # Variables left in the reader's shell (a junk team domain, strict mode, a typo) must not leak in.
        env=clean_env(CFACCESS_TEAM_DOMAIN="junk", CFACCESS_STRICT="true", CFACCESS_PUBLIC_PATH="/x"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert tests == 5
    assert re.search(rf"^{tests} passed in ", result.stdout, re.MULTILINE), result.stdout


# --- logging ------------------------------------------------------------------------------------

LOGGING_APP = """
import asyncio

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from cfaccess_mw import CloudflareAccessMiddleware, Settings
from cfaccess_mw.testing import LocalIssuer


def failing_hook(event):
    raise RuntimeError("the hook's own bug")


async def main():
    with LocalIssuer(max_seconds=60) as issuer:
        Settings.from_env({**issuer.env(), "CFACCESS_PUBLIC_PATH": "/healthz"})  # a typo: a WARNING on cfaccess_mw
        app = CloudflareAccessMiddleware(
            Starlette(routes=[Route("/me", lambda request: PlainTextResponse("hi"))]),
            settings=issuer.settings(),
            user_lookup={"alice@example.com": "Alice"}.get,
            audit_hook=failing_hook,
        )
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 51234))
        async with httpx.AsyncClient(transport=transport, base_url="http://app.example") as client:
            expired = issuer.identity_token("alice@example.com", lifetime=-600)
            await client.get("/me", headers={"Cf-Access-Jwt-Assertion": expired})
            await client.get("/me", headers={"Cf-Access-Jwt-Assertion": issuer.identity_token("alice@example.com")})


asyncio.run(main())
"""


def test_the_logging_example_writes_the_audit_log_as_json_lines() -> None:
    script = (
        "import cfaccess_mw\n" + readme.logging_setup() + LOGGING_APP
    )  # the package is imported first, as in an app

    result = subprocess.run(
        [sys.executable, "-c", script], env=clean_env(), capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    summary = [(line["level"], line.get("outcome") or line.get("message")) for line in lines]
    assert summary == [
        ("WARNING", "refused"),
        ("ERROR", "audit hook failed"),
        ("INFO", "accepted"),
        ("ERROR", "audit hook failed"),
    ]
    assert (lines[0]["status"], lines[0]["reason"], lines[0]["client"]) == (401, "token_expired", "127.0.0.1:51234")
    assert (lines[2]["status"], lines[2]["kind"], lines[2]["principal"]) == (200, "user", "alice@example.com")
    assert "WARNING cfaccess_mw: " in result.stderr
    assert "did you mean CFACCESS_PUBLIC_PATHS?" in result.stderr
    assert "refused" not in result.stderr, "the audit logger must not also propagate to the text handler"


# --- FastAPI's docs, AuthConfigEndpoint and requires, as docs/frameworks shows them ------------


def fastapi_app(settings: Settings, **options: Any) -> FastAPI:
    app = FastAPI(**options)

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        return {"who": principal.display_name}

    app.add_middleware(CloudflareAccessMiddleware, settings=settings, user_lookup=find_user)
    return app


def docs_public_paths() -> str:
    """The CFACCESS_PUBLIC_PATHS value docs/frameworks/fastapi.md gives for publishing FastAPI's docs."""
    (value,) = re.findall(r"`CFACCESS_PUBLIC_PATHS=(\S*/docs\S*)`", readme.text())
    return str(value)


@pytest.mark.parametrize("path", ["/docs", "/openapi.json"])
def test_fastapi_docs_are_behind_auth_by_default_and_open_to_a_signed_in_browser(
    shared_issuer: LocalIssuer, path: str
) -> None:
    settings = Settings.from_env(shared_issuer.env())
    with TestClient(fastapi_app(settings), client=REMOTE_PEER) as client:
        anonymous = client.get(path)
        signed_in = client.get(path, headers=jwt_header(shared_issuer.identity_token("alice@example.com")))

    assert anonymous.status_code == 401
    assert error_of(anonymous)["reason"] == "no_credentials"
    assert signed_in.status_code == 200


@pytest.mark.parametrize("path", ["/docs", "/openapi.json"])
def test_fastapi_docs_are_public_with_the_readmes_public_paths(shared_issuer: LocalIssuer, path: str) -> None:
    settings = Settings.from_env(shared_issuer.env(CFACCESS_PUBLIC_PATHS=docs_public_paths()), strict=True)
    with TestClient(fastapi_app(settings), client=REMOTE_PEER) as client:
        assert client.get(path).status_code == 200
        assert client.get("/me").status_code == 401


def test_fastapi_without_docs_serves_none(shared_issuer: LocalIssuer) -> None:
    app = fastapi_app(shared_issuer.settings(), docs_url=None, redoc_url=None, openapi_url=None)
    alice = jwt_header(shared_issuer.identity_token("alice@example.com"))
    with TestClient(app, client=REMOTE_PEER) as client:
        assert [client.get(p, headers=alice).status_code for p in ("/docs", "/redoc", "/openapi.json")] == [404] * 3


def auth_config_line(framework: str) -> str:
    blocks = [b for b in readme.blocks("python") if "AuthConfigEndpoint(settings)" in b]
    (line,) = [line for block in blocks for line in block.splitlines() if line.endswith(f"# {framework}")]
    return line


def test_auth_config_endpoint_mounts_in_fastapi_as_the_readme_shows(shared_issuer: LocalIssuer) -> None:
    settings = shared_issuer.settings(public_paths=("/auth/config",))
    app = fastapi_app(settings)
    namespace = {"app": app, "settings": settings, "AuthConfigEndpoint": AuthConfigEndpoint, "Route": Route}
    exec(auth_config_line("FastAPI"), namespace)

    with TestClient(app, client=REMOTE_PEER) as client:
        response = client.get("/auth/config")

    assert response.status_code == 200
    assert response.json()["logout_url"] == f"https://{shared_issuer.team_domain}/cdn-cgi/access/logout"
    assert "/auth/config" not in app.openapi()["paths"]


def test_the_readmes_requires_example_refuses_in_json(shared_issuer: LocalIssuer) -> None:
    namespace: dict[str, Any] = {}
    exec(readme.block_starting("from cfaccess_mw.permissions import requires"), namespace)
    app = Starlette(routes=[Route("/admin", namespace["admin_page"])])
    settings = shared_issuer.settings(api_keys={"robot": "readme-robot-key"})
    app.add_middleware(CloudflareAccessMiddleware, settings=settings)

    with TestClient(app, client=REMOTE_PEER) as client:
        response = client.get("/admin", headers={"Authorization": "Bearer readme-robot-key"})

    assert response.status_code == 403
    assert error_of(response)["reason"] == "insufficient_scope"


def test_the_principal_table_matches_the_principal() -> None:
    text = readme.text()
    table = text[text.index("| attribute | meaning |") :].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)`", table, re.MULTILINE))

    assert documented <= {*Principal.__dataclass_fields__, "is_authenticated"}
