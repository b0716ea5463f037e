"""Before and after in one run: this tree's middleware against another git revision's (default ``main``).

    python -m benchmarks.ab                  # against main, full rounds
    python -m benchmarks.ab --quick          # a smoke run
    python -m benchmarks.ab --ref HEAD~3

The other revision's package is extracted with ``git archive`` into a temporary directory and
imported as ``cfaccess_mw_before`` (the package uses relative imports only), so both versions run
in the same process and event loop, interleaved round by round like every group in this suite
(see :mod:`benchmarks.common`); compare the ratios. Measured:

* the floor (section 1's cases (a) and (b)) before and after, and, when ``cachetools`` is
  importable, after with the token cache swapped for a ``cachetools.LRUCache`` (issue 11 asks
  for one of the two; the adapter adds one no-op method call per hit, shown in the micro rows);
* the pieces that changed on the same-token path, alone (ns per call);
* the token cache's hit rate under a burst of one-off tokens (section 7) before and after;
* a rotation during a flood of made-up kids (section 5's last table) before and after;
* issue 11's paths: the ``async`` and plain ``def`` lookups on Starlette (and, after, the
  ``def`` lookup with the user cache on), and on FastAPI the middleware alone,
  ``CurrentPrincipal`` and ``require("user")``, each built with both packages.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import io
import logging
import subprocess
import sys
import tarfile
import tempfile
from collections import OrderedDict
from pathlib import Path
from types import ModuleType
from typing import Any

from cfaccess_mw import CloudflareAccessMiddleware
from cfaccess_mw.core.tokens import freeze_claims
from cfaccess_mw.core.verifier import TokenVerifier
from cfaccess_mw.testing import LocalIssuer

from . import apps, cache, common, jwks
from .inprocess import _cache_prefiller

ROOT = Path(__file__).resolve().parents[1]


def _before_verifier(before: ModuleType) -> Any:
    """The other revision's TokenVerifier: in ``core.verifier`` since issue 19's layout, ``verifier`` before it,
    ``tokens`` before that."""
    for module in ("core.verifier", "verifier", "tokens"):
        try:
            return importlib.import_module(f"{before.__name__}.{module}").TokenVerifier
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"no TokenVerifier in {before.__name__}")


def load_revision(ref: str, into: Path) -> ModuleType:
    """``ref``'s ``cfaccess_mw`` package, importable as ``cfaccess_mw_before``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "cfaccess_mw"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "cfaccess_mw").rename(into / "cfaccess_mw_before")
    sys.path.insert(0, str(into))
    return importlib.import_module("cfaccess_mw_before")


def middleware(package: ModuleType, app: Any, team: apps.Team, **overrides: Any) -> Any:
    """``package``'s middleware around ``app``, configured as :func:`benchmarks.apps.ours` does."""
    values: dict[str, Any] = {
        "exposure_mode": package.ExposureMode.REVERSE_PROXY,
        "team_domain": team.team_domain,
        "audiences": (team.audience,),
        "certs_url": team.certs_url,
        "api_keys": (package.ApiKey.from_secret("bench", apps.API_KEY_SECRET),),
    }
    lookup = overrides.pop("user_lookup", apps.find_user)
    values.update(overrides)
    return package.CloudflareAccessMiddleware(app, settings=package.Settings(**values), user_lookup=lookup)


def with_cachetools(mw: CloudflareAccessMiddleware) -> bool:
    """Swap the verifier's cache for a ``cachetools.LRUCache`` (same entries, same size); False without cachetools."""
    try:
        import cachetools
    except ImportError:
        return False

    class LRU(cachetools.LRUCache[str, Any]):
        """What the verifier calls on its cache, on top of an LRUCache (whose ``get`` already refreshes recency)."""

        def move_to_end(self, key: str) -> None:
            pass

        def popitem(self, last: bool = True) -> Any:
            return super().popitem()

    assert mw.verifier is not None
    mw.verifier._cache = LRU(maxsize=mw.verifier.cache_size + 1)  # type: ignore[assignment]
    return True


async def floor(
    before: ModuleType, team: apps.Team, same: str, pool: list[str], rounds: int, batch: float
) -> list[common.Case]:
    bare = apps.bare_starlette()
    old = middleware(before, bare, team)
    new = apps.ours(bare, team)
    new_lru = apps.ours(bare, team)
    for m in (old, new, new_lru):
        await m.jwks.refresh()
    cases = [
        common.Case("bare Starlette", bare, [common.scope()], 200),
        common.Case("before: (a) same token", old, [common.jwt_scope(same)], 200),
        common.Case("after: (a) same token (OrderedDict + move_to_end)", new, [common.jwt_scope(same)], 200),
    ]
    if with_cachetools(new_lru):
        cases.append(common.Case("after: (a) same token (cachetools.LRUCache)", new_lru, [common.jwt_scope(same)], 200))
    fresh = [common.jwt_scope(t) for t in pool]
    cases += [
        common.Case("before: (b) fresh token", old, fresh, 200, _cache_prefiller(old, pool[0]), len(pool)),
        common.Case("after: (b) fresh token", new, fresh, 200, _cache_prefiller(new, pool[0]), len(pool)),
    ]
    await common.run_group(cases, rounds, batch)
    return cases


def _fastapi(dependency: Any = None) -> Any:
    from fastapi import Depends, FastAPI
    from starlette.responses import PlainTextResponse

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    async def home() -> PlainTextResponse:
        return PlainTextResponse("ok")

    app.add_api_route("/", home, dependencies=[Depends(dependency)] if dependency is not None else [])
    return app


async def user_paths(before: ModuleType, team: apps.Team, same: str, rounds: int, batch: float) -> list[common.Case]:
    """Issue 11's rows, before and after: the first case of each framework is its bare app."""
    import cfaccess_mw

    before_fastapi = importlib.import_module(f"{before.__name__}.fastapi")
    after_fastapi = importlib.import_module("cfaccess_mw.fastapi")
    sides = [("before", before, before_fastapi), ("after", cfaccess_mw, after_fastapi)]
    sync = {"user_lookup": apps.find_user_sync}
    bare, fbare = apps.bare_starlette(), _fastapi()
    scopes = [common.jwt_scope(same)]
    cases = [common.Case("bare Starlette", bare, [common.scope()], 200)]
    cases += [common.Case(f"{side}: async lookup", middleware(p, bare, team), scopes, 200) for side, p, _ in sides]
    cases += [
        common.Case(f"{side}: def lookup", middleware(p, bare, team, **sync), scopes, 200) for side, p, _ in sides
    ]
    cached = middleware(cfaccess_mw, bare, team, user_cache_seconds=60, **sync)
    cases.append(common.Case("after: def lookup, user cache on (60 s)", cached, scopes, 200))
    cases.append(common.Case("bare FastAPI", fbare, [common.scope()], 200))
    cases += [
        common.Case(f"{side}: FastAPI, middleware only", middleware(p, fbare, team), scopes, 200)
        for side, p, _ in sides
    ]
    for side, package, fastapi in sides:
        app = middleware(package, _fastapi(fastapi.get_principal), team)
        cases.append(common.Case(f"{side}: FastAPI, CurrentPrincipal", app, scopes, 200))
    for side, package, fastapi in sides:
        app = middleware(package, _fastapi(fastapi.require("user")), team)
        cases.append(common.Case(f'{side}: FastAPI, require("user")', app, scopes, 200))
    for case in cases:
        if getattr(case.app, "jwks", None) is not None:
            await case.app.jwks.refresh()
    await common.run_group(cases, rounds, batch)
    return cases


def micro(
    before: ModuleType, same: str, rounds: int, batch: float, team: apps.Team, kid: str, public_key: Any
) -> dict[str, list[float]]:
    token = same
    entry = object()
    ordered: OrderedDict[str, object] = OrderedDict((f"filler-{i}", entry) for i in range(4095))
    ordered[token] = entry
    fns: dict[str, Any] = {
        "hit: OrderedDict.get (FIFO, before)": lambda: ordered.get(token),
        "hit: OrderedDict.get + move_to_end (LRU, taken)": lambda: (ordered.get(token), ordered.move_to_end(token)),
    }
    try:
        import cachetools
    except ImportError:
        pass
    else:
        lru: Any = cachetools.LRUCache(maxsize=4097)
        for i in range(4095):
            lru[f"filler-{i}"] = entry
        lru[token] = entry
        fns["hit: cachetools.LRUCache.get"] = lambda: lru.get(token)
    keys_before = before.keys.JWKSClient("https://certs.example/c")
    keys_after = __import__("cfaccess_mw.keys", fromlist=["JWKSClient"]).JWKSClient("https://certs.example/c")
    key = object()
    keys_before._keys = {"k1": key}
    keys_before._fetched_at = float("inf")
    book = getattr(keys_after, "_book", keys_after)  # the bookkeeping moved to keystate.KeySetState
    for name, value in (("keys", {"k1": key}), ("fetched_at", float("inf")), ("due_at", float("inf"))):
        setattr(book, name if book is not keys_after else "_" + name, value)
    fns["key check on a hit, before: has_kid(kid)"] = lambda: keys_before.has_kid("k1")
    fns["key check on a hit, after: cached_key(kid) is key"] = lambda: keys_after.cached_key("k1") is key
    claims = common.Minter.claims(common.Minter(None, "k1", "https://t", "a" * 64), common.USERS[0])  # type: ignore[arg-type]
    fns["freeze_claims (once per verification; not on a hit)"] = lambda: freeze_claims(dict(claims))
    fns["dict(claims) + MappingProxyType (what it replaced)"] = lambda: __import__("types").MappingProxyType(
        dict(claims)
    )
    fns.update(_crypto(before, team, kid, public_key, same))
    return common.time_sync_group(fns, rounds, batch)


def _crypto(before: ModuleType, team: apps.Team, kid: str, key: Any, token: str) -> dict[str, Any]:
    """The raw RSA verify a fresh token's figure is a multiple of, and each side's verifier with no cache."""
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.hashes import SHA256

    from .inprocess import _Keys

    header_b64, payload_b64, signature_b64 = token.split(".")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
    padding, sha256 = PKCS1v15(), SHA256()
    fns: dict[str, Any] = {RAW_RSA: lambda: key.verify(signature, signing_input, padding, sha256)}
    for side, cls in (("before", _before_verifier(before)), ("after", TokenVerifier)):
        verifier = cls(issuer=team.issuer, audiences=(team.audience,), keys=_Keys(kid, key), cache_size=0)
        fns[f"{side}: TokenVerifier.verify, no cache"] = lambda v=verifier: common.run_sync(v.verify(token))
    return fns


RAW_RSA = "raw RSA verify (cryptography)"


async def flood(before: ModuleType, quick: bool) -> list[jwks.JWKSResult]:
    count, seconds = (2_000, 2.2) if quick else (10_000, 3.5)
    results = []
    for name, build in (
        ("before", lambda team: middleware(before, apps.bare_starlette(), team, jwks_refresh_cooldown_seconds=1)),
        ("after", lambda team: apps.ours(apps.bare_starlette(), team, jwks_refresh_cooldown_seconds=1)),
    ):
        result = jwks.JWKSResult(name)
        with LocalIssuer(max_requests=50_000, max_seconds=600) as issuer:
            team = apps.Team(issuer.team_domain, issuer.audience, issuer.certs_url)
            app = build(team)
            valid = jwks._minter(issuer).identity_token(common.USERS[0])
            await jwks._warm(app, common.jwt_scope(valid))
            await asyncio.sleep(jwks.COOLDOWN + 0.1)
            tokens = jwks._unknown_kid_tokens(valid, count)
            await jwks.flood_during_rotation(app, common.jwt_scope, issuer, tokens, seconds, result)
        results.append(result)
    return results


async def main(args: argparse.Namespace) -> str:
    logging.getLogger("cfaccess_mw.audit").setLevel(logging.CRITICAL)
    logging.getLogger("cfaccess_mw_before.audit").setLevel(logging.CRITICAL)
    rounds, batch, pool_size = (5, 0.015, 300) if args.quick else (15, 0.04, 1500)
    with tempfile.TemporaryDirectory() as tmp:
        before = load_revision(args.ref, Path(tmp))
        logging.getLogger("cfaccess_mw_before").setLevel(logging.CRITICAL)
        with LocalIssuer(max_requests=10_000, max_seconds=900) as issuer:
            team = apps.Team(issuer.team_domain, issuer.audience, issuer.certs_url)
            minter = common.Minter(issuer.private_key(), issuer.signing_kid, issuer.issuer, issuer.audience)
            same = minter.identity_token(common.USERS[0])
            pool = minter.many(pool_size)
            cases = await floor(before, team, same, pool, rounds, batch)
            paths = await user_paths(before, team, same, rounds, batch)
        pieces = micro(before, same, rounds, batch, team, issuer.signing_kid, issuer.private_key().public_key())
        hits = {"before": cache.burst(_before_verifier(before)), "after": cache.burst(TokenVerifier)}
        floods = await flood(before, args.quick)

    out = [f"_before = `{args.ref}`, after = this tree; command: `python -m benchmarks.ab {' '.join(args.argv)}`_", ""]
    bare = cases[0]
    out += [f"Floor, in-process ASGI, best of {rounds} interleaved rounds:", ""]
    out += ["| case | µs/request | added over bare, µs | vs bare |", "|---|---|---|---|"]
    for case in cases:
        added = "—" if case is bare else f"{common.added_us(case, bare):.2f}"
        out.append(f"| {case.name} | {common.best_us(case):.2f} | {added} | {common.ratio(case, bare):.2f}x |")
    raw = min(pieces[RAW_RSA]) / 1000
    for case in cases:
        if "fresh" in case.name:
            out.append(
                f"\n{case.name}: added {common.added_us(case, bare):.2f} µs = "
                f"{common.added_us(case, bare) / raw:.2f}x the raw RSA verify ({raw:.2f} µs, below)"
            )
    out += ["", "Issue 11's paths (each row added over its bare app, and that as a multiple of it):", ""]
    out += ["| case | µs/request | added, µs | of a bare request |", "|---|---|---|---|"]
    base = paths[0]
    for case in paths:
        if case.name.startswith("bare"):
            base = case
            out.append(f"| {case.name} | {common.best_us(case):.2f} | — | — |")
            continue
        added = common.added_us(case, base)
        out.append(f"| {case.name} | {common.best_us(case):.2f} | {added:.2f} | {added / common.best_us(base):.2f}x |")
    out += ["", "The pieces, alone (ns per call, best round):", "", "| operation | ns/call |", "|---|---|"]
    out += [f"| {name} | {min(samples):.0f} |" for name, samples in pieces.items()]
    out += ["", "Token cache under a burst (section 7):", ""]
    out += ["| | one-off tokens | session requests | session misses | hit rate after the first visit |"]
    out += ["|---|---|---|---|---|"]
    for name, r in hits.items():
        out.append(
            f"| {name} | {r['one_off_tokens']:,} | {r['session_requests']:,} | {r['session_misses']:,} "
            f"| {r['hit_rate_after_first_visit']:.1%} |"
        )
    out += ["", f"Rotation during a flood of made-up kids (cooldown {jwks.COOLDOWN:g} s):", ""]
    out += ["| | rotation → first accept | genuine client told meanwhile | fetches during the flood |"]
    out += ["|---|---|---|---|"]
    for r in floods:
        accepted = f"{r.flood_rotation_ms:.0f} ms" if r.flood_rotation_ms is not None else "not within the flood"
        told = ", ".join(f"{n} x {status}" for status, n in sorted(r.flood_rotation_refusals.items())) or "none"
        out.append(
            f"| {r.name} | {accepted} | {told} | {r.flood_rotation_fetches} in {r.flood_rotation_seconds:.2f} s "
            f"= {r.flood_rotation_windows} window(s) |"
        )
    return "\n".join(out) + "\n"


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--ref", default="main", help="the git revision to compare against (default: main)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, a smaller flood")
    args = parser.parse_args(argv)
    args.argv = argv
    print(asyncio.run(main(args)))
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
