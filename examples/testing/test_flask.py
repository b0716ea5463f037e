"""Testing a Flask app: the extension reads the settings and fetches the keys in ``create_app``, so the stand-in
issuer's environment (``cfaccess_env``) must be in place first; then Flask's test client."""

from __future__ import annotations

from cfaccess_mw.pytest_plugin import CfaccessEnv
from cfaccess_mw.testing import LocalIssuer
from examples.flask_app import create_app


def test_a_user_gets_in_and_no_token_is_refused(
    cfaccess_env: CfaccessEnv, cfaccess_issuer: LocalIssuer, users_db: str
) -> None:
    client = create_app(db_path=users_db).test_client()
    alice = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("alice@example.com"))

    me = client.get("/api/me", headers=alice)
    nobody = client.get("/api/me")

    assert me.get_json()["display_name"] == "alice@example.com"
    assert (nobody.status_code, nobody.get_json()["error"]["reason"]) == (401, "no_credentials")
