"""Before and after in one process: another revision's package against this tree's, interleaved.

    python -m benchmarks.versus main          # or: benchmarks/run.sh --versus main (adds a section)

Ratios from two separate runs mix two machines' moods; this loads the package as it is at ``REF``
(``git archive``, imported under another name: the package only imports itself relatively) next to
the working tree's, builds the same apps with each, and times them in the same interleaved rounds as
the rest of the suite. The rows are issue 11's: the ``async`` and plain ``def`` lookups on Starlette,
and on FastAPI the middleware alone, ``CurrentPrincipal`` and ``require("user")``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from . import apps, common

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "cfaccess_mw_before"


def load_revision(ref: str, into: Path) -> ModuleType:
    """The ``cfaccess_mw`` package as it is at ``ref``, importable as ``cfaccess_mw_before``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "cfaccess_mw"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / BEFORE
    (into / "cfaccess_mw").rename(package)
    for source in package.glob("*.py"):  # any absolute self-import would load this tree's package instead
        text = source.read_text(encoding="utf-8")
        source.write_text(re.sub(r"\b(from|import) cfaccess_mw\b", rf"\1 {BEFORE}", text), encoding="utf-8")
    sys.path.insert(0, str(into))
    return importlib.import_module(BEFORE)


def _middleware(package: ModuleType, app: Any, team: apps.Team, sync: bool = False, **extra: Any) -> Any:
    base = team.settings()
    settings = package.Settings(
        exposure_mode=base.exposure_mode,
        team_domain=base.team_domain,
        audiences=base.audiences,
        certs_url=base.certs_url,
        **extra,
    )
    lookup = apps.find_user_sync if sync else apps.find_user
    return package.CloudflareAccessMiddleware(app, settings=settings, user_lookup=lookup)


def _fastapi(dependency: Any = None) -> Any:
    from fastapi import Depends, FastAPI
    from starlette.responses import PlainTextResponse

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    async def home() -> PlainTextResponse:
        return PlainTextResponse("ok")

    app.add_api_route("/", home, dependencies=[Depends(dependency)] if dependency is not None else [])
    return app


async def run(ref: str, team: apps.Team, same: str, rounds: int, batch_seconds: float) -> list[common.Case]:
    """Cases in pairs (before, after) after each bare app; the first case of each framework is its bare app."""
    import cfaccess_mw
    import cfaccess_mw.fastapi

    with tempfile.TemporaryDirectory() as tmp:
        before = load_revision(ref, Path(tmp))
        before_fastapi = importlib.import_module(f"{BEFORE}.fastapi")
        sides = [(f"{ref}", before, before_fastapi), ("this tree", cfaccess_mw, cfaccess_mw.fastapi)]
        bare = apps.bare_starlette()
        fbare = _fastapi()
        same_scopes = [common.jwt_scope(same)]
        cases = [common.Case("bare Starlette", bare, [common.scope()], 200)]
        for label, package, _ in sides:
            cases.append(
                common.Case(f"Starlette, async lookup ({label})", _middleware(package, bare, team), same_scopes, 200)
            )
        for label, package, _ in sides:
            middleware = _middleware(package, bare, team, sync=True)
            cases.append(common.Case(f"Starlette, def lookup ({label})", middleware, same_scopes, 200))
        if "user_cache_seconds" in cfaccess_mw.Settings.__dataclass_fields__:
            middleware = _middleware(cfaccess_mw, bare, team, sync=True, user_cache_seconds=60)
            cases.append(common.Case("Starlette, def lookup, user cache on (this tree)", middleware, same_scopes, 200))
        cases.append(common.Case("bare FastAPI", fbare, [common.scope()], 200))
        for label, package, _ in sides:
            cases.append(
                common.Case(f"FastAPI, middleware only ({label})", _middleware(package, fbare, team), same_scopes, 200)
            )
        for label, package, integration in sides:
            app = _middleware(package, _fastapi(integration.get_principal), team)
            cases.append(common.Case(f"FastAPI, CurrentPrincipal ({label})", app, same_scopes, 200))
        for label, package, integration in sides:
            app = _middleware(package, _fastapi(integration.require("user")), team)
            cases.append(common.Case(f'FastAPI, require("user") ({label})', app, same_scopes, 200))
        for case in cases:
            jwks = getattr(case.app, "jwks", None)
            if jwks is not None:
                await jwks.refresh()
        await common.run_group(cases, rounds, batch_seconds)
    sys.modules.pop(BEFORE, None)
    return cases


def table(cases: list[common.Case]) -> tuple[list[str], list[list[str]]]:
    """Rows of (case, µs/request, added over its bare app, as a multiple of that bare request)."""
    rows = []
    bare = cases[0]
    for case in cases:
        if case.name.startswith("bare"):
            bare = case
        added = common.added_us(case, bare)
        rows.append(
            [
                case.name,
                f"{common.best_us(case):.2f}",
                "—" if case is bare else f"{added:.2f}",
                "—" if case is bare else f"{added / common.best_us(bare):.2f}x",
            ]
        )
    return ["case", "µs/request", "added over its bare app, µs", "of a bare request"], rows


async def _main(ref: str, rounds: int, batch_seconds: float) -> None:
    from cfaccess_mw.testing import LocalIssuer

    with LocalIssuer(max_requests=1000, max_seconds=900) as issuer:
        team = apps.Team(issuer.team_domain, issuer.audience, issuer.certs_url)
        minter = common.Minter(issuer.private_key(), issuer.signing_kid, issuer.issuer, issuer.audience)
        cases = await run(ref, team, minter.identity_token(common.USERS[0]), rounds, batch_seconds)
    head, rows = table(cases)
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus", description=__doc__.split("\n")[0])
    parser.add_argument("ref", nargs="?", default="main", help="the git revision to compare with (default: main)")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    asyncio.run(_main(args.ref, args.rounds, 0.04))
    return 0


if __name__ == "__main__":
    sys.exit(main())
