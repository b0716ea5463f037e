"""Testing a plain WSGI app behind the WSGI middleware: built after the stand-in issuer's environment is in place
(``cfaccess_env``), then Werkzeug's test client (any WSGI test client will do)."""

from __future__ import annotations

from werkzeug.test import Client

from cfaccess_mw.pytest_plugin import CfaccessEnv
from cfaccess_mw.testing import LocalIssuer
from examples.wsgi_app import create_app


def test_a_user_gets_in_and_no_token_is_refused(
    cfaccess_env: CfaccessEnv, cfaccess_issuer: LocalIssuer, users_db: str
) -> None:
    client = Client(create_app(db_path=users_db))
    alice = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("alice@example.com"))

    with client.get("/api/me", headers=alice) as me, client.get("/api/me") as nobody:
        assert me.get_json()["display_name"] == "alice@example.com"
        assert (nobody.status_code, nobody.get_json()["error"]["reason"]) == (401, "no_credentials")
