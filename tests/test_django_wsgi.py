"""Django under WSGI servers, as most Django deployments run it (issue 19): ``manage.py runserver`` and gunicorn.

Before, the Django middleware was async only, Django ran it through ``async_to_sync`` in a
threaded WSGI server, and the key cache's lock belonged to one event loop: four concurrent
requests right after a key rotation under ``runserver`` left three hanging for over 60 s.
Here the example project (``examples/django_app.py``, its users Django's own in SQLite)
runs under the real servers in a subprocess bound to 127.0.0.1, and a burst of 32
concurrent requests arrives right after a rotation while the certs endpoint is slow, then
down. No request may hang, the burst must cost one fetch, and no valid token may be refused.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from cfaccess_mw.testing import LocalIssuer

from .hostile import HeldCerts
from .live_examples import ROOT, free_port, serve_command

BURST = 32
BOUND = 30.0  # seconds: a hang fails here instead of holding CI


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalIssuer, HeldCerts, dict[str, str]]]:
    """A migrated SQLite database with Alice, an issuer, and the environment the servers get."""
    with LocalIssuer() as issuer:
        certs = HeldCerts(issuer, held=False, bound=BOUND)
        issuer.responder = certs
        db = tmp_path_factory.mktemp("django-wsgi") / "users.sqlite3"
        env = {
            **issuer.env(CFACCESS_PUBLIC_PATHS="/healthz"),
            "EXAMPLE_DB": str(db),
            "DJANGO_SECRET_KEY": "test-only-" + "x" * 40,
            "PYTHONPATH": str(ROOT),
        }
        manage = [sys.executable, "-m", "examples.django_app"]
        subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120)
        create = "from django.contrib.auth.models import User; User.objects.create_user('alice', 'alice@example.com')"
        subprocess.run([*manage, "shell", "-c", create], cwd=ROOT, env=env, check=True, timeout=120)
        yield issuer, certs, env


def burst(base: str, token: str) -> list[int]:
    """``BURST`` concurrent requests to ``/api/me`` with ``token``: their statuses (a hang fails the test)."""

    def one() -> int:
        response = httpx.get(f"{base}/api/me", headers={"Cf-Access-Jwt-Assertion": token}, timeout=BOUND)
        return response.status_code

    with ThreadPoolExecutor(BURST) as pool:
        futures = [pool.submit(one) for _ in range(BURST)]
        return [future.result(timeout=BOUND + 5) for future in futures]


def rotation_burst(base: str, issuer: LocalIssuer, certs: HeldCerts) -> None:
    """A key rotation, then a burst while the endpoint holds its answer: all accepted, one fetch."""
    assert httpx.get(f"{base}/healthz", timeout=BOUND).status_code == 200
    old = issuer.identity_token("alice@example.com")
    assert burst(base, old) == [200] * BURST
    new_kid = issuer.rotate()
    token = issuer.identity_token("alice@example.com", kid=new_kid)
    certs.release.clear()
    fetches = issuer.fetch_count
    threading.Timer(1.0, certs.release.set).start()  # the burst is all waiting on the one fetch by then
    assert burst(base, token) == [200] * BURST
    assert issuer.fetch_count == fetches + 1, "one fetch for the whole burst"
    # Slow, then down: the next rotation cannot be known. Its tokens get 503 (never 401), the cached key's 200.
    newer = issuer.rotate()
    certs.down = True
    certs.release.clear()
    threading.Timer(0.5, certs.release.set).start()
    try:
        assert set(burst(base, issuer.identity_token("alice@example.com", kid=newer))) == {503}
        assert burst(base, token) == [200] * BURST
    finally:
        certs.down = False
        certs.release.set()


def servers() -> list[tuple[str, list[str]]]:
    gunicorn = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:{port}", "--workers", "1", "--timeout", "60"]
    target = "examples.django_app:create_wsgi_app()"
    return [
        ("runserver", [sys.executable, "-m", "examples.django_app", "runserver", "127.0.0.1:{port}", "--noreload"]),
        ("gunicorn-gthread", [*gunicorn, "--worker-class", "gthread", "--threads", str(BURST), target]),
        ("gunicorn-sync", [*gunicorn, "--worker-class", "sync", target]),
    ]


@pytest.mark.parametrize(("name", "argv"), servers(), ids=[name for name, _ in servers()])
def test_a_rotation_mid_burst_under_a_wsgi_server(
    project: tuple[LocalIssuer, HeldCerts, dict[str, str]], name: str, argv: list[str]
) -> None:
    issuer, certs, env = project
    port = free_port()
    with serve_command([part.format(port=port) for part in argv], port, env, probe="/healthz") as base:
        rotation_burst(base, issuer, certs)


def test_the_wsgi_refusals_are_the_json_errors(project: tuple[LocalIssuer, HeldCerts, dict[str, str]]) -> None:
    issuer, _, env = project
    port = free_port()
    argv = [sys.executable, "-m", "examples.django_app", "runserver", f"127.0.0.1:{port}", "--noreload"]
    with serve_command(argv, port, env, probe="/healthz") as base:
        nothing = httpx.get(f"{base}/api/me", timeout=BOUND)
        stranger = httpx.get(
            f"{base}/api/me",
            headers={"Cf-Access-Jwt-Assertion": issuer.identity_token("mallory@example.com")},
            timeout=BOUND,
        )
    assert (nothing.status_code, nothing.json()["error"]["reason"]) == (401, "no_credentials")
    assert (stranger.status_code, stranger.json()["error"]["reason"]) == (403, "unknown_user")
