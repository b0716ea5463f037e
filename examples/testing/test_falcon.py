"""Testing a Falcon (ASGI) app: Falcon's ``ASGIConductor`` runs its start-up (the keys are fetched there)."""

from __future__ import annotations

import falcon.testing
import pytest

from cfaccess_mw.pytest_plugin import CfaccessEnv
from cfaccess_mw.testing import LocalIssuer
from examples.falcon_app import create_app

pytestmark = pytest.mark.anyio


async def test_a_user_gets_in_and_others_are_refused(
    cfaccess_env: CfaccessEnv, cfaccess_issuer: LocalIssuer, users_db: str
) -> None:
    async with falcon.testing.ASGIConductor(create_app(db_path=users_db)) as conductor:
        alice = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("alice@example.com"))
        mallory = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("mallory@example.com"))

        me = await conductor.simulate_get("/api/me", headers=alice)
        refused = await conductor.simulate_get("/api/me", headers=mallory)

    assert me.json["display_name"] == "alice@example.com"
    assert (refused.status_code, refused.json["error"]["reason"]) == (403, "unknown_user")
