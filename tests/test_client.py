"""The client half end to end: a real edge stand-in on 127.0.0.1 in front of the example app behind the middleware.

The path under test is the one a CLI takes: edge headers (service token or a
``cloudflared`` user token), then the app's Bearer key, then the app's answer;
or, without them, a clear :class:`AccessChallengeError` instead of a login page.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cfaccess_mw import ApiKey, ServiceToken
from cfaccess_mw.client import AccessAuth, AccessChallengeError, ClientConfigError, CloudflaredError, CloudflaredToken
from cfaccess_mw.testing import LocalIssuer
from examples import cli_client
from examples.fastapi_app import create_app
from examples.userdb import UserDB
from tests.client_helpers import Edge, FakeCloudflared, Recorder, serve

CLIENT_ID = f"{secrets.token_hex(16)}.access"
CLIENT_SECRET = secrets.token_hex(32)
API_KEY = f"app_{secrets.token_urlsafe(24)}"
ENV = {"CF_ACCESS_CLIENT_SECRET": CLIENT_SECRET, "APP_API_KEY": API_KEY}
SERVICE_HEADERS = {"CF-Access-Client-Id": CLIENT_ID, "CF-Access-Client-Secret": "${CF_ACCESS_CLIENT_SECRET}"}


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(max_requests=200, max_seconds=120) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def served(issuer: LocalIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Edge, str]]:
    db = tmp_path_factory.mktemp("client") / "users.sqlite3"
    UserDB(db).add("alice@example.com", "Alice", role="admin")
    settings = issuer.settings(
        api_keys=(ApiKey.from_secret("cli", API_KEY),),
        service_tokens=(ServiceToken("ci", CLIENT_ID),),
        public_paths=("/healthz",),
    )
    edge = Edge(create_app(settings, str(db)), issuer, CLIENT_ID, CLIENT_SECRET)
    with serve(edge) as url:
        yield edge, url


@pytest.fixture
def edge(served: tuple[Edge, str]) -> Edge:
    edge = served[0]
    edge.refusal, edge.inject_jwt, edge.redirect_to = "redirect", True, None
    edge.user_tokens.clear()
    edge.seen.clear()
    edge.forwarded.clear()
    edge.login_page_hits = 0
    return edge


@pytest.fixture
def url(served: tuple[Edge, str], edge: Edge) -> str:
    return served[1]


def service_auth(url: str) -> AccessAuth:
    return AccessAuth(SERVICE_HEADERS, "${APP_API_KEY}", base_url=url, environ=ENV)


# --- passing the edge --------------------------------------------------------------------------------


def test_service_token_headers_pass_the_edge_and_the_bearer_key_reaches_the_app(edge: Edge, url: str) -> None:
    edge.inject_jwt = False  # as in the seed: the origin knows nothing of Access and only checks its own key
    with service_auth(url).client() as client:
        response = client.get("/api/me")
    assert response.status_code == 200
    assert response.json()["kind"] == "api_key"
    assert response.json()["name"] == "cli"
    assert edge.seen[-1]["cf-access-client-id"] == CLIENT_ID
    assert edge.seen[-1]["cf-access-client-secret"] == CLIENT_SECRET  # expanded from ${CF_ACCESS_CLIENT_SECRET}
    assert edge.forwarded[-1]["authorization"] == f"Bearer {API_KEY}"
    assert "cf-access-client-secret" not in edge.forwarded[-1]


def test_with_the_edge_token_injected_the_app_sees_the_service_token(edge: Edge, url: str) -> None:
    with httpx.Client(base_url=url, auth=service_auth(url), timeout=10) as client:
        response = client.get("/api/machines")
    assert response.status_code == 200
    assert response.json() == {"status": "machines welcome"}


def test_without_the_service_token_the_same_key_is_stopped_at_the_edge(edge: Edge, url: str) -> None:
    auth = AccessAuth(api_key=API_KEY, base_url=url)
    with auth.client() as client, pytest.raises(AccessChallengeError) as caught:
        client.get("/api/me")
    assert edge.forwarded == []
    assert caught.value.host == "127.0.0.1"


def test_async_client_passes_the_edge(edge: Edge, url: str) -> None:
    edge.inject_jwt = False

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(base_url=url, auth=service_auth(url), timeout=10) as client:
            return await client.get("/api/me")

    response = asyncio.run(call())
    assert response.status_code == 200
    assert response.json()["kind"] == "api_key"
    assert edge.seen[-1]["cf-access-client-secret"] == CLIENT_SECRET


def test_secrets_from_os_environ_are_expanded_by_default(edge: Edge, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CF_ACCESS_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("APP_API_KEY", API_KEY)
    with AccessAuth(SERVICE_HEADERS, "${APP_API_KEY}", base_url=url).client() as client:
        assert client.get("/api/machines").status_code == 200


def test_absent_configuration_sends_nothing_extra(tmp_path: Path) -> None:
    auth = AccessAuth.from_file(tmp_path / "missing.toml", missing_ok=True)
    with Recorder() as recorder, httpx.Client(auth=auth, timeout=10) as client:
        client.get(recorder.url + "/x")
        with httpx.Client(timeout=10) as bare:
            bare.get(recorder.url + "/x")
    assert not auth.configured
    assert recorder.seen[0] == recorder.seen[1]


def test_headers_are_not_attached_to_another_origin(url: str) -> None:
    auth = service_auth(url)
    with Recorder() as recorder, httpx.Client(auth=auth, timeout=10) as client:
        client.get(recorder.url + "/elsewhere")
    assert "cf-access-client-secret" not in recorder.seen[0]
    assert "authorization" not in recorder.seen[0]


def test_a_redirect_to_another_origin_does_not_carry_the_headers(edge: Edge, url: str) -> None:
    with Recorder() as recorder:
        edge.redirect_to = recorder.url + "/landing"
        with service_auth(url).client(follow_redirects=True) as client:
            response = client.get("/bounce")
    assert response.status_code == 200
    assert edge.seen[-1]["cf-access-client-secret"] == CLIENT_SECRET  # sent to the configured origin
    assert "cf-access-client-secret" not in recorder.seen[0]  # but not carried to the next host
    assert "cf-access-client-id" not in recorder.seen[0]
    assert "authorization" not in recorder.seen[0]


# --- challenges --------------------------------------------------------------------------------------


def test_redirect_to_the_access_login_raises_a_challenge_naming_host_and_fix(edge: Edge, url: str) -> None:
    with AccessAuth(base_url=url).client() as client, pytest.raises(AccessChallengeError) as caught:
        client.get("/api/me")
    err = caught.value
    assert err.host == "127.0.0.1"
    assert err.resource_metadata is None
    assert err.login_url is not None
    assert err.login_url.startswith(f"https://{edge.issuer.team_domain}/cdn-cgi/access/login/")
    assert "127.0.0.1" in str(err)
    assert "CF-Access-Client-Id" in str(err)
    assert "cloudflared access login" in str(err)


def test_a_challenge_to_a_client_configured_by_variables_speaks_of_variables(edge: Edge, url: str) -> None:
    auth = AccessAuth.from_env({"CFACCESS_CLIENT_URL": url})
    with auth.client() as client, pytest.raises(AccessChallengeError) as caught:
        client.get("/api/me")

    message = str(caught.value)
    assert "CFACCESS_CLIENT_HEADERS='CF-Access-Client-Id=<id>.access," in message
    assert "CFACCESS_CLIENT_CLOUDFLARED=true" in message
    assert "[api" not in message  # no config file to edit
    assert f"`cloudflared access login {url}`" in message  # http:// and the port kept, as called


def test_a_challenge_to_a_client_configured_by_a_file_names_the_file(edge: Edge, url: str, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[api]\nurl = "{url}"\n', encoding="utf-8")
    with AccessAuth.from_file(config).client() as client, pytest.raises(AccessChallengeError) as caught:
        client.get("/api/me")

    assert f"under [api.headers] in {config}:" in str(caught.value)
    assert f"`cloudflared access login {url}`" in str(caught.value)


def test_a_missing_client_url_is_named_not_an_unsupported_protocol() -> None:
    auth = AccessAuth.from_env({"CFACCESS_CLIENT_API_KEY": "a-key"})
    with auth.client() as client, pytest.raises(ClientConfigError) as caught:
        client.get("/api/me")

    assert str(caught.value).startswith("CFACCESS_CLIENT_URL: is not set, so '/api/me' has no host to go to")
    assert "a-key" not in str(caught.value)


@pytest.mark.anyio
async def test_a_missing_client_url_is_named_by_the_async_client_too() -> None:
    async with AccessAuth.from_env({}).async_client() as client:
        with pytest.raises(ClientConfigError, match=r"^CFACCESS_CLIENT_URL: is not set"):
            await client.get("/api/me")


def test_a_misspelt_client_variable_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="cfaccess_mw.client")

    AccessAuth.from_env({"CFACCESS_CLIENT_UR": "https://app.example.com", "CFACCESS_CLIENT_URL": "https://a.b"})

    (record,) = [r for r in caplog.records if r.name == "cfaccess_mw.client"]
    assert record.getMessage() == (
        "cfaccess_mw.client: ignoring unknown setting CFACCESS_CLIENT_UR (a typo? did you mean CFACCESS_CLIENT_URL?)"
    )


def test_challenge_header_raises_with_the_resource_metadata(edge: Edge, url: str) -> None:
    edge.refusal = "challenge"
    with httpx.Client(base_url=url, auth=AccessAuth(), timeout=10) as client, pytest.raises(AccessChallengeError) as e:
        client.get("/api/me")
    expected = f"{url}/.well-known/cloudflare-access-protected-resource/api/me"
    assert e.value.resource_metadata == expected
    assert expected in str(e.value)
    assert "CF-Access-Client-Secret" in str(e.value)


def test_async_client_raises_the_challenge(edge: Edge, url: str) -> None:
    edge.refusal = "challenge"

    async def call() -> None:
        async with AccessAuth(base_url=url).async_client() as client:
            await client.get("/api/me")

    with pytest.raises(AccessChallengeError, match="Cloudflare-Access challenge"):
        asyncio.run(call())


def test_a_refused_service_token_is_reported_as_not_accepted(edge: Edge, url: str) -> None:
    wrong = AccessAuth(SERVICE_HEADERS, base_url=url, environ={"CF_ACCESS_CLIENT_SECRET": "not-the-secret"})
    with wrong.client() as client, pytest.raises(AccessChallengeError) as caught:
        client.get("/api/me")
    assert caught.value.sent == ("CF-Access-Client-Id", "CF-Access-Client-Secret")
    assert "did not accept the headers sent (CF-Access-Client-Id, CF-Access-Client-Secret)" in str(caught.value)
    assert "not-the-secret" not in str(caught.value)


def test_the_login_page_is_never_fetched_even_with_redirects_on(edge: Edge, url: str) -> None:
    edge.refusal = "local-redirect"  # a custom team domain: the login page is on the same host
    with AccessAuth(base_url=url).client(follow_redirects=True) as client, pytest.raises(AccessChallengeError):
        client.get("/api/me")
    assert edge.login_page_hits == 0


def test_a_plain_client_that_followed_to_the_login_page_still_raises(edge: Edge, url: str) -> None:
    edge.refusal = "local-redirect"
    auth = AccessAuth(base_url=url)
    client = httpx.Client(base_url=url, auth=auth, follow_redirects=True, timeout=10)
    with client, pytest.raises(AccessChallengeError):
        client.get("/api/me")
    assert edge.login_page_hits == 1  # httpx followed it; the auth still refused to hand back a login page


def test_an_app_answer_is_not_taken_for_a_challenge(edge: Edge, url: str) -> None:
    auth = AccessAuth(SERVICE_HEADERS, "wrong-key", base_url=url, environ=ENV)
    edge.inject_jwt = False
    with auth.client() as client:
        response = client.get("/api/me")
    assert response.status_code == 401  # the app's own refusal (Bearer challenge) comes back as a response
    assert response.headers["www-authenticate"].startswith("Bearer")


# --- secrets never leak -----------------------------------------------------------------------------


def test_no_header_value_appears_in_debug_logs(edge: Edge, url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    auth = service_auth(url)
    with auth.client() as client:
        assert client.get("/api/me").status_code == 200
        assert client.get("/api/admin").status_code == 403  # a service token is no admin user

    async def call() -> None:
        async with auth.async_client() as client:
            await client.get("/api/me")

    asyncio.run(call())
    wrong = AccessAuth(SERVICE_HEADERS, API_KEY, base_url=url, environ={"CF_ACCESS_CLIENT_SECRET": "x" + CLIENT_SECRET})
    with wrong.client() as client, pytest.raises(AccessChallengeError) as caught:
        client.get("/api/me")
    logging.getLogger("test").debug("auth=%r str=%s error=%s", auth, auth, caught.value)

    text = caplog.text
    assert "CF-Access-Client-Secret" in text  # names are logged ...
    assert any(r.name.startswith("httpcore") for r in caplog.records)  # ... and httpx/httpcore did log at DEBUG
    assert CLIENT_SECRET not in text  # ... values never
    assert API_KEY not in text
    assert CLIENT_SECRET not in repr(auth) + str(auth) + str(caught.value) + repr(caught.value)


# --- cloudflared --------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_cloudflared(tmp_path: Path) -> FakeCloudflared:
    return FakeCloudflared(tmp_path)


def test_a_cloudflared_user_token_passes_the_edge_as_that_user(
    edge: Edge, url: str, fake_cloudflared: FakeCloudflared, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = edge.issuer.identity_token("alice@example.com", lifetime=600)
    edge.user_tokens.add(token)
    fake_cloudflared.plan(stdout=token + "\n")
    provider = CloudflaredToken(url, search_path=str(fake_cloudflared.folder))
    with AccessAuth(token_provider=provider, base_url=url).client() as client:
        response = client.get("/api/admin")
    assert response.status_code == 200
    assert edge.seen[-1]["cf-access-token"] == token
    assert fake_cloudflared.runs == [["access", "token", f"-app={url}"]]
    assert token not in caplog.text


def test_the_async_client_runs_cloudflared_and_passes(edge: Edge, url: str, fake_cloudflared: FakeCloudflared) -> None:
    token = edge.issuer.identity_token("alice@example.com", lifetime=600)
    edge.user_tokens.add(token)
    fake_cloudflared.plan(stdout=token)
    auth = AccessAuth(token_provider=CloudflaredToken(url, executable=str(fake_cloudflared.path)), base_url=url)

    async def call() -> list[int]:
        async with auth.async_client() as client:
            return [(await client.get("/api/me")).status_code for _ in range(2)]

    assert asyncio.run(call()) == [200, 200]
    assert len(fake_cloudflared.runs) == 1


def test_the_cloudflared_token_is_cached_until_it_expires(fake_cloudflared: FakeCloudflared) -> None:
    with LocalIssuer() as issuer:
        clock = Clock(1_000_000.0)
        first = issuer.mint({**issuer.base_claims(now=clock.now), "exp": int(clock.now) + 600})
        fake_cloudflared.plan(stdout=first)
        provider = CloudflaredToken("https://app.example.com", executable=str(fake_cloudflared.path), clock=clock)
        assert provider.token() == first
        clock.now += 500
        assert provider.token() == first
        assert len(fake_cloudflared.runs) == 1
        second = issuer.mint({**issuer.base_claims(now=clock.now), "exp": int(clock.now) + 600})
        fake_cloudflared.plan(stdout=second)
        clock.now += 80  # within the 30 s refresh margin of exp
        assert provider.token() == second
        assert len(fake_cloudflared.runs) == 2


def test_a_refused_user_token_is_forgotten(edge: Edge, url: str, fake_cloudflared: FakeCloudflared) -> None:
    stale = edge.issuer.identity_token("alice@example.com", lifetime=600)  # not in edge.user_tokens: revoked
    fake_cloudflared.plan(stdout=stale)
    provider = CloudflaredToken(url, executable=str(fake_cloudflared.path))
    with AccessAuth(token_provider=provider, base_url=url).client() as client:
        with pytest.raises(AccessChallengeError, match="cf-access-token"):
            client.get("/api/me")
        assert provider.cached() is None
        fresh = edge.issuer.identity_token("alice@example.com", lifetime=600)
        edge.user_tokens.add(fresh)
        fake_cloudflared.plan(stdout=fresh)
        assert client.get("/api/me").status_code == 200
    assert len(fake_cloudflared.runs) == 2


def test_missing_cloudflared_is_a_clear_error(tmp_path: Path) -> None:
    provider = CloudflaredToken("https://app.example.com", search_path=str(tmp_path))
    with pytest.raises(CloudflaredError, match="'cloudflared' was not found on PATH"):
        provider.token()


def test_a_failing_cloudflared_says_why_and_how_to_sign_in(fake_cloudflared: FakeCloudflared) -> None:
    leaked = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2ln"
    fake_cloudflared.plan(stderr=f"Unable to find token for provided application {leaked}\n", exit_code=1)
    provider = CloudflaredToken("https://app.example.com", executable=str(fake_cloudflared.path))
    with pytest.raises(CloudflaredError) as caught:
        provider.token()
    message = str(caught.value)
    assert "exit 1" in message
    assert "Unable to find token" in message
    assert "cloudflared access login https://app.example.com" in message
    assert leaked not in message


def test_cloudflared_output_that_is_not_a_token_is_refused(fake_cloudflared: FakeCloudflared) -> None:
    fake_cloudflared.plan(stdout="please log in: something-secretish\n")
    provider = CloudflaredToken("https://app.example.com", executable=str(fake_cloudflared.path))
    with pytest.raises(CloudflaredError, match="printed no Access token") as caught:
        provider.token()
    assert "something-secretish" not in str(caught.value)


def test_an_expired_token_from_cloudflared_is_refused(fake_cloudflared: FakeCloudflared) -> None:
    with LocalIssuer() as issuer:
        fake_cloudflared.plan(stdout=issuer.identity_token("alice@example.com", lifetime=-60))
    provider = CloudflaredToken("https://app.example.com", executable=str(fake_cloudflared.path))
    with pytest.raises(CloudflaredError, match="has expired"):
        provider.token()


# --- the example CLI: from blocked to working with three lines of config ----------------------------------


def test_the_example_cli_goes_from_blocked_to_working_with_three_lines(
    edge: Edge, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXAMPLE_API_KEY", API_KEY)
    monkeypatch.setenv("CF_ACCESS_CLIENT_SECRET", CLIENT_SECRET)
    edge.inject_jwt = False
    config = tmp_path / "config.toml"
    config.write_text(f'[api]\nurl = "{url}"\nkey = "${{EXAMPLE_API_KEY}}"\n')
    assert cli_client.main(["--config", str(config), "/api/me"]) == 2
    blocked = capsys.readouterr()
    assert "stopped at the edge" in blocked.err
    assert "CF-Access-Client-Secret" in blocked.err

    with config.open("a") as f:  # the three lines
        f.write("[api.headers]\n")
        f.write(f'CF-Access-Client-Id = "{CLIENT_ID}"\n')
        f.write('CF-Access-Client-Secret = "${CF_ACCESS_CLIENT_SECRET}"\n')
    assert cli_client.main(["--config", str(config), "/api/me"]) == 0
    working = capsys.readouterr()
    assert "1. edge:   CF-Access-Client-Id, CF-Access-Client-Secret (values hidden)" in working.out
    assert "2. app:    Authorization: Bearer (key hidden)" in working.out
    assert '"kind": "api_key"' in working.out
    assert CLIENT_SECRET not in working.out + working.err
    assert API_KEY not in working.out + working.err


def test_the_example_cli_reports_config_errors_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CF_ACCESS_CLIENT_SECRET", raising=False)
    config = tmp_path / "config.toml"
    config.write_text('[api]\nurl = "https://a.example"\n[api.headers]\nX-S = "${CF_ACCESS_CLIENT_SECRET}"\n')
    assert cli_client.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "CF_ACCESS_CLIENT_SECRET is not set" in err


def test_a_hanging_cloudflared_is_stopped_at_the_timeout(fake_cloudflared: FakeCloudflared) -> None:
    fake_cloudflared.plan(hang=True)
    provider = CloudflaredToken("https://app.example.com", executable=str(fake_cloudflared.path), timeout=0.5)
    with pytest.raises(CloudflaredError, match=r"did not finish within 0\.5 s"):
        provider.token()


def test_a_cloudflared_that_cannot_run_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "cloudflared"
    broken.write_bytes(b"\x00not a program")
    broken.chmod(0o755)
    with pytest.raises(CloudflaredError, match="could not run"):
        CloudflaredToken("https://app.example.com", executable=str(broken)).token()


def test_a_silent_cloudflared_failure_still_says_how_to_sign_in(fake_cloudflared: FakeCloudflared) -> None:
    fake_cloudflared.plan(exit_code=3)
    provider = CloudflaredToken("https://app.example.com", executable=str(fake_cloudflared.path))
    with pytest.raises(CloudflaredError, match=r"exit 3\): no message; sign in first"):
        provider.token()


def test_a_token_without_exp_is_refused(fake_cloudflared: FakeCloudflared) -> None:
    with LocalIssuer() as issuer:
        fake_cloudflared.plan(stdout=issuer.mint({"aud": [issuer.audience], "email": "alice@example.com"}))
    provider = CloudflaredToken("https://app.example.com", executable=str(fake_cloudflared.path))
    with pytest.raises(CloudflaredError, match="no numeric 'exp'"):
        provider.token()
