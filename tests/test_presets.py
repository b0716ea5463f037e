"""Provider presets end to end: each proxy's LocalIssuer, a real Starlette app, the real middleware.

One table of presets runs the shared cases (accepted, unknown user, the header sent
twice, the Cloudflare header ignored, expiry, audit events); the sections after it
hold what only one preset has (IAP's lifetime, ALB's padding and per-kid keys, OIDC
discovery and its coexistence with Bearer API keys) and the settings each one needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from cfaccess_mw import ApiKey, AuditEvent, ConfigError, Settings
from cfaccess_mw.core.errors import Reason
from cfaccess_mw.core.providers import IAP_JWKS_URL, Provider
from cfaccess_mw.keys.sources import ALB_FETCHES_PER_COOLDOWN, AlbKeySource, build_key_source
from cfaccess_mw.testing import LocalIssuer
from cfaccess_mw.testing.presets import AlbIssuer, GoogleIapIssuer, OidcIssuer, PomeriumIssuer

from .conftest import REMOTE_PEER, Clock, build_app, error_of

Issuer = Any  # one of the testing_presets issuers
PRESET_ISSUERS: dict[str, Callable[[], Issuer]] = {
    "google-iap": GoogleIapIssuer,
    "pomerium": PomeriumIssuer,
    "pomerium-rs256": lambda: PomeriumIssuer(algorithm="RS256"),
    "aws-alb": AlbIssuer,
    "oidc": OidcIssuer,
    "oidc-es256": lambda: OidcIssuer(algorithm="ES256"),
    "oidc-custom-header": lambda: OidcIssuer(token_header="X-Id-Token"),
}
API_KEY = "pk_" + "Zx81Lm3Qv7Rt2Wn9Yc4Bd6Fg0Hj5Ks1"


@pytest.fixture(scope="module", params=list(PRESET_ISSUERS), ids=list(PRESET_ISSUERS))
def preset(request: pytest.FixtureRequest) -> Iterator[Issuer]:
    with PRESET_ISSUERS[request.param]() as issuer:
        yield issuer


@pytest.fixture
def events() -> list[AuditEvent]:
    return []


@pytest.fixture
def client(preset: Issuer, events: list[AuditEvent]) -> Iterator[TestClient]:
    settings = preset.settings(api_keys=(ApiKey.from_secret("operator", API_KEY),))
    with TestClient(build_app(settings, audit_hook=events.append), client=REMOTE_PEER) as test_client:
        yield test_client


def test_a_proxy_token_for_a_known_user_is_accepted(
    preset: Issuer, client: TestClient, events: list[AuditEvent]
) -> None:
    response = client.get("/", headers=preset.request_headers(preset.identity_token("alice@example.com")))
    assert response.status_code == 200, response.text
    assert response.json()["kind"] == "user"
    assert response.json()["email"] == "alice@example.com"
    assert events[-1].outcome == "accepted"
    assert (events[-1].kind, events[-1].principal) == ("user", "alice@example.com")


def test_the_email_is_matched_case_insensitively(preset: Issuer, client: TestClient) -> None:
    response = client.get("/", headers=preset.request_headers(preset.identity_token("Alice@Example.COM")))
    assert response.json()["email"] == "alice@example.com"


def test_a_verified_token_for_an_unknown_user_is_forbidden(preset: Issuer, client: TestClient) -> None:
    response = client.get("/", headers=preset.request_headers(preset.identity_token("mallory@example.com")))
    assert response.status_code == 403
    assert error_of(response)["reason"] == "unknown_user"


def test_an_expired_token_is_refused(preset: Issuer, client: TestClient, events: list[AuditEvent]) -> None:
    response = client.get(
        "/", headers=preset.request_headers(preset.identity_token("alice@example.com", lifetime=-120))
    )
    assert response.status_code == 401
    assert error_of(response)["reason"] == "token_expired"
    assert (events[-1].outcome, events[-1].reason) == ("refused", "token_expired")


def test_a_token_without_exp_is_refused(preset: Issuer, client: TestClient) -> None:
    claims = preset.identity_claims("alice@example.com", None)
    del claims["exp"]
    response = client.get("/", headers=preset.request_headers(preset.mint(claims, headers={"exp": None})))
    assert response.status_code == 401
    assert error_of(response)["reason"] == "claim_invalid"


def test_a_token_without_email_names_no_user(preset: Issuer, client: TestClient) -> None:
    claims = preset.identity_claims("alice@example.com", None)
    del claims["email"]
    claims["common_name"] = "ci.access"  # a Cloudflare service token's claim means nothing here
    response = client.get("/", headers=preset.request_headers(preset.mint(claims)))
    assert response.status_code == 401
    assert error_of(response)["reason"] == "claim_invalid"


def test_the_token_header_sent_twice_is_refused(preset: Issuer, client: TestClient) -> None:
    token = preset.identity_token("alice@example.com")
    ((name, value),) = preset.request_headers(token).items()
    response = client.get("/", headers=[(name, value), (name, value)])
    assert response.status_code == 401
    assert error_of(response)["reason"] in ("token_malformed", "api_key_invalid")


def test_a_cloudflare_token_is_not_read_under_another_preset(preset: Issuer, client: TestClient) -> None:
    with LocalIssuer() as cloudflare:
        token = cloudflare.identity_token("alice@example.com")
    response = client.get("/", headers={"Cf-Access-Jwt-Assertion": token})
    assert response.status_code == 401
    assert error_of(response)["reason"] == "no_credentials"


def test_an_api_key_still_works_beside_the_preset(preset: Issuer, client: TestClient) -> None:
    response = client.get("/", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200
    assert response.json()["kind"] == "api_key"


def test_a_repeated_token_is_verified_once(preset: Issuer, client: TestClient) -> None:
    token = preset.identity_token("bob@example.com")
    for _ in range(3):
        assert client.get("/", headers=preset.request_headers(token)).status_code == 200
    verifier = client.app.middleware_stack.app.verifier  # type: ignore[attr-defined]
    assert verifier.cached_tokens == 1  # one entry, for this token (its header's bytes, or the text it was read as)
    assert verifier.cached(token.encode()) is not None or verifier.cached(token) is not None


# --- one preset at a time -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def iap() -> Iterator[GoogleIapIssuer]:
    with GoogleIapIssuer() as issuer:
        yield issuer


def _status(issuer: Issuer, token: str, **overrides: Any) -> tuple[int, str]:
    with TestClient(build_app(issuer.settings(**overrides)), client=REMOTE_PEER) as test_client:
        response = test_client.get("/", headers=issuer.request_headers(token))
    return response.status_code, (response.json().get("error") or {}).get("reason", "")


def test_iap_requires_iat(iap: GoogleIapIssuer) -> None:
    claims = iap.identity_claims("alice@example.com", None)
    del claims["iat"]
    assert _status(iap, iap.mint(claims)) == (401, "claim_invalid")


def test_iap_refuses_a_lifetime_beyond_ten_minutes_and_the_skew(iap: GoogleIapIssuer) -> None:
    assert _status(iap, iap.identity_token("alice@example.com", lifetime=600 + 60))[0] == 200
    assert _status(iap, iap.identity_token("alice@example.com", lifetime=600 + 61)) == (401, "claim_invalid")


@pytest.mark.parametrize(
    "iss", ["https://cloud.google.com/iap/", "https://cloud.google.com", "http://cloud.google.com/iap", "iap"]
)
def test_iap_refuses_any_other_issuer(iap: GoogleIapIssuer, iss: str) -> None:
    assert _status(iap, iap.identity_token("alice@example.com", iss=iss)) == (401, "issuer_mismatch")


def test_iap_refuses_another_backend_service(iap: GoogleIapIssuer) -> None:
    token = iap.identity_token("alice@example.com", aud="/projects/123456789012/global/backendServices/42")
    assert _status(iap, token) == (401, "audience_mismatch")


def test_iap_keys_default_to_googles_jwks() -> None:
    settings = Settings(provider=Provider.GOOGLE_IAP, audiences=("/projects/1/apps/p",))
    assert settings.certs_url == IAP_JWKS_URL
    assert settings.issuer == "https://cloud.google.com/iap"


def test_pomerium_key_url_comes_from_the_configured_route_never_the_token() -> None:
    settings = Settings(provider="pomerium", issuers=("App.Example.com",), audiences=("app.example.com",))  # type: ignore[arg-type]
    assert settings.certs_url == "https://app.example.com/.well-known/pomerium/jwks.json"
    uri_form = Settings(provider="pomerium", issuers=("https://app.example.com/",), audiences=("app.example.com",))  # type: ignore[arg-type]
    assert uri_form.certs_url == "https://app.example.com/.well-known/pomerium/jwks.json"


def test_pomerium_rotation_refetches_for_the_new_kid_and_keeps_the_old() -> None:
    clock = Clock()
    with PomeriumIssuer() as pomerium:
        settings = pomerium.settings()
        jwks = build_key_source(settings, clock=clock)
        test_client = TestClient(build_app(settings, jwks=jwks), client=REMOTE_PEER).__enter__()
        old = pomerium.identity_token("alice@example.com")
        assert test_client.get("/", headers=pomerium.request_headers(old)).status_code == 200
        fetches = pomerium.fetch_count
        pomerium.rotate()
        new = pomerium.identity_token("bob@example.com")
        assert test_client.get("/", headers=pomerium.request_headers(new)).status_code == 200  # fetched for it
        assert pomerium.fetch_count == fetches + 1
        pomerium.rotate()  # again, within the refetch cooldown: undecided until the next fetch may run
        newer = pomerium.identity_token("bob@example.com")
        assert test_client.get("/", headers=pomerium.request_headers(newer)).status_code == 503
        clock.now += settings.jwks_refresh_cooldown_seconds
        assert test_client.get("/", headers=pomerium.request_headers(newer)).status_code == 200
        assert pomerium.fetch_count == fetches + 2  # one fetch per cooldown window for the new kids
        assert test_client.get("/", headers=pomerium.request_headers(old)).status_code == 200  # the old key is kept
        test_client.__exit__(None, None, None)


# --- AWS ALB ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alb() -> Iterator[AlbIssuer]:
    with AlbIssuer() as issuer:
        yield issuer


def test_alb_tokens_are_padded_and_verified_as_received(alb: AlbIssuer) -> None:
    token = alb.identity_token("alice@example.com", note="ab")  # lengths that need padding somewhere
    assert "=" in token
    assert _status(alb, token)[0] == 200
    stripped = ".".join(segment.rstrip("=") for segment in token.split("."))
    assert stripped != token
    assert _status(alb, stripped) == (401, "bad_signature")  # the padded text is what ALB signed


@pytest.mark.parametrize("extra", ["=", "==", "==="])
def test_alb_refuses_wrong_padding(alb: AlbIssuer, extra: str) -> None:
    head, body, signature = alb.identity_token("alice@example.com").split(".")
    assert _status(alb, f"{head}.{body}.{signature}{extra}") == (401, "token_malformed")


def test_padded_base64url_is_refused_by_every_other_preset(iap: GoogleIapIssuer) -> None:
    head, body, signature = iap.identity_token("alice@example.com", note="ab").split(".")
    padded = ".".join(s + "=" * (-len(s) % 4) for s in (head, body, signature))
    assert padded != f"{head}.{body}.{signature}"
    assert _status(iap, padded) == (401, "token_malformed")


def test_alb_signer_must_be_a_configured_arn(alb: AlbIssuer) -> None:
    other = alb.arn.replace("123456789012", "999999999999")
    token = alb.mint(alb.identity_claims("alice@example.com", None), headers={"signer": other})
    assert _status(alb, token) == (401, "audience_mismatch")
    assert _status(alb, token, aws_alb_arns=(alb.arn, other))[0] == 200


def test_alb_client_must_be_the_configured_client_id(alb: AlbIssuer) -> None:
    token = alb.mint(alb.identity_claims("alice@example.com", None), headers={"client": "another-client"})
    assert _status(alb, token) == (401, "audience_mismatch")


def test_alb_email_verified_false_is_refused(alb: AlbIssuer) -> None:
    assert _status(alb, alb.identity_token("alice@example.com", email_verified="false")) == (401, "claim_invalid")


def test_alb_key_base_url_comes_from_the_arn_region() -> None:
    arn = "arn:aws:elasticloadbalancing:ap-southeast-2:123456789012:loadbalancer/app/web/50dc6c495c0c9188"
    settings = Settings(
        provider=Provider.AWS_ALB, issuers=("https://idp.example.com",), aws_alb_arns=(arn,), aws_client_id="c"
    )
    assert settings.certs_url == "https://public-keys.auth.elb.ap-southeast-2.amazonaws.com"
    gov = "arn:aws-us-gov:elasticloadbalancing:us-gov-west-1:123456789012:loadbalancer/app/web/50dc6c495c0c9188"
    settings = Settings(
        provider=Provider.AWS_ALB, issuers=("https://idp.example.com",), aws_alb_arns=(gov,), aws_client_id="c"
    )
    assert settings.certs_url == "https://s3-us-gov-west-1.amazonaws.com/aws-elb-public-keys-prod-us-gov-west-1"


@pytest.mark.anyio
async def test_alb_keys_are_fetched_once_per_kid_and_unknown_kids_wait_out_the_cooldown(alb: AlbIssuer) -> None:
    from cfaccess_mw.core.errors import AuthUnavailable, InvalidToken

    clock = Clock()
    source = AlbKeySource(alb.base_url + "/keys", cooldown_seconds=10, clock=clock)
    await source.get_key(alb.signing_kid)
    await source.get_key(alb.signing_kid)
    assert source.fetch_count == 1
    missing = "00000000-0000-4000-8000-000000000000"
    for _ in range(3):
        with pytest.raises(InvalidToken) as caught:
            await source.get_key(missing)
        assert caught.value.reason is Reason.UNKNOWN_KEY
    assert source.fetch_count == 2  # the second and third asks were answered from the negative cache
    clock.now += 11
    made_up = [f"00000000-0000-4000-8000-00000000000{n}" for n in range(1, 9)]
    outcomes = []
    for kid in made_up:
        try:
            await source.get_key(kid)
        except InvalidToken:
            outcomes.append(401)
        except AuthUnavailable:
            outcomes.append(503)
    assert outcomes[:ALB_FETCHES_PER_COOLDOWN] == [401] * ALB_FETCHES_PER_COOLDOWN
    assert set(outcomes[ALB_FETCHES_PER_COOLDOWN:]) == {503}
    assert source.fetch_count == 2 + ALB_FETCHES_PER_COOLDOWN
    assert await source.get_key(alb.signing_kid)  # a cached key is never held up by the budget


@pytest.mark.anyio
async def test_alb_endpoint_failure_is_a_503_and_keeps_cached_keys(alb: AlbIssuer) -> None:
    from cfaccess_mw.core.errors import AuthUnavailable

    source = AlbKeySource(alb.base_url + "/keys", cooldown_seconds=10, clock=Clock())
    assert await source.get_key(alb.signing_kid)
    new_kid = alb.add_key()
    alb.responder = lambda path: (500, {}, b"down")
    try:
        with pytest.raises(AuthUnavailable):
            await source.get_key(new_kid)
        assert await source.get_key(alb.signing_kid)
        assert source.last_failure is not None
    finally:
        alb.responder = None
        alb.remove_key(new_kid)


# --- OIDC ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oidc() -> Iterator[OidcIssuer]:
    with OidcIssuer() as issuer:
        yield issuer


def test_oidc_keys_come_from_the_discovery_document(oidc: OidcIssuer) -> None:
    settings = oidc.settings()
    assert settings.certs_url is None
    assert _status(oidc, oidc.identity_token("alice@example.com"))[0] == 200


@pytest.mark.parametrize(
    "document_change",
    [{"issuer": "https://evil.example.com"}, {"jwks_uri": "http://keys.example.com/jwks"}, {"jwks_uri": None}],
    ids=["issuer-mismatch", "plain-http-jwks", "no-jwks-uri"],
)
def test_a_discovery_document_that_does_not_match_gets_503(oidc: OidcIssuer, document_change: dict[str, Any]) -> None:
    document = {**oidc.discovery_document(), **document_change}
    oidc.responder = lambda path: (
        200,
        {"Content-Type": "application/json"},
        __import__("json").dumps(document).encode(),
    )
    try:
        assert _status(oidc, oidc.identity_token("alice@example.com")) == (503, "keys_unavailable")
    finally:
        oidc.responder = None


@pytest.mark.anyio
@pytest.mark.parametrize("jwks_uri", ["https://[::1/jwks", "https://keys.example.com:abc/jwks", "https:///jwks"])
async def test_a_jwks_uri_httpx_cannot_use_is_a_refused_discovery_document(oidc: OidcIssuer, jwks_uri: str) -> None:
    # A refusal the key source explains (jwks_uri is not usable), not an "unexpected InvalidURL" logged as a bug.
    document = {**oidc.discovery_document(), "jwks_uri": jwks_uri}
    oidc.responder = lambda path: (
        200,
        {"Content-Type": "application/json"},
        __import__("json").dumps(document).encode(),
    )
    try:
        source = build_key_source(oidc.settings())
        assert not await source.refresh()
        assert source.last_failure is not None
        assert "jwks_uri" in source.last_failure, source.last_failure
    finally:
        oidc.responder = None


def _oidc_client(oidc: OidcIssuer, **overrides: Any) -> TestClient:
    settings = oidc.settings(api_keys=(ApiKey.from_secret("operator", API_KEY),), **overrides)
    return TestClient(build_app(settings), client=REMOTE_PEER)


def test_oidc_in_authorization_tells_id_tokens_from_api_keys_by_shape(oidc: OidcIssuer) -> None:
    with _oidc_client(oidc) as test_client:
        token = oidc.identity_token("alice@example.com")
        assert test_client.get("/", headers={"Authorization": f"Bearer {token}"}).json()["kind"] == "user"
        assert test_client.get("/", headers={"Authorization": f"Bearer {API_KEY}"}).json()["kind"] == "api_key"
        wrong_key = test_client.get("/", headers={"Authorization": "Bearer not-a-key"})
        assert (wrong_key.status_code, error_of(wrong_key)["reason"]) == (401, "api_key_invalid")


def test_oidc_a_failed_id_token_never_falls_through_to_the_api_key_path(oidc: OidcIssuer) -> None:
    with _oidc_client(oidc) as test_client:
        expired = oidc.identity_token("alice@example.com", lifetime=-120)
        response = test_client.get("/", headers={"Authorization": f"Bearer {expired}"})
        assert (response.status_code, error_of(response)["reason"]) == (401, "token_expired")
        dotted_key = test_client.get("/", headers={"Authorization": f"Bearer {API_KEY}.x"})
        assert error_of(dotted_key)["reason"] == "token_malformed"


def test_oidc_in_another_header_leaves_authorization_to_api_keys(oidc: OidcIssuer) -> None:
    with _oidc_client(oidc, token_header="X-Forwarded-Id-Token") as test_client:
        token = oidc.identity_token("alice@example.com")
        in_header = test_client.get("/", headers={"X-Forwarded-Id-Token": token})
        assert in_header.json()["kind"] == "user"
        as_bearer = test_client.get("/", headers={"Authorization": f"Bearer {token}"})
        assert (as_bearer.status_code, error_of(as_bearer)["reason"]) == (401, "api_key_invalid")


def test_oidc_refuses_an_unverified_email(oidc: OidcIssuer) -> None:
    assert _status(oidc, oidc.identity_token("alice@example.com", email_verified=False)) == (401, "claim_invalid")


def test_oidc_refuses_a_token_for_another_client(oidc: OidcIssuer) -> None:
    assert _status(oidc, oidc.identity_token("alice@example.com", aud="other-client")) == (401, "audience_mismatch")


# --- settings -----------------------------------------------------------------------------------


ALB_ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/web/50dc6c495c0c9188"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CFACCESS_PROVIDER": "okta"}, "CFACCESS_PROVIDER"),
        ({"CFACCESS_PROVIDER": "google-iap"}, "CFACCESS_AUD"),
        ({"CFACCESS_PROVIDER": "google-iap", "CFACCESS_AUD": "123456"}, "CFACCESS_AUD"),
        (
            {"CFACCESS_PROVIDER": "google-iap", "CFACCESS_AUD": "/projects/1/apps/p", "CFACCESS_ALGORITHMS": "RS256"},
            "CFACCESS_ALGORITHMS",
        ),
        (
            {"CFACCESS_PROVIDER": "google-iap", "CFACCESS_AUD": "/projects/1/apps/p", "CFACCESS_ISSUER": "https://x"},
            "CFACCESS_ISSUER",
        ),
        ({"CFACCESS_PROVIDER": "pomerium", "CFACCESS_AUD": "app.example.com"}, "CFACCESS_ISSUER"),
        ({"CFACCESS_PROVIDER": "pomerium", "CFACCESS_ISSUER": "app.example.com"}, "CFACCESS_AUD"),
        (
            {
                "CFACCESS_PROVIDER": "pomerium",
                "CFACCESS_ISSUER": "http://app.example.com/",
                "CFACCESS_AUD": "app.example.com",
            },
            "CFACCESS_ISSUER",
        ),
        (
            {
                "CFACCESS_PROVIDER": "pomerium",
                "CFACCESS_ISSUER": "app.example.com",
                "CFACCESS_AUD": "app.example.com",
                "CFACCESS_ALGORITHMS": "HS256",
            },
            "CFACCESS_ALGORITHMS",
        ),
        (
            {
                "CFACCESS_PROVIDER": "aws-alb",
                "CFACCESS_ISSUER": "https://idp.example.com",
                "CFACCESS_AWS_CLIENT_ID": "c",
            },
            "CFACCESS_AWS_ALB_ARN",
        ),
        (
            {
                "CFACCESS_PROVIDER": "aws-alb",
                "CFACCESS_ISSUER": "https://idp.example.com",
                "CFACCESS_AWS_ALB_ARN": ALB_ARN,
            },
            "CFACCESS_AWS_CLIENT_ID",
        ),
        (
            {
                "CFACCESS_PROVIDER": "aws-alb",
                "CFACCESS_ISSUER": "https://idp.example.com",
                "CFACCESS_AWS_CLIENT_ID": "c",
                "CFACCESS_AWS_ALB_ARN": "arn:aws:elasticloadbalancing:eu-west-1:1:loadbalancer/net/x/y",
            },
            "CFACCESS_AWS_ALB_ARN",
        ),
        (
            {
                "CFACCESS_PROVIDER": "aws-alb",
                "CFACCESS_ISSUER": "https://idp.example.com",
                "CFACCESS_AWS_CLIENT_ID": "c",
                "CFACCESS_AWS_ALB_ARN": f"{ALB_ARN},{ALB_ARN.replace('eu-west-1', 'us-east-1')}",
            },
            "CFACCESS_AWS_ALB_ARN",
        ),
        (
            {
                "CFACCESS_PROVIDER": "aws-alb",
                "CFACCESS_ISSUER": "https://idp.example.com",
                "CFACCESS_AWS_CLIENT_ID": "c",
                "CFACCESS_AWS_ALB_ARN": ALB_ARN,
                "CFACCESS_AUD": "x",
            },
            "CFACCESS_AUD",
        ),
        ({"CFACCESS_PROVIDER": "oidc", "CFACCESS_AUD": "client"}, "CFACCESS_ISSUER"),
        (
            {"CFACCESS_PROVIDER": "oidc", "CFACCESS_ISSUER": "http://idp.example.com", "CFACCESS_AUD": "c"},
            "CFACCESS_ISSUER",
        ),
        ({"CFACCESS_PROVIDER": "oidc", "CFACCESS_ISSUER": "https://idp.example.com"}, "CFACCESS_AUD"),
        (
            {
                "CFACCESS_PROVIDER": "oidc",
                "CFACCESS_ISSUER": "https://idp.example.com",
                "CFACCESS_AUD": "c",
                "CFACCESS_TOKEN_HEADER": "Cookie",
            },
            "CFACCESS_TOKEN_HEADER",
        ),
        (
            {
                "CFACCESS_PROVIDER": "oidc",
                "CFACCESS_ISSUER": "https://idp.example.com",
                "CFACCESS_AUD": "c",
                "CFACCESS_TEAM_DOMAIN": "t.cloudflareaccess.com",
            },
            "CFACCESS_TEAM_DOMAIN",
        ),
        (
            {
                "CFACCESS_PROVIDER": "oidc",
                "CFACCESS_ISSUER": "https://idp.example.com",
                "CFACCESS_AUD": "c",
                "CFACCESS_ALLOW_COOKIE": "true",
            },
            "CFACCESS_ALLOW_COOKIE",
        ),
        (
            {
                "CFACCESS_PROVIDER": "oidc",
                "CFACCESS_ISSUER": "https://idp.example.com",
                "CFACCESS_AUD": "c",
                "CFACCESS_SERVICE_TOKENS": "ci=x.access",
            },
            "CFACCESS_SERVICE_TOKENS",
        ),
        ({"CFACCESS_EXPOSURE_MODE": "local", "CFACCESS_ISSUER": "https://idp.example.com"}, "CFACCESS_ISSUER"),
        ({"CFACCESS_EXPOSURE_MODE": "local", "CFACCESS_AWS_CLIENT_ID": "c"}, "CFACCESS_AWS_CLIENT_ID"),
        (
            {"CFACCESS_EXPOSURE_MODE": "local", "CFACCESS_PROVIDER": "pomerium", "CFACCESS_TOKEN_HEADER": "x"},
            "CFACCESS_TOKEN_HEADER",
        ),
    ],
)
def test_each_preset_names_the_setting_it_is_missing_or_refuses(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable, caught.value


def test_the_default_provider_is_cloudflare_and_reads_only_its_own_settings() -> None:
    settings = Settings.from_env({"CFACCESS_EXPOSURE_MODE": "local"})
    assert settings.provider is Provider.CLOUDFLARE
    assert not settings.jwt_enabled


def test_a_preset_from_the_environment_matches_its_issuer(oidc: OidcIssuer) -> None:
    assert Settings.from_env(oidc.env()) == oidc.settings()


@pytest.mark.parametrize(
    "issuer",
    ["https://idp.example.com:99999", "https://idp.example.com:abc", "https://[::1/", "https://"],
    ids=["port-out-of-range", "port-not-a-number", "broken-ipv6", "no-host"],
)
@pytest.mark.parametrize("provider", ["oidc", "aws-alb", "pomerium"])
def test_an_issuer_url_that_cannot_be_fetched_or_matched_is_a_config_error(provider: str, issuer: str) -> None:
    # Not a ValueError from urlsplit at startup, nor a URL httpx refuses on every fetch (a 503 forever).
    env = {"CFACCESS_PROVIDER": provider, "CFACCESS_ISSUER": issuer + ("/" if provider == "pomerium" else "")}
    env.update(
        {
            "oidc": {"CFACCESS_AUD": "c"},
            "aws-alb": {"CFACCESS_AWS_CLIENT_ID": "c", "CFACCESS_AWS_ALB_ARN": ALB_ARN},
            "pomerium": {"CFACCESS_AUD": "app.example.com"},
        }[provider]
    )
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == "CFACCESS_ISSUER", caught.value


def test_a_pomerium_issuer_with_a_user_name_is_refused_not_silently_cut() -> None:
    env = {
        "CFACCESS_PROVIDER": "pomerium",
        "CFACCESS_ISSUER": "https://u@app.example.com/",
        "CFACCESS_AUD": "app.example.com",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == "CFACCESS_ISSUER"


@pytest.mark.parametrize("provider", ["google-iap", "oidc"])
def test_a_certs_url_with_a_broken_host_is_a_config_error(provider: str) -> None:
    env = {"CFACCESS_PROVIDER": provider, "CFACCESS_CERTS_URL": "https://[::1/keys"}
    env.update(
        {
            "google-iap": {"CFACCESS_AUD": "/projects/1/apps/x"},
            "oidc": {"CFACCESS_ISSUER": "https://idp.example.com", "CFACCESS_AUD": "c"},
        }[provider]
    )
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == "CFACCESS_CERTS_URL"
