"""Testing a Litestar app: Litestar's own TestClient (``with`` runs start-up, where the keys are fetched)."""

from __future__ import annotations

from litestar.testing import TestClient

from cfaccess_mw.pytest_plugin import CfaccessEnv
from cfaccess_mw.testing import LocalIssuer
from examples.litestar_app import create_app


def test_a_user_gets_in_and_only_an_admin_reaches_the_admin_route(
    cfaccess_env: CfaccessEnv, cfaccess_issuer: LocalIssuer, users_db: str
) -> None:
    with TestClient(create_app(db_path=users_db)) as client:
        alice = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("alice@example.com"))
        bob = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("bob@example.com"))

        assert client.get("/api/me", headers=bob).json()["display_name"] == "bob@example.com"
        assert client.get("/api/admin", headers=alice).status_code == 200
        assert client.get("/api/admin", headers=bob).json()["error"]["reason"] == "insufficient_scope"
        assert client.get("/api/me").status_code == 401
