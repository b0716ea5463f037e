"""The commands that run a stand-in for the proxy on this machine: ``demo`` (the middleware against a local
issuer, in-process, every kind of caller shown) and ``dev`` (an issuer on loopback for your own app, and its
tokens)."""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
from dataclasses import dataclass

from ..core.errors import ConfigError
from ..core.providers import Provider
from ..core.settings import ApiKey, Settings
from ..integrations.middleware import CloudflareAccessMiddleware
from .output import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    _out,
)


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
