"""Section 3: uvicorn on 127.0.0.1, one worker per app, driven over loopback by wrk (or the Python client).

Every server starts first; then each round drives each server in turn for the same time, and a
case's figure is its best round. Same-token requests only: a load generator replaying one
request is what a browser session looks like; the fresh-token cost is measured in-process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import apps, loadgen, server

ROOT = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """This worktree's package and ``benchmarks`` first on the path, whatever the venv has installed."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass(frozen=True)
class E2ECase:
    name: str
    variant: str
    header: tuple[str, str]
    base: str  # the name of the bare case it is compared with


@dataclass
class E2EResult:
    case: E2ECase
    loads: list[loadgen.Load]

    @property
    def best(self) -> loadgen.Load:
        """The round with the most requests/s (noise only ever takes throughput away), with its latencies."""
        return max(self.loads, key=lambda load: load.requests_per_second)

    @property
    def rps(self) -> float:
        return self.best.requests_per_second

    @property
    def p50(self) -> float:
        return self.best.p50_ms

    @property
    def p99(self) -> float:
        return self.best.p99_ms


def cases(token: str, peers: dict[str, bool]) -> list[E2ECase]:
    jwt_header = ("Cf-Access-Jwt-Assertion", token)
    cookie = ("Cookie", f"CF_Authorization={token}")
    found = [
        E2ECase("bare Starlette", "bare-starlette", jwt_header, "bare Starlette"),
        E2ECase("ours (a) same token", "ours-starlette", jwt_header, "bare Starlette"),
    ]
    if peers.get("cc-auth"):
        found.append(E2ECase("cc-auth (a) same token", "cc-auth", jwt_header, "bare Starlette"))
    if peers.get("fastapi-cloudflare-access-jwt"):
        found += [
            E2ECase("bare FastAPI", "bare-fastapi", cookie, "bare FastAPI"),
            E2ECase("ours (a) same token, cookie, FastAPI", "ours-fastapi-cookie", cookie, "bare FastAPI"),
            E2ECase(
                "fastapi-cloudflare-access-jwt (a) same token", "fastapi-cloudflare-access-jwt", cookie, "bare FastAPI"
            ),
        ]
    return found


def _wait_ready(port: int, header: tuple[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={header[0]: header[1]})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server on port {port} did not answer 200 within {timeout:g}s")
        time.sleep(0.05)


def run(
    team: apps.Team, token: str, peers: dict[str, bool], rounds: int, seconds: float, connections: int
) -> list[E2EResult]:
    chosen = cases(token, peers)
    lifetime = 60 + rounds * len(chosen) * (seconds + 3)
    team_json = json.dumps(dataclasses.asdict(team))
    children: list[tuple[E2ECase, int, subprocess.Popen[bytes]]] = []
    try:
        for case in chosen:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(1024)
            sock.set_inheritable(True)
            port = sock.getsockname()[1]
            command = [sys.executable, "-m", "benchmarks.server", case.variant, str(sock.fileno())]
            child = subprocess.Popen(
                [*command, team_json, str(lifetime)], pass_fds=[sock.fileno()], env=child_env(), cwd=ROOT
            )
            sock.close()
            children.append((case, port, child))
        for case, port, _ in children:
            _wait_ready(port, case.header, 30)
        results = {case.name: E2EResult(case, []) for case in chosen}
        for _ in range(rounds):
            for case, port, _ in children:
                results[case.name].loads.append(loadgen.run_load(port, case.header, seconds, connections))
        return list(results.values())
    finally:
        for _, _, child in children:
            child.terminate()
        for _, _, child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def describe() -> str:
    options = server.server_options()
    generator = "wrk (1 thread)" if loadgen.wrk_path() else "the built-in asyncio client (wrk not installed)"
    return f"uvicorn, 1 worker, loop={options['loop']}, http={options['http']}; load: {generator}"
