"""Tokens really signed by Cloudflare Access, Google IAP, Google and Apple (OIDC) and AWS ALB, through the public path.

Every other test signs its tokens with a key it generated, in the shape our presets
expect, so a difference between our model of a signer and the signer itself would
never show there. The corpus in ``tests/vectors/real_tokens/`` holds tokens the
proxies themselves signed, with the public keys that verify them, taken from public
test fixtures (the README there lists each source and commit; each was verified with
a second implementation before it was added).

For each file: its keys are served from a loopback server, a real Starlette app runs
the real middleware with the file's preset and settings, and the clock is frozen
inside the token's validity. The token must get the file's expected answer (200 and
the identity, or the refusal it records and why); one flipped signature byte, a
wrong audience (or ALB client, or ALB ARN), a wrong issuer and a clock past the
token's expiry must each be refused with their own reason.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from cfaccess_mw import Settings
from cfaccess_mw.core.providers import Provider, token_header
from cfaccess_mw.testing import LoopbackKeyServer, Response

from .conftest import REMOTE_PEER, build_app, error_of

CORPUS = Path(__file__).parent / "vectors" / "real_tokens"
CORPUS_FILES = sorted(CORPUS.glob("*.json"))
#: Known differences between a signer and our model of it: the test asserts what should happen, and is
#: marked expected-to-fail (strictly) until the core is fixed. Keyed by corpus file name.
KNOWN_DIFFERENCES: dict[str, str] = {}
#: Settings fields a corpus file may set; the loopback certs URL and the test cooldown are added here.
SETTINGS_FIELDS = ("team_domain", "audiences", "issuers", "aws_alb_arns", "aws_client_id", "algorithms")


@dataclass(frozen=True)
class RealToken:
    """One corpus file: the token, the keys that verify it, the settings it needs and the answer it must get."""

    name: str
    provider: Provider
    token: str
    jwks: dict[str, Any] | None
    pems: dict[str, str]
    settings: dict[str, Any]
    not_before: float | None
    expires: float
    at: float
    expect: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> RealToken:
        doc = json.loads(path.read_text(encoding="utf-8"))
        keys = doc["keys"]
        clock = doc["clock"]
        assert set(doc["settings"]) <= set(SETTINGS_FIELDS), f"{path.name}: unknown settings"
        assert clock["not_before"] is None or clock["not_before"] <= clock["at"] < clock["expires"]
        return cls(
            name=path.stem,
            provider=Provider(doc["provider"]),
            token=doc["token"],
            jwks=keys.get("jwks"),
            pems=keys.get("pem", {}),
            settings={k: tuple(v) if isinstance(v, list) else v for k, v in doc["settings"].items()},
            not_before=clock["not_before"],
            expires=clock["expires"],
            at=clock["at"],
            expect=doc["expect"],
        )


CASES = [RealToken.load(path) for path in CORPUS_FILES]


def corpus_params(cases: list[RealToken]) -> list[Any]:
    """One pytest param per corpus file, id'd by its name, xfail (strict) where a known difference applies."""
    params = []
    for case in cases:
        marks = []
        if case.name in KNOWN_DIFFERENCES:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_DIFFERENCES[case.name]))
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


class CorpusKeyServer(LoopbackKeyServer):
    """One corpus file's keys on 127.0.0.1: the JWK set at ``/certs``, or ALB's PEM per kid at ``/keys/<kid>``."""

    def __init__(self, case: RealToken) -> None:
        super().__init__(max_requests=100, max_seconds=60.0)
        self.case = case

    def answer(self, path: str) -> Response:
        if self.case.jwks is not None and path == "/certs":
            return 200, {"Content-Type": "application/json"}, json.dumps(self.case.jwks).encode()
        prefix, _, kid = path.rpartition("/")
        if prefix == "/keys" and kid in self.case.pems:
            return 200, {"Content-Type": "application/x-pem-file"}, self.case.pems[kid].encode()
        return 404, {"Content-Type": "text/plain"}, b"not found"

    @property
    def certs_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}" + ("/certs" if self.case.jwks is not None else "/keys")


def settings_for(case: RealToken, server: CorpusKeyServer, **changes: Any) -> Settings:
    values: dict[str, Any] = {"certs_url": server.certs_url, "jwks_refresh_cooldown_seconds": 0.0}
    if case.provider is not Provider.CLOUDFLARE:
        values["provider"] = case.provider
    values.update(case.settings)
    values.update(changes)
    return Settings(**values)


def request_headers(settings: Settings, token: str) -> dict[str, str]:
    """The header the proxy forwards the token in (``Authorization: Bearer`` for the oidc preset's default)."""
    name = token_header(settings)
    return {name: f"Bearer {token}" if name == "authorization" else token}


def ask(case: RealToken, token: str, *, at: float | None = None, cookie: bool = False, **changes: Any) -> Any:
    """One request carrying ``token`` through a real app whose clock reads ``at`` (default: inside the validity);
    with ``cookie``, as Cloudflare's ``CF_Authorization`` cookie (and CFACCESS_ALLOW_COOKIE on)."""
    now = case.at if at is None else at
    expected_email = case.expect.get("email")

    def find_user(email: str) -> dict[str, str] | None:
        return {"name": "corpus user", "role": "member"} if email == expected_email else None

    with CorpusKeyServer(case) as server:
        settings = settings_for(case, server, **({"allow_cookie": True} if cookie else {}), **changes)
        headers = {"Cookie": f"CF_Authorization={token}"} if cookie else request_headers(settings, token)
        app = build_app(settings, user_lookup=find_user, clock=lambda: now)
        with TestClient(app, client=REMOTE_PEER) as client:
            return client.get("/", headers=headers)


def flip_signature_byte(token: str) -> str:
    """The token with one byte of its signature changed, re-encoded as it came (ALB keeps its ``=`` padding)."""
    head, body, signature = token.split(".")
    stripped = signature.rstrip("=")
    raw = bytearray(base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4)))
    raw[len(raw) // 2] ^= 0x01
    encoded = base64.urlsafe_b64encode(bytes(raw)).decode("ascii")
    return f"{head}.{body}.{encoded if signature.endswith('=') else encoded.rstrip('=')}"


def wrong_settings(case: RealToken) -> Iterator[tuple[str, dict[str, Any], str]]:
    """``(label, settings change, reason)``: each configured value that binds the token, replaced by another."""
    if case.provider is Provider.CLOUDFLARE:
        yield "other-aud", {"audiences": ("0" * 64,)}, "audience_mismatch"
        yield "other-team", {"team_domain": "another-team.cloudflareaccess.com"}, "issuer_mismatch"
    elif case.provider is Provider.GOOGLE_IAP:
        yield "other-aud", {"audiences": ("/projects/100000000001/apps/another-app",)}, "audience_mismatch"
    elif case.provider is Provider.OIDC:
        yield "other-aud", {"audiences": ("another-client-id",)}, "audience_mismatch"
        yield "other-issuer", {"issuers": ("https://issuer.example.com",)}, "issuer_mismatch"
    else:  # AWS ALB: signer and client stand in for the audience
        (arn,) = case.settings["aws_alb_arns"]
        yield "other-client", {"aws_client_id": "another-client-id"}, "audience_mismatch"
        yield "other-alb", {"aws_alb_arns": (arn[:-16] + "0" * 16,)}, "audience_mismatch"
        yield "other-issuer", {"issuers": ("https://issuer.example.com",)}, "issuer_mismatch"


def test_the_corpus_holds_a_token_of_each_signing_proxy_it_can() -> None:
    """Pomerium has none yet: no public fixture with a Pomerium-signed token and its key set was found."""
    assert {case.provider for case in CASES} >= {
        Provider.CLOUDFLARE,
        Provider.GOOGLE_IAP,
        Provider.OIDC,
        Provider.AWS_ALB,
    }


@pytest.mark.parametrize("case", corpus_params(CASES))
def test_a_real_token_gets_its_expected_answer(case: RealToken) -> None:
    response = ask(case, case.token)
    assert response.status_code == case.expect["status"], response.text
    if response.status_code == 200:
        assert response.json()["kind"] == "user"
        assert response.json()["email"] == case.expect["email"]
    else:
        error = error_of(response)
        assert error["reason"] == case.expect["reason"]
        assert error["message"] == case.expect["message"]


@pytest.mark.parametrize("case", corpus_params(CASES))
def test_a_real_token_with_one_signature_byte_flipped_is_refused(case: RealToken) -> None:
    response = ask(case, flip_signature_byte(case.token))
    assert response.status_code == 401
    assert error_of(response)["reason"] == "bad_signature"


@pytest.mark.parametrize(
    ("case", "changes", "reason"),
    [
        pytest.param(case, changes, reason, id=f"{case.name}-{label}")
        for case in CASES
        for label, changes, reason in wrong_settings(case)
    ],
)
def test_a_real_token_is_refused_under_settings_it_was_not_made_for(
    case: RealToken, changes: dict[str, Any], reason: str
) -> None:
    response = ask(case, case.token, **changes)
    assert response.status_code == 401
    assert error_of(response)["reason"] == reason


@pytest.mark.parametrize("case", corpus_params(CASES))
def test_a_real_token_is_refused_once_it_has_expired(case: RealToken) -> None:
    response = ask(case, case.token, at=case.expires + 3600)
    assert response.status_code == 401
    assert error_of(response)["reason"] == "token_expired"


@pytest.mark.parametrize("case", corpus_params([c for c in CASES if c.provider is Provider.CLOUDFLARE]))
def test_a_real_cloudflare_token_is_accepted_from_the_cf_authorization_cookie(case: RealToken) -> None:
    """Cloudflare also hands the browser the token as the ``CF_Authorization`` cookie (CFACCESS_ALLOW_COOKIE)."""
    response = ask(case, case.token, cookie=True)
    assert response.status_code == 200, response.text
    assert response.json()["email"] == case.expect["email"]
