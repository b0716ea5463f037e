"""Real loopback servers for the client tests: a stand-in Cloudflare edge in front of the example app, a header
recorder, and a stand-in ``cloudflared`` executable.

The edge behaves like Access in front of an origin: without a valid service token
(``CF-Access-Client-Id`` + ``CF-Access-Client-Secret``) or a user token
(``cf-access-token``) it answers with a redirect to the team's login page or a
``Cloudflare-Access`` challenge; with one, it strips the ``CF-Access-*`` headers,
adds a ``Cf-Access-Jwt-Assertion`` (unless told not to) and calls the app. Every
server binds 127.0.0.1, counts requests against a budget and stops on a timer.
"""

from __future__ import annotations

import hmac
import json
import stat
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from cfaccess_mw.testing import LocalIssuer

MAX_REQUESTS = 300
MAX_SECONDS = 120.0
LOGIN_PATH = "/cdn-cgi/access/login/"
EDGE_HEADERS = (b"cf-access-client-id", b"cf-access-client-secret", b"cf-access-token", b"cf-access-jwt-assertion")


@dataclass
class Edge:
    """An ASGI stand-in for the Cloudflare edge in front of ``origin``."""

    origin: ASGIApp
    issuer: LocalIssuer
    client_id: str
    client_secret: str
    #: How to refuse: "redirect" (302 to *.cloudflareaccess.com), "challenge" (401 + WWW-Authenticate),
    #: "local-redirect" (302 to this server's own /cdn-cgi/access/login/, as on a custom team domain).
    refusal: str = "redirect"
    inject_jwt: bool = True
    user_tokens: set[str] = field(default_factory=set)
    redirect_to: str | None = None
    seen: list[dict[str, str]] = field(default_factory=list)
    forwarded: list[dict[str, str]] = field(default_factory=list)
    login_page_hits: int = 0
    requests: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: the app fetches its keys at startup
            await self.origin(scope, receive, send)
            return
        self.requests += 1
        if self.requests > MAX_REQUESTS:
            await _respond(send, 503, [], b"edge request budget exhausted")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.seen.append(headers)
        if scope["path"].startswith(LOGIN_PATH):
            self.login_page_hits += 1
            await _respond(send, 200, [(b"content-type", b"text/html")], b"<html>Sign in</html>")
            return
        if scope["path"] == "/bounce" and self.redirect_to:
            await _respond(send, 302, [(b"location", self.redirect_to.encode())], b"")
            return
        service = _same(headers.get("cf-access-client-id"), self.client_id) and _same(
            headers.get("cf-access-client-secret"), self.client_secret
        )
        user_token = headers.get("cf-access-token")
        user = user_token is not None and user_token in self.user_tokens
        if not (service or user):
            await self._refuse(scope, send)
            return
        passed = [(k, v) for k, v in scope["headers"] if k.lower() not in EDGE_HEADERS]
        if self.inject_jwt:
            jwt = self.issuer.service_token(self.client_id) if service else user_token
            assert jwt is not None
            passed.append((b"cf-access-jwt-assertion", jwt.encode()))
        self.forwarded.append({k.decode("latin-1").lower(): v.decode("latin-1") for k, v in passed})
        await self.origin({**scope, "headers": passed}, receive, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        host = next((v.decode() for k, v in scope["headers"] if k == b"host"), "127.0.0.1")
        if self.refusal == "challenge":
            meta = f"http://{host}/.well-known/cloudflare-access-protected-resource{scope['path']}"
            challenge = f'Cloudflare-Access resource_metadata="{meta}"'
            await _respond(send, 401, [(b"www-authenticate", challenge.encode())], b"")
            return
        if self.refusal == "local-redirect":
            location = f"{LOGIN_PATH}{host}?redirect_url={scope['path']}"
        else:
            location = f"https://{self.issuer.team_domain}{LOGIN_PATH}{host}?kid=0123&redirect_url={scope['path']}"
        await _respond(send, 302, [(b"location", location.encode())], b"")


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (free port) in a thread; yield its base URL; stop on exit or timer."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    timer = threading.Timer(MAX_SECONDS, lambda: setattr(server, "should_exit", True))
    timer.daemon = True
    timer.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        timer.cancel()
        server.should_exit = True
        thread.join(timeout=10)


class Recorder:
    """A plain HTTP server on 127.0.0.1 that records the headers of each request and answers 200 ``{}``."""

    def __init__(self, max_requests: int = 50) -> None:
        self.seen: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                recorder.seen.append({k.lower(): v for k, v in self.headers.items()})
                body = json.dumps({"ok": len(recorder.seen) <= max_requests}).encode()
                self.send_response(200 if len(recorder.seen) <= max_requests else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._timer = threading.Timer(MAX_SECONDS, self.stop)
        self._timer.daemon = True

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Recorder:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class FakeCloudflared:
    """A stand-in ``cloudflared`` in ``folder``: prints ``token``, or fails with ``stderr`` and ``exit_code``.

    Each run appends its arguments to ``runs.log``, so tests can count and inspect calls.
    """

    def __init__(self, folder: Path, name: str = "cloudflared") -> None:
        self.folder = folder
        self.path = folder / name
        self.path.write_text(
            f"#!{sys.executable}\n"
            "import json, pathlib, sys\n"
            "here = pathlib.Path(__file__).parent\n"
            "with (here / 'runs.log').open('a') as f:\n"
            "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
            "plan = json.loads((here / 'plan.json').read_text())\n"
            "if plan['hang']:\n"
            "    import time; time.sleep(60)  # until the caller's timeout kills it\n"
            "sys.stdout.write(plan['stdout'])\n"
            "sys.stderr.write(plan['stderr'])\n"
            "sys.exit(plan['exit_code'])\n"
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)
        self.plan(stdout="")

    def plan(self, *, stdout: str = "", stderr: str = "", exit_code: int = 0, hang: bool = False) -> None:
        plan = {"stdout": stdout, "stderr": stderr, "exit_code": exit_code, "hang": hang}
        (self.folder / "plan.json").write_text(json.dumps(plan))

    @property
    def runs(self) -> list[list[str]]:
        log = self.folder / "runs.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
