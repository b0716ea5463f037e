"""``cfaccess-mw dev``: a stand-in issuer on loopback, for running and curling your own app.

One terminal runs ``cfaccess-mw dev`` (any preset: ``--provider google-iap``): it serves the
issuer's signing keys on 127.0.0.1, prints the ``CFACCESS_*`` lines to export and a first token,
and mints more at ``GET /cfaccess-dev/token`` on the same port. The other terminal exports those
lines, runs ``uvicorn myapp:app``, and gets tokens with ``cfaccess-mw dev token EMAIL`` (which
finds the endpoint from the exported variables) for curl.

The keys are made at start and exist only in this process, so its tokens are accepted only by
an app configured with its loopback certs URL: nothing it mints works against a real proxy.
"""

from __future__ import annotations

import ipaddress
import shlex
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from ..core.providers import PRESETS, Provider, token_header
from ..core.settings import Settings
from ..testing import LocalIssuer, Response
from .presets import ISSUERS, AnyIssuer

#: The minting endpoint's path on the issuer's own port.
TOKEN_PATH = "/cfaccess-dev/token"
#: A fixed audience for the Cloudflare stand-in, so a restarted ``dev --port N`` keeps the exports valid.
DEV_AUDIENCE = "de" * 32
DEV_TEAM_DOMAIN = "cfaccess-dev.cloudflareaccess.com"
DEFAULT_LIFETIME = 3600.0


class DevError(Exception):
    """A request the dev issuer cannot serve (a service token for a preset that has none, a bad number)."""


def start_issuer(provider: Provider, *, port: int = 0, max_seconds: float = 12 * 3600.0) -> AnyIssuer:
    """The stand-in for ``provider``, serving on ``127.0.0.1:port`` (0: a free one) with the token endpoint."""
    options: dict[str, Any] = {"max_requests": 10_000_000, "max_seconds": max_seconds, "port": port}
    if provider is Provider.CLOUDFLARE:
        options.update(team_domain=DEV_TEAM_DOMAIN, audience=DEV_AUDIENCE)
    issuer = ISSUERS[provider](**options)
    issuer.start()
    issuer.routes[TOKEN_PATH] = _token_route(issuer)
    return issuer


def mint(issuer: AnyIssuer, *, email: str | None, service: str | None, lifetime: float) -> str:
    """A token from ``issuer``: a user's for ``email``, or (Cloudflare only) a service token's for ``service``."""
    provider = issuer.settings().provider
    cap = PRESETS[provider].max_lifetime
    if cap is not None:
        lifetime = min(lifetime, cap)  # IAP refuses a longer one
    if service is not None:
        if not isinstance(issuer, LocalIssuer):
            raise DevError(f"{PRESETS[provider].label} has no service tokens; mint a user's token (email=...)")
        return issuer.service_token(service, lifetime=lifetime)
    if not email:
        raise DevError("say whose token: email=alice@example.com (or service=CLIENT_ID for a Cloudflare service)")
    return issuer.identity_token(email, lifetime=lifetime)


def _token_route(issuer: AnyIssuer) -> Callable[[str, str], Response]:
    port = urlsplit(issuer.base_url).port
    local_hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}

    def answer(query: str, host: str) -> Response:
        if host.lower() not in local_hosts:
            # A page in the browser that rebinds its own name to 127.0.0.1 sends that name here: no tokens for it.
            return 403, {"Content-Type": "text/plain; charset=utf-8"}, b"address this endpoint as 127.0.0.1\n"
        params = {name: values[-1] for name, values in parse_qs(query).items()}
        try:
            lifetime = float(params.get("lifetime", DEFAULT_LIFETIME))
            token = mint(issuer, email=params.get("email"), service=params.get("service"), lifetime=lifetime)
        except (DevError, ValueError) as exc:
            return 400, {"Content-Type": "text/plain; charset=utf-8"}, f"{exc}\n".encode()
        return 200, {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}, token.encode()

    return answer


def exports(issuer: AnyIssuer) -> dict[str, str]:
    """The ``CFACCESS_*`` variables an app needs to trust ``issuer``.

    With a loopback certs URL the refetch cooldown is 0, so the keys of a restarted ``dev`` are fetched by the
    next request (an OIDC issuer's keys come from discovery, where the deployment minimum of 1 s holds).
    """
    values = issuer.env()
    if "CFACCESS_CERTS_URL" in values:
        values["CFACCESS_JWKS_REFRESH_COOLDOWN_SECONDS"] = "0"
    return values


def token_url(settings: Settings) -> str:
    """The dev issuer's token endpoint, found from the exported variables (its certs URL or OIDC issuer)."""
    where = settings.certs_url or (settings.issuers[0] if settings.issuers else None)
    parts = urlsplit(where or "")
    try:
        loopback = parts.scheme == "http" and ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise DevError(
            "the CFACCESS_* variables here do not point at a cfaccess-mw dev issuer (its certs URL is "
            "http://127.0.0.1:PORT/...): export the lines `cfaccess-mw dev` printed, or pass --url"
        )
    return f"http://{parts.netloc}{TOKEN_PATH}"


def fetch_token(url: str, *, email: str | None, service: str | None, lifetime: float) -> str:
    """Ask a running ``cfaccess-mw dev`` for a token."""
    query = {k: v for k, v in {"email": email, "service": service, "lifetime": f"{lifetime:g}"}.items() if v}
    try:
        response = httpx.get(f"{url}?{urlencode(query)}", timeout=10, trust_env=False)
    except httpx.TransportError as exc:
        raise DevError(f"no cfaccess-mw dev answers at {url} ({type(exc).__name__}): is it running?") from None
    if response.status_code != 200:
        raise DevError(f"cfaccess-mw dev at {url} answered {response.status_code}: {response.text.strip()}")
    return response.text.strip()


def header_line(settings: Settings, token: str) -> str:
    """``Name: value`` as the preset's proxy forwards the token (``Authorization: Bearer ...`` for oidc)."""
    name = token_header(settings)
    if name == "authorization":
        return f"Authorization: Bearer {token}"
    return f"{settings.token_header or PRESETS[settings.provider].header}: {token}"


def banner(issuer: AnyIssuer, email: str, lifetime: float) -> Iterator[str]:
    """What ``cfaccess-mw dev`` prints: the exports, a first token as a curl line, how to get more."""
    settings: Settings = issuer.settings()
    label = PRESETS[settings.provider].label
    token = mint(issuer, email=email, service=None, lifetime=lifetime)
    url = issuer.base_url + TOKEN_PATH
    yield f"cfaccess-mw dev: a stand-in {label} issuer on 127.0.0.1 (its keys exist only in this process)."
    yield ""
    yield "In the terminal that runs your app, export these (add your own CFACCESS_PUBLIC_PATHS etc.):"
    yield ""
    for name, value in exports(issuer).items():
        yield f"export {name}={shlex.quote(value)}"
    yield ""
    yield "then run it, e.g.  uvicorn myapp:app"
    yield ""
    yield f"A token for {email} (valid {lifetime:g} s):"
    yield ""
    yield f"  curl -H {shlex.quote(header_line(settings, token))} http://127.0.0.1:8000/"
    yield ""
    yield "More tokens, from a shell with the exports above:"
    yield "  cfaccess-mw dev token bob@example.com                 # another user"
    yield "  cfaccess-mw dev token alice@example.com --lifetime 60 # expires in a minute"
    if isinstance(issuer, LocalIssuer):
        yield "  cfaccess-mw dev token --service ci.access            # a service token (list it in"
        yield "                                                        # CFACCESS_SERVICE_TOKENS=ci=ci.access)"
    yield "  cfaccess-mw dev token bob@example.com --header        # the whole header line, for curl -H"
    yield f"  curl '{url}?email=bob@example.com&lifetime=600'   # the same, over HTTP"
    yield ""
    yield "Ctrl-C stops it."


def serve_until_stopped(issuer: AnyIssuer, stop: threading.Event) -> None:
    """Block until ``stop`` is set or the issuer stops itself (its time limit)."""
    while not stop.wait(0.5):
        if not issuer.running:
            return
