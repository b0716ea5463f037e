"""cfaccess_mw's pytest plugin: registered with ``pytest11``, its fixtures isolate ``CFACCESS_*`` from the shell.

The plugin is tested the way pytest plugins are, with ``pytester``: a test file of a user's is run by an inner
pytest while stray ``CFACCESS_*`` variables (a junk team domain, a typo) sit in the environment. The example
tests under ``examples/testing/`` (one per framework and one per preset) are run here too, the same way.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
STRAYS = {
    "CFACCESS_TEAM_DOMAIN": "junk",
    "CFACCESS_AUD": "junk",
    "CFACCESS_PUBLIC_PATH": "/healthz",  # a typo: strict mode below would refuse it
    "CFACCESS_STRICT": "true",
}

USER_TESTS = """
import os

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from cfaccess_mw import CloudflareAccessMiddleware, Settings


def make_app():
    settings = Settings.from_env()  # as an app does at import: exactly the fixture's variables must be there
    app = Starlette(routes=[Route("/me", lambda request: JSONResponse({"who": request.user.display_name}))])
    app.add_middleware(CloudflareAccessMiddleware, settings=settings, user_lookup={"alice@example.com": 1}.get)
    return app


def test_only_the_issuers_variables_are_set(cfaccess_env, cfaccess_issuer):
    cfaccess_env.set(CFACCESS_PUBLIC_PATHS="/healthz")
    names = {name for name in os.environ if name.startswith("CFACCESS_")}
    assert names == set(cfaccess_env) == set(cfaccess_issuer.env()) | {"CFACCESS_PUBLIC_PATHS"}


@pytest.mark.parametrize("cfaccess_provider", ["cloudflare", "google-iap", "pomerium", "aws-alb", "oidc"])
def test_a_user_gets_in_behind_every_preset(cfaccess_env, cfaccess_issuer):
    with TestClient(make_app()) as client:
        token = cfaccess_issuer.identity_token("alice@example.com")
        response = client.get("/me", headers=cfaccess_issuer.request_headers(token))
    assert response.json() == {"who": "alice@example.com"}


def test_settings_in_code(cfaccess_settings, cfaccess_issuer):
    assert cfaccess_settings.audiences == (cfaccess_issuer.audience,)


def test_the_variables_are_gone_after_the_test():
    assert os.environ.get("CFACCESS_TEAM_DOMAIN") == "junk"  # the shell's own, back again
"""


def test_the_plugin_is_registered_with_the_pytest11_entry_point() -> None:
    (plugin,) = [e for e in entry_points(group="pytest11") if e.name == "cfaccess_mw"]

    assert plugin.value == "cfaccess_mw.testing.pytest_plugin"


def test_the_fixtures_pass_with_stray_variables_in_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in STRAYS.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile(test_user=USER_TESTS)

    result = pytester.runpytest("-p", "no:cacheprovider")

    result.assert_outcomes(passed=8)
    assert os.environ["CFACCESS_TEAM_DOMAIN"] == "junk"  # the plugin undid its changes


def test_an_unknown_provider_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("cfaccess_provider", ["cloudfare"])
        def test_it(cfaccess_issuer):
            pass
        """
    )

    result = pytester.runpytest("-p", "no:cacheprovider")

    result.stdout.fnmatch_lines(["*cfaccess_provider 'cloudfare' is not one of: cloudflare, google-iap*"])


def test_the_example_tests_pass_with_stray_variables_in_the_environment() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CFACCESS_", "PYTEST_"))}
    files = sorted(p.name for p in (ROOT / "examples" / "testing").glob("test_*.py"))

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/testing"],
        cwd=ROOT,
        env={**env, **STRAYS},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    frameworks = {"test_blacksheep.py", "test_django.py", "test_falcon.py", "test_fastapi.py", "test_litestar.py"}
    frameworks |= {"test_quart.py", "test_sanic.py", "test_starlette.py", "test_presets.py"}
    frameworks |= {"test_flask.py", "test_wsgi.py"}
    assert frameworks <= set(files)
    match = re.search(r"^(\d+) passed", result.stdout, re.MULTILINE)
    assert match is not None, result.stdout
    assert int(match.group(1)) >= 19
