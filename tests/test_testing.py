"""``cfaccess_mw.testing.LocalIssuer`` does the obvious thing in a user's own tests.

A rotation is seen by the very next request, the service tokens and API keys a test
mints are admitted with one argument, and ``env()`` configures an app that reads the
environment, all through the real middleware.
"""

from __future__ import annotations

from cfaccess_mw import Settings
from cfaccess_mw.testing import LocalIssuer

from .conftest import ClientFactory, error_of, jwt_header


def test_a_rotated_key_is_accepted_by_the_next_request(issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(issuer.settings())  # keys fetched at start-up
    assert client.get("/", headers=jwt_header(issuer.identity_token("alice@example.com"))).status_code == 200

    for rotation in (1, 2):  # back to back: the second would fall in a deployment's refetch cooldown
        issuer.rotate()
        response = client.get("/", headers=jwt_header(issuer.identity_token("alice@example.com")))
        assert response.status_code == 200
        assert issuer.fetch_count == 1 + rotation


def test_with_a_deployments_cooldown_the_second_rotation_waits(issuer: LocalIssuer, make_client: ClientFactory) -> None:
    """The control for the test above: the default cooldown is what made a user's rotation test fail."""
    client = make_client(issuer.settings(jwks_refresh_cooldown_seconds=10))
    issuer.rotate()
    assert client.get("/", headers=jwt_header(issuer.identity_token("alice@example.com"))).status_code == 200
    issuer.rotate()

    response = client.get("/", headers=jwt_header(issuer.identity_token("alice@example.com")))
    assert response.status_code == 503
    assert error_of(response)["reason"] == "keys_unavailable"
    assert 1 <= int(response.headers["retry-after"]) <= 10


def test_env_carries_the_zero_cooldown(shared_issuer: LocalIssuer) -> None:
    settings = Settings.from_env(shared_issuer.env(CFACCESS_PUBLIC_PATHS="/healthz"))

    assert settings.jwks_refresh_cooldown_seconds == 0.0
    assert settings.public_paths == ("/healthz",)
    assert settings == shared_issuer.settings(public_paths=("/healthz",))


def test_service_tokens_are_admitted_with_one_argument(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(shared_issuer.settings(service_tokens={"ci-robot": "ci-robot.access"}))

    admitted = client.get("/", headers=jwt_header(shared_issuer.service_token("ci-robot.access")))
    stranger = client.get("/", headers=jwt_header(shared_issuer.service_token("someone-else.access")))

    assert admitted.status_code == 200
    assert (admitted.json()["kind"], admitted.json()["name"]) == ("service", "ci-robot")
    assert stranger.status_code == 403
    assert error_of(stranger)["reason"] == "service_token_not_allowed"


def test_api_keys_are_admitted_with_one_argument(shared_issuer: LocalIssuer, make_client: ClientFactory) -> None:
    client = make_client(shared_issuer.settings(api_keys={"operator": "the-operators-key"}))

    admitted = client.get("/", headers={"Authorization": "Bearer the-operators-key"})
    wrong = client.get("/", headers={"Authorization": "Bearer another-key"})

    assert (admitted.status_code, admitted.json()["name"]) == (200, "operator")
    assert wrong.status_code == 401
