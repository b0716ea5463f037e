"""The applications under test: bare apps, ours around them, and the peers around the same apps.

Every protected app wraps the same bare app object directly (outermost ASGI
layer), so the only difference between rows is the authentication layer.
The peers are imported lazily: they live only in the benchmark's own venv.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from cfaccess_mw import ApiKey, CloudflareAccessMiddleware, ExposureMode, Settings

from .common import USERS

API_KEY_SECRET = "bench-" + "k" * 40
_USERS = {email: {"email": email} for email in USERS}


async def find_user(email: str) -> Any:
    """An async directory lookup (a dict): the cheapest ``user_lookup`` a real app could have."""
    return _USERS.get(email)


def find_user_sync(email: str) -> Any:
    """The same lookup as a plain function: the middleware runs it in Starlette's thread pool."""
    return _USERS.get(email)


@dataclass(frozen=True)
class Team:
    """What an app needs to trust the loopback issuer."""

    team_domain: str
    audience: str
    certs_url: str

    @property
    def issuer(self) -> str:
        return f"https://{self.team_domain}"

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "exposure_mode": ExposureMode.REVERSE_PROXY,
            "team_domain": self.team_domain,
            "audiences": (self.audience,),
            "certs_url": self.certs_url,
            "api_keys": (ApiKey.from_secret("bench", API_KEY_SECRET),),
        }
        values.update(overrides)
        return Settings(**values)


def bare_starlette() -> Starlette:
    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", home)])


def bare_fastapi(dependencies: list[Any] | None = None) -> Any:
    from fastapi import FastAPI

    app = FastAPI(dependencies=dependencies or [], openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/")
    async def home() -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


def ours(app: Any, team: Team, *, sync_lookup: bool = False, **overrides: Any) -> CloudflareAccessMiddleware:
    return CloudflareAccessMiddleware(
        app, settings=team.settings(**overrides), user_lookup=find_user_sync if sync_lookup else find_user
    )


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def cc_auth(app: Any, team: Team) -> Any:
    """cc-auth 0.1.1: a ``BaseHTTPMiddleware``; its certs URL comes from ``team_domain`` unless a
    ``PyJWKClient`` is injected through ``_jwks_client`` (documented "for testing"), which is how it
    is pointed at the loopback endpoint. It checks issuer and expiry, not the audience."""
    from cc_auth import CloudflareAuth
    from jwt import PyJWKClient

    auth = CloudflareAuth(team.team_domain, _jwks_client=PyJWKClient(team.certs_url, cache_keys=True))
    return auth.middleware()(app)


def silent_loguru() -> Any:
    """loguru's global logger with its handlers removed: the peer's debug/error lines cost their
    formatting (an f-string, evaluated by the peer before the call) but are written nowhere."""
    from loguru import logger

    logger.remove()
    return logger


def fastapi_cloudflare_access_jwt(team: Team) -> Any:
    """fastapi-cloudflare-access-jwt 0.1.1: a FastAPI dependency (``HTTPBearer`` subclass with a sync
    ``__call__``, so FastAPI runs it in the thread pool) reading only the ``CF_Authorization`` cookie;
    ``certs_url=`` and ``policy_aud=`` point it at the loopback endpoint."""
    from cloudflare_access_jwt import CloudflareAccessJWT
    from fastapi import Depends

    enforcer = CloudflareAccessJWT(certs_url=team.certs_url, policy_aud=team.audience, logger=silent_loguru())
    return bare_fastapi(dependencies=[Depends(enforcer)])


PEERS = {
    "cc-auth": "cc_auth",
    "fastapi-cloudflare-access-jwt": "cloudflare_access_jwt",
}


def available_peers() -> dict[str, bool]:
    return {name: have(module) for name, module in PEERS.items()}
