"""Section 5: the JWKS path. Fetches are counted by the certs server itself (``LocalIssuer.fetch_count``).

* 500 concurrent first requests (keys not fetched yet), distinct fresh tokens.
* A flood of tokens naming random unknown ``kid`` values, 100 at a time, paced over a few
  seconds (so it spans several refetch-cooldown windows).
* Time from a key rotation to the first accepted token signed with the new key, once in the
  steady state (the last fetch is older than the cooldown) and once right after a fetch.
* The same during a flood of made-up kids (issue 10): the flood runs throughout, Cloudflare
  rotates a third of the way in, and a genuine client retries its new-kid token every 20 ms. What
  counts: how long until it is accepted, what it was told meanwhile (401 "invalid" or 503 "try
  again"), and how many fetches the whole flood caused per cooldown window.

Ours and cc-auth are run with a 1 s refetch cooldown (the smallest our settings allow; cc-auth's
PyJWKClient is built by us with ``cooldown_duration=1``) so that the rotation numbers are not
dominated by waiting; fastapi-cloudflare-access-jwt has no such setting (it refetches every 7 days).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cfaccess_mw.testing import LocalIssuer

from . import apps
from .common import USERS, Minter, b64url, call_once, cookie_scope, jwt_scope

COOLDOWN = 1.0


@dataclass
class JWKSResult:
    name: str
    concurrent_fetches: int | None = None
    concurrent_statuses: dict[int, int] = field(default_factory=dict)
    flood_fetches: int | None = None
    flood_seconds: float = 0.0
    flood_statuses: dict[int, int] = field(default_factory=dict)
    rotation_steady_ms: float | None = None  # None: not accepted within the wait
    rotation_steady_refusals: int = 0
    rotation_recent_ms: float | None = None
    rotation_recent_refusals: int = 0
    rotation_wait: float = 0.0
    flood_rotation_ms: float | None = None  # None: not accepted within the flood
    flood_rotation_refusals: dict[int, int] = field(default_factory=dict)
    flood_rotation_fetches: int | None = None
    flood_rotation_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def flood_rotation_windows(self) -> int:
        return int(self.flood_rotation_seconds // COOLDOWN) + 1

    @property
    def flood_windows(self) -> int:
        return int(self.flood_seconds // COOLDOWN) + 1


def _team(issuer: LocalIssuer) -> apps.Team:
    return apps.Team(issuer.team_domain, issuer.audience, issuer.certs_url)


def _minter(issuer: LocalIssuer) -> Minter:
    return Minter(issuer.private_key(), issuer.signing_kid, issuer.issuer, issuer.audience)


Builder = Callable[[apps.Team], Any]  # team -> ASGI app
ScopeFor = Callable[[str], dict[str, Any]]


def builders(peers: dict[str, bool]) -> list[tuple[str, Builder, ScopeFor]]:
    found: list[tuple[str, Builder, ScopeFor]] = [
        (
            "ours",
            lambda team: apps.ours(apps.bare_starlette(), team, jwks_refresh_cooldown_seconds=COOLDOWN),
            jwt_scope,
        )
    ]
    if peers.get("cc-auth"):

        def cc(team: apps.Team) -> Any:
            from cc_auth import CloudflareAuth
            from jwt import PyJWKClient

            client = PyJWKClient(team.certs_url, cache_keys=True, cooldown_duration=COOLDOWN)
            return CloudflareAuth(team.team_domain, _jwks_client=client).middleware()(apps.bare_starlette())

        found.append(("cc-auth", cc, jwt_scope))
    if peers.get("fastapi-cloudflare-access-jwt"):
        found.append(("fastapi-cloudflare-access-jwt", apps.fastapi_cloudflare_access_jwt, cookie_scope))
    return found


async def _gather_statuses(app: Any, scopes: list[dict[str, Any]]) -> dict[int, int]:
    responses = await asyncio.gather(*(call_once(app, s) for s in scopes))
    return dict(Counter(status for status, _ in responses))


async def _warm(app: Any, scope_: dict[str, Any]) -> None:
    status, _ = await call_once(app, scope_)
    if status != 200:
        raise RuntimeError(f"warm-up request got {status}")


def _unknown_kid_tokens(valid: str, count: int) -> list[str]:
    _, payload, signature = valid.split(".")
    headers = (json.dumps({"alg": "RS256", "kid": secrets.token_hex(16), "typ": "JWT"}) for _ in range(count))
    return [f"{b64url(header.encode())}.{payload}.{signature}" for header in headers]


async def _time_to_accept(app: Any, scope_: dict[str, Any], wait: float) -> tuple[float | None, int]:
    started = time.perf_counter()
    refusals = 0
    while True:
        status, _ = await call_once(app, scope_)
        elapsed = time.perf_counter() - started
        if status == 200:
            return elapsed * 1000, refusals
        refusals += 1
        if elapsed > wait:
            return None, refusals
        await asyncio.sleep(0.02)


async def flood_during_rotation(
    app: Any, scope_for: ScopeFor, issuer: LocalIssuer, flood_tokens: list[str], seconds: float, result: JWKSResult
) -> None:
    """A paced flood of made-up kids for ``seconds``; a third of the way in, Cloudflare rotates and a genuine
    client starts retrying its new-kid token every 20 ms. Fills the ``flood_rotation_*`` fields of ``result``."""
    before = issuer.fetch_count
    started = time.perf_counter()
    chunk = 50
    chunks = max(1, len(flood_tokens) // chunk)
    done = asyncio.Event()

    async def flood() -> None:
        for n in range(chunks):
            await asyncio.sleep(max(0.0, started + n * seconds / chunks - time.perf_counter()))
            await _gather_statuses(app, [scope_for(t) for t in flood_tokens[n * chunk : (n + 1) * chunk]])
        done.set()

    flooding = asyncio.create_task(flood())
    await asyncio.sleep(seconds / 3)
    issuer.rotate(keep_old=True)
    genuine = scope_for(_minter(issuer).identity_token(USERS[0]))
    rotated = time.perf_counter()
    refusals: Counter[int] = Counter()
    while not done.is_set():
        status, _ = await call_once(app, genuine)
        if status == 200:
            result.flood_rotation_ms = (time.perf_counter() - rotated) * 1000
            break
        refusals[status] += 1
        await asyncio.sleep(0.02)
    await flooding
    result.flood_rotation_seconds = time.perf_counter() - started
    result.flood_rotation_fetches = issuer.fetch_count - before
    result.flood_rotation_refusals = dict(refusals)


async def run(
    peers: dict[str, bool], concurrent: int, flood: int, flood_seconds: float, rotation_wait: float
) -> list[JWKSResult]:
    chosen = builders(peers)
    results = [JWKSResult(name) for name, _, _ in chosen]
    with LocalIssuer(max_requests=50_000, max_seconds=600) as issuer:
        tokens = _minter(issuer).many(concurrent)
        team = _team(issuer)
        for result, (_, build, scope_for) in zip(results, chosen, strict=True):
            app = build(team)
            before = issuer.fetch_count
            result.concurrent_statuses = await _gather_statuses(app, [scope_for(t) for t in tokens])
            result.concurrent_fetches = issuer.fetch_count - before

    with LocalIssuer(max_requests=50_000, max_seconds=600) as issuer:
        team = _team(issuer)
        valid = _minter(issuer).identity_token(USERS[0])
        flood_tokens = _unknown_kid_tokens(valid, flood)
        for result, (_, build, scope_for) in zip(results, chosen, strict=True):
            app = build(team)
            await _warm(app, scope_for(valid))  # keys fetched, as after start-up
            before = issuer.fetch_count
            started = time.perf_counter()
            statuses: Counter[int] = Counter()
            chunks = range(0, flood, 100)
            for n, i in enumerate(chunks):
                # Paced over flood_seconds so it spans several cooldown windows (a burst inside one window
                # would show nothing); a slower implementation simply takes longer.
                await asyncio.sleep(max(0.0, started + n * flood_seconds / len(chunks) - time.perf_counter()))
                statuses.update(await _gather_statuses(app, [scope_for(t) for t in flood_tokens[i : i + 100]]))
            result.flood_seconds = time.perf_counter() - started
            result.flood_fetches = issuer.fetch_count - before
            result.flood_statuses = dict(statuses)

    for result, (_, build, scope_for) in zip(results, chosen, strict=True):
        with LocalIssuer(max_requests=50_000, max_seconds=600) as issuer:
            team = _team(issuer)
            app = build(team)
            await _warm(app, scope_for(_minter(issuer).identity_token(USERS[0])))
            await asyncio.sleep(COOLDOWN + 0.1)  # steady state: the last fetch is older than the cooldown
            issuer.rotate(keep_old=True)
            result.rotation_wait = rotation_wait
            result.rotation_steady_ms, result.rotation_steady_refusals = await _time_to_accept(
                app, scope_for(_minter(issuer).identity_token(USERS[0])), result.rotation_wait
            )
            issuer.rotate(keep_old=True)  # again at once: the previous fetch is recent
            result.rotation_recent_ms, result.rotation_recent_refusals = await _time_to_accept(
                app, scope_for(_minter(issuer).identity_token(USERS[0])), result.rotation_wait
            )

    for result, (_, build, scope_for) in zip(results, chosen, strict=True):
        with LocalIssuer(max_requests=50_000, max_seconds=600) as issuer:
            app = build(_team(issuer))
            valid = _minter(issuer).identity_token(USERS[0])
            await _warm(app, scope_for(valid))
            await asyncio.sleep(COOLDOWN + 0.1)
            await flood_during_rotation(
                app, scope_for, issuer, _unknown_kid_tokens(valid, flood), flood_seconds, result
            )
    return results
