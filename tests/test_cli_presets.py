"""``cfaccess-mw check`` and ``explain`` under each preset: they read the preset, its header and its encoding."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cfaccess_mw import cli
from cfaccess_mw.testing.presets import AlbIssuer, GoogleIapIssuer, OidcIssuer, PomeriumIssuer

ISSUERS: dict[str, Callable[[], Any]] = {
    "google-iap": GoogleIapIssuer,
    "pomerium": PomeriumIssuer,
    "aws-alb": AlbIssuer,
    "oidc": OidcIssuer,
}


@pytest.fixture(scope="module", params=list(ISSUERS))
def issuer(request: pytest.FixtureRequest) -> Iterator[Any]:
    with ISSUERS[request.param]() as started:
        yield started


@pytest.fixture
def deployed(issuer: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in list(os.environ):
        if name.startswith("CFACCESS_"):
            monkeypatch.delenv(name)
    for name, value in issuer.env().items():
        monkeypatch.setenv(name, value)
    return issuer


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_check_prints_the_preset_and_its_keys(deployed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check")
    assert code == 0, err
    assert f"provider             {deployed.provider.value}" in out
    assert deployed.header_name in out
    assert "OK: configuration is valid" in out
    if isinstance(deployed, AlbIssuer):
        assert "fetched one per kid" in out
    else:
        assert deployed.signing_kid in out


def test_check_fails_when_the_keys_cannot_be_fetched(deployed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    deployed.responder = lambda path: (500, {}, b"down")
    try:
        code, out, err = run(capsys, "check")
    finally:
        deployed.responder = None
    if isinstance(deployed, AlbIssuer):  # no key set to fetch before a token names a kid: nothing to fail yet
        assert code == 0
        assert "explain a real token to test the endpoint" in out
        return
    assert code == 1
    assert err.startswith("cfaccess-mw: cannot fetch the signing keys")


def test_explain_accepts_a_good_token(deployed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "explain", deployed.identity_token("alice@example.com"))
    assert code == 0, err
    assert "verdict: accepted, an identity token for 'alice@example.com'" in out
    assert f"provider             {deployed.provider.value}" in out


def test_explain_accepts_the_header_line_as_pasted(deployed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ((name, value),) = deployed.request_headers(deployed.identity_token("alice@example.com")).items()
    code, out, err = run(capsys, "explain", f"{name}: {value}")
    assert code == 0, err
    assert "verdict: accepted" in out


def test_explain_names_the_failed_check_and_a_preset_hint(deployed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    token = deployed.identity_token("alice@example.com", iss="https://evil.example.com")
    code, out, err = run(capsys, "explain", token)
    assert code == 1
    assert "verdict: refused with 401 issuer_mismatch" in out
    assert "CFACCESS_ISSUER must be exactly that" in out
    assert "token refused" in err


def test_explain_says_what_the_claims_would_fail_after_a_bad_signature(
    deployed: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    head, body, signature = deployed.identity_token("alice@example.com", lifetime=-600).split(".")
    forged = f"{head}.{body}.{signature[:-8]}AAAAAAAA" if not signature.endswith("=") else f"{head}.{body}.{'A' * 86}=="
    code, out, _ = run(capsys, "explain", forged)
    assert code == 1
    assert "verdict: refused with 401 bad_signature" in out
    assert "also, in the unverified claims: expired" in out


def test_explain_names_where_the_keys_came_from(deployed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # For oidc the keys come from the discovery document's jwks_uri: CFACCESS_CERTS_URL is unset.
    code, out, err = run(capsys, "explain", deployed.identity_token("alice@example.com"))
    assert code == 0, err
    (keys_row,) = [line for line in out.splitlines() if line.lstrip().startswith("signing keys")]
    assert deployed.base_url in keys_row, keys_row
    assert "from None" not in out


def test_check_notes_speak_of_the_preset_not_cloudflare(deployed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check")
    assert code == 0, err
    assert "Cloudflare Access tokens" not in out
