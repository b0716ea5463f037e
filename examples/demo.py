"""The demo: the FastAPI example behind the middleware, with a local stand-in for Cloudflare Access.

    python3 dev.py demo                 # serve on http://127.0.0.1:8000 and print curl lines
    python3 dev.py demo --self-check    # make each call itself, check every answer, exit

Everything stays on this machine: the "Cloudflare" certs endpoint is a
:class:`cfaccess_mw.testing.LocalIssuer` on 127.0.0.1, the users live in a
SQLite file in a temporary folder, and the server binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from cfaccess_mw import ApiKey, ServiceToken
from cfaccess_mw.testing import LocalIssuer
from examples.fastapi_app import create_app
from examples.userdb import UserDB


@dataclass
class Call:
    what: str
    path: str
    headers: dict[str, str]
    expect: int

    def curl(self, base: str) -> str:
        parts = ["curl", "-i"]
        for name, value in self.headers.items():
            parts += ["-H", f"{name}: {value}"]
        return " ".join(shlex.quote(p) for p in [*parts, base + self.path])


def build_calls(issuer: LocalIssuer, api_key: str, client_id: str) -> list[Call]:
    alice = issuer.identity_token("alice@example.com", lifetime=3600)
    bob = issuer.identity_token("Bob@Example.com", lifetime=3600)
    mallory = issuer.identity_token("mallory@example.com", lifetime=3600)
    robot = issuer.service_token(client_id, lifetime=3600)
    stranger = issuer.service_token("unknown-client.access", lifetime=3600)
    expired = issuer.identity_token("alice@example.com", lifetime=-120)
    jwt = "Cf-Access-Jwt-Assertion"
    return [
        Call("public health check, no credentials", "/healthz", {}, 200),
        Call("auth config for a web UI (public)", "/auth/config", {}, 200),
        Call("alice (admin) through Cloudflare Access", "/api/me", {jwt: alice}, 200),
        Call("alice may see the admin page", "/api/admin", {jwt: alice}, 200),
        Call("bob (member; email normalised) through Access", "/api/me", {jwt: bob}, 200),
        Call("bob may not see the admin page", "/api/admin", {jwt: bob}, 403),
        Call("mallory passed Access but is not a user here", "/api/me", {jwt: mallory}, 403),
        Call("an allowed service token (the CI robot)", "/api/machines", {jwt: robot}, 200),
        Call("a service token not on the allow-list", "/api/me", {jwt: stranger}, 403),
        Call("an expired token", "/api/me", {jwt: expired}, 401),
        Call("the local operator's API key", "/api/me", {"Authorization": f"Bearer {api_key}"}, 200),
        Call("a wrong API key", "/api/me", {"Authorization": "Bearer not-the-key"}, 401),
        Call("no credentials from loopback (reverse-proxy mode trusts no one)", "/api/me", {}, 401),
    ]


def make_server(issuer: LocalIssuer, db_path: Path, port: int, api_key: str, client_id: str) -> uvicorn.Server:
    users = UserDB(db_path)
    users.add("alice@example.com", "Alice", role="admin")
    users.add("bob@example.com", "Bob")
    settings = issuer.settings(
        api_keys=(ApiKey.from_secret("operator", api_key),),
        service_tokens=(ServiceToken("ci-robot", client_id),),
        public_paths=("/healthz", "/auth/config"),
        # UserDB.find is a plain def (sqlite3): without the cache every request would hop to a worker thread.
        # A user deleted from the database stays admitted for at most these 30 seconds.
        user_cache_seconds=30,
    )
    app = create_app(settings, str(db_path))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    return uvicorn.Server(config)


def self_check(server: uvicorn.Server, calls: list[Call]) -> int:
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            print("demo: the server did not start", file=sys.stderr)
            return 1
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    failures = 0
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for call in calls:
                status = client.get(call.path, headers=call.headers).status_code
                ok = status == call.expect
                failures += not ok
                print(f"{'ok  ' if ok else 'FAIL'} {status} (expected {call.expect})  {call.what}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    print(f"{len(calls) - failures} passed, {failures} failed")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--self-check", action="store_true", help="make the calls, check the answers, exit")
    args = parser.parse_args(argv)

    api_key = secrets.token_urlsafe(32)
    client_id = f"{secrets.token_hex(16)}.access"
    with tempfile.TemporaryDirectory(prefix="cfaccess-demo-") as tmp, LocalIssuer(max_seconds=86400) as issuer:
        port = 0 if args.self_check else args.port
        server = make_server(issuer, Path(tmp) / "users.sqlite3", port, api_key, client_id)
        calls = build_calls(issuer, api_key, client_id)
        if args.self_check:
            return self_check(server, calls)
        base = f"http://127.0.0.1:{args.port}"
        print("cfaccess_mw demo: the FastAPI example, guarded in reverse-proxy mode.")
        print(f"Stand-in Cloudflare Access team: {issuer.team_domain} (certs at {issuer.certs_url})")
        print("Users in SQLite: alice@example.com (admin), bob@example.com (member).\n")
        print("Paste these into another terminal (tokens are valid for an hour):\n")
        for call in calls:
            print(f"# {call.what}: expect {call.expect}\n{call.curl(base)}\n")
        print(f"Serving on {base} (Ctrl-C to stop)", flush=True)
        try:
            server.run()
        except KeyboardInterrupt:  # uvicorn stops gracefully on Ctrl-C, then raises it again: not a crash
            print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
