"""Testing a FastAPI app that reads CFACCESS_* when it is built: ``cfaccess_env`` sets exactly the stand-in
issuer's variables (any stray CFACCESS_* from your shell removed), then the app is built."""

from __future__ import annotations

from fastapi.testclient import TestClient

from cfaccess_mw.pytest_plugin import CfaccessEnv
from cfaccess_mw.testing import LocalIssuer
from examples.fastapi_app import create_app


def test_a_user_gets_in_and_others_are_refused(
    cfaccess_env: CfaccessEnv, cfaccess_issuer: LocalIssuer, users_db: str
) -> None:
    cfaccess_env.set(CFACCESS_PUBLIC_PATHS="/healthz")
    with TestClient(create_app(db_path=users_db)) as client:  # `with`: start-up runs, the keys are fetched
        alice = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("alice@example.com"))
        mallory = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("mallory@example.com"))

        assert client.get("/api/me", headers=alice).json()["display_name"] == "alice@example.com"
        assert client.get("/api/me", headers=mallory).json()["error"]["reason"] == "unknown_user"
        assert client.get("/api/me").status_code == 401
        assert client.get("/healthz").status_code == 200


def test_a_service_token_reaches_the_machines_endpoint(
    cfaccess_env: CfaccessEnv, cfaccess_issuer: LocalIssuer, users_db: str
) -> None:
    cfaccess_env.set(CFACCESS_SERVICE_TOKENS="ci=ci-robot.access")
    with TestClient(create_app(db_path=users_db)) as client:
        robot = cfaccess_issuer.request_headers(cfaccess_issuer.service_token("ci-robot.access"))
        stranger = cfaccess_issuer.request_headers(cfaccess_issuer.service_token("other.access"))

        assert client.get("/api/machines", headers=robot).status_code == 200
        assert client.get("/api/machines", headers=stranger).json()["error"]["reason"] == "service_token_not_allowed"
