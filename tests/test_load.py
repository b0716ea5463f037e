"""Load and key rotation against a real server: uvicorn, two worker processes, loopback only.

A few thousand concurrent requests mix valid identity and service tokens, valid
API keys, invalid credentials of many kinds and tokens of unknown users. Halfway,
the issuer rotates its signing key the way Cloudflare does: the new key is
published and used at once, the old one stays published for a while, then goes.
Expected: no valid request refused, no invalid one accepted, no 5xx, a bounded
number of certs fetches, and no token or key in the workers' output.

Bounded throughout: the issuer answers at most 200 fetches and stops after
three minutes; the server is started, waited for and stopped by this test.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import cfaccess_mw
from cfaccess_mw import ApiKey
from cfaccess_mw.testing import LocalIssuer

API_KEY = "lk_" + "Gq2Wx7Cv4Bn9Mk1Lp6Zr3Ts8Yu5Hd0Fj"
CLIENT_ID = "c0ffee00c0ffee00c0ffee00c0ffee00.access"
COOLDOWN = 1.0  # the smallest a deployment may set (0 is for loopback test issuers only): a real cooldown under load
PER_PHASE = (1200, 1200, 600)  # before rotation, old and new keys published, old key withdrawn
CONCURRENCY = 48
ROOT = Path(__file__).resolve().parents[1]
SRC = Path(cfaccess_mw.__file__).resolve().parents[1]
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

pytestmark = pytest.mark.slow

Request = tuple[str, dict[str, str], int]  # kind, headers, expected status


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def requests_for(issuer: LocalIssuer, valid_kids: list[str], count: int) -> list[Request]:
    """``count`` requests cycling through every kind; valid tokens are signed by ``valid_kids`` in turn."""

    def token(header: str) -> dict[str, str]:
        return {"Cf-Access-Jwt-Assertion": header}

    pool: list[Request] = []
    for n in range(count // 12 + 1):
        kid = valid_kids[n % len(valid_kids)]
        user = ("alice@example.com", "bob@example.com")[n % 2]
        good = issuer.identity_token(user, kid=kid)
        pool += [
            ("user", token(good), 200),
            ("user", token(good), 200),  # repeated: served from the token cache
            ("service", token(issuer.service_token(CLIENT_ID, kid=kid)), 200),
            ("api-key", {"Authorization": f"Bearer {API_KEY}"}, 200),
            ("unknown-user", token(issuer.identity_token(f"mallory{n}@example.com", kid=kid)), 403),
            ("unlisted-service", token(issuer.service_token("dead.access", kid=kid)), 403),
            ("tampered", token(good[:-8] + ("A" * 8 if not good.endswith("A" * 8) else "B" * 8)), 401),
            ("expired", token(issuer.identity_token(user, kid=kid, lifetime=-3600)), 401),
            ("wrong-audience", token(issuer.identity_token(user, kid=kid, aud=["0" * 64])), 401),
            ("garbage", token(f"garbage.{n}.token"), 401),
            ("wrong-api-key", {"Authorization": f"Bearer {API_KEY[:-1]}x"}, 401),
            ("nothing", {}, 401),
        ]
    return pool[:count]


async def drive(port: int, requests: list[Request]) -> Counter[tuple[str, int, int]]:
    """Send every request with at most CONCURRENCY in flight; count (kind, expected, got)."""
    outcomes: Counter[tuple[str, int, int]] = Counter()
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30) as client:

        async def one(kind: str, headers: dict[str, str], expected: int) -> None:
            async with gate:
                response = await client.get("/", headers=headers)
            outcomes[(kind, expected, response.status_code)] += 1

        await asyncio.gather(*(one(*request) for request in requests))
    return outcomes


def wait_until(ready: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_workers_under_load_through_a_key_rotation(tmp_path: Path, register_secret: Callable[[str], str]) -> None:
    register_secret(API_KEY)
    with LocalIssuer(max_requests=200, max_seconds=180) as issuer:
        port = free_port()
        env = {
            **os.environ,
            **issuer.env(
                CFACCESS_API_KEYS=ApiKey.from_secret("load", API_KEY).line(),
                CFACCESS_SERVICE_TOKENS=f"ci={CLIENT_ID}",
                CFACCESS_PUBLIC_PATHS="/healthz",
                CFACCESS_JWKS_REFRESH_COOLDOWN_SECONDS=str(COOLDOWN),
            ),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(SRC)]),
        }
        log_path = tmp_path / "uvicorn.log"
        command = [sys.executable, "-m", "uvicorn", "--factory", "tests.load_app:create_app"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--no-access-log"]
        with log_path.open("wb") as log:
            server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: healthy(port) and issuer.fetch_count >= 2, 60, "both workers to start and fetch keys")
            ready_at = time.monotonic()
            old_kid = issuer.signing_kid

            outcomes = asyncio.run(asyncio.wait_for(drive(port, requests_for(issuer, [old_kid], PER_PHASE[0])), 120))
            # The workers fetched at start-up; a new kid is looked up once their refetch cooldown has passed.
            wait_until(lambda: time.monotonic() - ready_at > COOLDOWN + 0.5, 10, "the refetch cooldown")
            new_kid = issuer.rotate(keep_old=True)
            both = requests_for(issuer, [new_kid, old_kid], PER_PHASE[1])
            outcomes += asyncio.run(asyncio.wait_for(drive(port, both), 120))
            issuer.remove_key(old_kid)
            outcomes += asyncio.run(asyncio.wait_for(drive(port, requests_for(issuer, [new_kid], PER_PHASE[2])), 120))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - only when shutdown hangs
                server.kill()
                server.wait()
        fetches = issuer.fetch_count

    wrong = {key: n for key, n in outcomes.items() if key[1] != key[2]}
    assert sum(outcomes.values()) == sum(PER_PHASE)
    assert not wrong, f"unexpected statuses (kind, expected, got): {wrong}"
    assert not any(got >= 500 for _, _, got in outcomes)
    valid_accepted = sum(n for (_, expected, got), n in outcomes.items() if expected == got == 200)
    assert valid_accepted >= sum(PER_PHASE) // 3  # a third of every cycle is valid
    # Two workers: one fetch each at start-up, one each when the new kid first appears; a little slack.
    assert 4 <= fetches <= 6, f"{fetches} certs fetches"
    print(f"{sum(PER_PHASE)} requests, {valid_accepted} valid accepted, {fetches} certs fetches")

    output = log_path.read_text(errors="replace")
    assert "Traceback" not in output
    assert not JWT.search(output), "a token appeared in the server's output"
    assert API_KEY not in output
