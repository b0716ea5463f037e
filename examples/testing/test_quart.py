"""Testing a Quart app: ``app.test_app()`` runs start-up (the keys are fetched there), then its test client."""

from __future__ import annotations

import pytest

from cfaccess_mw.pytest_plugin import CfaccessEnv
from cfaccess_mw.testing import LocalIssuer
from examples.quart_app import create_app

pytestmark = pytest.mark.anyio


async def test_a_user_gets_in_and_no_token_is_refused(
    cfaccess_env: CfaccessEnv, cfaccess_issuer: LocalIssuer, users_db: str
) -> None:
    async with create_app(db_path=users_db).test_app() as app:
        client = app.test_client()
        alice = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("alice@example.com"))

        me = await client.get("/api/me", headers=alice)
        nobody = await client.get("/api/me")

        assert (await me.get_json())["display_name"] == "alice@example.com"
        assert (nobody.status_code, (await nobody.get_json())["error"]["reason"]) == (401, "no_credentials")
