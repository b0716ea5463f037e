"""The package is quiet unless the application configures logging, and loud once it does.

Each case runs in a fresh interpreter: logging's configuration is process-wide, and the
point is what a process that never touched ``logging`` prints.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# An app behind the middleware that refuses one expired token (an audit WARNING) and exits.
SCRIPT = """
import asyncio
import logging

import httpx
from starlette.applications import Starlette

from cfaccess_mw import CloudflareAccessMiddleware
from cfaccess_mw.testing import LocalIssuer

{configure}


async def main() -> None:
    with LocalIssuer(max_seconds=60) as issuer:
        app = CloudflareAccessMiddleware(Starlette(), settings=issuer.settings(), user_lookup=lambda email: None)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app.example") as client:
            expired = issuer.identity_token("alice@example.com", lifetime=-600)
            response = await client.get("/", headers={{"Cf-Access-Jwt-Assertion": expired}})
            print(response.status_code)


asyncio.run(main())
"""


def run_app(configure: str) -> subprocess.CompletedProcess[str]:
    script = SCRIPT.format(configure=textwrap.dedent(configure))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)


def test_a_refusal_prints_nothing_when_the_app_configures_no_logging() -> None:
    result = run_app("")

    assert result.stdout.strip() == "401", result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize(
    "configure",
    [
        pytest.param("logging.basicConfig()", id="basicConfig"),
        pytest.param("logging.getLogger('cfaccess_mw.audit').addHandler(logging.StreamHandler())", id="audit-handler"),
    ],
)
def test_a_refusal_is_logged_once_the_app_configures_logging(configure: str) -> None:
    result = run_app(configure)

    assert result.stdout.strip() == "401", result.stderr
    assert "refused 401 GET / " in result.stderr
    assert "reason=token_expired" in result.stderr
