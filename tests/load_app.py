"""The app the load test serves with ``uvicorn --workers 2 --factory tests.load_app:create_app``.

Each worker builds it from the ``CFACCESS_*`` variables the test sets, exactly as a
deployment would, and fetches the certs from the test's LocalIssuer on loopback.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from cfaccess_mw import CloudflareAccessMiddleware

USERS = {"alice@example.com": "Alice", "bob@example.com": "Bob"}


def find_user(email: str) -> str | None:
    return USERS.get(email)


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"kind": request.user.kind, "who": request.user.display_name})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def create_app() -> Starlette:
    app = Starlette(routes=[Route("/", whoami), Route("/healthz", health)])
    app.add_middleware(CloudflareAccessMiddleware, user_lookup=find_user)
    return app
