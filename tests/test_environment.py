"""What surrounds the token (issue 10): a browser on loopback, emails a sloppy IdP sends, forged audit lines,
and a configuration error under a real server. Each case goes through a real app."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient, WebSocketDenialResponse

from cfaccess_mw import AuditEvent, CloudflareAccessMiddleware, ExposureMode, Settings
from cfaccess_mw.testing import LocalIssuer

from .conftest import LOCAL_BASE_URL, LOOPBACK_PEER, REMOTE_PEER, ClientFactory, build_app, error_of, jwt_header

LOCAL = Settings(exposure_mode=ExposureMode.LOCAL)


# --- 1. local mode trusts a program that addressed the app, not any page the browser shows -----------------


def local_client(settings: Settings = LOCAL, base_url: str = LOCAL_BASE_URL) -> TestClient:
    return TestClient(build_app(settings), base_url=base_url, client=LOOPBACK_PEER)


@pytest.mark.parametrize(
    ("base_url", "headers", "granted"),
    [
        ("http://127.0.0.1:8000", {}, True),
        ("http://localhost", {}, True),
        ("http://[::1]:8000", {}, True),
        ("http://app.localhost:8000", {}, True),
        ("http://LOCALHOST:8000", {}, True),
        ("http://127.0.0.1:8000", {"Origin": "http://127.0.0.1:8000"}, True),  # a UI served by the app itself
        ("http://127.0.0.1:8000", {"Origin": "http://localhost:5173"}, True),  # a local dev front end
        ("http://127.0.0.1:8000", {"Sec-Fetch-Site": "same-origin"}, True),
        ("http://127.0.0.1:8000", {"Sec-Fetch-Site": "none"}, True),  # typed in the address bar
        ("http://rebind.attacker.example:8000", {}, False),  # DNS rebinding
        ("http://testserver", {}, False),
        ("http://127.0.0.1.attacker.example", {}, False),
        ("http://localhost.attacker.example", {}, False),
        ("http://127.0.0.1:8000", {"Origin": "https://evil.example"}, False),  # a cross-site form POST
        ("http://127.0.0.1:8000", {"Origin": "null"}, False),  # a sandboxed frame or a file:// page
        ("http://127.0.0.1:8000", {"Origin": "http://127.0.0.1.evil.example"}, False),
        ("http://127.0.0.1:8000", {"Origin": "http://user@localhost"}, False),
        ("http://127.0.0.1:8000", {"Sec-Fetch-Site": "cross-site"}, False),  # another site's link or image
        ("http://127.0.0.1:8000", {"Sec-Fetch-Site": "SAME-ORIGIN"}, True),
        ("http://localhost:8000", {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:5173"}, True),
        ("http://localhost:8000", {"Sec-Fetch-Site": "same-site"}, False),  # a link from a sibling origin
        ("http://127.0.0.1:8000", {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost:5173"}, False),
        ("http://127.0.0.1:8000", {"Sec-Fetch-Site": "somewhere"}, False),  # no browser sends that
        ("http://127.0.0.1:8000", {"Host": "localhost:abc"}, False),
        ("http://127.0.0.1:8000", {"Host": "[::1"}, False),
    ],
)
def test_the_local_operator_is_a_program_that_addressed_the_app(
    base_url: str, headers: dict[str, str], granted: bool
) -> None:
    with local_client(base_url=base_url) as client:
        response = client.get("/", headers=headers)
    if granted:
        assert response.status_code == 200
        assert response.json()["kind"] == "local"
    else:
        assert response.status_code == 401
        assert error_of(response)["reason"] == "no_credentials"


def test_a_request_without_a_host_header_is_not_the_operator() -> None:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": LOOPBACK_PEER}
    anyio.run(build_app(LOCAL), scope, receive, send)  # type: ignore[arg-type]
    assert messages[0]["status"] == 401


def test_a_repeated_sec_fetch_site_is_not_the_operator() -> None:
    with local_client() as client:
        response = client.get("/", headers=[("Sec-Fetch-Site", "cross-site"), ("Sec-Fetch-Site", "same-origin")])
    assert response.status_code == 401
    assert error_of(response)["reason"] == "no_credentials"


def test_a_websocket_from_another_origin_is_not_the_operator() -> None:
    with (
        local_client() as client,
        pytest.raises(WebSocketDenialResponse) as caught,
        client.websocket_connect("ws://localhost:8000/ws", headers={"Origin": "https://evil.example"}),
    ):
        pass  # pragma: no cover - refused
    assert caught.value.status_code == 401
    with (
        local_client() as client,
        client.websocket_connect("ws://localhost:8000/ws", headers={"Origin": "http://localhost:8000"}) as ws,
    ):
        assert ws.receive_json() == {"hello": "local"}


def test_names_in_cfaccess_local_hosts_are_local_origins_too() -> None:
    settings = Settings.from_env({"CFACCESS_EXPOSURE_MODE": "local", "CFACCESS_LOCAL_HOSTS": "DevBox.lan, nas"})
    assert settings.local_hosts == ("devbox.lan", "nas")
    with local_client(settings, base_url="http://devbox.lan:8000") as client:
        assert client.get("/", headers={"Origin": "http://nas:8000"}).status_code == 200
    with local_client(LOCAL, base_url="http://devbox.lan:8000") as client:
        assert client.get("/", headers={"Origin": "http://devbox.lan:8000"}).status_code == 401


DEVBOX = Settings(exposure_mode=ExposureMode.LOCAL, local_hosts=("devbox.lan",))


@pytest.mark.parametrize(
    ("base_url", "headers", "granted"),
    [
        # Plain http to a name that is not loopback: a browser sends neither Origin nor Sec-Fetch-Site with another
        # site's image, link, form GET or no-cors fetch, exactly as with the operator's typed URL (or curl).
        ("http://devbox.lan:8000", {}, False),
        ("http://devbox.lan:8000", {"Referer": "http://devbox.lan:8000/"}, False),  # a page can hide it: not used
        ("http://devbox.lan:8000", {"Origin": "http://devbox.lan:8000"}, True),  # the app's own page's POST or fetch
        ("http://devbox.lan:8000", {"Origin": "http://evil.example"}, False),
        ("http://devbox.lan:8000", {"Origin": "null"}, False),
        ("http://devbox.lan:8000", {"Sec-Fetch-Site": "none"}, True),  # no page can set a Sec- header
        ("http://devbox.lan:8000", {"Sec-Fetch-Site": "cross-site"}, False),
        # Over https a browser sends Sec-Fetch-Site to any name, so a request without it is a program's.
        ("https://devbox.lan:8443", {}, True),
        ("https://devbox.lan:8443", {"Sec-Fetch-Site": "none"}, True),  # a typed URL or a bookmark
        ("https://devbox.lan:8443", {"Sec-Fetch-Site": "same-origin"}, True),
        ("https://devbox.lan:8443", {"Sec-Fetch-Site": "cross-site"}, False),
        ("https://devbox.lan:8443", {"Sec-Fetch-Site": "same-site"}, False),  # a sibling name's link (x.devbox.lan)
        ("https://devbox.lan:8443", {"Origin": "https://evil.example"}, False),
        # The loopback names keep their rule beside the configured one.
        ("http://localhost:8000", {}, True),
        ("http://localhost:8000", {"Origin": "http://devbox.lan:8000", "Sec-Fetch-Site": "cross-site"}, False),
    ],
)
def test_a_configured_name_is_the_operators_only_where_the_browser_would_have_said_who_made_the_request(
    base_url: str, headers: dict[str, str], granted: bool
) -> None:
    with local_client(DEVBOX, base_url=base_url) as client:
        response = client.get("/", headers=headers)
    if granted:
        assert response.status_code == 200
        assert response.json()["kind"] == "local"
    else:
        assert response.status_code == 401
        assert error_of(response)["reason"] == "no_credentials"


def test_a_websocket_under_a_configured_name_needs_a_local_origin_over_plain_http() -> None:
    with local_client(DEVBOX, base_url="http://devbox.lan:8000") as client:
        with client.websocket_connect("ws://devbox.lan:8000/ws", headers={"Origin": "http://devbox.lan:8000"}) as ws:
            assert ws.receive_json() == {"hello": "local"}
        with pytest.raises(WebSocketDenialResponse) as caught, client.websocket_connect("ws://devbox.lan:8000/ws"):
            pass  # pragma: no cover - refused
        assert caught.value.status_code == 401
        with client.websocket_connect("wss://devbox.lan:8443/ws") as ws:  # over TLS a browser would send Origin
            assert ws.receive_json() == {"hello": "local"}


def test_a_refusal_under_a_configured_name_says_why(caplog: pytest.LogCaptureFixture) -> None:
    events: list[AuditEvent] = []
    app = build_app(DEVBOX, audit_hook=events.append)
    with TestClient(app, base_url="http://devbox.lan:8000", client=LOOPBACK_PEER) as client:
        assert client.get("/").status_code == 401
    assert events[0].detail is not None
    assert "neither Origin nor Sec-Fetch-Site" in events[0].detail
    assert "CFACCESS_LOCAL_HOSTS" in events[0].detail


def test_cfaccess_local_hosts_warns_at_startup_what_plain_http_loses(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cfaccess_mw"), local_client(DEVBOX) as client:
        client.get("/")
    warnings = [r.getMessage() for r in caplog.records if "CFACCESS_LOCAL_HOSTS=devbox.lan" in r.getMessage()]
    assert len(warnings) == 1
    assert "https" in warnings[0]
    with caplog.at_level(logging.WARNING, logger="cfaccess_mw"), local_client(LOCAL) as client:
        client.get("/")
    assert len([r for r in caplog.records if "CFACCESS_LOCAL_HOSTS" in r.getMessage()]) == 1


@pytest.mark.parametrize("value", ["http://devbox.lan", "devbox.lan:8000", "a b", "-bad.lan"])
def test_cfaccess_local_hosts_must_be_host_names(value: str) -> None:
    with pytest.raises(ValueError, match="CFACCESS_LOCAL_HOSTS"):
        Settings.from_env({"CFACCESS_EXPOSURE_MODE": "local", "CFACCESS_LOCAL_HOSTS": value})


def test_cfaccess_local_hosts_is_refused_outside_local_mode(shared_issuer: LocalIssuer) -> None:
    with pytest.raises(ValueError, match="CFACCESS_LOCAL_HOSTS"):
        shared_issuer.settings(local_hosts=("devbox.lan",))


def test_the_host_rule_does_not_touch_other_credentials(shared_issuer: LocalIssuer) -> None:
    settings = shared_issuer.settings(exposure_mode=ExposureMode.LOCAL)
    app = build_app(settings)
    token = jwt_header(shared_issuer.identity_token("alice@example.com"))
    with TestClient(app, base_url="http://app.example.com", client=REMOTE_PEER) as client:
        assert client.get("/", headers={**token, "Origin": "https://elsewhere.example"}).status_code == 200


# --- 4. an email is trimmed of ASCII padding only, and whitespace or control characters inside refuse -------


@pytest.mark.parametrize(
    "email",
    [
        "alice@example.com\u3000",  # ideographic space: str.strip() removed it
        "alice@example.com\u00a0",  # no-break space
        "\u2003alice@example.com",  # em space
        "alice@example.com\u2028",  # line separator
        "alice@example.com\x1c",  # ASCII file separator: str.strip() removed it too
        "alice@example.com\x1f",
        "alice@example.com\n",
        "alice@example.com\x1b[2J",
        "alice@exa mple.com",
        "alice@example.com\u202e",  # right-to-left override
    ],
)
def test_an_email_with_unicode_padding_or_control_characters_is_refused(
    shared_issuer: LocalIssuer, make_client: ClientFactory, email: str
) -> None:
    seen: list[str] = []

    def lookup(address: str) -> dict[str, str]:
        seen.append(address)
        return {"name": "whoever"}

    client = make_client(shared_issuer.settings(), user_lookup=lookup)
    response = client.get("/", headers=jwt_header(shared_issuer.identity_token(email)))
    assert response.status_code == 401
    assert error_of(response)["reason"] == "claim_invalid"
    assert seen == []


def test_ascii_space_and_tab_padding_is_trimmed(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(shared_issuer.settings())
    response = client.get("/", headers=jwt_header(shared_issuer.identity_token(" \tAlice@Example.COM \t")))
    assert response.status_code == 200
    assert response.json()["email"] == "alice@example.com"


# --- 5. every text field of an audit event is printable, whoever filled it ----------------------------------


def test_an_email_claim_cannot_forge_an_audit_line(
    shared_issuer: LocalIssuer, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[AuditEvent] = []
    client = make_client(shared_issuer.settings(), user_lookup=lambda email: {"any": "user"}, audit_hook=events.append)
    forged = "mallory@example.com\naccepted 200 GET /admin client=127.0.0.1:1 user=admin@example.com"
    with caplog.at_level(logging.INFO, logger="cfaccess_mw.audit"):
        response = client.get("/", headers=jwt_header(shared_issuer.identity_token(forged)))
    assert response.status_code == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "cfaccess_mw.audit"]
    assert len(lines) == 1
    assert "\n" not in lines[0]
    assert all("\n" not in str(value) for value in events[0].as_dict().values())


@pytest.mark.parametrize("field", ["method", "path", "client", "kind", "principal", "reason", "detail"])
def test_audit_events_escape_unprintable_text_in_every_field(field: str) -> None:
    values: dict[str, Any] = {"outcome": "refused", "status": 401, "method": "GET", "path": "/", "client": None}
    values[field] = "one\ntwo\x1b[31m\u202e"
    event = AuditEvent(**values)
    assert getattr(event, field) == "one\\ntwo\\x1b[31m\\u202e"


# --- fail fast: a configuration error stops the server, and never becomes a 500 --------------------------


def test_a_misconfigured_middleware_answers_503_where_there_is_no_lifespan(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CFACCESS_EXPOSURE_MODE", "reverse-proxy")
    monkeypatch.delenv("CFACCESS_TEAM_DOMAIN", raising=False)
    app = Starlette()
    app.add_middleware(CloudflareAccessMiddleware)
    client = TestClient(app, client=REMOTE_PEER, raise_server_exceptions=False)  # not entered: no lifespan
    response = client.get("/")
    assert response.status_code == 503
    assert error_of(response)["reason"] == "server_misconfigured"
    assert "CFACCESS_TEAM_DOMAIN" not in response.text  # the caller is told to wait, the log names the variable
    assert any("CFACCESS_TEAM_DOMAIN" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


APP_MODULE = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from cfaccess_mw import CloudflareAccessMiddleware

async def home(request):
    return PlainTextResponse("hello")

app = Starlette(routes=[Route("/", home)])
app.add_middleware(CloudflareAccessMiddleware)
"""


@pytest.mark.parametrize("lifespan", ["auto", "on"])
def test_uvicorn_stops_at_startup_naming_the_variable(tmp_path: Any, lifespan: str) -> None:
    (tmp_path / "badapp.py").write_text(APP_MODULE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFACCESS_")}
    env.update({"CFACCESS_EXPOSURE_MODE": "reverse-proxy", "CFACCESS_AUD": "a" * 64, "PYTHONPATH": str(tmp_path)})
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "badapp:app", "--host", "127.0.0.1", "--port", "0", "--lifespan", lifespan],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "CFACCESS_TEAM_DOMAIN" in result.stderr
    assert "Application startup failed" in result.stderr
