"""Shared pieces: token minting, ASGI scopes, and the interleaved timing loop.

Timing method: every case in a group runs one batch per round, round after
round, in the same process and event loop, so a noisy neighbour slows all of
them alike. A case's figure is its best round (noise on a shared machine only
ever adds time); "added" is the difference of two cases' best rounds.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.hashes import SHA256

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
REMOTE_PEER = ("203.0.113.7", 50123)  # TEST-NET-3: never contacted, only written into scope["client"]
LOOPBACK_PEER = ("127.0.0.1", 50123)
USERS = [f"user{i}@example.com" for i in range(100)]

#: The clock for in-process timings. ``BENCH_CLOCK=thread`` times this thread's CPU time instead of the wall
#: clock: a busy neighbour that preempts the run then adds nothing (cache misses it causes still count), so
#: before/after ratios stay readable on a loaded machine. The published tables use the wall clock.
now_ns = time.thread_time_ns if os.environ.get("BENCH_CLOCK") == "thread" else time.perf_counter_ns


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class Minter:
    """Signs RS256 tokens with ``cryptography`` directly (about 1 ms each: the RSA private-key operation)."""

    def __init__(self, key: rsa.RSAPrivateKey, kid: str, issuer: str, audience: str) -> None:
        self.key = key
        self.kid = kid
        self.issuer = issuer
        self.audience = audience

    def claims(self, email: str, lifetime: int = 3600, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "aud": [self.audience],
            "email": email,
            "exp": now + lifetime,
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "type": "app",
            "identity_nonce": secrets.token_urlsafe(12),
            "sub": secrets.token_hex(16),
            "country": "US",
        }
        claims.update(extra)
        return claims

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        header = b64url(json.dumps({"alg": "RS256", "kid": kid or self.kid, "typ": "JWT"}).encode())
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode("ascii")
        signature = self.key.sign(signing_input, padding.PKCS1v15(), SHA256())
        return f"{header}.{payload}.{b64url(signature)}"

    def identity_token(self, email: str | None = None, **extra: Any) -> str:
        return self.sign(self.claims(email or secrets.choice(USERS), **extra))

    def many(self, count: int) -> list[str]:
        return [self.identity_token(USERS[i % len(USERS)]) for i in range(count)]


def tampered(token: str) -> str:
    """The same token with one bit of the payload changed: well formed, signature does not verify."""
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw[-2] ^= 0x01  # inside the JSON, keeps it valid text most of the time; the signature fails either way
    return f"{header}.{b64url(bytes(raw))}.{signature}"


def scope(headers: Sequence[tuple[bytes, bytes]] = (), client: tuple[str, int] = REMOTE_PEER) -> dict[str, Any]:
    """An HTTP scope as uvicorn builds it for ``GET /``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), *headers],
        "client": client,
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def jwt_scope(token: str, client: tuple[str, int] = REMOTE_PEER) -> dict[str, Any]:
    return scope([(b"cf-access-jwt-assertion", token.encode("ascii"))], client)


def cookie_scope(token: str, client: tuple[str, int] = REMOTE_PEER) -> dict[str, Any]:
    return scope([(b"cookie", b"CF_Authorization=" + token.encode("ascii"))], client)


def received_headers(scope_: dict[str, Any]) -> tuple[tuple[bytes, bytes], ...]:
    """``scope_``'s headers as new bytes objects, as a server parses each request.

    CPython keeps a bytes object's hash in it, and compares an object with itself without reading it:
    reusing the same header bytes across requests would flatter any cache keyed by them (about 0.2 µs on a
    900-byte token) and every name comparison. Made before the clock starts, as tuples of bytes: the
    collector stops tracking those at its first pass, so a batch of them does not make every collection
    during the timed loop longer (a list of ready-made scopes did, by 0.5-1 µs per request).
    """
    return tuple((bytes(bytearray(name)), bytes(bytearray(value))) for name, value in scope_["headers"])


def as_received(scope_: dict[str, Any], headers: tuple[tuple[bytes, bytes], ...] | None = None) -> dict[str, Any]:
    """A copy of ``scope_`` carrying new header bytes (:func:`received_headers`, or ``headers`` made earlier)."""
    copy = dict(scope_)
    copy["headers"] = list(headers if headers is not None else received_headers(scope_))
    return copy


_REQUEST = {"type": "http.request", "body": b"", "more_body": False}
_DISCONNECT = {"type": "http.disconnect"}


def make_receive() -> Callable[[], Awaitable[dict[str, Any]]]:
    """Body once, then disconnect (what BaseHTTPMiddleware expects after the response)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return _DISCONNECT
        sent = True
        return _REQUEST

    return receive


async def call_once(app: ASGIApp, scope_: dict[str, Any]) -> tuple[int, bytes]:
    """One request; returns (status, body) for checks outside the timed loops."""
    status = 0
    body = b""

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    await app(dict(scope_), make_receive(), send)
    return status, body


@dataclass
class Case:
    """One row of a timing group: an app and the scopes it is called with, round-robin."""

    name: str
    app: ASGIApp
    scopes: Sequence[dict[str, Any]]
    expect: int
    before_batch: Callable[[], None] | None = None
    max_batch: int | None = None  # fresh-token cases: never reuse a token within a batch
    samples: list[float] = field(default_factory=list)  # ns per request, one per round
    batch: int = 0


async def _batch(case: Case, n: int) -> float:
    statuses: Counter[int] = Counter()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] += 1

    app = case.app
    scopes = case.scopes
    count = len(scopes)
    if case.before_batch is not None:
        case.before_batch()
    headers = [received_headers(scopes[i % count]) for i in range(n)]
    gc.collect()
    started = now_ns()
    for i in range(n):
        await app(as_received(scopes[i % count], headers[i]), make_receive(), send)
    elapsed = now_ns() - started
    if statuses != Counter({case.expect: n}):
        raise RuntimeError(f"{case.name}: expected {n} x {case.expect}, got {dict(statuses)}")
    return elapsed / n


async def run_group(cases: Sequence[Case], rounds: int, batch_seconds: float) -> None:
    """Calibrate each case's batch size to about ``batch_seconds``, then run ``rounds`` interleaved rounds."""
    for case in cases:
        await _batch(case, min(50, case.max_batch or 50))  # warm-up: imports, caches, first fetches
        per_request = await _batch(case, min(200, case.max_batch or 200))
        n = max(20, int(batch_seconds * 1e9 / per_request))
        case.batch = min(n, case.max_batch) if case.max_batch else n
    for _ in range(rounds):
        for case in cases:
            case.samples.append(await _batch(case, case.batch))


def best_us(case: Case) -> float:
    """The case's best round, in µs per request. On a shared machine, noise only ever adds time, so the
    least-disturbed round is the best estimate; every case gets the same number of rounds."""
    return min(case.samples) / 1000


def added_us(case: Case, base: Case) -> float:
    """What ``case`` adds to ``base``, best round against best round, in µs."""
    return best_us(case) - best_us(base)


def ratio(case: Case, base: Case) -> float:
    return best_us(case) / best_us(base)


def run_sync(coro: Any) -> Any:
    """Run a coroutine that never suspends (e.g. a verify whose key is cached) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the coroutine suspended; it needs an event loop")


def time_sync_group(fns: dict[str, Callable[[], object]], rounds: int, batch_seconds: float) -> dict[str, list[float]]:
    """ns per call of each synchronous function, interleaved round by round like :func:`run_group`."""
    sizes = {}
    for name, fn in fns.items():
        fn()
        started = now_ns()
        for _ in range(20):
            fn()
        sizes[name] = max(20, int(batch_seconds * 1e9 / ((now_ns() - started) / 20)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            n = sizes[name]
            gc.collect()
            started = now_ns()
            for _ in range(n):
                fn()
            samples[name].append((now_ns() - started) / n)
    return samples
