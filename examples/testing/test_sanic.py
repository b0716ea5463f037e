"""Testing a Sanic app: sanic-testing's ``SanicASGITestClient`` runs its start-up (the keys are fetched there)."""

from __future__ import annotations

import warnings

import pytest

from cfaccess_mw.pytest_plugin import CfaccessEnv
from cfaccess_mw.testing import LocalIssuer
from examples.sanic_app import create_app

with warnings.catch_warnings():  # sanic-testing imports websockets.legacy, deprecated since websockets 14
    warnings.simplefilter("ignore", DeprecationWarning)
    from sanic_testing.testing import SanicASGITestClient

pytestmark = pytest.mark.anyio


async def test_a_user_gets_in_and_others_are_refused(
    cfaccess_env: CfaccessEnv, cfaccess_issuer: LocalIssuer, users_db: str
) -> None:
    app = create_app(db_path=users_db, name="example_under_test")  # Sanic wants a name unique in the process
    async with SanicASGITestClient(app) as client:
        alice = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("alice@example.com"))
        _, me = await client.get("/api/me", headers=alice)
        _, nobody = await client.get("/api/me")

    assert me.json["display_name"] == "alice@example.com"
    assert nobody.status == 401
