"""One uvicorn server for the end-to-end section, run as a child process of ``benchmarks.run``.

    python -m benchmarks.server VARIANT FD TEAM_JSON MAX_SECONDS

It serves on a listening socket the parent made on 127.0.0.1 and passed as file descriptor
``FD`` (so the parent knows the port before the child starts), and stops by itself after
``MAX_SECONDS`` whatever happens to the parent.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from typing import Any

import uvicorn

from . import apps

VARIANTS = (
    "bare-starlette",
    "ours-starlette",
    "cc-auth",
    "bare-fastapi",
    "ours-fastapi-cookie",
    "fastapi-cloudflare-access-jwt",
)


def build(variant: str, team: apps.Team) -> Any:
    if variant == "bare-starlette":
        return apps.bare_starlette()
    if variant == "ours-starlette":
        return apps.ours(apps.bare_starlette(), team)
    if variant == "cc-auth":
        return apps.cc_auth(apps.bare_starlette(), team)
    if variant == "bare-fastapi":
        return apps.bare_fastapi()
    if variant == "ours-fastapi-cookie":
        return apps.ours(apps.bare_fastapi(), team, allow_cookie=True)
    if variant == "fastapi-cloudflare-access-jwt":
        return apps.fastapi_cloudflare_access_jwt(team)
    raise SystemExit(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")


def server_options() -> dict[str, str]:
    """The fastest event loop and HTTP parser installed, named so the README can say which ran."""
    loop = "uvloop" if apps.have("uvloop") else "asyncio"
    http = "httptools" if apps.have("httptools") else "h11"
    return {"loop": loop, "http": http}


def main(argv: list[str]) -> None:
    variant, fd, team_json, max_seconds = argv[0], int(argv[1]), argv[2], float(argv[3])
    logging.getLogger("cfaccess_mw.audit").setLevel(logging.CRITICAL)
    team = apps.Team(**json.loads(team_json))
    config = uvicorn.Config(
        build(variant, team),
        log_level="warning",
        access_log=False,
        lifespan="on",
        **server_options(),  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)

    def stop() -> None:
        server.should_exit = True

    timer = threading.Timer(max_seconds, stop)
    timer.daemon = True
    timer.start()
    # socket(fileno=...) reads the real family (AF_INET); uvicorn's own fd= option assumes AF_UNIX, and
    # asyncio then leaves Nagle's algorithm on, which adds ~40 ms to every keep-alive response.
    server.run(sockets=[socket.socket(fileno=fd)])


if __name__ == "__main__":
    main(sys.argv[1:])
