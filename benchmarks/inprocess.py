"""Sections 1, 2 and 4 (in-process): the floor, the crypto floor and the peers, called through ASGI.

All cases of one group are interleaved round by round (see :mod:`benchmarks.common`).
"""

from __future__ import annotations

from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.hashes import SHA256

from cfaccess_mw import CloudflareAccessMiddleware, ExposureMode
from cfaccess_mw.core.verifier import TokenVerifier

from . import apps
from .common import (
    LOOPBACK_PEER,
    USERS,
    Case,
    cookie_scope,
    jwt_scope,
    run_group,
    run_sync,
    scope,
    time_sync_group,
)


def _cache_prefiller(mw: CloudflareAccessMiddleware, token: str) -> Any:
    """Before each fresh-token batch: refill the token cache to its size with other entries, so every
    fresh token pays insertion *and* eviction (the steady state of a busy server), and none of the
    batch's tokens is already cached from an earlier round."""
    verifier = mw.verifier
    assert verifier is not None
    cache = getattr(verifier, "_cache", None)
    if not isinstance(cache, dict):
        return None  # the cache changed shape; run without prefilling (the README's table says so)
    entry = run_sync(verifier.verify_token(token))
    filler = {f"filler-{i}": entry for i in range(verifier.cache_size)}

    def refill() -> None:
        cache.clear()
        cache.update(filler)

    return refill


class _Keys:
    """A key source holding one already-fetched key (what the JWKS client holds after start-up)."""

    def __init__(self, kid: str, key: RSAPublicKey) -> None:
        self.kid, self.key = kid, key

    async def get_key(self, kid: str) -> RSAPublicKey:
        return self.key

    def cached_key(self, kid: str) -> RSAPublicKey | None:
        return self.key if kid == self.kid else None


async def floor_and_peers(
    team: apps.Team, same: str, pool: list[str], bad: str, rounds: int, batch_seconds: float, peers: dict[str, bool]
) -> dict[str, Any]:
    """Returns {"starlette": [cases], "fastapi": [cases] or None}: the first case of each list is the bare app."""
    bare = apps.bare_starlette()
    mw = apps.ours(bare, team)
    mw_sync = apps.ours(bare, team, sync_lookup=True)
    mw_sync_cached = apps.ours(bare, team, sync_lookup=True, user_cache_seconds=USER_CACHE_SECONDS)
    mw_local = apps.ours(bare, team, exposure_mode=ExposureMode.LOCAL)
    for m in (mw, mw_sync, mw_sync_cached, mw_local):
        assert m.jwks is not None
        await m.jwks.refresh()
    same_scopes = [jwt_scope(same)]
    fresh_scopes = [jwt_scope(t) for t in pool]
    bad_scopes = [jwt_scope(bad)]
    n_fresh = len(pool)
    starlette = [
        Case("bare Starlette", bare, [scope()], 200),
        Case("(a) same token", mw, same_scopes, 200),
        Case("(b) fresh token", mw, fresh_scopes, 200, _cache_prefiller(mw, pool[0]), n_fresh),
        Case("(c) Bearer API key", mw, [scope([(b"authorization", f"Bearer {apps.API_KEY_SECRET}".encode())])], 200),
        Case("(d) loopback, local mode", mw_local, [scope(client=LOOPBACK_PEER)], 200),
        Case("(e) rejected token (bad signature)", mw, bad_scopes, 401),
        Case("(a') same token, sync user_lookup", mw_sync, same_scopes, 200),
        Case("(a'') same token, sync user_lookup, user cache on", mw_sync_cached, same_scopes, 200),
    ]
    if peers.get("cc-auth"):
        cc = apps.cc_auth(bare, team)
        starlette += [
            Case("cc-auth (a) same token", cc, same_scopes, 200),
            Case("cc-auth (b) fresh token", cc, fresh_scopes, 200, None, n_fresh),
            Case("cc-auth (e) rejected token", cc, bad_scopes, 401),
        ]
    deps = await _fastapi_dependencies(team, same_scopes)
    groups: dict[str, Any] = {"starlette": starlette, "fastapi": None, "fastapi_deps": deps}
    cases = [*starlette, *deps]
    if peers.get("fastapi-cloudflare-access-jwt"):
        fbare_case = deps[0]  # the same bare FastAPI app and case: one row, measured once
        fmw = apps.ours(fbare_case.app, team, allow_cookie=True)
        assert fmw.jwks is not None
        await fmw.jwks.refresh()
        fc = apps.fastapi_cloudflare_access_jwt(team)
        fastapi = [
            fbare_case,
            Case("ours (a) same token, cookie", fmw, [cookie_scope(same)], 200),
            Case(
                "ours (b) fresh token, cookie",
                fmw,
                [cookie_scope(t) for t in pool],
                200,
                _cache_prefiller(fmw, pool[0]),
                n_fresh,
            ),
            Case("ours (e) rejected token, cookie", fmw, [cookie_scope(bad)], 401),
            Case("fastapi-cloudflare-access-jwt (a) same token", fc, [cookie_scope(same)], 200),
            Case(
                "fastapi-cloudflare-access-jwt (b) fresh token", fc, [cookie_scope(t) for t in pool], 200, None, n_fresh
            ),
            Case("fastapi-cloudflare-access-jwt (e) rejected token", fc, [cookie_scope(bad)], 403),
        ]
        groups["fastapi"] = fastapi
        cases += fastapi[1:]
    await run_group(cases, rounds, batch_seconds)
    return groups


#: The user cache's lifetime in the "user cache on" rows (any value above the run's length gives the same figure).
USER_CACHE_SECONDS = 60

#: FastAPI rows of issue 11's table: (name, app factory in benchmarks.fastapi_apps, behind our middleware?).
FASTAPI_DEPENDENCY_ROWS = [
    ("bare FastAPI", "bare", False),
    ("FastAPI, middleware only", None, True),  # ours around the bare FastAPI app itself
    ("FastAPI, CurrentPrincipal (before: 2 Security sub-dependencies)", "old_current_principal", True),
    ("FastAPI, CurrentPrincipal", "current_principal", True),
    ('FastAPI, require("user") (before: on top of the old CurrentPrincipal)', "old_required_user", True),
    ('FastAPI, require("user")', "required_user", True),
    ('FastAPI, one plain Depends reading scope["user"]', "plain_depends", True),
]


async def _fastapi_dependencies(team: apps.Team, same_scopes: list[dict[str, Any]]) -> list[Case]:
    """Issue 11's FastAPI rows: a bare FastAPI app, ours around it, and ours around apps whose one route gets
    the principal in different ways. All with the async dict lookup and the same token."""
    from . import fastapi_apps

    cases: list[Case] = []
    bare_app: Any = None
    for name, factory, protected in FASTAPI_DEPENDENCY_ROWS:
        if factory is None:
            app = bare_app
        else:
            app = getattr(fastapi_apps, factory)()
            if bare_app is None:
                bare_app = app
        if protected:
            app = apps.ours(app, team)
            assert app.jwks is not None
            await app.jwks.refresh()
        cases.append(Case(name, app, same_scopes if protected else [scope()], 200))
    return cases


def crypto_floor(
    team: apps.Team, kid: str, key: RSAPublicKey, token: str, rounds: int, batch_seconds: float
) -> dict[str, list[float]]:
    """Raw RSA verify, PyJWT's decode and our verifier (no cache) on the same token; ns per call."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    signature = jwt.utils.base64url_decode(signature_b64)
    padding, sha256 = PKCS1v15(), SHA256()
    verifier = TokenVerifier(issuer=team.issuer, audiences=(team.audience,), keys=_Keys(kid, key), cache_size=0)
    audience, issuer = team.audience, team.issuer
    assert run_sync(verifier.verify(token))["email"] == USERS[0]
    assert jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=issuer)["email"] == USERS[0]
    return time_sync_group(
        {
            "raw RSA verify": lambda: key.verify(signature, signing_input, padding, sha256),
            "PyJWT jwt.decode": lambda: jwt.decode(
                token, key, algorithms=["RS256"], audience=audience, issuer=issuer, leeway=30
            ),
            "TokenVerifier.verify, no cache": lambda: run_sync(verifier.verify(token)),
            "base64url + JSON only (our decode_unverified)": lambda: _decode_only(token),
        },
        rounds,
        batch_seconds,
    )


def _decode_only(token: str) -> object:
    from cfaccess_mw.core.tokens import decode_unverified

    return decode_unverified(token)
