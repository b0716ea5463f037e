"""The hostile suite, per preset: each attack through the real middleware in a real app, never reaching it.

Issue 14's list: algorithm confusion (ES256 to HS256 with the EC public key as the
HMAC secret), a P-384 or secp256k1 key under an ES256 kid, a token of one preset
sent to another, the ALB ``kid`` path-injection attempt, a Pomerium token whose
``iss`` names another host; and the Cloudflare suite's basics again for each preset
(``alg: none``, psychic signatures, embedded keys, oversize tokens). Each refusal is
checked for its status, the shared error shape, its reason, and an app never called.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from cfaccess_mw.core.tokens import MAX_TOKEN_LENGTH
from cfaccess_mw.testing.presets import (
    AlbIssuer,
    GoogleIapIssuer,
    OidcIssuer,
    PomeriumIssuer,
    jws,
    new_ec_key,
    public_jwk,
)

from .hostile import assert_refused, counting_app

REMOTE = ("203.0.113.7", 51000)
ALICE = "alice@example.com"
PRESETS = ["google-iap", "pomerium", "aws-alb", "oidc-es256", "oidc-rs256"]


class Target:
    """One preset's issuer, its app behind the middleware, and the counted endpoint."""

    def __init__(self, issuer: Any) -> None:
        self.issuer = issuer
        app, self.endpoint = counting_app(issuer.settings())
        self.client = TestClient(app, client=REMOTE)

    def send(self, token: str) -> Any:
        self.endpoint.calls = 0
        return self.client.get("/", headers=self.issuer.request_headers(token))

    def refused(self, token: str, *reasons: str, status: int = 401) -> None:
        response = self.send(token)
        assert_refused(response.status_code, response.json(), self.endpoint, status, reasons)

    def accepted(self, token: str) -> None:
        response = self.send(token)
        assert response.status_code == 200, response.text
        assert self.endpoint.calls == 1


def _issuer(name: str) -> Any:
    makers: dict[str, Any] = {
        "google-iap": GoogleIapIssuer,
        "pomerium": PomeriumIssuer,
        "aws-alb": AlbIssuer,
        "oidc-es256": lambda: OidcIssuer(algorithm="ES256"),
        "oidc-rs256": OidcIssuer,
    }
    return makers[name]()


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, Target]]:
    issuers = {name: _issuer(name).start() for name in PRESETS}
    made = {name: Target(issuer) for name, issuer in issuers.items()}
    for target in made.values():
        target.client.__enter__()
    yield made
    for target in made.values():
        target.client.__exit__(None, None, None)
    for issuer in issuers.values():
        issuer.stop()


@pytest.fixture(params=PRESETS)
def target(request: pytest.FixtureRequest, targets: dict[str, Target]) -> Target:
    return targets[request.param]


def b64(data: bytes, padded: bool = False) -> str:
    text = base64.urlsafe_b64encode(data).decode()
    return text if padded else text.rstrip("=")


def hmac_token(issuer: Any, secret: bytes, alg: str = "HS256") -> str:
    """A token in the issuer's own header shape, but HMAC-signed with ``secret``."""
    padded = isinstance(issuer, AlbIssuer)
    header = {**issuer.header(issuer.signing_kid), "alg": alg}
    claims = issuer.identity_claims(ALICE, None)
    head = b64(json.dumps(header).encode(), padded)
    body = b64(json.dumps(claims).encode(), padded)
    digest = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(digest, padded)}"


def test_an_honest_token_gets_through(target: Target) -> None:
    target.accepted(target.issuer.identity_token(ALICE))


@pytest.mark.parametrize("form", ["pem", "der", "jwk"])
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_signed_with_the_public_key_is_refused(target: Target, form: str, alg: str) -> None:
    public = target.issuer.private_key().public_key()
    if form == "pem":
        secret = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    elif form == "der":
        secret = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        secret = json.dumps(public_jwk(target.issuer.signing_kid, target.issuer.private_key())).encode()
    target.refused(hmac_token(target.issuer, secret, alg), "algorithm_not_allowed")


@pytest.mark.parametrize("alg", ["none", "None", "ES384", "ES512", "PS256", "RS512", "EdDSA", "ES256K"])
def test_other_algorithms_are_refused(target: Target, alg: str) -> None:
    target.refused(
        target.issuer.mint(target.issuer.identity_claims(ALICE, None), headers={"alg": alg}), "algorithm_not_allowed"
    )


def test_psychic_signature_is_refused(target: Target) -> None:
    token = target.issuer.identity_token(ALICE)
    head, body, signature = token.split(".")
    padded = isinstance(target.issuer, AlbIssuer)
    zero = b64(bytes(len(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))), padded)
    target.refused(f"{head}.{body}.{zero}", "bad_signature")


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP256K1()], ids=lambda c: c.name)
def test_a_key_on_another_curve_under_an_es256_kid_is_never_adopted(curve: ec.EllipticCurve) -> None:
    for make in (GoogleIapIssuer, PomeriumIssuer, AlbIssuer, lambda: OidcIssuer(algorithm="ES256")):
        with make() as issuer:
            bad_kid = issuer.add_key(new_ec_key(curve))
            target = Target(issuer)
            with target.client:
                target.accepted(issuer.identity_token(ALICE))
                token = issuer.identity_token(ALICE, kid=bad_kid)
                assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==="))["alg"] == "ES256"
                fetches = issuer.fetch_count
                # The fetch proved the key unusable: 401 saying so (a 503 had clients retry for ever).
                target.refused(token, "key_unusable")
                target.refused(token, "key_unusable")
                assert issuer.fetch_count <= fetches + 1  # skipped, not refetched for every request


@pytest.mark.parametrize(
    "kid",
    [
        "../../../etc/passwd",
        "00000000-0000-4000-8000-000000000000/../../evil",
        "00000000-0000-4000-8000-000000000000?x=1",
        "00000000-0000-4000-8000-000000000000#x",
        "00000000-0000-4000-8000-000000000000\n",
        "00000000-0000-4000-8000-00000000000%2F",
        "..%2F..%2Fevil",
        "//evil.example.com/key",
        "https://evil.example.com/key",
        "00000000-0000-4000-8000-0000000000000",
        "",
    ],
)
def test_alb_kid_path_injection_is_refused_before_any_fetch(targets: dict[str, Target], kid: str) -> None:
    target = targets["aws-alb"]
    fetches = target.issuer.fetch_count
    token = target.issuer.mint(target.issuer.identity_claims(ALICE, None), headers={"kid": kid})
    target.refused(token, "unknown_key")
    assert target.issuer.fetch_count == fetches


def test_a_pomerium_token_whose_iss_names_another_host_is_refused(targets: dict[str, Target]) -> None:
    target = targets["pomerium"]
    target.refused(target.issuer.identity_token(ALICE, iss="authenticate.example.test"), "issuer_mismatch")
    target.refused(target.issuer.identity_token(ALICE, iss="https://app.example.test/"), "issuer_mismatch")
    target.refused(target.issuer.identity_token(ALICE, aud="other.example.test"), "audience_mismatch")


@pytest.mark.parametrize("source", PRESETS)
def test_a_token_of_one_preset_is_refused_by_every_other(targets: dict[str, Target], source: str) -> None:
    token = targets[source].issuer.identity_token(ALICE)
    for name, target in targets.items():
        if name != source:
            response = target.send(token)
            # A kid the target's keys do not list is 401 once a fetch says so, and 503 "try again" while unknown
            # kids have already spent the refetch cooldown (keys.py): a refusal either way, never the endpoint.
            expected = 503 if response.status_code == 503 else 401
            reasons = ("keys_unavailable",) if expected == 503 else ()
            assert_refused(response.status_code, response.json(), target.endpoint, expected, reasons)


def test_an_embedded_key_is_ignored(target: Target) -> None:
    attacker = new_ec_key()
    header = {**target.issuer.header(target.issuer.signing_kid), "jwk": public_jwk("x", attacker)}
    header["jku"] = "https://evil.example.com/jwks"
    padded = isinstance(target.issuer, AlbIssuer)
    token = jws(attacker, header, target.issuer.identity_claims(ALICE, None), padded=padded)
    target.refused(token, "bad_signature", "algorithm_not_allowed")


def test_an_oversized_token_is_refused_before_parsing(target: Target) -> None:
    token = target.issuer.identity_token(ALICE, pad="x" * MAX_TOKEN_LENGTH)
    target.refused(token, "token_too_large")


@pytest.mark.parametrize("crit", [{"crit": ["exp"]}, {"b64": False, "crit": ["b64"]}])
def test_jws_extensions_are_refused(target: Target, crit: dict[str, Any]) -> None:
    target.refused(target.issuer.mint(target.issuer.identity_claims(ALICE, None), headers=crit), "token_malformed")


def test_time_claims_must_be_json_numbers(target: Target) -> None:
    claims = target.issuer.identity_claims(ALICE, None)
    claims["exp"] = str(claims["exp"])
    target.refused(target.issuer.mint(claims, headers={"exp": claims["exp"]}), "claim_invalid")


def test_unsigned_identity_headers_are_never_identity(target: Target) -> None:
    target.endpoint.calls = 0
    response = target.client.get(
        "/",
        headers={
            "Remote-User": "alice",
            "Remote-Email": ALICE,
            "X-Forwarded-Email": ALICE,
            "X-Forwarded-User": "alice",
            "X-Auth-Request-Email": ALICE,
            "Tailscale-User-Login": ALICE,
            "X-Goog-Authenticated-User-Email": f"accounts.google.com:{ALICE}",
            "X-Pomerium-Claim-Email": ALICE,
            "X-Amzn-Oidc-Identity": ALICE,
        },
    )
    assert_refused(response.status_code, response.json(), target.endpoint, 401, ("no_credentials",))
