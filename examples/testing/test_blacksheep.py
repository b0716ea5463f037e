"""Testing a BlackSheep app: ``await app.start()`` runs its start-up (the keys are fetched there), then
BlackSheep's TestClient."""

from __future__ import annotations

import pytest
from blacksheep.testing import TestClient

from cfaccess_mw.pytest_plugin import CfaccessEnv
from cfaccess_mw.testing import LocalIssuer
from examples.blacksheep_app import create_app

pytestmark = pytest.mark.anyio


async def test_a_user_gets_in_and_others_are_refused(
    cfaccess_env: CfaccessEnv, cfaccess_issuer: LocalIssuer, users_db: str
) -> None:
    app = create_app(db_path=users_db)
    await app.start()  # type: ignore[no-untyped-call]  # BlackSheep leaves start() and stop() untyped
    try:
        client = TestClient(app)
        alice = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("alice@example.com"))
        me = await client.get("/api/me", headers=alice)
        nobody = await client.get("/api/me")

        assert (await me.json())["display_name"] == "alice@example.com"
        assert nobody.status == 401
    finally:
        await app.stop()  # type: ignore[no-untyped-call]
