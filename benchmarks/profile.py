"""cProfile over the benchmark loop: where a same-token or a fresh-token request spends its time.

    python -m benchmarks.profile same            # the same token, async lookup, bare Starlette behind it
    python -m benchmarks.profile fresh           # a fresh RS256 token per request (cache refilled per batch)
    python -m benchmarks.profile fresh-es256     # a fresh ES256 token per request (the google-iap preset)
    python -m benchmarks.profile bare            # the bare Starlette app alone, for comparison
    python -m benchmarks.profile same --sort cumulative --limit 40

Runs the same requests as :mod:`benchmarks.inprocess` (same scopes, same receive and send) under
cProfile and prints the functions by their own time. cProfile adds a fixed cost per Python call,
so it overstates code made of many small calls: use it to find where the time goes, and
:mod:`benchmarks.ab` to measure a change.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import pstats
import sys
from typing import Any

from cfaccess_mw import CloudflareAccessMiddleware
from cfaccess_mw.testing import LocalIssuer
from cfaccess_mw.testing.presets import GoogleIapIssuer

from . import apps, common
from .inprocess import _cache_prefiller


async def _drive(app: Any, scopes: list[dict[str, Any]], n: int, before: Any = None, chunk: int = 0) -> None:
    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"status {message['status']}")

    count = len(scopes)
    for i in range(n):
        if before is not None and chunk and i % chunk == 0:
            before()
        await app(common.as_received(scopes[i % count]), common.make_receive(), send)


async def main(args: argparse.Namespace) -> None:
    logging.getLogger("cfaccess_mw.audit").setLevel(logging.CRITICAL)
    with LocalIssuer(max_seconds=600) as issuer, GoogleIapIssuer(max_requests=1000, max_seconds=600) as iap:
        team = apps.Team(issuer.team_domain, issuer.audience, issuer.certs_url)
        minter = common.Minter(issuer.private_key(), issuer.signing_kid, issuer.issuer, issuer.audience)
        bare = apps.bare_starlette()
        first: str | None = None  # fresh-token cases: the token the cache refiller verifies
        chunk = 0
        if args.case == "bare":
            app: Any = bare
            scopes = [common.scope()]
        elif args.case == "same":
            app = apps.ours(bare, team)
            scopes = [common.jwt_scope(minter.identity_token(common.USERS[0]))]
        elif args.case == "fresh":
            app = apps.ours(bare, team)
            pool = minter.many(args.pool)
            scopes = [common.jwt_scope(t) for t in pool]
            first, chunk = pool[0], len(pool)
        else:
            app = CloudflareAccessMiddleware(bare, settings=iap.settings(), user_lookup=apps.find_user)
            pool = [iap.identity_token(common.USERS[i % len(common.USERS)], jti=str(i)) for i in range(args.pool)]
            scopes = [common.scope([(b"x-goog-iap-jwt-assertion", t.encode("ascii"))]) for t in pool]
            first, chunk = pool[0], len(pool)
        if getattr(app, "jwks", None) is not None:
            await app.jwks.refresh()
        # A fresh-token case refills the token cache before each pass over the pool, as section 1 does.
        before = _cache_prefiller(app, first) if first is not None else None
        await _drive(app, scopes, 200, before, chunk)  # warm-up
        profiler = cProfile.Profile()
        profiler.enable()
        await _drive(app, scopes, args.requests, before, chunk)
        profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.strip_dirs().sort_stats(args.sort).print_stats(args.limit)


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n")[0])
    parser.add_argument("case", choices=["bare", "same", "fresh", "fresh-es256"])
    parser.add_argument("--requests", type=int, default=0, help="requests profiled (default 50,000 same, 3,000 fresh)")
    parser.add_argument("--pool", type=int, default=300, help="distinct fresh tokens, reused round-robin")
    parser.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative, ...)")
    parser.add_argument("--limit", type=int, default=30)
    args = parser.parse_args(argv)
    if not args.requests:
        args.requests = 50_000 if args.case in ("same", "bare") else 3_000
    asyncio.run(main(args))
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
