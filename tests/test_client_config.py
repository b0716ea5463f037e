"""Client configuration: ``${VAR}`` expansion, the TOML file, the environment, validation and redaction.

No server here: these are the decisions made while building an :class:`AccessAuth`,
before any request. The end-to-end behaviour is in ``test_client.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from cfaccess_mw.client import (
    AccessAuth,
    AccessChallengeError,
    ClientConfigError,
    CloudflaredToken,
    detect_challenge,
    expand_env,
)
from cfaccess_mw.core.errors import ConfigError

SECRET = "s3cr3t-0123456789abcdef"
ENV = {"CF_SECRET": SECRET, "KEY": "app_key_value", "EMPTY": ""}

CONFIG = """\
[api]
url = "https://app.example.com"
key = "${KEY}"
timeout = 30  # the application's own setting: ignored

[api.headers]
CF-Access-Client-Id = "0123abcd.access"
CF-Access-Client-Secret = "${CF_SECRET}"
"""


# --- ${VAR} expansion ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("${CF_SECRET}", SECRET, id="whole-value"),
        pytest.param("Bearer ${KEY}!", "Bearer app_key_value!", id="inside-text"),
        pytest.param("$${CF_SECRET}", "${CF_SECRET}", id="escaped"),
        pytest.param("a$$${KEY}", "a$${KEY}", id="read-left-to-right"),
        pytest.param("cost $5 {x}", "cost $5 {x}", id="lone-dollar-and-brace"),
        pytest.param("plain", "plain", id="no-variables"),
    ],
)
def test_variables_are_expanded_and_escapes_kept(raw: str, expected: str) -> None:
    assert expand_env(raw, "header X", ENV) == expected


def test_an_expanded_value_is_not_expanded_again() -> None:
    assert expand_env("${A}", "header X", {"A": "${B}", "B": "no"}) == "${B}"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        pytest.param("${MISSING}", "environment variable MISSING is not set", id="unset"),
        pytest.param("${EMPTY}", "environment variable EMPTY is set but empty", id="empty"),
        pytest.param("x${KEY", "without a closing '}'", id="unclosed"),
        pytest.param("${not-a-name}", "is not a variable name", id="bad-name"),
        pytest.param("${}", "is not a variable name", id="empty-name"),
    ],
)
def test_bad_variables_are_errors_naming_place_and_variable(raw: str, problem: str) -> None:
    with pytest.raises(ClientConfigError) as caught:
        expand_env(raw, "header CF-Access-Client-Secret", ENV)
    assert caught.value.variable == "header CF-Access-Client-Secret"
    assert problem in caught.value.problem


def test_an_unset_variable_never_becomes_an_empty_header() -> None:
    with pytest.raises(ClientConfigError, match="CF_ACCESS_CLIENT_SECRET is not set"):
        AccessAuth({"CF-Access-Client-Secret": "${CF_ACCESS_CLIENT_SECRET}"}, environ={})


# --- header and URL validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "api_key", "problem"),
    [
        pytest.param({"Bad Name": "v"}, None, "not a valid header name", id="space-in-name"),
        pytest.param({"Host": "evil.example"}, None, "set by the HTTP client", id="reserved-host"),
        pytest.param({"Content-Length": "0"}, None, "set by the HTTP client", id="reserved-length"),
        pytest.param({"X-A": "1", "x-a": "2"}, None, "configured twice", id="duplicate"),
        pytest.param({"X-A": ""}, None, "is empty", id="empty-value"),
        pytest.param({"X-A": 5}, None, "must be a string", id="not-a-string"),
        pytest.param({"Authorization": "Basic x"}, "key", "conflicts with a configured Authorization", id="two-auth"),
    ],
)
def test_unusable_headers_are_refused(headers: dict[str, object], api_key: str | None, problem: str) -> None:
    with pytest.raises(ClientConfigError, match=problem):
        AccessAuth(headers, api_key, environ=ENV)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(SECRET + "\r\nX-Injected: 1", id="header-injection"),
        pytest.param(" " + SECRET, id="leading-space"),
        pytest.param(SECRET + "\x00", id="nul"),
        pytest.param(SECRET + "é", id="non-ascii"),
    ],
)
def test_a_bad_value_from_the_environment_is_refused_without_showing_it(value: str) -> None:
    with pytest.raises(ClientConfigError) as caught:
        AccessAuth({"CF-Access-Client-Secret": "${CF_SECRET}"}, environ={"CF_SECRET": value})
    assert "CF-Access-Client-Secret" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        pytest.param("https://app.example.com", True, id="https"),
        pytest.param("http://127.0.0.1:8000", True, id="http-loopback"),
        pytest.param("http://localhost:8000", True, id="http-localhost"),
        pytest.param("http://app.example.com", False, id="http-remote-with-secrets"),
        pytest.param("ftp://app.example.com", False, id="not-http"),
        pytest.param("app.example.com", False, id="no-scheme"),
    ],
)
def test_secrets_go_only_to_https_or_loopback(url: str, ok: bool) -> None:
    def build() -> AccessAuth:
        return AccessAuth({"X-Token": "${CF_SECRET}"}, base_url=url, environ=ENV)

    if ok:
        assert build().base_url == httpx.URL(url)
    else:
        with pytest.raises(ClientConfigError, match="base_url"):
            build()


def test_plain_http_is_fine_when_nothing_secret_is_configured() -> None:
    assert AccessAuth(base_url="http://app.example.com").base_url == httpx.URL("http://app.example.com")


# --- the TOML file --------------------------------------------------------------------------------------


def test_the_config_file_gives_url_key_and_headers(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    auth = AccessAuth.from_file(path, environ=ENV)
    assert auth.base_url == httpx.URL("https://app.example.com")
    assert auth.header_names == ("CF-Access-Client-Id", "CF-Access-Client-Secret", "Authorization")
    request = httpx.Request("GET", "https://app.example.com/api/me")
    next(auth.sync_auth_flow(request))
    assert request.headers["CF-Access-Client-Secret"] == SECRET
    assert request.headers["Authorization"] == "Bearer app_key_value"


def test_a_missing_config_file_is_an_error_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(ClientConfigError, match="does not exist"):
        AccessAuth.from_file(tmp_path / "nope.toml")
    assert not AccessAuth.from_file(tmp_path / "nope.toml", missing_ok=True).configured


def test_a_file_without_an_api_table_configures_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[ui]\ntheme = "dark"\n')
    assert not AccessAuth.from_file(path).configured


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("[api\n", "is not valid TOML", id="bad-toml"),
        pytest.param('api = "x"\n', "[api]: must be a table", id="api-not-table"),
        pytest.param('[api]\nheaders = "x"\n', "[api.headers]: must be a table", id="headers-not-table"),
        pytest.param("[api]\nkey = 5\n", "[api] key: must be a string", id="key-not-string"),
        pytest.param('[api.headers]\nX-S = "${NOPE}"\n', "[api.headers] X-S: environment variable NOPE", id="unset"),
        pytest.param("[api]\ncloudflared = true\n", "needs [api] url", id="cloudflared-without-url"),
        pytest.param('[api]\nurl = "https://a.example"\ncloudflared = 3\n', "must be true, false", id="cf-type"),
    ],
)
def test_config_file_errors_name_the_file_and_setting(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ClientConfigError) as caught:
        AccessAuth.from_file(path, environ=ENV)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_cloudflared_in_the_file_makes_a_token_provider_for_the_url(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[api]\nurl = "https://app.example.com"\ncloudflared = "/opt/bin/cloudflared"\n')
    provider = AccessAuth.from_file(path).token_provider
    assert isinstance(provider, CloudflaredToken)
    assert (provider.app_url, provider.executable) == ("https://app.example.com", "/opt/bin/cloudflared")


def test_a_cf_access_token_header_and_cloudflared_conflict() -> None:
    with pytest.raises(ClientConfigError, match="conflicts with the cloudflared token source"):
        AccessAuth.from_dict(
            {"api": {"url": "https://a.example", "cloudflared": True, "headers": {"cf-access-token": "x"}}}
        )


# --- the environment --------------------------------------------------------------------------------------


def test_environment_variables_alone_configure_the_client() -> None:
    env = {
        **ENV,
        "CFACCESS_CLIENT_URL": "https://app.example.com",
        "CFACCESS_CLIENT_API_KEY": "${KEY}",
        "CFACCESS_CLIENT_HEADERS": "CF-Access-Client-Id=0123abcd.access, CF-Access-Client-Secret=${CF_SECRET}",
    }
    auth = AccessAuth.from_env(env)
    assert auth.base_url == httpx.URL("https://app.example.com")
    request = httpx.Request("GET", "https://app.example.com/")
    next(auth.sync_auth_flow(request))
    assert request.headers["CF-Access-Client-Id"] == "0123abcd.access"
    assert request.headers["CF-Access-Client-Secret"] == SECRET
    assert request.headers["Authorization"] == "Bearer app_key_value"


def test_environment_variables_override_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    env = {
        **ENV,
        "CFACCESS_CLIENT_CONFIG": str(path),
        "CFACCESS_CLIENT_URL": "https://other.example.com",
        "CFACCESS_CLIENT_HEADERS": "cf-access-client-id=override.access",
    }
    auth = AccessAuth.from_env(env)
    request = httpx.Request("GET", "https://other.example.com/")
    next(auth.sync_auth_flow(request))
    assert auth.base_url == httpx.URL("https://other.example.com")
    assert request.headers["CF-Access-Client-Id"] == "override.access"
    assert request.headers["CF-Access-Client-Secret"] == SECRET


def test_the_app_config_file_is_found_under_xdg_config_home(tmp_path: Path) -> None:
    (tmp_path / "mycli").mkdir()
    (tmp_path / "mycli" / "config.toml").write_text(CONFIG)
    auth = AccessAuth.from_env({**ENV, "XDG_CONFIG_HOME": str(tmp_path)}, app_name="mycli")
    assert "CF-Access-Client-Secret" in auth.header_names
    assert not AccessAuth.from_env({"XDG_CONFIG_HOME": str(tmp_path)}, app_name="other").configured


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        pytest.param({"CFACCESS_CLIENT_CONFIG": "/nonexistent/c.toml"}, "does not exist", id="config-missing"),
        pytest.param({"CFACCESS_CLIENT_HEADERS": "NoEquals"}, "Name=value", id="headers-shape"),
        pytest.param({"CFACCESS_CLIENT_CLOUDFLARED": "1"}, "needs [api] url", id="cloudflared-without-url"),
        pytest.param({"CFACCESS_CLIENT_API_KEY": "${NOPE}"}, "NOPE is not set", id="key-unset-variable"),
    ],
)
def test_environment_errors_name_the_variable(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ClientConfigError) as caught:
        AccessAuth.from_env(env)
    assert caught.value.variable.startswith("CFACCESS_CLIENT_")
    assert problem in str(caught.value)


def test_the_client_error_is_a_config_error() -> None:
    assert issubclass(ClientConfigError, ConfigError)


# --- redaction --------------------------------------------------------------------------------------------


def test_repr_str_and_attributes_never_show_values(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    auth = AccessAuth({"CF-Access-Client-Secret": "${CF_SECRET}"}, "${KEY}", environ=ENV)
    shown = repr(auth) + str(auth) + repr(vars(auth)) + str(vars(auth))
    logging.getLogger("test").debug("configured: %r %s", auth, vars(auth))
    assert "CF-Access-Client-Secret" in shown
    assert SECRET not in shown
    assert "app_key_value" not in shown
    assert SECRET not in caplog.text
    assert "app_key_value" not in caplog.text


# --- challenge detection (the table) ------------------------------------------------------------------------

APP = "https://app.example.com/api/me"


def response(status: int, headers: dict[str, str]) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("GET", APP))


@pytest.mark.parametrize(
    ("status", "headers", "challenge", "metadata"),
    [
        pytest.param(302, {"location": "https://team.cloudflareaccess.com/cdn-cgi/access/login/app"}, True, None,
                     id="302-to-team-domain"),
        pytest.param(303, {"location": "https://team.cloudflareaccess.com/x"}, True, None, id="303-to-team-domain"),
        pytest.param(302, {"location": "/cdn-cgi/access/login/app.example.com"}, True, None,
                     id="302-to-custom-team-domain-login"),
        pytest.param(302, {"location": "https://cloudflareaccess.com.evil.example/"}, False, None,
                     id="302-lookalike-host"),
        pytest.param(302, {"location": "https://evilcloudflareaccess.com/"}, False, None, id="302-suffix-without-dot"),
        pytest.param(302, {"location": "/login"}, False, None, id="302-app-own-login"),
        pytest.param(200, {"location": "https://team.cloudflareaccess.com/"}, False, None, id="200-with-location"),
        pytest.param(401, {"www-authenticate": 'Cloudflare-Access resource_metadata="https://m.example/r"'}, True,
                     "https://m.example/r", id="challenge-quoted"),
        pytest.param(401, {"www-authenticate": "cloudflare-access resource_metadata=https://m.example/r"}, True,
                     "https://m.example/r", id="challenge-bare-lowercase"),
        pytest.param(403, {"www-authenticate": "Cloudflare-Access"}, True, None, id="challenge-without-metadata"),
        pytest.param(401, {"www-authenticate": 'Bearer realm="x", Cloudflare-Access resource_metadata="u"'}, True,
                     "u", id="second-challenge-in-header"),
        pytest.param(401, {"www-authenticate": 'Bearer realm="cfaccess"'}, False, None, id="app-bearer-challenge"),
        pytest.param(401, {"www-authenticate": 'Cloudflare-Accessory x="y"'}, False, None, id="other-scheme"),
        pytest.param(403, {}, False, None, id="plain-403"),
    ],
)  # fmt: skip
def test_challenge_detection(status: int, headers: dict[str, str], challenge: bool, metadata: str | None) -> None:
    found = detect_challenge(response(status, headers))
    assert (found is not None) == challenge
    if found is not None:
        assert found.host == "app.example.com"
        assert found.resource_metadata == metadata


def test_control_characters_from_the_server_do_not_reach_the_message() -> None:
    found = detect_challenge(response(401, {"www-authenticate": 'Cloudflare-Access resource_metadata="a\tb"'}))
    assert isinstance(found, AccessChallengeError)
    assert found.resource_metadata == "ab"


def test_a_config_path_that_cannot_be_read_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ClientConfigError, match="cannot be read"):
        AccessAuth.from_file(tmp_path)  # a directory


def test_a_url_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ClientConfigError, match=r"\[api\] url: must be a string"):
        AccessAuth.from_dict({"api": {"url": 8000}})


def test_the_cloudflared_provider_repr_hides_its_token() -> None:
    provider = CloudflaredToken("https://app.example.com")
    assert "empty" in repr(provider)
    assert "token=" not in repr(provider)


def test_secrets_are_refused_for_plain_http_to_a_name_that_only_looks_local() -> None:
    with pytest.raises(ClientConfigError, match="must be https://"):
        AccessAuth(api_key="k", base_url="http://127.evil.example/api")
