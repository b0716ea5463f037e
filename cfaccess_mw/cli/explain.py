"""``cfaccess-mw explain TOKEN|-``: decode a token, then run it through the middleware's own decision and say
which check (if any) refuses it, and why, with a hint at the usual cause."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

from ..core.authenticator import Authenticator
from ..core.errors import AuthError, InvalidToken, Reason
from ..core.principals import Principal
from ..core.profiles import build_profile
from ..core.providers import Provider, token_header
from ..core.settings import Settings
from .output import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    _keys_row,
    _out,
    _row,
    _seconds,
    _shape,
    _when,
)
from .presets import decode_unverified_for, preset_hint

#: The most ``explain`` reads from stdin; the middleware itself refuses tokens over 16 KiB.
MAX_INPUT_BYTES = 1 << 20


_PASTED_PREFIX = re.compile(
    r"^(?:cf-access-jwt-assertion\s*:|cf_authorization\s*=|cf-access-token\s*:"
    r"|x-goog-iap-jwt-assertion\s*:|x-pomerium-jwt-assertion\s*:|x-amzn-oidc-data\s*:"
    r"|(?:authorization\s*:\s*)?bearer\s)",
    re.IGNORECASE,
)


def _read_token(argument: str) -> str:
    if argument == "-":
        stream = getattr(sys.stdin, "buffer", None)
        raw = stream.read(MAX_INPUT_BYTES + 1) if stream is not None else sys.stdin.read(MAX_INPUT_BYTES + 1)
        if len(raw) > MAX_INPUT_BYTES:
            raise CliError(f"stdin holds more than {MAX_INPUT_BYTES} bytes; that is not a token", EXIT_USAGE)
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    else:
        text = argument
    text = _PASTED_PREFIX.sub("", text.strip())
    token = "".join(text.split())  # a token wrapped over several lines when pasted
    if not token:
        raise CliError("no token given: pass it as TOKEN, or pass '-' and pipe it on stdin", EXIT_USAGE)
    return token


def _print_token(header: Mapping[str, Any], claims: Mapping[str, Any], now: float) -> None:
    _out("Token (decoded without trusting it; the signature is not shown):")
    _out("header:")
    _out(json.dumps(header, indent=2, ensure_ascii=True))
    _out("claims:")
    _out(json.dumps(claims, indent=2, ensure_ascii=True))
    for name in ("iat", "nbf", "exp"):
        if name in claims:
            _row(name, _when(claims[name], now))
    _out(f"it claims to be {_shape(claims)}")
    _out()


def _hint(err: AuthError, settings: Settings, claims: Mapping[str, Any]) -> str:
    """What a deployer can do about a refusal, given the unverified claims."""
    reason = err.reason
    if settings.provider is not Provider.CLOUDFLARE:
        return preset_hint(reason, settings, claims)
    if reason is Reason.AUDIENCE_MISMATCH:
        return (
            "CFACCESS_AUD must list the Application Audience (AUD) Tag of the Access application in front of "
            "this app (Zero Trust > Access > Applications > the application > Overview)"
        )
    if reason is Reason.ISSUER_MISMATCH:
        return (
            f"CFACCESS_TEAM_DOMAIN gives the issuer {settings.issuer!r}; set it to the team domain that issues "
            f"these tokens (the token says {claims.get('iss')!r})"
        )
    if reason is Reason.UNKNOWN_KEY:
        return (
            "the certs endpoint does not list the key that signed this token: a token from another team (see "
            "'iss'), CFACCESS_CERTS_URL pointing elsewhere, or a key withdrawn since the token was issued"
        )
    if reason is Reason.BAD_SIGNATURE:
        return "the key is known but the signature does not match: the token was altered or not made by Cloudflare"
    if reason is Reason.TOKEN_EXPIRED:
        return (
            "get a fresh token (reload the page, or run cloudflared access token again); if fresh tokens are "
            f"refused too, check this host's clock (leeway is {_seconds(settings.leeway_seconds)})"
        )
    if reason is Reason.TOKEN_NOT_YET_VALID:
        return "this host's clock is behind the issuer's: synchronise it (NTP)"
    if reason is Reason.SERVICE_TOKEN_NOT_ALLOWED:
        return f"to admit it, add an entry to CFACCESS_SERVICE_TOKENS: NAME={claims.get('common_name')}"
    if reason is Reason.ALGORITHM_NOT_ALLOWED:
        return "Cloudflare signs with RS256 only: this token was not made by Cloudflare Access"
    if reason is Reason.KEYS_UNAVAILABLE:
        return f"check that this host can reach {settings.certs_url}"
    return "this is not a token Cloudflare Access would send; copy the Cf-Access-Jwt-Assertion header as received"


class _NoKeys(CliError):
    """The keys could not be fetched, so the token's signature cannot be checked (its claims still can)."""


def _claims_problem(settings: Settings, claims: Mapping[str, Any], now: float) -> InvalidToken | None:
    """The first thing wrong with the unverified claims (issuer, audience, times), as the middleware checks them."""
    try:
        build_profile(settings).check_claims(claims, now)
    except InvalidToken as claim_err:
        return claim_err
    return None


async def _any_user(email: str) -> str:
    """The CLI has no user store: every email counts as found, and the report says so."""
    return email


async def _authenticate(settings: Settings, token: str) -> tuple[Principal | None, AuthError | None, list[str], str]:
    """Run the middleware's own decision on a request carrying ``token`` and nothing else; also say the kids
    known afterwards and where they came from."""
    authenticator = Authenticator(settings, user_lookup=_any_user)
    jwks = authenticator.jwks
    assert jwks is not None  # jwt_enabled
    if not await jwks.refresh():
        raise _NoKeys(f"cannot fetch the signing keys from {jwks.url}: {jwks.last_failure}")
    header = token_header(settings)
    value = f"Bearer {token}" if header == "authorization" else token
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(header.encode("latin-1"), value.encode("ascii", errors="replace"))],
        "client": None,
    }
    try:
        principal = await authenticator.identify(scope)
    except AuthError as err:
        return None, err, jwks.kids, jwks.url
    return principal, None, jwks.kids, jwks.url


def _print_checked_against(settings: Settings) -> None:
    _out("Checked as the middleware would, against:")
    _row("provider", f"{settings.provider} (token from {token_header(settings)})")
    _row("issuer", ", ".join(settings.issuers) or str(settings.issuer))
    _row("audiences", ", ".join(settings.audiences) or "none (checked: signer and client)")


def _explain_without_keys(settings: Settings, claims: Mapping[str, Any], now: float, no_keys: CliError) -> None:
    """No keys, so no verdict on the signature; but a claim that differs from the configuration (a misspelt team
    domain shows as another issuer) is often the very reason the keys cannot be fetched, so say it."""
    _print_checked_against(settings)
    _out()
    _out(f"verdict: cannot check the signature: {no_keys.message}")
    claim_err = _claims_problem(settings, claims, now)
    if claim_err is None:
        _out("  the unverified claims match the configuration (issuer, audience, times): the host cannot reach")
        _out("  the certs endpoint (egress firewall, DNS, proxy)")
        return
    _out(f"  but in the unverified claims: {claim_err.detail}")
    if claim_err.reason is Reason.ISSUER_MISMATCH:
        _out(f"  what to do: {_hint(claim_err, settings, claims)}; the certs URL follows from it")
    else:
        _out(f"  what to do: {_hint(claim_err, settings, claims)}")


async def cmd_explain(args: argparse.Namespace) -> int:
    """Decode a token, then verify it exactly as the middleware would and say which check fails."""
    token = _read_token(args.token)
    now = time.time()
    try:
        # Read before the settings (a token is worth showing even when they are broken), so with ALB's padding
        # allowed; whether this preset allows it is the verdict's business below.
        header, claims = decode_unverified_for(Provider.AWS_ALB, token)
    except InvalidToken as exc:
        raise CliError(f"not a readable token ({exc.reason}): {exc.detail}") from None
    _print_token(header, claims, now)

    settings = Settings.from_env()
    if not settings.jwt_enabled:
        raise CliError(
            "CFACCESS_TEAM_DOMAIN and CFACCESS_AUD are not set, so the middleware does not read Access tokens",
            EXIT_USAGE,
        )
    try:
        principal, err, kids, keys_url = await _authenticate(settings, token)
    except _NoKeys as no_keys:
        _explain_without_keys(settings, claims, now, no_keys)
        raise
    _print_checked_against(settings)
    _keys_row(kids, keys_url)  # oidc: the discovered jwks_uri
    _row("leeway", _seconds(settings.leeway_seconds))
    _out()
    if principal is not None:
        if principal.kind == "user":
            _out(f"verdict: accepted, an identity token for {principal.email!r}.")
            _out("  The app's user_lookup has the last word: an email it does not find gets 403 unknown_user.")
        else:
            _out(f"verdict: accepted, the service token {principal.name!r} from CFACCESS_SERVICE_TOKENS.")
        return EXIT_OK

    assert err is not None
    _out(f"verdict: refused with {err.status_code} {err.reason}")
    _out(f"  failed check: {err.detail}")
    _out(f"  what to do: {_hint(err, settings, claims)}")
    if err.reason in (Reason.UNKNOWN_KEY, Reason.BAD_SIGNATURE, Reason.ALGORITHM_NOT_ALLOWED):
        # The middleware stops at the signature; the claims may explain why (another team's token, say).
        claim_err = _claims_problem(settings, claims, now)
        if claim_err is not None:
            _out(f"  also, in the unverified claims: {claim_err.detail}")
    raise CliError(f"token refused ({err.status_code} {err.reason}): {err.detail}")
