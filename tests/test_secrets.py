"""No token, key or header value in logs, responses, reprs or audit events, whatever happens."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from cfaccess_mw import ApiKey, AuditEvent, ServiceToken
from cfaccess_mw.core.errors import Reason
from cfaccess_mw.keys.jwks import JWKSClient
from cfaccess_mw.testing import LocalIssuer

from .conftest import ClientFactory, jwt_header

API_KEY = "s3cr3t-operator-key-that-must-never-be-logged"
CLIENT_ID = "0a1b2c3d4e5f.access"


def secret_parts(token: str) -> list[str]:
    """The whole token and its payload and signature segments (the header segment is not secret)."""
    _, payload, signature = token.split(".")
    return [token, payload, signature]


def test_nothing_secret_leaks_anywhere(
    issuer: LocalIssuer, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[AuditEvent] = []
    settings = issuer.settings(
        api_keys=(ApiKey.from_secret("operator", API_KEY),),
        service_tokens=(ServiceToken("ci", CLIENT_ID),),
    )
    tokens = {
        "valid": issuer.identity_token("alice@example.com"),
        "unknown-user": issuer.identity_token("mallory@example.com"),
        "expired": issuer.identity_token("alice@example.com", lifetime=-600),
        "service": issuer.service_token(CLIENT_ID),
        "unlisted-service": issuer.service_token("zzz.access"),
        "wrong-aud": issuer.mint(issuer.base_claims() | {"aud": "x", "email": "alice@example.com"}),
    }
    tokens["tampered"] = tokens["valid"][:-6] + "AAAAAA"
    secrets = [API_KEY, API_KEY[:-1] + "X"]
    for token in tokens.values():
        secrets += secret_parts(token)

    monotonic = [0.0]
    keys = JWKSClient(issuer.certs_url, clock=lambda: monotonic[0])
    with caplog.at_level(logging.DEBUG):
        client = make_client(settings, audit_hook=events.append, jwks=keys)
        responses = [client.get("/", headers=jwt_header(token)) for token in tokens.values()]
        responses.append(client.get("/", headers={"Authorization": f"Bearer {API_KEY}"}))
        responses.append(client.get("/", headers={"Authorization": f"Bearer {API_KEY[:-1]}X"}))
        responses.append(client.get("/", headers=jwt_header(tokens["valid"] + "." + API_KEY)))
        issuer.responder = lambda: (500, {}, b"down")  # a failing refresh is logged too
        issuer.rotate()
        monotonic[0] += 60
        responses.append(client.get("/", headers=jwt_header(issuer.identity_token("alice@example.com"))))

    # The last: a rotated-in key while the certs endpoint fails cannot be checked yet, so 503, not 401.
    assert [r.status_code for r in responses] == [200, 403, 401, 200, 403, 401, 401, 200, 401, 401, 503]
    assert len(events) == len(responses)
    assert "HTTP 500" in caplog.text, "expected the failed refresh in the logs"

    haystacks: dict[str, str] = {"logs": caplog.text}
    haystacks["log records"] = " ".join(repr(vars(record)) for record in caplog.records)
    haystacks["responses"] = " ".join(f"{r.text} {dict(r.headers)}" for r in responses)
    haystacks["audit events"] = " ".join(repr(event) for event in events)
    middleware_stack: Any = client.app.middleware_stack  # type: ignore[attr-defined]
    haystacks["reprs"] = " ".join(repr(x) for x in (settings, middleware_stack, *settings.api_keys))
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"


def test_audit_events_describe_the_decision(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    events: list[AuditEvent] = []
    client = make_client(shared_issuer.settings(), audit_hook=events.append)
    client.get("/api/thing?token=abc", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    client.get("/", headers=jwt_header(shared_issuer.identity_token("eve@example.com")))
    accepted, refused = events
    assert (accepted.outcome, accepted.kind, accepted.principal) == ("accepted", "user", "alice@example.com")
    assert (accepted.method, accepted.path, accepted.client) == ("GET", "/api/thing", "203.0.113.7:51000")
    assert (refused.outcome, refused.status, refused.reason) == ("refused", 403, Reason.UNKNOWN_USER.value)
    assert "abc" not in repr(accepted)  # the query string is never recorded


def test_failing_audit_hook_does_not_change_the_decision(
    shared_issuer: LocalIssuer, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: AuditEvent) -> None:
        raise RuntimeError("audit table is full")

    client = make_client(shared_issuer.settings(), audit_hook=broken)
    with caplog.at_level(logging.ERROR, logger="cfaccess_mw.audit"):
        assert client.get("/", headers=jwt_header(shared_issuer.identity_token("alice@example.com"))).status_code == 200
        assert client.get("/").status_code == 401
    assert "audit hook failed" in caplog.text
