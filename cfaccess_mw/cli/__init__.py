"""``cfaccess-mw``: answers for the person who deploys an app behind Cloudflare Access.

    cfaccess-mw check [--strict]    validate the CFACCESS_* variables, fetch the signing keys, print the policy
    cfaccess-mw explain TOKEN|-     decode a token, then say which check (if any) refuses it, and why
    cfaccess-mw new-api-key NAME    a new random API key, shown once, and its CFACCESS_API_KEYS entry
    cfaccess-mw demo                the middleware against a local stand-in for Cloudflare, in-process
    cfaccess-mw dev [token EMAIL]   a stand-in issuer on loopback for running your own app; mint its tokens
    cfaccess-mw --version           the installed version

``check`` and ``explain`` read the same variables as the middleware and run the
middleware's own code (:meth:`Settings.from_env`, :class:`JWKSClient`,
:meth:`Authenticator.identify`), so what they say is what a
request would get.

Exit status: 0 all is well; 1 a check failed (the token is refused or malformed,
the certs endpoint cannot be used); 2 usage or configuration error (the message
names the variable); 70 a bug. A failure always ends with one line on stderr that
starts with ``cfaccess-mw:``, never a traceback. Warnings (an unknown
``CFACCESS_*`` variable, a key the certs endpoint lists but that cannot be used)
go to stderr as ``cfaccess-mw: warning: ...``; ``check --strict`` (or
``CFACCESS_STRICT=true``) makes an unknown variable an error instead, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import re
import secrets
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NoReturn

from .. import __version__
from ..core.authenticator import Authenticator
from ..core.errors import AuthError, ConfigError, InvalidToken, Reason
from ..core.principals import Principal
from ..core.profiles import build_profile
from ..core.providers import (
    PRESETS,
    Provider,
    decode_unverified_for,
    describe_preset,
    preset_hint,
    token_header,
)
from ..core.settings import ApiKey, ExposureMode, Settings
from ..core.tokens import human_duration
from ..integrations.middleware import CloudflareAccessMiddleware
from ..keys.sources import KeyStore, build_key_source

PROG = "cfaccess-mw"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUG = 70

#: The most ``explain`` reads from stdin; the middleware itself refuses tokens over 16 KiB.
MAX_INPUT_BYTES = 1 << 20
_PASTED_PREFIX = re.compile(
    r"^(?:cf-access-jwt-assertion\s*:|cf_authorization\s*=|cf-access-token\s*:"
    r"|x-goog-iap-jwt-assertion\s*:|x-pomerium-jwt-assertion\s*:|x-amzn-oidc-data\s*:"
    r"|(?:authorization\s*:\s*)?bearer\s)",
    re.IGNORECASE,
)


class CliError(Exception):
    """Ends the command with one line on stderr and ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the whole usage block first)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see: {self.prog} --help)", EXIT_USAGE)


class _WarningPrinter(logging.Handler):
    """Shows the package's warnings while a command runs, one line each, on stderr.

    The audit logger is skipped (``demo`` prints its events itself), and so is the
    certs client's own "fetch failed" warning, which the command reports as its error.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("cfaccess_mw.audit"):
            return
        if record.name == "cfaccess_mw.keys" and str(record.msg).startswith("certs endpoint %s failed"):
            return
        if str(record.msg).startswith("cfaccess_mw: configuration error"):
            return  # the command ends with the error itself
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call must not break the command
            message = str(record.msg)
        message = message.removeprefix("cfaccess_mw: ").replace("\n", " ")
        sys.stderr.write(f"{PROG}: warning: {message}\n")


# --- small output helpers ----------------------------------------------------------------------


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _row(label: str, value: str) -> None:
    _out(f"  {label:<20} {value}")


def _keys_row(kids: Sequence[str], url: str) -> None:
    _row(f"signing keys ({len(kids)})", f"{', '.join(kids)} from {url}" if kids else f"none usable from {url}")


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _when(value: object, now: float) -> str:
    """``2025-01-01 12:00:00 UTC (in 4 minutes)`` for a NumericDate claim, or why it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} (not a JSON number: the middleware refuses it)"
    try:
        stamp = datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"{value!r} (not a usable time)"
    delta = value - now
    if abs(delta) < 1:
        relative = "now"
    else:
        relative = f"in {human_duration(delta)}" if delta > 0 else f"{human_duration(delta)} ago"
    return f"{stamp} ({relative})"


def _shape(claims: Mapping[str, Any]) -> str:
    """What the token claims to be, by the same rule the middleware uses (email first, then common_name)."""
    if "email" in claims:
        return f"an identity (user) token for {claims['email']!r}"
    common_name = claims.get("common_name")
    if isinstance(common_name, str) and common_name:
        return f"a service token with client ID {common_name!r}"
    return "neither an identity token (no 'email') nor a service token (no 'common_name')"


# --- check -------------------------------------------------------------------------------------


def _print_policy(settings: Settings) -> None:
    mode = settings.exposure_mode
    trust = (
        "a loopback peer is the local operator"
        if mode is ExposureMode.LOCAL
        else "loopback peers earn nothing (cloudflared or a proxy on this host)"
    )
    _out("Effective policy (from CFACCESS_* variables):")
    _row("exposure mode", f"{mode.value}: {trust}")
    if settings.provider is not Provider.CLOUDFLARE:
        for label, value in describe_preset(settings):
            _row(label, value)
    elif settings.jwt_enabled:
        _row("team domain", str(settings.team_domain))
        _row("issuer", str(settings.issuer))
        _row(f"audiences ({len(settings.audiences)})", ", ".join(settings.audiences))
        _row("certs URL", str(settings.certs_url))
    else:
        _row("Access tokens", "not read: CFACCESS_TEAM_DOMAIN and CFACCESS_AUD are not set")
    _row("public paths", ", ".join(settings.public_paths) or "none")
    _row(f"API keys ({len(settings.api_keys)})", ", ".join(k.name for k in settings.api_keys) or "none")
    tokens = ", ".join(f"{t.name} (client ID {t.client_id})" for t in settings.service_tokens)
    _row(f"service tokens ({len(settings.service_tokens)})", tokens or "none")
    if settings.jwt_enabled:
        _row("leeway", f"{_seconds(settings.leeway_seconds)} on exp, nbf and iat")
        _row(
            "keys cache TTL",
            f"{_seconds(settings.jwks_cache_seconds)} (refetch for an unknown key id at most every "
            f"{_seconds(settings.jwks_refresh_cooldown_seconds)}; fetch timeout "
            f"{_seconds(settings.jwks_timeout_seconds)})",
        )
        _row(
            "keys max age",
            f"{_seconds(settings.jwks_max_age_seconds)} (keys no fetch confirms are trusted this long through a "
            "certs outage, then every token gets 503)",
        )
        _row("token cache", f"{settings.token_cache_size} verified tokens")
        _row("CF_Authorization", "read when the header is absent" if settings.allow_cookie else "cookie not read")


def _advice(settings: Settings) -> list[str]:
    """Things that are valid but are often a mistake."""
    notes = []
    if settings.exposure_mode is ExposureMode.LOCAL:
        notes.append(
            "local mode trusts every loopback peer. If cloudflared or a reverse proxy runs on this host, every "
            "request from the internet arrives from loopback: set CFACCESS_EXPOSURE_MODE=reverse-proxy"
        )
    if settings.exposure_mode is ExposureMode.REVERSE_PROXY and not settings.api_keys:
        notes.append(
            f"no API keys: only {PRESETS[settings.provider].label} tokens get in, scripts on this host included "
            f"(make a key with: {PROG} new-api-key NAME)"
        )
    return notes


async def _fetch_keys(settings: Settings) -> KeyStore:
    source = build_key_source(settings)
    if not await source.refresh():
        raise CliError(
            f"cannot fetch the signing keys from {source.url}: {source.last_failure} (a running app keeps the keys "
            f"it has for at most {_seconds(settings.jwks_max_age_seconds)}, CFACCESS_JWKS_MAX_AGE_SECONDS, then "
            "answers every token 503)"
        )
    return source


async def cmd_check(args: argparse.Namespace) -> int:
    """Validate the configuration and the certs endpoint; print the effective policy."""
    settings = Settings.from_env(strict=True if args.strict else None)
    _print_policy(settings)
    if settings.jwt_enabled:
        jwks = await _fetch_keys(settings)
        if settings.provider is Provider.AWS_ALB:
            _row("signing keys", f"fetched one per kid from {jwks.url}/<kid> when a token first names it")
        else:
            _keys_row(jwks.kids, jwks.url)
    for note in _advice(settings):
        _out(f"note: {note}")
    if settings.provider is Provider.AWS_ALB:
        _out("OK: configuration is valid (ALB keys are fetched per kid; explain a real token to test the endpoint).")
    elif settings.jwt_enabled:
        _out("OK: configuration is valid and the certs endpoint serves usable keys.")
    else:
        _out("OK: configuration is valid (API keys and, in local mode, loopback only; no Access tokens).")
    return EXIT_OK


# --- explain -----------------------------------------------------------------------------------


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


# --- new-api-key -------------------------------------------------------------------------------


def cmd_new_api_key(args: argparse.Namespace) -> int:
    """Print a new random API key once, and the hashed entry for ``CFACCESS_API_KEYS``."""
    name: str = args.name
    if any(c in name for c in ":,") or any(c.isspace() for c in name):
        raise CliError(f"NAME {name!r} must not contain ':', ',' or spaces", EXIT_USAGE)
    try:
        ApiKey.parse(f"{name}:sha256:{'0' * 64}")
    except ConfigError as exc:
        raise CliError(f"NAME: {exc.problem}", EXIT_USAGE) from None
    secret = secrets.token_urlsafe(32)
    key = ApiKey.from_secret(name, secret)
    _out(f"New API key {name!r}. It is shown only now and stored nowhere: give it to the caller.")
    _out()
    _out(f"  {secret}")
    _out()
    _out("Add this entry to CFACCESS_API_KEYS (comma-separated) or as a line of CFACCESS_API_KEYS_FILE:")
    _out()
    _out(f"  {key.line()}")
    _out()
    _out("The caller sends:  Authorization: Bearer <the key>")
    return EXIT_OK


# --- demo --------------------------------------------------------------------------------------


@dataclass
class _DemoCall:
    what: str
    path: str
    headers: dict[str, str]
    expect: int


async def cmd_demo(args: argparse.Namespace) -> int:
    """Run the middleware in-process against a local stand-in issuer and show each decision."""
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from ..core.audit import AuditEvent
    from ..core.settings import ServiceToken
    from ..testing import LocalIssuer

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"identity": request.user.identity})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    users = {"alice@example.com": {"name": "Alice"}}

    async def find_user(email: str) -> object:
        return users.get(email)

    events: list[AuditEvent] = []
    api_key = secrets.token_urlsafe(32)
    client_id = f"{secrets.token_hex(16)}.access"
    with LocalIssuer(max_requests=50, max_seconds=120) as issuer:
        settings = issuer.settings(
            api_keys=(ApiKey.from_secret("operator", api_key),),
            service_tokens=(ServiceToken("ci-robot", client_id),),
            public_paths=("/healthz",),
        )
        app = Starlette(routes=[Route("/whoami", whoami), Route("/healthz", health)])
        app.add_middleware(
            CloudflareAccessMiddleware, settings=settings, user_lookup=find_user, audit_hook=events.append
        )
        other_app = {**issuer.base_claims(), "aud": ["f" * 64], "email": "alice@example.com"}
        jwt = "Cf-Access-Jwt-Assertion"
        calls = [
            _DemoCall("public health check, no credentials", "/healthz", {}, 200),
            _DemoCall(
                "alice (a user of the app) through Access",
                "/whoami",
                {jwt: issuer.identity_token("alice@example.com")},
                200,
            ),
            _DemoCall(
                "mallory passed Access but is no user here",
                "/whoami",
                {jwt: issuer.identity_token("mallory@example.com")},
                403,
            ),
            _DemoCall("the allowed service token ci-robot", "/whoami", {jwt: issuer.service_token(client_id)}, 200),
            _DemoCall("a service token not on the list", "/whoami", {jwt: issuer.service_token("other.access")}, 403),
            _DemoCall(
                "alice's token, expired",
                "/whoami",
                {jwt: issuer.identity_token("alice@example.com", lifetime=-180)},
                401,
            ),
            _DemoCall("a token for another Access application", "/whoami", {jwt: issuer.mint(other_app)}, 401),
            _DemoCall("the local operator's API key", "/whoami", {"Authorization": f"Bearer {api_key}"}, 200),
            _DemoCall("a wrong API key", "/whoami", {"Authorization": "Bearer not-the-key"}, 401),
            _DemoCall("no credentials, from loopback like cloudflared", "/whoami", {}, 401),
        ]
        _out("cfaccess-mw demo: a Starlette app behind CloudflareAccessMiddleware in reverse-proxy mode, called")
        _out("in-process from 127.0.0.1 (as cloudflared on the same host would); a stand-in Access team serves")
        _out(f"its signing keys at {issuer.certs_url}. Users: alice@example.com.")
        _out()
        failures = 0
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50123))
        async with httpx.AsyncClient(transport=transport, base_url="http://app.example") as client:
            for call in calls:
                before = len(events)
                status = (await client.get(call.path, headers=call.headers)).status_code
                ok = status == call.expect
                failures += not ok
                new = events[before:]
                if not new:
                    decision = "public path: no decision, no audit event"
                else:
                    event = new[-1]
                    who = f" {event.kind}={event.principal}" if event.kind else ""
                    why = f" {event.reason}: {event.detail}" if event.reason else ""
                    decision = f"{event.outcome}{who}{why}"
                mark = "ok  " if ok else "FAIL"
                _out(f"{mark} {status}  {call.what}")
                _out(f"          audit: {decision}")
    _out()
    _out("The full demo (a FastAPI app served on 127.0.0.1, with curl lines to paste) is in the source tree:")
    _out("  python3 dev.py demo")
    if failures:
        raise CliError(f"demo: {failures} of {len(calls)} calls did not get the expected status")
    return EXIT_OK


# --- dev ---------------------------------------------------------------------------------------


def cmd_dev(args: argparse.Namespace) -> int:
    """Serve a stand-in issuer on loopback until Ctrl-C; print the exports, a token, and how to mint more."""
    from ..testing.devserver import banner, serve_until_stopped, start_issuer

    provider = Provider(args.provider)
    try:
        issuer = start_issuer(provider, port=args.port, max_seconds=args.max_seconds)
    except OSError as exc:
        raise CliError(f"cannot serve on 127.0.0.1:{args.port}: {exc.strerror or exc}", EXIT_USAGE) from None
    stop = threading.Event()
    try:
        for line in banner(issuer, args.email, args.lifetime):
            _out(line)
        sys.stdout.flush()
        serve_until_stopped(issuer, stop)
    except KeyboardInterrupt:
        pass
    finally:
        issuer.stop()
    _out("cfaccess-mw dev: stopped; its keys are gone, so its tokens are no longer accepted once the app refetches.")
    return EXIT_OK


def cmd_dev_token(args: argparse.Namespace) -> int:
    """Ask the running ``cfaccess-mw dev`` for a token (found from the exported CFACCESS_* variables)."""
    from ..testing.devserver import DevError, fetch_token, header_line, token_url

    if (args.email is None) == (args.service is None):
        raise CliError("give EMAIL or --service CLIENT_ID (one of them)", EXIT_USAGE)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise CliError(f"{exc}; export the lines `cfaccess-mw dev` printed first", EXIT_USAGE) from None
    try:
        url = args.url or token_url(settings)
        token = fetch_token(url, email=args.email, service=args.service, lifetime=args.lifetime)
    except DevError as exc:
        raise CliError(str(exc)) from None
    _out(header_line(settings, token) if args.header else token)
    return EXIT_OK


# --- entry point -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Check, explain and manage a cfaccess_mw deployment. Reads the same CFACCESS_* "
        "variables as the middleware.",
        epilog="Exit status: 0 ok; 1 a check failed; 2 usage or configuration error; 70 a bug in cfaccess-mw.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check",
        help="validate CFACCESS_*, fetch the signing keys, print the policy",
        description="Validate every CFACCESS_* variable as the middleware does (an unknown one is a warning, usually "
        "a typo), fetch the signing keys from the certs endpoint, and print the effective policy. Run it with "
        "exactly the environment the app gets; OK means the configuration is sound and a problem is in the "
        "request (then explain its token).",
    )
    check.add_argument(
        "--strict",
        action="store_true",
        help="an unknown CFACCESS_* variable (a typo such as CFACCESS_PUBLIC_PATH) is an error, exit 2, not a "
        "warning; CFACCESS_STRICT=true does the same for the app itself",
    )
    check.set_defaults(func=cmd_check)

    explain = commands.add_parser(
        "explain",
        help="decode a token and say which check refuses it",
        description="Decode a token without trusting it, then verify it exactly as the middleware would with the "
        "CFACCESS_* configuration and say which check refuses it, and what to change. Even when the signing keys "
        "cannot be fetched it compares the token's issuer and audience with the configuration.",
    )
    explain.add_argument(
        "token",
        metavar="TOKEN",
        help="the token as the proxy forwards it: the value of Cf-Access-Jwt-Assertion (Cloudflare), "
        "x-goog-iap-jwt-assertion (Google IAP), X-Pomerium-Jwt-Assertion (Pomerium), x-amzn-oidc-data (AWS ALB) "
        "or the OIDC ID token (Authorization: Bearer); a pasted 'Name: value' line is fine. '-' reads it from "
        "stdin, which keeps it out of shell history",
    )
    explain.set_defaults(func=cmd_explain)

    new_key = commands.add_parser("new-api-key", help="print a new API key once, and its CFACCESS_API_KEYS entry")
    new_key.add_argument("name", metavar="NAME", help="who the key is for, e.g. operator or backup-job")
    new_key.set_defaults(func=cmd_new_api_key)

    demo = commands.add_parser("demo", help="run the middleware against a local stand-in for Cloudflare Access")
    demo.set_defaults(func=cmd_demo)
    _add_dev(commands)
    return parser


def _add_dev(commands: Any) -> None:
    dev = commands.add_parser(
        "dev",
        help="serve a stand-in issuer on 127.0.0.1 for running your own app; print its exports and a token",
        description="Serve a stand-in issuer (any preset) on 127.0.0.1 until Ctrl-C. It prints the CFACCESS_* "
        "lines to export in the terminal that runs your app, and a token to curl it with; `cfaccess-mw dev token` "
        "(in a shell with those exports) mints more. Its keys exist only in this process.",
    )
    dev.add_argument("--provider", choices=[p.value for p in Provider], default="cloudflare", help="which proxy")
    dev.add_argument("--port", type=int, default=0, help="the issuer's port (default: a free one); a fixed port "
                     "keeps the exports valid when dev restarts")  # fmt: skip
    dev.add_argument("--email", default="alice@example.com", help="whose first token to print")
    dev.add_argument("--lifetime", type=float, default=3600.0, help="seconds the tokens stay valid (IAP: 600 at most)")
    dev.add_argument("--max-seconds", type=float, default=12 * 3600.0, help=argparse.SUPPRESS)
    dev.set_defaults(func=cmd_dev)
    token_commands = dev.add_subparsers(dest="dev_command", metavar="token")
    token = token_commands.add_parser(
        "token",
        help="mint a token from the running `cfaccess-mw dev`",
        description="Mint a token from the running `cfaccess-mw dev`, found through the CFACCESS_* variables it "
        "printed (export them first, or pass --url).",
    )
    token.add_argument("email", metavar="EMAIL", nargs="?", help="the user's email")
    token.add_argument("--service", metavar="CLIENT_ID", help="a service token for this client ID (Cloudflare)")
    token.add_argument("--lifetime", type=float, default=3600.0, help="seconds it stays valid (negative: expired)")
    token.add_argument("--header", action="store_true", help="print the whole header line, for curl -H")
    token.add_argument("--url", help="the token endpoint `cfaccess-mw dev` printed (default: from CFACCESS_*)")
    token.set_defaults(func=cmd_dev_token)


async def _awaited(result: Awaitable[int]) -> int:
    return await result


def _fail(message: str) -> None:
    sys.stderr.write(f"{PROG}: {' '.join(message.split())}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``cfaccess-mw`` console script. Returns the exit status."""
    handler = _WarningPrinter()
    package_logger = logging.getLogger("cfaccess_mw")
    package_logger.addHandler(handler)
    try:
        args = build_parser().parse_args(argv)
        func: Callable[[argparse.Namespace], int | Awaitable[int]] = args.func
        result = func(args)
        # One event loop per command, and all of a command's work inside it.
        return asyncio.run(_awaited(result)) if inspect.isawaitable(result) else result
    except CliError as exc:
        _fail(exc.message)
        return exc.code
    except ConfigError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout closed early (piped into head)
        return EXIT_FAILED
    except Exception as exc:
        # Only the type: the message of an unexpected error could quote the token.
        _fail(f"unexpected {type(exc).__name__}; this is a bug in cfaccess_mw, please report it")
        return EXIT_BUG
    finally:
        package_logger.removeHandler(handler)
