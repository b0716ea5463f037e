"""``cfaccess-mw dev``: two terminals, one running the stand-in issuer, one running the app under uvicorn.

The command runs as a subprocess, as a user runs it; its printed ``export`` lines are the app's whole
configuration, its printed token gets a 200, and ``cfaccess-mw dev token`` mints more. Both processes are
stopped by the test (SIGINT, then SIGKILL) and live at most a minute.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from starlette.testclient import TestClient

from cfaccess_mw.core.providers import Provider
from cfaccess_mw.core.settings import Settings
from cfaccess_mw.testing.devserver import DevError, exports, header_line, mint, start_issuer, token_url

from .conftest import REMOTE_PEER, build_app
from .live_examples import example_db, free_port, serve_command

CLI = str(Path(sys.executable).with_name("cfaccess-mw"))


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CFACCESS_", "PYTEST_"))}
    return {**env, **extra}


@contextlib.contextmanager
def dev_server(*options: str) -> Iterator[tuple[dict[str, str], str, list[str]]]:
    """``cfaccess-mw dev`` in a subprocess; yields its exports, the header line of its first token and its output
    up to "Ctrl-C stops it."."""
    process = subprocess.Popen(
        [CLI, "dev", "--max-seconds", "60", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
    )
    killer = threading.Timer(60, process.kill)
    killer.daemon = True
    killer.start()
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C stops it."):
                break
        assert lines[-1:] == ["Ctrl-C stops it."], "\n".join(lines)
        exports = dict(shlex.split(line)[1].split("=", 1) for line in lines if line.startswith("export "))
        (curl,) = [line for line in lines if line.strip().startswith("curl -H")]
        yield exports, shlex.split(curl)[2], lines
    finally:
        killer.cancel()
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, _ = process.communicate(timeout=10)
    assert process.returncode == 0, rest  # Ctrl-C is the way to stop it: no traceback, exit 0
    assert "Traceback" not in rest


def as_headers(line: str) -> dict[str, str]:
    name, _, value = line.partition(": ")
    return {name: value}


def test_dev_serves_an_issuer_whose_exports_and_token_get_into_an_example_app(tmp_path: Path) -> None:
    db = example_db(tmp_path)  # alice (admin) and bob (member)
    with dev_server() as (exports, first, _):
        port = free_port()
        argv = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:create_app", "--factory"]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        app_env = {**exports, "CFACCESS_PUBLIC_PATHS": "/healthz", "EXAMPLE_DB": str(db), "CFACCESS_STRICT": "true"}
        with serve_command(argv, port, clean_env(**app_env), probe="/healthz") as base:
            alice = httpx.get(f"{base}/api/me", headers=as_headers(first), timeout=10)
            assert (alice.status_code, alice.json()["display_name"]) == (200, "alice@example.com")

            minted = subprocess.run(
                [CLI, "dev", "token", "bob@example.com", "--header"],
                env=clean_env(**exports),
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            bob = httpx.get(f"{base}/api/me", headers=as_headers(minted.stdout.strip()), timeout=10)
            assert (bob.status_code, bob.json()["display_name"]) == (200, "bob@example.com")

            expired = subprocess.run(
                [CLI, "dev", "token", "bob@example.com", "--lifetime", "-120"],
                env=clean_env(**exports),
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.strip()
            refused = httpx.get(f"{base}/api/me", headers={"Cf-Access-Jwt-Assertion": expired}, timeout=10)
            assert (refused.status_code, refused.json()["error"]["reason"]) == (401, "token_expired")

            # The dev endpoint is the issuer's, on its port: the app itself serves no way to mint tokens.
            assert httpx.get(f"{base}/cfaccess-dev/token?email=x@example.com", timeout=10).status_code == 401


def test_dev_token_mints_a_service_token_over_http() -> None:
    with dev_server() as (exports, _, _lines):
        settings = Settings.from_env(exports)
        url = token_url(settings)
        response = httpx.get(url, params={"service": "ci.access", "lifetime": "60"}, timeout=10, trust_env=False)
        assert response.status_code == 200
        claims = jwt.decode(response.text, options={"verify_signature": False})
        assert claims["common_name"] == "ci.access"
        assert claims["exp"] - claims["iat"] == 60
        bad = httpx.get(url, params={"lifetime": "soon"}, timeout=10, trust_env=False)
        assert bad.status_code == 400
        rebound = httpx.get(url, params={"email": "a@b.c"}, headers={"Host": "evil.example"}, trust_env=False)
        assert (rebound.status_code, rebound.text) == (403, "address this endpoint as 127.0.0.1\n")


def test_dev_token_without_the_exports_says_what_to_do() -> None:
    result = subprocess.run(
        [CLI, "dev", "token", "bob@example.com"], env=clean_env(), capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 2
    assert result.stderr.endswith("export the lines `cfaccess-mw dev` printed first\n")


@pytest.mark.parametrize("provider", [p for p in Provider if p is not Provider.CLOUDFLARE], ids=str)
def test_every_preset_has_a_dev_issuer_whose_exports_are_valid_and_whose_tokens_it_accepts(
    provider: Provider,
) -> None:
    issuer = start_issuer(provider, max_seconds=60)
    try:
        settings = Settings.from_env(exports(issuer), strict=True)
        assert token_url(settings) == issuer.base_url + "/cfaccess-dev/token"
        token = mint(issuer, email="alice@example.com", service=None, lifetime=3600)
        name, _, value = header_line(settings, token).partition(": ")
        assert name.lower() == issuer.header_name
        with TestClient(build_app(settings), client=REMOTE_PEER) as client:
            response = client.get("/", headers={name: value})
        assert (response.status_code, response.json()["email"]) == (200, "alice@example.com")
        with pytest.raises(DevError, match="has no service tokens"):
            mint(issuer, email=None, service="ci.access", lifetime=60)
    finally:
        issuer.stop()


def test_dev_stops_itself_at_its_time_limit() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [CLI, "dev", "--max-seconds", "1"], env=clean_env(), capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 0
    assert "stopped" in result.stdout
    assert time.monotonic() - started < 30
