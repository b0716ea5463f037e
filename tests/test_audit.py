"""Audit events: one per decision, on the ``cfaccess_mw.audit`` logger and the app's hook, never carrying a secret.

Requests go through a real Starlette app behind the middleware (in-process, with an explicit socket peer), and
tokens are verified against a :class:`LocalIssuer`'s real keys on its loopback certs server.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from cfaccess_mw import ApiKey, AuditEvent, CloudflareAccessMiddleware, ExposureMode, Reason, ServiceToken, Settings
from cfaccess_mw.core.audit import logs_acceptances
from cfaccess_mw.testing import LocalIssuer

REASONS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "reasons.md"
PEER = ("198.51.100.7", 40123)
BASE_URL = "http://localhost:8000"  # a local Host, so the loopback operator cases are the operator's
API_KEY = "audit-test-api-key-0123456789"
CLIENT_ID = "feedc0de.access"
USERS = {"alice@example.com": {"name": "Alice"}}


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"identity": request.user.identity})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def find_user(email: str) -> dict[str, str] | None:
    return USERS.get(email)


@dataclass
class Result:
    status: int
    events: list[AuditEvent]
    records: list[logging.LogRecord]
    log_text: str


@pytest.fixture(scope="module")
def audit_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(max_requests=500, max_seconds=300) as issuer:
        yield issuer


def settings_for(issuer: LocalIssuer, **overrides: Any) -> Settings:
    return issuer.settings(
        api_keys=(ApiKey.from_secret("operator", API_KEY),),
        service_tokens=(ServiceToken("ci-robot", CLIENT_ID),),
        public_paths=("/healthz",),
        **overrides,
    )


def call(
    caplog: pytest.LogCaptureFixture,
    settings: Settings,
    path: str = "/whoami",
    headers: dict[str, str] | None = None,
    peer: tuple[str, int] = PEER,
    user_lookup: Callable[[str], Any] = find_user,
    hook: Callable[[AuditEvent], Any] | None = None,
) -> Result:
    """One GET through a fresh app; the events the hook saw and the audit records logged for it."""
    events: list[AuditEvent] = []

    def collect(event: AuditEvent) -> Any:
        events.append(event)
        return hook(event) if hook is not None else None

    app = Starlette(routes=[Route("/whoami", whoami), Route("/healthz", health)])
    app.add_middleware(CloudflareAccessMiddleware, settings=settings, user_lookup=user_lookup, audit_hook=collect)

    async def go() -> int:
        transport = httpx.ASGITransport(app=app, client=peer)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            return (await client.get(path, headers=headers or {})).status_code

    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        status = asyncio.run(go())
    records = [r for r in caplog.records if r.name == "cfaccess_mw.audit"]
    # Everything logged while serving, from any logger, except the test client's own request lines.
    served = [r for r in caplog.records if BASE_URL not in r.getMessage()]
    log_text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in served)
    return Result(status, events, records, log_text)


def assert_no_secret(result: Result, *secrets: str) -> None:
    """None of ``secrets`` (a token, a key, a header value) appears in any log line, event or record field."""
    for secret in secrets:
        assert secret not in result.log_text
        for event in result.events:
            assert secret not in repr(event)
            assert all(secret not in str(value) for value in event.as_dict().values())
        for record in result.records:
            assert secret not in repr(vars(record))


def the_one_event(result: Result) -> AuditEvent:
    assert len(result.events) == 1, result.events
    assert len(result.records) == 1, [r.getMessage() for r in result.records]
    event = result.events[0]
    assert result.records[0].cfaccess == event.as_dict()  # type: ignore[attr-defined]
    return event


# --- accepted ----------------------------------------------------------------------------------


def test_an_accepted_user_is_reported_with_email_peer_method_and_path(
    audit_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    token = audit_issuer.identity_token("Alice@Example.com")

    result = call(caplog, settings_for(audit_issuer), "/whoami?session=abc", {"Cf-Access-Jwt-Assertion": token})

    assert result.status == 200
    event = the_one_event(result)
    assert event.as_dict() == {
        "outcome": "accepted",
        "status": 200,  # the app's own status: the event is written when the app starts its answer
        "method": "GET",
        "path": "/whoami",  # never the query string
        "client": "198.51.100.7:40123",
        "kind": "user",
        "principal": "alice@example.com",
        "reason": None,
        "detail": None,
    }
    record = result.records[0]
    assert record.levelno == logging.INFO
    assert record.getMessage() == "accepted 200 GET /whoami client=198.51.100.7:40123 user=alice@example.com"
    assert_no_secret(result, token, token.split(".")[2], "session=abc")


def test_an_accepted_service_token_is_reported_by_its_name(
    audit_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    token = audit_issuer.service_token(CLIENT_ID)

    result = call(caplog, settings_for(audit_issuer), headers={"Cf-Access-Jwt-Assertion": token})

    event = the_one_event(result)
    assert (event.outcome, event.kind, event.principal) == ("accepted", "service", "ci-robot")
    assert_no_secret(result, token)


def test_an_accepted_api_key_is_reported_by_its_name_never_its_value(
    audit_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    result = call(caplog, settings_for(audit_issuer), headers={"Authorization": f"Bearer {API_KEY}"})

    event = the_one_event(result)
    assert (event.outcome, event.kind, event.principal) == ("accepted", "api_key", "operator")
    assert_no_secret(result, API_KEY)


def test_the_local_operator_is_reported_as_local(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(exposure_mode=ExposureMode.LOCAL)

    result = call(caplog, settings, peer=("127.0.0.1", 50000))

    event = the_one_event(result)
    assert (event.outcome, event.kind, event.principal, event.client) == (
        "accepted",
        "local",
        "local",
        "127.0.0.1:50000",
    )


# --- refused -----------------------------------------------------------------------------------


RefusalCase = Callable[[LocalIssuer], dict[str, str]]

REFUSALS: list[Any] = [
    pytest.param(lambda i: {}, "no_credentials", 401, logging.INFO, id="no-credentials"),
    pytest.param(
        lambda i: {"Cf-Access-Jwt-Assertion": i.identity_token("alice@example.com", lifetime=-600)},
        "token_expired",
        401,
        logging.WARNING,
        id="expired",
    ),
    pytest.param(
        lambda i: {"Cf-Access-Jwt-Assertion": i.mint({**i.base_claims(), "aud": ["f" * 64], "email": "a@b.c"})},
        "audience_mismatch",
        401,
        logging.WARNING,
        id="other-audience",
    ),
    pytest.param(
        lambda i: {"Cf-Access-Jwt-Assertion": "eyJhbGciOiJub25lIn0.e30.c2lnbmF0dXJl"},
        "algorithm_not_allowed",
        401,
        logging.WARNING,
        id="alg-none",
    ),
    pytest.param(
        lambda i: {"Cf-Access-Jwt-Assertion": "definitely-not-a-jwt"},
        "token_malformed",
        401,
        logging.WARNING,
        id="malformed",
    ),
    pytest.param(
        lambda i: {"Cf-Access-Jwt-Assertion": i.identity_token("mallory@example.com")},
        "unknown_user",
        403,
        logging.WARNING,
        id="not-a-user",
    ),
    pytest.param(
        lambda i: {"Cf-Access-Jwt-Assertion": i.service_token("stranger.access")},
        "service_token_not_allowed",
        403,
        logging.WARNING,
        id="service-not-allowed",
    ),
    pytest.param(
        lambda i: {"Authorization": "Bearer wrong-key-value-42"},
        "api_key_invalid",
        401,
        logging.WARNING,
        id="wrong-api-key",
    ),
]


@pytest.mark.parametrize(("headers_for", "reason", "status", "level"), REFUSALS)
def test_each_refusal_is_reported_once_with_its_reason_and_no_credential(
    audit_issuer: LocalIssuer,
    caplog: pytest.LogCaptureFixture,
    headers_for: RefusalCase,
    reason: str,
    status: int,
    level: int,
) -> None:
    headers = headers_for(audit_issuer)

    result = call(caplog, settings_for(audit_issuer), headers=headers)

    assert result.status == status
    event = the_one_event(result)
    assert (event.outcome, event.status, event.reason) == ("refused", status, reason)
    assert (event.kind, event.principal) == (None, None)
    assert event.client == "198.51.100.7:40123"
    assert event.detail  # operators get the why
    assert result.records[0].levelno == level
    assert f"refused {status} GET /whoami client=198.51.100.7:40123 reason={reason} (" in result.records[0].getMessage()
    for value in headers.values():
        assert_no_secret(result, value, value.removeprefix("Bearer "))


# --- unavailable -------------------------------------------------------------------------------


def test_a_failing_certs_endpoint_is_reported_as_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    with LocalIssuer(max_requests=20, max_seconds=60) as issuer:
        issuer.responder = lambda: (502, {"Content-Type": "text/plain"}, b"bad gateway")
        token = issuer.identity_token("alice@example.com")

        result = call(caplog, settings_for(issuer), headers={"Cf-Access-Jwt-Assertion": token})

    assert result.status == 503
    event = the_one_event(result)
    assert (event.outcome, event.status, event.reason) == ("unavailable", 503, "keys_unavailable")
    assert "HTTP 502" in str(event.detail)
    assert_no_secret(result, token)


def test_a_failing_user_lookup_is_reported_as_unavailable(
    audit_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_lookup(email: str) -> None:
        raise ConnectionError("user database is down")

    token = audit_issuer.identity_token("alice@example.com")

    result = call(
        caplog, settings_for(audit_issuer), headers={"Cf-Access-Jwt-Assertion": token}, user_lookup=broken_lookup
    )

    assert result.status == 503
    event = the_one_event(result)
    assert (event.outcome, event.reason, event.detail) == (
        "unavailable",
        "user_lookup_failed",
        "user_lookup raised ConnectionError",
    )
    assert_no_secret(result, token)


# --- the hook, the path, public paths, websockets ----------------------------------------------


def test_an_async_hook_is_awaited(audit_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    async def hook(event: AuditEvent) -> None:
        await asyncio.sleep(0)
        seen.append(event.outcome)

    result = call(caplog, settings_for(audit_issuer), headers={"Authorization": f"Bearer {API_KEY}"}, hook=hook)

    assert result.status == 200
    assert seen == ["accepted"]


def test_a_failing_hook_is_logged_and_the_request_still_served(
    audit_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(event: AuditEvent) -> None:
        raise RuntimeError("metrics backend down")

    result = call(caplog, settings_for(audit_issuer), headers={"Authorization": f"Bearer {API_KEY}"}, hook=hook)

    assert result.status == 200
    assert [r.getMessage() for r in result.records if r.levelno == logging.ERROR] == ["audit hook failed"]
    assert_no_secret(result, API_KEY)


def test_a_newline_in_the_path_cannot_forge_an_audit_line(
    audit_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    result = call(caplog, settings_for(audit_issuer), "/whoami%0Aaccepted%20-%20GET%20/admin%1b[2J")

    event = the_one_event(result)
    assert event.path == "/whoami\\naccepted - GET /admin\\x1b[2J"
    message = result.records[0].getMessage()
    assert "\n" not in message
    assert "\x1b" not in message


def test_a_public_path_produces_no_event(audit_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture) -> None:
    result = call(caplog, settings_for(audit_issuer), "/healthz")

    assert result.status == 200
    assert result.events == []
    assert result.records == []


def test_a_refused_websocket_is_reported(audit_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture) -> None:
    events: list[AuditEvent] = []
    sent: list[MutableMapping[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never reached
        raise AssertionError("the app must not see a refused websocket")

    middleware = CloudflareAccessMiddleware(app, settings=settings_for(audit_issuer), audit_hook=events.append)
    scope = {"type": "websocket", "path": "/ws", "headers": [], "client": PEER, "query_string": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))

    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "UNAUTHORIZED"}]
    assert [(e.outcome, e.method, e.path, e.reason) for e in events] == [
        ("refused", "WEBSOCKET", "/ws", "no_credentials")
    ]


# --- the documentation -------------------------------------------------------------------------


def test_every_reason_code_is_documented_in_the_reference() -> None:
    text = REASONS_PAGE.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, re.MULTILINE))

    assert documented >= {reason.value for reason in Reason}


def test_whether_acceptances_are_logged_follows_every_way_logging_is_configured() -> None:
    """logs_acceptances reads logging's own memo: it must give isEnabledFor's answer after each kind of change,
    including dictConfig's disable_existing_loggers, which disables the logger without emptying the memo."""
    import logging.config

    logger = logging.getLogger("cfaccess_mw.audit")
    saved = (logger.level, logger.disabled, logging.root.manager.disable)
    try:
        logger.disabled = False
        logger.setLevel(logging.INFO)
        assert logs_acceptances() is True
        logger.setLevel(logging.WARNING)
        assert logs_acceptances() is False
        logger.setLevel(logging.INFO)
        assert logs_acceptances() is True
        logging.disable(logging.INFO)
        assert logs_acceptances() is False
        logging.disable(logging.NOTSET)
        assert logs_acceptances() is True
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": True})
        assert logger.disabled
        assert logs_acceptances() is False
    finally:
        logger.setLevel(saved[0])
        logger.disabled = saved[1]
        logging.disable(saved[2])
