"""Settings: every variable parsed and validated at start-up, every error naming the variable."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from cfaccess_mw import ApiKey, ConfigError, ExposureMode, ServiceToken, Settings

AUD = "a" * 64
DIGEST = hashlib.sha256(b"sekrit").hexdigest()
BASE = {"CFACCESS_TEAM_DOMAIN": "myteam.cloudflareaccess.com", "CFACCESS_AUD": AUD}


def test_minimal_reverse_proxy_settings_derive_issuer_certs_and_logout() -> None:
    settings = Settings.from_env(BASE)
    assert settings.exposure_mode is ExposureMode.REVERSE_PROXY
    assert settings.issuer == "https://myteam.cloudflareaccess.com"
    assert settings.certs_url == "https://myteam.cloudflareaccess.com/cdn-cgi/access/certs"
    assert settings.logout_url == "https://myteam.cloudflareaccess.com/cdn-cgi/access/logout"
    assert settings.audiences == (AUD,)
    assert settings.jwt_enabled
    assert settings.allow_cookie is False


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "CFACCESS_EXPOSURE_MODE": "LOCAL",
            "CFACCESS_TEAM_DOMAIN": "https://MyTeam.cloudflareaccess.com/",
            "CFACCESS_AUD": f"{AUD}, {'b' * 64}",
            "CFACCESS_CERTS_URL": "http://127.0.0.1:9/certs",
            "CFACCESS_API_KEYS": f"operator:sha256:{DIGEST}",
            "CFACCESS_SERVICE_TOKENS": "ci=abc.access, backup=def.access",
            "CFACCESS_PUBLIC_PATHS": "/healthz, /auth/config/",
            "CFACCESS_LEEWAY_SECONDS": "5",
            "CFACCESS_JWKS_CACHE_SECONDS": "600",
            "CFACCESS_JWKS_TIMEOUT_SECONDS": "2.5",
            "CFACCESS_JWKS_REFRESH_COOLDOWN_SECONDS": "20",
            "CFACCESS_TOKEN_CACHE_SIZE": "10",
            "CFACCESS_ALLOW_COOKIE": "yes",
        }
    )
    assert settings.exposure_mode is ExposureMode.LOCAL
    assert settings.team_domain == "myteam.cloudflareaccess.com"
    assert settings.audiences == (AUD, "b" * 64)
    assert settings.certs_url == "http://127.0.0.1:9/certs"
    assert [k.name for k in settings.api_keys] == ["operator"]
    assert settings.api_keys[0].digest == hashlib.sha256(b"sekrit").digest()
    assert settings.service_tokens == (ServiceToken("ci", "abc.access"), ServiceToken("backup", "def.access"))
    assert settings.public_paths == ("/healthz", "/auth/config")
    assert (settings.leeway_seconds, settings.jwks_cache_seconds) == (5.0, 600.0)
    assert (settings.jwks_timeout_seconds, settings.jwks_refresh_cooldown_seconds) == (2.5, 20.0)
    assert settings.token_cache_size == 10
    assert settings.allow_cookie is True


def test_local_mode_without_team_turns_jwt_checking_off() -> None:
    settings = Settings.from_env({"CFACCESS_EXPOSURE_MODE": "local"})
    assert not settings.jwt_enabled
    assert settings.issuer is None
    assert settings.certs_url is None
    assert settings.logout_url is None


def test_api_keys_file_is_read_with_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# operators\n\nlaptop:sha256:{DIGEST}\n")
    settings = Settings.from_env({**BASE, "CFACCESS_API_KEYS_FILE": str(path)})
    assert [k.name for k in settings.api_keys] == ["laptop"]


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({}, "CFACCESS_TEAM_DOMAIN", "required in reverse-proxy mode"),
        ({"CFACCESS_EXPOSURE_MODE": "proxy", **BASE}, "CFACCESS_EXPOSURE_MODE", "not one of"),
        ({"CFACCESS_TEAM_DOMAIN": "myteam.cloudflareaccess.com"}, "CFACCESS_AUD", "set together"),
        ({"CFACCESS_AUD": AUD, "CFACCESS_EXPOSURE_MODE": "local"}, "CFACCESS_TEAM_DOMAIN", "set together"),
        ({**BASE, "CFACCESS_TEAM_DOMAIN": "http://myteam.cloudflareaccess.com"}, "CFACCESS_TEAM_DOMAIN", "host name"),
        ({**BASE, "CFACCESS_TEAM_DOMAIN": "myteam.example.com/path"}, "CFACCESS_TEAM_DOMAIN", "not a host name"),
        ({**BASE, "CFACCESS_TEAM_DOMAIN": "localhost"}, "CFACCESS_TEAM_DOMAIN", "not a host name"),
        ({**BASE, "CFACCESS_TEAM_DOMAIN": "team.example.com:8443"}, "CFACCESS_TEAM_DOMAIN", "not a host name"),
        ({**BASE, "CFACCESS_AUD": f"{AUD},{AUD}"}, "CFACCESS_AUD", "twice"),
        ({**BASE, "CFACCESS_CERTS_URL": "http://certs.example.com/x"}, "CFACCESS_CERTS_URL", "https://"),
        ({**BASE, "CFACCESS_CERTS_URL": "ftp://127.0.0.1/x"}, "CFACCESS_CERTS_URL", "https://"),
        ({**BASE, "CFACCESS_API_KEYS": "operator:md5:abc"}, "CFACCESS_API_KEYS", "name:sha256"),
        ({**BASE, "CFACCESS_API_KEYS": "operator:sha256:abc"}, "CFACCESS_API_KEYS", "64 hex"),
        ({**BASE, "CFACCESS_API_KEYS": f"bad name:sha256:{DIGEST}"}, "CFACCESS_API_KEYS", "name"),
        (
            {**BASE, "CFACCESS_API_KEYS": f"a:sha256:{DIGEST},a:sha256:{'0' * 64}"},
            "CFACCESS_API_KEYS",
            "share a name",
        ),
        ({**BASE, "CFACCESS_API_KEYS": f"a:sha256:{DIGEST},b:sha256:{DIGEST}"}, "CFACCESS_API_KEYS", "share a hash"),
        ({**BASE, "CFACCESS_API_KEYS_FILE": "/nonexistent/keys"}, "CFACCESS_API_KEYS_FILE", "cannot read"),
        ({**BASE, "CFACCESS_SERVICE_TOKENS": "ci"}, "CFACCESS_SERVICE_TOKENS", "name=<client id>"),
        ({**BASE, "CFACCESS_SERVICE_TOKENS": "ci=a.access,ci=b.access"}, "CFACCESS_SERVICE_TOKENS", "share a name"),
        ({**BASE, "CFACCESS_PUBLIC_PATHS": "healthz"}, "CFACCESS_PUBLIC_PATHS", "starting with '/'"),
        ({**BASE, "CFACCESS_PUBLIC_PATHS": "/"}, "CFACCESS_PUBLIC_PATHS", "every path public"),
        ({**BASE, "CFACCESS_PUBLIC_PATHS": "/a/../b"}, "CFACCESS_PUBLIC_PATHS", "'..'"),
        ({**BASE, "CFACCESS_LEEWAY_SECONDS": "soon"}, "CFACCESS_LEEWAY_SECONDS", "number"),
        ({**BASE, "CFACCESS_LEEWAY_SECONDS": "3600"}, "CFACCESS_LEEWAY_SECONDS", "between"),
        ({**BASE, "CFACCESS_LEEWAY_SECONDS": "nan"}, "CFACCESS_LEEWAY_SECONDS", "number"),
        ({**BASE, "CFACCESS_JWKS_CACHE_SECONDS": "1"}, "CFACCESS_JWKS_CACHE_SECONDS", "between"),
        ({**BASE, "CFACCESS_JWKS_TIMEOUT_SECONDS": "0"}, "CFACCESS_JWKS_TIMEOUT_SECONDS", "between"),
        ({**BASE, "CFACCESS_TOKEN_CACHE_SIZE": "-1"}, "CFACCESS_TOKEN_CACHE_SIZE", "whole number"),
        ({**BASE, "CFACCESS_ALLOW_COOKIE": "maybe"}, "CFACCESS_ALLOW_COOKIE", "true or false"),
    ],
)
def test_bad_configuration_names_the_variable(env: dict[str, str], variable: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert fragment in str(caught.value)


def test_bad_line_in_api_keys_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"ok:sha256:{DIGEST}\nbroken\n")
    with pytest.raises(ConfigError, match=r"CFACCESS_API_KEYS_FILE: line 2: "):
        Settings.from_env({**BASE, "CFACCESS_API_KEYS_FILE": str(path)})


def test_settings_built_in_code_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="CFACCESS_AUD"):
        Settings(team_domain="t.cloudflareaccess.com", audiences=("has space",))


def test_unknown_cfaccess_variable_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cfaccess_mw"):
        Settings.from_env({**BASE, "CFACCESS_AUDIENCE": AUD})
    assert "CFACCESS_AUDIENCE" in caplog.text


def test_reprs_hide_api_key_hashes() -> None:
    settings = Settings.from_env({**BASE, "CFACCESS_API_KEYS": f"operator:sha256:{DIGEST}"})
    assert DIGEST not in repr(settings)
    assert "operator" in repr(settings)


def test_api_key_round_trips_through_its_line() -> None:
    key = ApiKey.from_secret("laptop", "sekrit")
    assert ApiKey.parse(key.line()) == key
    assert key.line() == f"laptop:sha256:{DIGEST}"


def test_find_api_key_matches_only_the_exact_digest() -> None:
    settings = Settings.from_env({**BASE, "CFACCESS_API_KEYS": f"operator:sha256:{DIGEST}"})
    assert settings.find_api_key(hashlib.sha256(b"sekrit").digest()) is settings.api_keys[0]
    assert settings.find_api_key(hashlib.sha256(b"sekrit ").digest()) is None


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({**BASE, "CFACCESS_TOKEN_CACHE_SIZE": "\u00b2"}, "CFACCESS_TOKEN_CACHE_SIZE"),
        ({**BASE, "CFACCESS_TOKEN_CACHE_SIZE": "100001"}, "CFACCESS_TOKEN_CACHE_SIZE"),
        ({**BASE, "CFACCESS_AUD": "myteam.cloudflareaccess.com"}, "CFACCESS_AUD"),
        ({**BASE, "CFACCESS_AUD": "abc"}, "CFACCESS_AUD"),
        ({"CFACCESS_EXPOSURE_MODE": "local", "CFACCESS_SERVICE_TOKENS": "ci=a.access"}, "CFACCESS_SERVICE_TOKENS"),
        ({**BASE, "CFACCESS_CERTS_URL": "https://user:pw@certs.example.com/c"}, "CFACCESS_CERTS_URL"),
        ({**BASE, "CFACCESS_CERTS_URL": "https://certs.example.com:99999/c"}, "CFACCESS_CERTS_URL"),
        ({**BASE, "CFACCESS_JWKS_REFRESH_COOLDOWN_SECONDS": "3600"}, "CFACCESS_JWKS_REFRESH_COOLDOWN_SECONDS"),
    ],
    ids=[
        "superscript-digit",
        "cache-too-large",
        "aud-is-domain",
        "aud-short",
        "service-tokens-without-team",
        "userinfo",
        "bad-port",
        "cooldown-too-long",
    ],
)
def test_more_bad_configuration_is_refused(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable


def test_aud_tag_is_lower_cased() -> None:
    assert Settings.from_env({**BASE, "CFACCESS_AUD": "A" * 64}).audiences == (AUD,)


@pytest.mark.parametrize("field", ["audiences", "public_paths"])
def test_a_single_string_for_a_tuple_field_is_refused(field: str) -> None:
    with pytest.raises(ConfigError, match="not a single string"):
        Settings(team_domain="t.cloudflareaccess.com", **{"audiences": (AUD,), field: AUD})  # type: ignore[arg-type]


def test_user_cache_is_off_by_default_and_read_from_the_environment() -> None:
    assert (Settings.from_env(BASE).user_cache_seconds, Settings.from_env(BASE).user_cache_size) == (0.0, 4096)
    settings = Settings.from_env({**BASE, "CFACCESS_USER_CACHE_SECONDS": "30", "CFACCESS_USER_CACHE_SIZE": "500"})
    assert (settings.user_cache_seconds, settings.user_cache_size) == (30.0, 500)


@pytest.mark.parametrize(
    ("value", "variable", "fragment"),
    [
        ("soon", "CFACCESS_USER_CACHE_SECONDS", "number"),
        ("nan", "CFACCESS_USER_CACHE_SECONDS", "number"),
        ("-1", "CFACCESS_USER_CACHE_SECONDS", "between 0"),
        ("3601", "CFACCESS_USER_CACHE_SECONDS", "stays admitted"),
        ("-1", "CFACCESS_USER_CACHE_SIZE", "whole number"),
        ("1e3", "CFACCESS_USER_CACHE_SIZE", "whole number"),
        ("100001", "CFACCESS_USER_CACHE_SIZE", "from 0 to 100000"),
    ],
)
def test_bad_user_cache_settings_name_the_variable(value: str, variable: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, variable: value})
    assert caught.value.variable == variable
    assert fragment in caught.value.problem


def test_user_cache_settings_built_in_code_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="CFACCESS_USER_CACHE_SECONDS"):
        Settings(exposure_mode=ExposureMode.LOCAL, user_cache_seconds=True)
    with pytest.raises(ConfigError, match="CFACCESS_USER_CACHE_SIZE"):
        Settings(exposure_mode=ExposureMode.LOCAL, user_cache_size=2.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("certs_url", ["http://127.0.0.1:9/certs", "http://[::1]:9/certs", "http://localhost:9/certs"])
def test_a_zero_refetch_cooldown_is_allowed_for_a_loopback_certs_url(certs_url: str) -> None:
    env = {**BASE, "CFACCESS_CERTS_URL": certs_url, "CFACCESS_JWKS_REFRESH_COOLDOWN_SECONDS": "0"}
    assert Settings.from_env(env).jwks_refresh_cooldown_seconds == 0.0


@pytest.mark.parametrize(
    "certs_url", [None, "https://certs.example.com/cdn-cgi/access/certs"], ids=["cloudflare", "https-mirror"]
)
def test_a_zero_refetch_cooldown_is_refused_for_a_real_certs_endpoint(certs_url: str | None) -> None:
    env = {**BASE, "CFACCESS_JWKS_REFRESH_COOLDOWN_SECONDS": "0"}
    if certs_url is not None:
        env["CFACCESS_CERTS_URL"] = certs_url
    with pytest.raises(ConfigError, match="loopback CFACCESS_CERTS_URL") as caught:
        Settings.from_env(env)
    assert caught.value.variable == "CFACCESS_JWKS_REFRESH_COOLDOWN_SECONDS"


def test_an_unknown_variable_is_warned_about_with_the_name_it_resembles(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cfaccess_mw"):
        settings = Settings.from_env({**BASE, "CFACCESS_PUBLIC_PATH": "/healthz"})

    assert settings.public_paths == ()
    assert "ignoring unknown setting CFACCESS_PUBLIC_PATH (a typo? did you mean CFACCESS_PUBLIC_PATHS?)" in caplog.text


@pytest.mark.parametrize(
    ("env", "strict"),
    [
        pytest.param({"CFACCESS_STRICT": "true"}, None, id="variable"),
        pytest.param({}, True, id="argument"),
        pytest.param({"CFACCESS_STRICT": "false"}, True, id="argument-wins"),
    ],
)
def test_strict_mode_refuses_an_unknown_variable_naming_the_one_meant(env: dict[str, str], strict: bool | None) -> None:
    with pytest.raises(ConfigError, match=r"did you mean CFACCESS_PUBLIC_PATHS\?") as caught:
        Settings.from_env({**BASE, **env, "CFACCESS_PUBLIC_PATH": "/healthz"}, strict=strict)
    assert caught.value.variable == "CFACCESS_PUBLIC_PATH"


def test_strict_mode_names_every_unknown_variable() -> None:
    with pytest.raises(ConfigError, match="also unknown: CFACCESS_ZZZ") as caught:
        Settings.from_env({**BASE, "CFACCESS_ZZZ": "1", "CFACCESS_AUDIENCE": AUD}, strict=True)
    assert caught.value.variable == "CFACCESS_AUDIENCE"


def test_strict_mode_accepts_every_known_variable_and_the_clients() -> None:
    env = {
        **BASE,
        "CFACCESS_STRICT": "yes",
        "CFACCESS_PUBLIC_PATHS": "/healthz",
        "CFACCESS_API_KEYS_FILE": "",
        "CFACCESS_CLIENT_URL": "https://app.example.com",
    }
    assert Settings.from_env(env).public_paths == ("/healthz",)


def test_a_bad_strict_value_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, "CFACCESS_STRICT": "sure"})
    assert caught.value.variable == "CFACCESS_STRICT"


def test_strict_false_keeps_unknown_variables_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cfaccess_mw"):
        Settings.from_env({**BASE, "CFACCESS_STRICT": "false", "CFACCESS_PUBLIC_PATH": "/healthz"})

    assert "ignoring unknown setting CFACCESS_PUBLIC_PATH" in caplog.text
