"""The ``cfaccess-mw`` command, through its real entry points: ``main()`` in-process and ``python -m`` / the script.

Every subcommand's success and failure paths run against a :class:`LocalIssuer` with real keys on a loopback certs
server, with ``CFACCESS_*`` set in the environment the way a deployer sets them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cfaccess_mw
from cfaccess_mw import cli
from cfaccess_mw.cli.output import _keys_row
from cfaccess_mw.core.settings import Settings
from cfaccess_mw.testing import LocalIssuer

SRC = Path(cfaccess_mw.__file__).resolve().parents[1]  # the folder holding the package under test
ROOT = Path(__file__).resolve().parents[1]
CLIENT_ID = "0123456789abcdef.access"


@pytest.fixture(scope="module")
def local_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(max_requests=500, max_seconds=300) as issuer:
        yield issuer


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CFACCESS_* variable from the outside world."""
    for name in list(os.environ):
        if name.startswith("CFACCESS_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def deployed(local_issuer: LocalIssuer, clean_env: pytest.MonkeyPatch) -> LocalIssuer:
    """The environment of a working deployment in front of ``local_issuer``."""
    env = local_issuer.env(
        CFACCESS_API_KEYS="operator:sha256:" + hashlib.sha256(b"operator-secret").hexdigest(),
        CFACCESS_SERVICE_TOKENS=f"ci-robot={CLIENT_ID}",
        CFACCESS_PUBLIC_PATHS="/healthz,/auth/config",
    )
    for name, value in env.items():
        clean_env.setenv(name, value)
    return local_issuer


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def set_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


def one_error_line(err: str) -> str:
    """The single ``cfaccess-mw:`` error line that ends every failure (warnings may come before it)."""
    lines = err.splitlines()
    assert lines, "no error message on stderr"
    assert "Traceback" not in err
    errors = [line for line in lines if not line.startswith("cfaccess-mw: warning:")]
    assert len(errors) == 1, err
    assert errors[0].startswith("cfaccess-mw: ")
    return errors[0]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/cdn-cgi/access/certs"


# --- check -------------------------------------------------------------------------------------


def test_check_prints_the_effective_policy(deployed: LocalIssuer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check")

    assert code == 0, err
    assert "reverse-proxy" in out
    assert f"https://{deployed.team_domain}" in out
    assert deployed.audience in out
    assert deployed.certs_url in out
    assert f"signing keys ({len(deployed.kids)})" in out
    assert all(kid in out for kid in deployed.kids)
    assert "/healthz, /auth/config" in out
    assert "API keys (1)" in out
    assert "operator" in out
    assert "ci-robot" in out
    assert CLIENT_ID in out
    assert "leeway" in out
    assert "30 s" in out
    assert "keys cache TTL" in out
    assert "300 s" in out
    assert "keys max age" in out
    assert "86400 s" in out
    assert out.rstrip().endswith("OK: configuration is valid and the certs endpoint serves usable keys.")


def test_check_never_prints_api_key_hashes(deployed: LocalIssuer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check")

    assert code == 0
    assert hashlib.sha256(b"operator-secret").hexdigest() not in out + err


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        pytest.param({"CFACCESS_TEAM_DOMAIN": "team.cloudflareaccess.com"}, "CFACCESS_AUD", id="aud-missing"),
        pytest.param({}, "CFACCESS_TEAM_DOMAIN", id="nothing-set-in-reverse-proxy-mode"),
        pytest.param({"CFACCESS_EXPOSURE_MODE": "tunnel"}, "CFACCESS_EXPOSURE_MODE", id="unknown-mode"),
        pytest.param({"CFACCESS_LEEWAY_SECONDS": "soon"}, "CFACCESS_LEEWAY_SECONDS", id="leeway-not-a-number"),
        pytest.param({"CFACCESS_API_KEYS": "operator:md5:abc"}, "CFACCESS_API_KEYS", id="api-key-not-sha256"),
        pytest.param({"CFACCESS_AUD": "app.example.com"}, "CFACCESS_AUD", id="aud-not-a-tag"),
        pytest.param({"CFACCESS_STRICT": "true", "CFACCESS_PUBLIC_PATH": "/x"}, "CFACCESS_PUBLIC_PATH", id="strict"),
    ],
)
def test_check_names_the_bad_variable_and_exits_2(
    local_issuer: LocalIssuer,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variables: dict[str, str],
    named: str,
) -> None:
    base = {} if not variables or "CFACCESS_TEAM_DOMAIN" in variables else local_issuer.env()
    for name, value in {**base, **variables}.items():
        clean_env.setenv(name, value)

    code, _out, err = run(capsys, "check")

    assert code == 2
    assert one_error_line(err).startswith(f"cfaccess-mw: {named}: ")


def test_check_warns_about_an_unknown_variable(
    deployed: LocalIssuer, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("CFACCESS_AUDIENCE", "typo")

    code, _, err = run(capsys, "check")

    assert code == 0
    assert (
        "cfaccess-mw: warning: ignoring unknown setting CFACCESS_AUDIENCE (a typo? did you mean CFACCESS_AUD?)" in err
    )


def test_check_strict_refuses_an_unknown_variable_naming_the_one_meant(
    deployed: LocalIssuer, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("CFACCESS_PUBLIC_PATH", "/status")  # the typo that leaves /status behind auth

    code, out, err = run(capsys, "check", "--strict")

    assert code == 2
    line = one_error_line(err)
    assert line.startswith("cfaccess-mw: CFACCESS_PUBLIC_PATH: ")
    assert "did you mean CFACCESS_PUBLIC_PATHS?" in line
    assert "OK" not in out


def test_check_strict_passes_a_clean_deployment_and_leaves_client_variables_alone(
    deployed: LocalIssuer, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("CFACCESS_CLIENT_URL", "https://app.example.com")  # the httpx client's, not the middleware's

    code, out, err = run(capsys, "check", "--strict")

    assert code == 0, err
    assert err == ""
    assert out.rstrip().endswith("OK: configuration is valid and the certs endpoint serves usable keys.")


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")

    assert code == 0
    assert out == f"cfaccess-mw {cfaccess_mw.__version__}\n"


def test_check_reports_an_unreachable_certs_endpoint(
    deployed: LocalIssuer, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = closed_port_url()
    clean_env.setenv("CFACCESS_CERTS_URL", url)

    code, out, err = run(capsys, "check")

    assert code == 1
    line = one_error_line(err)
    assert line.startswith(f"cfaccess-mw: cannot fetch the signing keys from {url}: ConnectError")
    assert "exposure mode" in out  # the policy it tried is still shown


def test_check_reports_a_certs_endpoint_that_answers_an_error(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with LocalIssuer(max_requests=10, max_seconds=60) as issuer:
        issuer.responder = lambda: (500, {"Content-Type": "text/plain"}, b"oops")
        url = issuer.certs_url
        for name, value in issuer.env().items():
            clean_env.setenv(name, value)

        code, _, err = run(capsys, "check")

    assert code == 1
    line = one_error_line(err)
    assert line.startswith(f"cfaccess-mw: cannot fetch the signing keys from {url}: HTTP 500 ")
    assert "at most 86400 s, CFACCESS_JWKS_MAX_AGE_SECONDS, then answers every token 503" in line


def test_check_reports_a_key_set_past_its_maximum_age(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mirror or cache in front of the certs URL serving a copy older than the maximum age confirms nothing."""
    with LocalIssuer(max_requests=10, max_seconds=60) as issuer:
        document = json.dumps(issuer.certs_document()).encode()
        issuer.responder = lambda: (200, {"Content-Type": "application/json", "Age": "90000"}, document)
        for name, value in issuer.env(CFACCESS_JWKS_MAX_AGE_SECONDS="86400").items():
            clean_env.setenv(name, value)

        code, out, err = run(capsys, "check")

    assert code == 1
    assert "keys max age" in out
    assert "86400 s" in out
    line = one_error_line(err)
    assert "served from a cache 25 hours old (its Age header), past the maximum age of 24 hours" in line


def test_check_in_local_mode_without_access_warns_about_the_loopback_pitfall(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("CFACCESS_EXPOSURE_MODE", "local")

    code, out, err = run(capsys, "check")

    assert code == 0, err
    assert "Access tokens" in out
    assert "not read" in out
    assert "note: local mode trusts every loopback peer" in out
    assert "CFACCESS_EXPOSURE_MODE=reverse-proxy" in out


def test_check_refuses_an_aud_that_is_not_an_aud_tag(
    deployed: LocalIssuer, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("CFACCESS_AUD", "my-app.example.com")

    code, _, err = run(capsys, "check")

    assert code == 2
    assert err.startswith("cfaccess-mw: CFACCESS_AUD: 'my-app.example.com' is not an AUD tag")


# --- explain -----------------------------------------------------------------------------------


def test_explain_accepts_a_valid_identity_token(deployed: LocalIssuer, capsys: pytest.CaptureFixture[str]) -> None:
    token = deployed.identity_token("alice@example.com")

    code, out, err = run(capsys, "explain", token)

    assert code == 0, err
    assert err == ""
    assert f'"kid": "{deployed.signing_kid}"' in out
    assert '"email": "alice@example.com"' in out
    assert "it claims to be an identity (user) token for 'alice@example.com'" in out
    assert "verdict: accepted, an identity token for 'alice@example.com'." in out
    assert "user_lookup" in out  # says what the CLI cannot decide
    assert token.rsplit(".", 1)[1] not in out  # the signature is not printed
    assert token not in out


def test_explain_accepts_an_allowed_service_token(deployed: LocalIssuer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "explain", deployed.service_token(CLIENT_ID))

    assert code == 0, err
    assert f"it claims to be a service token with client ID {CLIENT_ID!r}" in out
    assert "verdict: accepted, the service token 'ci-robot'" in out


def test_explain_says_how_long_ago_a_token_expired(deployed: LocalIssuer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "explain", deployed.identity_token("alice@example.com", lifetime=-180))

    assert code == 1
    assert "verdict: refused with 401 token_expired" in out
    assert "fresh token" in out
    assert one_error_line(err).startswith("cfaccess-mw: token refused (401 token_expired): expired 3 minutes ago")


def test_explain_names_both_audiences_on_a_mismatch(deployed: LocalIssuer, capsys: pytest.CaptureFixture[str]) -> None:
    other = "f" * 64
    token = deployed.mint({**deployed.base_claims(), "aud": [other], "email": "alice@example.com"})

    code, out, err = run(capsys, "explain", token)

    assert code == 1
    line = one_error_line(err)
    assert "audience_mismatch" in line
    assert f"audience [{other!r}] is not one of [{deployed.audience!r}]" in line
    assert "CFACCESS_AUD must list the Application Audience (AUD) Tag" in out


def test_explain_spots_an_issuer_with_a_trailing_slash(
    deployed: LocalIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    token = deployed.mint({**deployed.base_claims(), "iss": deployed.issuer + "/", "email": "alice@example.com"})

    code, _, err = run(capsys, "explain", token)

    assert code == 1
    line = one_error_line(err)
    assert "issuer_mismatch" in line
    assert line.endswith("(trailing slash)")


def test_explain_names_a_key_id_unknown_to_the_certs_endpoint_and_the_foreign_issuer(
    deployed: LocalIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = LocalIssuer(team_domain="other-team.cloudflareaccess.com", audience=deployed.audience)
    token = stranger.identity_token("alice@example.com")  # minting needs no server

    code, out, err = run(capsys, "explain", token)

    assert code == 1
    line = one_error_line(err)
    assert "401 unknown_key" in line
    assert f"key id {stranger.signing_kid!r} is not among the {len(deployed.kids)} keys at {deployed.certs_url}" in line
    assert "also, in the unverified claims: issuer 'https://other-team.cloudflareaccess.com' is not" in out


def test_explain_refuses_a_tampered_token(deployed: LocalIssuer, capsys: pytest.CaptureFixture[str]) -> None:
    header, _, signature = deployed.identity_token("alice@example.com").split(".")
    forged = deployed.mint({**deployed.base_claims(), "email": "admin@example.com"}).split(".")[1]

    code, _, err = run(capsys, "explain", f"{header}.{forged}.{signature}")

    assert code == 1
    assert "401 bad_signature" in one_error_line(err)


def test_explain_says_a_service_token_is_not_allowed(deployed: LocalIssuer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "explain", deployed.service_token("someone-else.access"))

    assert code == 1
    assert "403 service_token_not_allowed" in one_error_line(err)
    assert "'someone-else.access' is not in CFACCESS_SERVICE_TOKENS" in err
    assert "add an entry to CFACCESS_SERVICE_TOKENS: NAME=someone-else.access" in out


def test_explain_reads_a_pasted_header_from_stdin(
    deployed: LocalIssuer, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = deployed.identity_token("alice@example.com")
    set_stdin(clean_env, f"Cf-Access-Jwt-Assertion: {token[:50]}\n{token[50:]}\n")

    code, out, err = run(capsys, "explain", "-")

    assert code == 0, err
    assert "verdict: accepted" in out


def test_explain_with_empty_stdin_is_a_usage_error(
    deployed: LocalIssuer, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_stdin(clean_env, "\n")

    code, out, err = run(capsys, "explain", "-")

    assert code == 2
    assert one_error_line(err).startswith("cfaccess-mw: no token given")
    assert out == ""


@pytest.mark.parametrize(
    ("token", "detail"),
    [
        pytest.param("not-a-token", "a JWS has 3 dot-separated segments, this token has 1", id="one-segment"),
        pytest.param("a.b", "this token has 2", id="two-segments"),
        pytest.param("!!.e30.sig", "the header is not base64url", id="bad-base64"),
        pytest.param("bm90IGpzb24.e30.sig", "the header is not valid JSON", id="header-not-json"),
        pytest.param("x" * 20000, "exceeds the 16384 limit", id="too-large"),
    ],
)
def test_explain_of_a_malformed_token_is_one_line(
    deployed: LocalIssuer, capsys: pytest.CaptureFixture[str], token: str, detail: str
) -> None:
    code, out, err = run(capsys, "explain", token)

    assert code == 1
    line = one_error_line(err)
    assert line.startswith("cfaccess-mw: not a readable token")
    assert detail in line
    assert out == ""


def test_explain_decodes_even_when_the_configuration_is_broken(
    local_issuer: LocalIssuer, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("CFACCESS_TEAM_DOMAIN", local_issuer.team_domain)  # CFACCESS_AUD forgotten

    code, out, err = run(capsys, "explain", local_issuer.identity_token("alice@example.com"))

    assert code == 2
    assert '"email": "alice@example.com"' in out
    assert one_error_line(err).startswith("cfaccess-mw: CFACCESS_AUD: ")


def test_explain_reports_an_unreachable_certs_endpoint(
    deployed: LocalIssuer, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = closed_port_url()
    clean_env.setenv("CFACCESS_CERTS_URL", url)

    code, _, err = run(capsys, "explain", deployed.identity_token("alice@example.com"))

    assert code == 1
    assert one_error_line(err).startswith(f"cfaccess-mw: cannot fetch the signing keys from {url}")


def test_explain_without_keys_still_says_the_issuer_differs_from_the_configured_team(
    deployed: LocalIssuer, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A misspelt team domain: its certs URL does not answer (here a closed loopback port), and the token's
    # issuer, read without trusting it, is what reveals the typo.
    clean_env.setenv("CFACCESS_TEAM_DOMAIN", "test-taem.cloudflareaccess.com")
    clean_env.setenv("CFACCESS_CERTS_URL", closed_port_url())

    code, out, err = run(capsys, "explain", deployed.identity_token("alice@example.com"))

    assert code == 1
    assert "verdict: cannot check the signature: cannot fetch the signing keys from" in out
    assert (
        "but in the unverified claims: issuer 'https://test-team.cloudflareaccess.com' is not "
        "'https://test-taem.cloudflareaccess.com'" in out
    )
    assert "set it to the team domain that issues these tokens" in out
    assert one_error_line(err).startswith("cfaccess-mw: cannot fetch the signing keys from")


def test_explain_without_keys_says_when_the_claims_match(
    deployed: LocalIssuer, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("CFACCESS_CERTS_URL", closed_port_url())

    code, out, _ = run(capsys, "explain", deployed.identity_token("alice@example.com"))

    assert code == 1
    assert "the unverified claims match the configuration (issuer, audience, times)" in out


def test_explain_without_access_configured_is_a_configuration_error(
    local_issuer: LocalIssuer, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("CFACCESS_EXPOSURE_MODE", "local")

    code, _, err = run(capsys, "explain", local_issuer.identity_token("alice@example.com"))

    assert code == 2
    assert "CFACCESS_TEAM_DOMAIN and CFACCESS_AUD are not set" in one_error_line(err)


# --- new-api-key -------------------------------------------------------------------------------


def test_new_api_key_prints_a_key_whose_line_configures_it(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "new-api-key", "backup-job")

    assert code == 0, err
    line = re.search(r"^  (backup-job:sha256:[0-9a-f]{64})$", out, re.MULTILINE)
    key = re.search(r"^  ([A-Za-z0-9_-]{40,})$", out, re.MULTILINE)
    assert line is not None
    assert key is not None
    settings = Settings.from_env({"CFACCESS_EXPOSURE_MODE": "local", "CFACCESS_API_KEYS": line.group(1)})
    match = settings.find_api_key(hashlib.sha256(key.group(1).encode()).digest())
    assert match is not None
    assert match.name == "backup-job"


def test_new_api_key_makes_a_different_key_each_time(capsys: pytest.CaptureFixture[str]) -> None:
    _, first, _ = run(capsys, "new-api-key", "a")
    _, second, _ = run(capsys, "new-api-key", "a")

    assert first != second


@pytest.mark.parametrize("name", ["two words", "a:b", "a,b", "-leading-dash", "x" * 65])
def test_new_api_key_refuses_a_bad_name(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, err = run(capsys, "new-api-key", name)

    assert code == 2
    assert one_error_line(err).startswith("cfaccess-mw: ")
    assert out == ""


# --- demo, usage, the entry points -------------------------------------------------------------


def test_demo_runs_every_call_with_the_expected_answer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "demo")

    assert code == 0, err
    assert "FAIL" not in out
    assert out.count("\nok   ") == 10
    assert "audit: accepted user=alice@example.com" in out
    assert "audit: refused token_expired: expired 3 minutes ago" in out
    assert "python3 dev.py demo" in out


def test_unexpected_errors_show_the_type_not_the_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def explode(args: object) -> int:
        raise ValueError("secret-from-somewhere")

    monkeypatch.setattr(cli, "cmd_new_api_key", explode)

    code, _, err = run(capsys, "new-api-key", "x")

    assert code == 70
    assert one_error_line(err) == "cfaccess-mw: unexpected ValueError; this is a bug in cfaccess_mw, please report it"
    assert "secret-from-somewhere" not in err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")

    assert code == 0
    assert all(command in out for command in ("check", "explain", "new-api-key", "demo"))


def subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFACCESS_")}
    env["PYTHONPATH"] = str(SRC)  # this checkout's package, not whichever is installed
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("argv", "stdin", "env", "code", "message"),
    [
        pytest.param(["nope"], "", {}, 2, "invalid choice: 'nope'", id="unknown-command"),
        pytest.param([], "", {}, 2, "required: COMMAND", id="no-command"),
        pytest.param(["check"], "", {}, 2, "CFACCESS_TEAM_DOMAIN: required", id="check-no-config"),
        pytest.param(["explain", "-"], "garbage\n", {}, 1, "not a readable token", id="explain-malformed"),
        pytest.param(
            ["explain", "-"],
            "",
            {"CFACCESS_EXPOSURE_MODE": "local"},
            2,
            "no token given",
            id="explain-no-token",
        ),
    ],
)
def test_python_m_errors_are_one_line_without_traceback(
    argv: list[str], stdin: str, env: dict[str, str], code: int, message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cfaccess_mw", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=subprocess_env(env),
        timeout=60,
        check=False,
    )

    assert result.returncode == code
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("cfaccess-mw: ")
    assert message in result.stderr


def test_python_m_check_succeeds_against_a_working_deployment(local_issuer: LocalIssuer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cfaccess_mw", "check"],
        capture_output=True,
        text=True,
        env=subprocess_env(local_issuer.env()),
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert local_issuer.signing_kid in result.stdout


def test_python_m_explain_reads_stdin(local_issuer: LocalIssuer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cfaccess_mw", "explain", "-"],
        input=local_issuer.identity_token("alice@example.com", lifetime=-600) + "\n",
        capture_output=True,
        text=True,
        env=subprocess_env(local_issuer.env()),
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr.startswith("cfaccess-mw: token refused (401 token_expired): expired 10 minutes ago")


def test_pyproject_declares_the_console_script() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    assert project["scripts"]["cfaccess-mw"] == "cfaccess_mw.cli:main"


def test_installed_console_script_reports_the_installed_version() -> None:
    """The script on PATH runs this checkout's code: its version is the installed distribution's and ours."""
    script = Path(sys.executable).with_name("cfaccess-mw")
    if not script.exists():
        pytest.skip("cfaccess-mw is not installed next to this interpreter (not an installed environment)")

    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, env=subprocess_env({}), timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"cfaccess-mw {importlib.metadata.version('cfaccess_mw')}\n"
    assert importlib.metadata.version("cfaccess_mw") == cfaccess_mw.__version__


def test_installed_console_script_runs_new_api_key() -> None:
    script = Path(sys.executable).with_name("cfaccess-mw")
    if not script.exists():
        pytest.skip("cfaccess-mw is not installed next to this interpreter (not an installed environment)")

    result = subprocess.run(
        [str(script), "new-api-key", "operator"],
        capture_output=True,
        text=True,
        env=subprocess_env({}),
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert re.search(r"^  operator:sha256:[0-9a-f]{64}$", result.stdout, re.MULTILINE)


# --- help and small output (issue 20) ----------------------------------------------------------


@pytest.mark.parametrize("command", ["check", "explain", "dev", "dev token"])
def test_each_command_has_a_description_in_its_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, *command.split(), "--help")

    assert code == 0
    usage, description = out.split("\n\n")[:2]
    assert usage.startswith(f"usage: cfaccess-mw {command}")
    assert len(description.split()) >= 12, out  # a sentence or more, not the bare usage


def test_the_top_level_help_lists_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "--help")

    assert "0 ok; 1 a check failed; 2 usage or configuration error; 70 a bug" in " ".join(out.split())


def test_explain_help_names_every_presets_header(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "explain", "--help")

    text = " ".join(out.split()).replace("- ", "-")  # argparse wraps lines after a hyphen
    for header in ("Cf-Access-Jwt-Assertion", "x-goog-iap-jwt-assertion", "X-Pomerium-Jwt-Assertion"):
        assert header in text
    assert "x-amzn-oidc-data" in text
    assert "Authorization: Bearer" in text


def test_an_empty_key_list_is_never_printed_as_a_dangling_from(capsys: pytest.CaptureFixture[str]) -> None:
    _keys_row([], "http://127.0.0.1:1/certs")
    _keys_row(["k1", "k2"], "http://127.0.0.1:1/certs")

    empty, two = capsys.readouterr().out.splitlines()
    assert empty == "  signing keys (0)     none usable from http://127.0.0.1:1/certs"
    assert two == "  signing keys (2)     k1, k2 from http://127.0.0.1:1/certs"
