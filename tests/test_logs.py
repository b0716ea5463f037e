"""What an operator must act on reaches them with no logging set-up, and nothing else does.

The uvicorn tests run ``uvicorn myapp:app`` in a subprocess, as the quick start does, with no logging configured
anywhere: a misspelt variable, keys failing at start-up and a raising lookup must each appear in its output. The
unit tests pin the fallback handler's rule: silent once any other handler would see the record.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cfaccess_mw.core.logs import FallbackHandler, install
from cfaccess_mw.testing import LocalIssuer

from .conftest import jwt_header
from .live_examples import free_port

# A FastAPI app as a newcomer writes it: settings read at import, a plain ``def`` lookup (here one that raises).
APP = """
from fastapi import FastAPI

from cfaccess_mw import CloudflareAccessMiddleware, Settings
from cfaccess_mw.integrations.fastapi import CurrentPrincipal

settings = Settings.from_env()


def find_user(email):
    raise RuntimeError("no such table: users")  # what a sqlite3 lookup says before its table exists


app = FastAPI()
app.add_middleware(CloudflareAccessMiddleware, settings=settings, user_lookup=find_user)


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.get("/me")
def me(principal: CurrentPrincipal):
    return {"who": principal.display_name}
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CFACCESS_", "PYTEST_", "PYTHONPATH"))}
    return {**env, **extra}


@contextlib.contextmanager
def uvicorn_app(folder: Path, env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """``uvicorn myapp:app`` in ``folder`` on a free loopback port; yields the base URL and its output file.

    Stopped with SIGINT (then SIGKILL) on leaving, and never alive longer than 60 s.
    """
    (folder / "myapp.py").write_text(APP, encoding="utf-8")
    port = free_port()
    output = folder / "server.log"
    uvicorn = str(Path(sys.executable).with_name("uvicorn"))
    with output.open("wb") as log:
        server = subprocess.Popen(
            [uvicorn, "myapp:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert server.poll() is None, output.read_text()
                with contextlib.suppress(httpx.TransportError):
                    httpx.get(f"{base}/healthz", timeout=1)
                    break
                assert time.monotonic() < deadline, "uvicorn did not answer within 30 s"
                time.sleep(0.1)
            yield base, output
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


def test_a_misspelt_variable_is_shown_under_uvicorn_with_no_logging_set_up(tmp_path: Path) -> None:
    with (
        LocalIssuer(max_seconds=60) as issuer,
        uvicorn_app(tmp_path, clean_env(**issuer.env(), CFACCESS_PUBLIC_PATH="/healthz")) as (base, output),
    ):
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 401  # the typo left it behind auth

    text = output.read_text()
    assert "ignoring unknown setting CFACCESS_PUBLIC_PATH (a typo? did you mean CFACCESS_PUBLIC_PATHS?)" in text


def test_keys_failing_at_start_up_are_shown_under_uvicorn_with_no_logging_set_up(tmp_path: Path) -> None:
    issuer = LocalIssuer(max_seconds=60)
    with issuer:
        env = issuer.env(CFACCESS_PUBLIC_PATHS="/healthz")  # its certs URL is closed once the issuer stops
    with uvicorn_app(tmp_path, clean_env(**env)) as (base, output):
        response = httpx.get(f"{base}/me", headers=jwt_header(issuer.identity_token("alice@example.com")), timeout=5)
        assert response.status_code == 503

    text = output.read_text()
    assert f"certs endpoint {env['CFACCESS_CERTS_URL']} failed" in text
    assert "no keys cached: requests get 503" in text
    assert text.index("certs endpoint") < text.index("Application startup complete")  # said at start-up


def test_a_raising_lookup_is_shown_once_under_uvicorn_with_no_logging_set_up(tmp_path: Path) -> None:
    with (
        LocalIssuer(max_seconds=60) as issuer,
        uvicorn_app(tmp_path, clean_env(**issuer.env(CFACCESS_PUBLIC_PATHS="/healthz"))) as (base, output),
    ):
        for _ in range(3):
            token = issuer.identity_token("alice@example.com")
            assert httpx.get(f"{base}/me", headers=jwt_header(token), timeout=5).status_code == 503

    text = output.read_text()
    assert text.count("user_lookup raised RuntimeError") == 1  # once, not once per request
    assert "alice@example.com" not in text  # neither the email ...
    assert "no such table" not in text  # ... nor the exception's text, which can carry a password


# --- the handler's rule, in this process ---------------------------------------------------------


@contextlib.contextmanager
def bare_logging() -> Iterator[io.StringIO]:
    """This process's logging as an app that configured none sees it: no handler on root (pytest's capture
    taken off for the block), a fresh fallback on the package logger; yields what it writes to stderr.

    A context manager, not a fixture: pytest adds its capture handler to root when the test's call phase starts.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logging.getLogger(), "handlers", [])
        patch.setattr(logging.getLogger("cfaccess_mw"), "handlers", [FallbackHandler()])
        patch.setattr(logging.getLogger("cfaccess_mw.users"), "level", logging.DEBUG)
        stderr = io.StringIO()
        patch.setattr(sys, "stderr", stderr)
        yield stderr


def test_the_fallback_prints_a_warning_with_a_hint_on_how_to_configure_logging() -> None:
    with bare_logging() as stderr:
        logging.getLogger("cfaccess_mw.keys").warning("certs endpoint %s failed: %s", "http://x", "ConnectError")

    first, hint = stderr.getvalue().splitlines()
    assert first == "cfaccess_mw.keys WARNING: certs endpoint http://x failed: ConnectError"
    assert "logging.basicConfig" in hint


def test_the_fallback_prints_each_distinct_warning_once() -> None:
    with bare_logging() as stderr:
        for _ in range(3):
            logging.getLogger("cfaccess_mw").error("cfaccess_mw: user_lookup raised %s", "OperationalError")
        logging.getLogger("cfaccess_mw").error("cfaccess_mw: user_lookup raised %s", "TimeoutError")

    text = stderr.getvalue()
    assert text.count("cfaccess_mw ERROR: user_lookup raised OperationalError") == 1
    assert text.count("cfaccess_mw ERROR: user_lookup raised TimeoutError") == 1


def test_the_fallback_never_prints_the_audit_log() -> None:
    with bare_logging() as stderr:
        logging.getLogger("cfaccess_mw.audit").warning("refused 401 GET /me reason=token_expired")

    assert stderr.getvalue() == ""


def test_the_fallback_is_silent_once_the_app_configures_logging() -> None:
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    with bare_logging() as stderr:
        logging.getLogger().addHandler(Collect())  # what logging.basicConfig() does
        logging.getLogger("cfaccess_mw.keys").warning("certs endpoint failed")

    assert seen == ["certs endpoint failed"]
    assert stderr.getvalue() == ""


def test_the_fallback_prints_debug_records_the_app_asked_for() -> None:
    with bare_logging() as stderr:  # it sets cfaccess_mw.users to DEBUG, as the README says to
        users = logging.getLogger("cfaccess_mw.users")
        users.debug("user_lookup raised:\n%s", "Traceback ...")
        users.debug("user_lookup raised:\n%s", "Traceback ...")

    assert stderr.getvalue().count("cfaccess_mw.users DEBUG: user_lookup raised:") == 2


def test_install_adds_one_fallback_however_often_it_runs() -> None:
    install()
    install()

    fallbacks = [h for h in logging.getLogger("cfaccess_mw").handlers if isinstance(h, FallbackHandler)]
    assert len(fallbacks) == 1


def test_a_config_error_at_import_is_logged_first_and_its_traceback_ends_at_the_callers_line() -> None:
    script = textwrap.dedent(
        """
        from cfaccess_mw import Settings
        settings = Settings.from_env({"CFACCESS_TEAM_DOMAIN": "myteam.cloudflareaccess.com"})
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=clean_env(), check=False
    )

    lines = result.stderr.splitlines()
    message = "CFACCESS_AUD: CFACCESS_TEAM_DOMAIN and CFACCESS_AUD must be set together"
    assert lines[0] == f"cfaccess_mw ERROR: configuration error: {message}"
    assert lines[-1] == f"cfaccess_mw.core.errors.ConfigError: {message}"
    assert "__post_init__" not in result.stderr  # the validator's frames are not the reader's business
    assert len(lines) <= 12, result.stderr
