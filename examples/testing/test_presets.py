"""Testing an app behind another proxy: parametrize ``cfaccess_provider`` and the same test runs per preset.

Each preset's issuer mints a signed-in user's token with ``identity_token(email)``, shaped as that proxy shapes
it (IAP's ES256 ``x-goog-iap-jwt-assertion``, Pomerium's ``X-Pomerium-Jwt-Assertion``, ALB's padded
``x-amzn-oidc-data``, an OIDC ID token in ``Authorization: Bearer``), and ``request_headers(token)`` puts it in
the header that proxy uses. Only Cloudflare has service tokens: ``service_token(client_id)``.
``cfaccess_env`` sets the preset's own ``CFACCESS_*`` variables (``CFACCESS_PROVIDER`` among them).
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cfaccess_mw.pytest_plugin import CfaccessEnv
from cfaccess_mw.testing_presets import AnyIssuer
from examples.fastapi_app import create_app

PRESETS = ["cloudflare", "google-iap", "pomerium", "aws-alb", "oidc"]


@pytest.mark.parametrize("cfaccess_provider", PRESETS)
def test_a_user_gets_in_behind_every_proxy(
    cfaccess_env: CfaccessEnv, cfaccess_issuer: AnyIssuer, users_db: str
) -> None:
    with TestClient(create_app(db_path=users_db)) as client:
        alice = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("alice@example.com"))
        mallory = cfaccess_issuer.request_headers(cfaccess_issuer.identity_token("mallory@example.com"))

        assert client.get("/api/me", headers=alice).json()["display_name"] == "alice@example.com"
        assert client.get("/api/me", headers=mallory).status_code == 403
        assert client.get("/api/me").status_code == 401


@pytest.mark.parametrize("cfaccess_provider", ["google-iap"])
def test_a_token_for_another_proxy_is_refused(
    cfaccess_env: CfaccessEnv, cfaccess_issuer: AnyIssuer, users_db: str
) -> None:
    # Google IAP configured; a Cloudflare-shaped header carries nothing the app reads.
    with TestClient(create_app(db_path=users_db)) as client:
        token = cfaccess_issuer.identity_token("alice@example.com")
        assert client.get("/api/me", headers={"Cf-Access-Jwt-Assertion": token}).status_code == 401
