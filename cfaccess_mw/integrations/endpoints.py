"""A public endpoint that tells a web UI how this app authenticates.

A single-page app behind Cloudflare Access cannot show a login form of its own
(the edge already did the login); it needs to know the mode, and where "Sign
out" goes: Cloudflare's ``https://<team>/cdn-cgi/access/logout``. Nothing here
is secret: no key names, no AUD tags, no client IDs.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from ..core.settings import ExposureMode, Settings


class AuthConfigEndpoint:
    """ASGI endpoint answering ``GET`` with the auth configuration a UI needs.

    Mount it on a path listed in ``CFACCESS_PUBLIC_PATHS``, e.g.
    ``Route("/auth/config", AuthConfigEndpoint(settings))``.
    """

    def __init__(self, settings: Settings) -> None:
        methods = []
        if settings.jwt_enabled:
            methods.append("cloudflare_access")
        if settings.api_keys:
            methods.append("api_key")
        if settings.exposure_mode is ExposureMode.LOCAL:
            methods.append("loopback")
        self.document = {
            "mode": settings.exposure_mode.value,
            "methods": methods,
            "cloudflare_access": settings.jwt_enabled,
            "team_domain": settings.team_domain,
            "logout_url": settings.logout_url,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(self.document, headers={"cache-control": "no-store"})
        await response(scope, receive, send)
