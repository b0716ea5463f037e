"""Testing a Starlette app configured in code: ``cfaccess_issuer.settings(...)`` is the ``Settings`` to pass."""

from __future__ import annotations

from starlette.testclient import TestClient

from cfaccess_mw.testing import LocalIssuer
from examples.starlette_app import create_app


def test_a_user_gets_in_and_a_rotated_key_is_accepted_at_once(cfaccess_issuer: LocalIssuer, users_db: str) -> None:
    settings = cfaccess_issuer.settings(public_paths=("/healthz",))
    with TestClient(create_app(settings, db_path=users_db)) as client:
        cfaccess_issuer.rotate()  # a new signing key, published beside the old one
        alice = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("alice@example.com"))

        assert client.get("/api/me", headers=alice).json() == {"kind": "user", "display_name": "alice@example.com"}
        assert client.get("/healthz").status_code == 200


def test_an_expired_token_is_refused(cfaccess_issuer: LocalIssuer, users_db: str) -> None:
    with TestClient(create_app(cfaccess_issuer.settings(), db_path=users_db)) as client:
        expired = cfaccess_issuer.identity_token("alice@example.com", lifetime=-120)
        response = client.get("/api/me", headers=cfaccess_issuer.request_headers(expired))

    assert (response.status_code, response.json()["error"]["reason"]) == (401, "token_expired")
