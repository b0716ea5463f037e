"""Run every benchmark section once and print one markdown table of ratios measured side by side.

    python -m benchmarks.run            # the full run (a few minutes on 2 cores)
    python -m benchmarks.run --quick    # a smoke run (under a minute)

The peers are measured when importable (``benchmarks/run.sh`` builds a venv that has them);
otherwise their rows say they were not installed. Absolute times on a shared machine move
from run to run; the ratios, measured in the same run and interleaved, are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cryptography
import jwt
import starlette

from cfaccess_mw.testing import LocalIssuer

from . import apps, cache, common, e2e, es256, inprocess, jwks

ROOT = Path(__file__).resolve().parents[1]

# Targets from issue 6.
SAME_TOKEN_ADDED_US = 2.0
REFERENCE_BARE_US = 10.0  # "on this machine a bare Starlette request is about 10 µs" (issue 6)
E2E_KEEP = 0.90
FRESH_VS_RAW = 1.5
# Targets from issue 11, as fractions of a bare request of the same framework.
SYNC_CACHED_OVER_ASYNC = 0.25
CURRENT_PRINCIPAL_OVER_MIDDLEWARE = 0.25


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**NOT met**")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.data: dict[str, Any] = {}
        self.verdicts: list[tuple[str, str, str]] = []  # (target, measured, verdict)

    def h(self, title: str) -> None:
        self.lines += ["", f"### {title}", ""]

    def table(self, head: list[str], rows: list[list[str]]) -> None:
        self.lines.append("| " + " | ".join(head) + " |")
        self.lines.append("|" + "|".join("---" for _ in head) + "|")
        self.lines += ["| " + " | ".join(row) + " |" for row in rows]

    def note(self, text: str) -> None:
        self.lines += ["", text]

    def verdict(self, target: str, measured: str, ok: bool | None) -> None:
        self.verdicts.append((target, measured, _mark(ok)))

    def text(self) -> str:
        head = ["", "### Targets", ""]
        head.append("| target | measured | verdict |")
        head.append("|---|---|---|")
        head += [f"| {t} | {m} | {v} |" for t, m, v in self.verdicts]
        return "\n".join(self.lines + head) + "\n"


def _environment(peers: dict[str, bool]) -> str:
    versions = [
        f"Python {platform.python_version()}",
        f"starlette {starlette.__version__}",
        f"PyJWT {jwt.__version__}",
        f"cryptography {cryptography.__version__}",
    ]
    for name, present in peers.items():
        if present:
            from importlib.metadata import version

            versions.append(f"{name} {version(name)}")
        else:
            versions.append(f"{name} not installed")
    return ", ".join(versions) + f"; {os.cpu_count()} CPUs"


async def _inprocess_sections(args: argparse.Namespace, report: Report, peers: dict[str, bool]) -> None:
    with LocalIssuer(max_requests=10_000, max_seconds=900) as issuer:
        team = apps.Team(issuer.team_domain, issuer.audience, issuer.certs_url)
        minter = common.Minter(issuer.private_key(), issuer.signing_kid, issuer.issuer, issuer.audience)
        same = minter.identity_token(common.USERS[0])
        started = time.perf_counter()
        pool = minter.many(args.pool)
        report.data["mint_ms_per_token"] = (time.perf_counter() - started) * 1000 / args.pool
        bad = common.tampered(same)

        groups = await inprocess.floor_and_peers(team, same, pool, bad, args.rounds, args.batch, peers)
        crypto = inprocess.crypto_floor(
            team, issuer.signing_kid, issuer.private_key().public_key(), same, args.rounds, args.batch
        )
        if not args.no_e2e:
            e2e_results = e2e.run(team, same, peers, args.e2e_rounds, args.e2e_seconds, args.connections)
        else:
            e2e_results = []

    star = groups["starlette"]
    bare = star[0]
    by_name = {c.name: c for c in star}
    raw_us = min(crypto["raw RSA verify"]) / 1000

    report.h(f"1. The floor: in-process ASGI, µs per request (best of {args.rounds} interleaved rounds)")
    rows = []
    for case in star:
        if case.name.startswith("cc-auth"):
            continue
        added = None if case is bare else common.added_us(case, bare)
        rows.append(
            [
                case.name,
                _fmt(common.best_us(case), 2),
                "—" if added is None else _fmt(added, 2),
                f"{common.ratio(case, bare):.2f}x",
            ]
        )
    report.table(["case", "µs/request", "added over bare, µs", "vs bare"], rows)
    report.note(
        "Added = best round of the case minus best round of the bare app. (a') is (a) with a plain `def` "
        "user_lookup, which the middleware runs in Starlette's thread pool; (a'') is (a') with the user cache on "
        f"(`CFACCESS_USER_CACHE_SECONDS={inprocess.USER_CACHE_SECONDS}`)."
    )

    same_added = common.added_us(by_name["(a) same token"], bare)
    fresh_added = common.added_us(by_name["(b) fresh token"], bare)
    _user_paths_table(report, groups)

    report.h(f"2. The crypto floor: the same token, µs per call (best of {args.rounds} interleaved rounds)")
    rows = []
    for name, samples in crypto.items():
        us = min(samples) / 1000
        rows.append([name, _fmt(us, 2), f"{us / raw_us:.2f}x"])
    rows.append(
        ["middleware (b) fresh token, added over bare app", _fmt(fresh_added, 2), f"{fresh_added / raw_us:.2f}x"]
    )
    report.table(["operation", "µs/call", "vs raw RSA verify"], rows)

    bare_us = common.best_us(bare)
    report.verdict(
        f"same token adds ≤ {SAME_TOKEN_ADDED_US:g} µs over the bare app (in-process)",
        f"{same_added:.2f} µs over a {bare_us:.2f} µs bare request = {same_added / bare_us:.0%} of it "
        f"(the target is {SAME_TOKEN_ADDED_US / REFERENCE_BARE_US:.0%} "
        f"of the issue's {REFERENCE_BARE_US:g} µs reference)",
        same_added <= SAME_TOKEN_ADDED_US,
    )
    report.verdict(
        f"fresh token ≤ {FRESH_VS_RAW:g}x raw RSA verify",
        f"{fresh_added / raw_us:.2f}x (added {fresh_added:.1f} µs vs raw {raw_us:.1f} µs); "
        f"verifier alone {min(crypto['TokenVerifier.verify, no cache']) / 1000 / raw_us:.2f}x",
        fresh_added / raw_us <= FRESH_VS_RAW,
    )

    _e2e_table(report, e2e_results, args)
    _peer_table(report, groups, peers)
    report.data["inprocess"] = {
        g: [{"name": c.name, "samples_ns": c.samples, "batch": c.batch} for c in cases]
        for g, cases in groups.items()
        if cases
    }
    report.data["crypto_ns"] = crypto


def _user_paths_table(report: Report, groups: dict[str, Any]) -> None:
    """Issue 11's table: the paths users take, before and after, as added µs and as a share of a bare request."""
    star = {c.name: c for c in groups["starlette"]}
    sbare = groups["starlette"][0]
    deps = {c.name: c for c in groups["fastapi_deps"]}
    fbare = groups["fastapi_deps"][0]
    mw_only = deps["FastAPI, middleware only"]

    def cell(case: common.Case, base: common.Case, bare: common.Case) -> str:
        added = common.added_us(case, base)
        return f"{added:.2f} µs = {added / common.best_us(bare):.2f}x"

    rows = [
        ["Starlette, `async` lookup (over bare Starlette)", "—", cell(star["(a) same token"], sbare, sbare)],
        [
            "Starlette, plain `def` lookup (before: no user cache; after: user cache on)",
            cell(star["(a') same token, sync user_lookup"], sbare, sbare),
            cell(star["(a'') same token, sync user_lookup, user cache on"], sbare, sbare),
        ],
        ["FastAPI, middleware only, `async` lookup (over bare FastAPI)", "—", cell(mw_only, fbare, fbare)],
        [
            "FastAPI, `CurrentPrincipal` on the route (over the middleware alone)",
            cell(deps["FastAPI, CurrentPrincipal (before: 2 Security sub-dependencies)"], mw_only, fbare),
            cell(deps["FastAPI, CurrentPrincipal"], mw_only, fbare),
        ],
        [
            'FastAPI, `require("user")` on the route (over the middleware alone)',
            cell(deps['FastAPI, require("user") (before: on top of the old CurrentPrincipal)'], mw_only, fbare),
            cell(deps['FastAPI, require("user")'], mw_only, fbare),
        ],
        [
            'FastAPI, one plain `Depends` reading `scope["user"]` (over the middleware alone)',
            "—",
            cell(deps['FastAPI, one plain Depends reading scope["user"]'], mw_only, fbare),
        ],
    ]
    report.h("1b. What users pay (issue 11): same token, in-process, added per request (best rounds, one run)")
    report.table(["path", "before", "after"], rows)
    report.note(
        f"Each cell: µs added per request, and that as a multiple of a bare request of the same framework "
        f"(bare Starlette {common.best_us(sbare):.2f} µs, bare FastAPI {common.best_us(fbare):.2f} µs). "
        f'"Before" is measured in the same run: the plain `def` lookup without the user cache, and the '
        "FastAPI dependencies as they were (`get_principal` with two `Security` sub-dependencies that only "
        "documented the schemes; `require` on top of it), replicated in `benchmarks/fastapi_apps.py`. "
        f"The user cache rows use `CFACCESS_USER_CACHE_SECONDS={inprocess.USER_CACHE_SECONDS}`; every lookup "
        "is a dict read, `async def` unless it says plain `def`."
    )
    async_added = common.added_us(star["(a) same token"], sbare)
    bare_us = common.best_us(sbare)
    cached = (common.added_us(star["(a'') same token, sync user_lookup, user cache on"], sbare) - async_added) / bare_us
    uncached = (common.added_us(star["(a') same token, sync user_lookup"], sbare) - async_added) / bare_us
    report.verdict(
        f"plain `def` lookup with the user cache costs ≤ {SYNC_CACHED_OVER_ASYNC:g}x of a bare request more than "
        "an `async` lookup",
        f"{cached:.2f}x (without the cache {uncached:.2f}x)",
        cached <= SYNC_CACHED_OVER_ASYNC,
    )
    fbare_us = common.best_us(fbare)
    new = common.added_us(deps["FastAPI, CurrentPrincipal"], mw_only) / fbare_us
    old = common.added_us(deps["FastAPI, CurrentPrincipal (before: 2 Security sub-dependencies)"], mw_only) / fbare_us
    plain = common.added_us(deps['FastAPI, one plain Depends reading scope["user"]'], mw_only) / fbare_us
    report.verdict(
        f"`CurrentPrincipal` adds ≤ {CURRENT_PRINCIPAL_OVER_MIDDLEWARE:g}x of a bare FastAPI request over the "
        "middleware alone",
        f"{new:.2f}x (before {old:.2f}x; one plain `Depends` {plain:.2f}x)",
        new <= CURRENT_PRINCIPAL_OVER_MIDDLEWARE,
    )


def _peer_table(report: Report, groups: dict[str, Any], peers: dict[str, bool]) -> None:
    report.h("4. The peers, in-process on the same tokens and the same loopback certs endpoint")
    rows = []
    comparisons: list[tuple[str, str, str, str]] = []  # (path, ours name, peer name, group)
    star = {c.name: c for c in groups["starlette"]}
    if peers.get("cc-auth"):
        for path, mine, theirs in (
            ("(a) same token", "(a) same token", "cc-auth (a) same token"),
            ("(b) fresh token", "(b) fresh token", "cc-auth (b) fresh token"),
            ("(e) rejected token", "(e) rejected token (bad signature)", "cc-auth (e) rejected token"),
        ):
            comparisons.append((path, mine, theirs, "starlette"))
    if groups.get("fastapi"):
        for path in ("(a) same token", "(b) fresh token", "(e) rejected token"):
            comparisons.append((path, f"ours {path}, cookie", f"fastapi-cloudflare-access-jwt {path}", "fastapi"))
    for path, mine, theirs, group in comparisons:
        cases = groups[group]
        by_name = {c.name: c for c in cases}
        base = cases[0]
        ours_case, peer_case = by_name[mine], by_name[theirs]
        ours_added, peer_added = common.added_us(ours_case, base), common.added_us(peer_case, base)
        total_ratio = common.ratio(peer_case, ours_case)
        peer_label = theirs.split(" (")[0]
        rows.append(
            [
                f"{peer_label}: {path}",
                f"{base.name} {_fmt(common.best_us(base), 1)}",
                _fmt(common.best_us(ours_case), 1),
                _fmt(common.best_us(peer_case), 1),
                _fmt(ours_added, 1),
                _fmt(peer_added, 1),
                f"{total_ratio:.2f}x",
                f"{peer_added / ours_added:.1f}x" if ours_added > 0 else "∞",
            ]
        )
        report.verdict(
            f"ahead of {peer_label} on {path} (in-process)",
            f"{total_ratio:.2f}x faster per request",
            total_ratio > 1.0,
        )
    if not comparisons:
        report.note("No peer installed in this interpreter: run `benchmarks/run.sh` to build their venv.")
        return
    report.table(
        [
            "peer: path",
            "bare app, µs",
            "ours µs",
            "peer µs",
            "ours added µs",
            "peer added µs",
            "peer/ours per request",
            "peer/ours added",
        ],
        rows,
    )
    report.note(
        "cc-auth wraps the bare Starlette app (header token); fastapi-cloudflare-access-jwt is a FastAPI "
        "dependency and reads only the `CF_Authorization` cookie, so that comparison uses a bare FastAPI app "
        "and ours with `allow_cookie=True` on the same cookie. The API-key and loopback paths have no peer "
        "equivalent. Peers do no user lookup; ours does one (an async dict lookup)."
    )
    del star


def _e2e_table(report: Report, results: list[e2e.E2EResult], args: argparse.Namespace) -> None:
    report.h(
        f"3. End to end: {e2e.describe()}; {args.connections} connections, "
        f"best of {args.e2e_rounds} rounds x {args.e2e_seconds:g} s per server"
    )
    if not results:
        report.note("Skipped (--no-e2e).")
        return
    by_name = {r.case.name: r for r in results}
    rows = []
    for r in results:
        base = by_name[r.case.base]
        rows.append([r.case.name, f"{r.rps:,.0f}", f"{r.p50:.2f}", f"{r.p99:.2f}", f"{r.rps / base.rps:.1%}"])
    report.table(["server", "requests/s", "p50 ms", "p99 ms", "of its bare app's req/s"], rows)
    ours = by_name["ours (a) same token"]
    keep = ours.rps / by_name["bare Starlette"].rps
    report.verdict(f"same token keeps ≥ {E2E_KEEP:.0%} of bare req/s under uvicorn", f"{keep:.1%}", keep >= E2E_KEEP)
    for peer, mine in (
        ("cc-auth (a) same token", "ours (a) same token"),
        ("fastapi-cloudflare-access-jwt (a) same token", "ours (a) same token, cookie, FastAPI"),
    ):
        if peer in by_name:
            ratio = by_name[mine].rps / by_name[peer].rps
            report.verdict(f"ahead of {peer.split(' (')[0]} under uvicorn", f"{ratio:.2f}x its req/s", ratio > 1)
    report.data["e2e"] = [{"name": r.case.name, "loads": [load.__dict__ for load in r.loads]} for r in results]


async def _jwks_section(args: argparse.Namespace, report: Report, peers: dict[str, bool]) -> None:
    results = await jwks.run(peers, args.concurrent, args.flood, args.flood_seconds, args.rotation_wait)
    report.h(
        f"5. The JWKS path (fetches counted by the certs server; refetch cooldown {jwks.COOLDOWN:g} s "
        "for ours and cc-auth)"
    )
    rows = []
    for r in results:
        steady = (
            f"{_fmt(r.rotation_steady_ms, 1)} ms"
            if r.rotation_steady_ms is not None
            else f"refused for {r.rotation_wait:g} s"
        )
        recent = (
            f"{_fmt(r.rotation_recent_ms, 0)} ms"
            if r.rotation_recent_ms is not None
            else f"refused for {r.rotation_wait:g} s"
        )
        rows.append(
            [
                r.name,
                f"{r.concurrent_fetches} ({_statuses(r.concurrent_statuses)})",
                f"{r.flood_fetches} in {r.flood_seconds:.2f} s = {r.flood_windows} window(s) "
                f"({_statuses(r.flood_statuses)})",
                f"{steady} ({r.rotation_steady_refusals} refused first)",
                f"{recent} ({r.rotation_recent_refusals} refused first)",
            ]
        )
    report.table(
        [
            "implementation",
            f"fetches for {args.concurrent} concurrent first requests",
            f"fetches for {args.flood:,} unknown-kid tokens over {args.flood_seconds:g} s",
            "rotation → first accept (last fetch > cooldown ago)",
            "rotation → first accept (right after a fetch)",
        ],
        rows,
    )
    rows = []
    for r in results:
        accepted = (
            f"{_fmt(r.flood_rotation_ms, 0)} ms"
            if r.flood_rotation_ms is not None
            else f"not within the {r.flood_rotation_seconds:.1f} s flood"
        )
        rows.append(
            [
                r.name,
                accepted,
                _statuses(r.flood_rotation_refusals) or "none",
                f"{r.flood_rotation_fetches} in {r.flood_rotation_seconds:.2f} s "
                f"= {r.flood_rotation_windows} window(s)",
            ]
        )
    report.note(
        f"A rotation during a flood of {args.flood:,} made-up kids over {args.flood_seconds:g} s (issue 10): "
        "Cloudflare rotates a third of the way in, and a genuine client retries its new-kid token every 20 ms."
    )
    report.lines.append("")
    report.table(
        ["implementation", "rotation → first accept", "genuine client told meanwhile", "fetches during the flood"],
        rows,
    )
    ours = results[0]
    report.verdict(
        f"exactly 1 fetch for {args.concurrent} concurrent first requests",
        f"{ours.concurrent_fetches}",
        ours.concurrent_fetches == 1 and ours.concurrent_statuses == {200: args.concurrent},
    )
    report.verdict(
        "unknown-kid flood: ≤ 1 fetch per cooldown window",
        f"{ours.flood_fetches} fetches over {ours.flood_windows} window(s)",
        ours.flood_fetches is not None and ours.flood_fetches <= ours.flood_windows,
    )
    report.verdict(
        "flood during a rotation: new key accepted within one cooldown, never refused as invalid",
        f"{_fmt(ours.flood_rotation_ms, 0)} ms; "
        f"meanwhile {_statuses(ours.flood_rotation_refusals) or 'nothing refused'}",
        ours.flood_rotation_ms is not None
        and ours.flood_rotation_ms <= jwks.COOLDOWN * 1000 + 250
        and 401 not in ours.flood_rotation_refusals,
    )
    report.verdict(
        "flood during a rotation: ≤ 1 fetch per cooldown window",
        f"{ours.flood_rotation_fetches} fetches over {ours.flood_rotation_windows} window(s)",
        ours.flood_rotation_fetches is not None and ours.flood_rotation_fetches <= ours.flood_rotation_windows,
    )
    report.data["jwks"] = [r.__dict__ for r in results]


def _cache_section(report: Report) -> None:
    from cfaccess_mw.core.verifier import TokenVerifier

    r = cache.burst(TokenVerifier)
    report.h("7. The token cache under a burst of one-off tokens (signature check stubbed, see section 6)")
    report.table(
        [
            "cache size",
            "active sessions",
            "one-off tokens",
            "session requests",
            "session misses",
            "hit rate after the first visit",
        ],
        [
            [
                f"{r['cache_size']:,}",
                f"{r['sessions']:,}",
                f"{r['one_off_tokens']:,}",
                f"{r['session_requests']:,}",
                f"{r['session_misses']:,}",
                f"{r['hit_rate_after_first_visit']:.1%}",
            ]
        ],
    )
    report.note(
        "Each session sends its token once per round, with one-off tokens between every two session requests; "
        "the one-off tokens are several times the cache. A miss costs an RSA verification."
    )
    report.verdict(
        "active sessions survive a burst of one-off tokens larger than the cache (least recently used evicted)",
        f"hit rate {r['hit_rate_after_first_visit']:.1%} after the first visit",
        r["hit_rate_after_first_visit"] >= 0.99,
    )
    report.data["cache"] = r


def _statuses(statuses: dict[int, int]) -> str:
    return ", ".join(f"{count} x {status}" for status, count in sorted(statuses.items()))


def _memory_section(args: argparse.Namespace, report: Report) -> None:
    runs = [(args.memory_tokens, 4096), (args.memory_tokens // 10, 4096), (args.memory_tokens // 5, 65536)]
    env = e2e.child_env()
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.memory", str(tokens), str(size)],
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        for tokens, size in runs
    ]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=3600)
        if child.returncode != 0:
            raise RuntimeError(f"memory child failed with {child.returncode}")
        results.append(json.loads(out))
    report.h(
        "6. Memory: peak RSS of a fresh process after N distinct valid tokens (signature check stubbed; see README)"
    )
    rows = [
        [
            f"{r['tokens']:,}",
            f"{r['cache_size']:,}",
            f"{r['cached']:,}",
            f"{r['baseline_kb'] / 1024:.1f}",
            f"{r['peak_kb'] / 1024:.1f}",
            f"{(r['peak_kb'] - r['baseline_kb']) / 1024:.1f}",
            f"{r['seconds'] / r['tokens'] * 1e6:.1f}",
        ]
        for r in results
    ]
    report.table(
        ["tokens", "cache size", "cached at end", "RSS before, MiB", "peak RSS, MiB", "growth, MiB", "µs/request"], rows
    )
    big, small, wide = results
    per_entry = (wide["peak_kb"] - small["peak_kb"]) * 1024 / max(1, wide["cached"] - small["cached"])
    report.note(f"About {per_entry:,.0f} bytes of RSS per cached token (from the two cache sizes).")
    bounded = (
        big["cached"] <= big["cache_size"]
        and all(r["statuses"] == {"200": r["tokens"] + 1000} for r in results)
        and big["peak_kb"] - small["peak_kb"] < 0.1 * small["peak_kb"]
    )
    report.verdict(
        f"memory bounded by the cache size, not traffic ({args.memory_tokens:,} tokens)",
        f"peak {big['peak_kb'] / 1024:.1f} MiB after {big['tokens']:,} vs {small['peak_kb'] / 1024:.1f} MiB "
        f"after {small['tokens']:,} (cache 4,096)",
        bounded,
    )
    report.data["memory"] = results


async def _es256_section(args: argparse.Namespace, report: Report) -> None:
    """ES256 (the google-iap preset) against the raw ECDSA verify: issue 14's row."""
    result = await es256.es256_rows(args.pool, args.rounds, args.batch)
    bare, cloudflare_same, same, fresh = result["cases"]
    raw_us = min(result["crypto"]["raw ECDSA P-256 verify"]) / 1000
    report.h(f"ES256 (google-iap preset): µs per request or call (best of {args.rounds} interleaved rounds)")
    rows = [
        [c.name, _fmt(common.best_us(c), 2), "—" if c is bare else _fmt(common.added_us(c, bare), 2)]
        for c in result["cases"]
    ]
    for name, samples in result["crypto"].items():
        us = min(samples) / 1000
        rows.append([name, _fmt(us, 2), f"{us / raw_us:.2f}x raw ECDSA"])
    report.table(["case", "µs", "added over bare, µs"], rows)
    fresh_added = common.added_us(fresh, bare)
    same_added = common.added_us(same, bare)
    report.verdict(
        f"ES256 fresh token ≤ {FRESH_VS_RAW:g}x raw ECDSA verify",
        f"{fresh_added / raw_us:.2f}x (added {fresh_added:.1f} µs vs raw {raw_us:.1f} µs)",
        fresh_added / raw_us <= FRESH_VS_RAW,
    )
    cloudflare_added = common.added_us(cloudflare_same, bare)
    report.verdict(
        "ES256 same token adds what a Cloudflare same token adds (within 0.5 µs, same run)",
        f"{same_added:.2f} µs vs Cloudflare's {cloudflare_added:.2f} µs (the Cloudflare target is "
        f"≤ {SAME_TOKEN_ADDED_US:g} µs; see section 1)",
        same_added <= cloudflare_added + 0.5,
    )
    report.data["es256"] = {
        "cases": [{"name": c.name, "samples_ns": c.samples, "batch": c.batch} for c in result["cases"]],
        "crypto_ns": result["crypto"],
    }


async def _main(args: argparse.Namespace) -> Report:
    logging.getLogger("cfaccess_mw.audit").setLevel(logging.CRITICAL)  # refusals would log a warning each
    peers = {} if args.no_peers else apps.available_peers()
    report = Report()
    report.lines += [f"_{_environment(peers)}; command: `{args.command}`_"]
    await _inprocess_sections(args, report, peers)
    await _es256_section(args, report)
    await _jwks_section(args, report, peers)
    if not args.no_memory:
        _memory_section(args, report)
    _cache_section(report)
    return report


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer rounds, smaller counts (< 60 s)")
    parser.add_argument("--no-peers", action="store_true", help="measure ours only, even if the peers are installed")
    parser.add_argument("--no-e2e", action="store_true", help="skip the uvicorn section")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory section")
    parser.add_argument("--json", type=Path, help="also write every sample to this file")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = 5 if quick else 15
    args.batch = 0.015 if quick else 0.04
    args.pool = 300 if quick else 1500
    args.e2e_rounds = 1 if quick else 3
    args.e2e_seconds = 1.0 if quick else 3.0
    args.connections = 8
    args.concurrent = 500
    args.flood = 2_000 if quick else 10_000
    args.flood_seconds = 2.2 if quick else 3.5
    args.rotation_wait = 2.2 if quick else 3.0
    args.memory_tokens = 50_000 if quick else 1_000_000
    args.command = os.environ.get("BENCH_COMMAND") or " ".join(["python -m benchmarks.run", *argv])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    report = asyncio.run(_main(args))
    report.note(f"Run took {time.perf_counter() - started:.0f} s.")
    text = report.text()
    print(text)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(report.data, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
