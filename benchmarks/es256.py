"""The ES256 rows (issue 14): a Google IAP preset against the raw ECDSA verify, in-process.

Same method as sections 1 and 2: every case of a group interleaved round by round,
best round kept. The fresh-token case refills the token cache before each batch
(see :func:`benchmarks.inprocess._cache_prefiller`), so each token pays the whole
path: header, key lookup, 64-byte signature checks and conversion, ECDSA, claims.
"""

from __future__ import annotations

import base64
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import ECDSA
from cryptography.hazmat.primitives.hashes import SHA256

from cfaccess_mw import CloudflareAccessMiddleware
from cfaccess_mw.core.ec import es256_der_signature
from cfaccess_mw.core.profiles import build_profile
from cfaccess_mw.core.providers import IAP_ISSUER
from cfaccess_mw.core.verifier import TokenVerifier
from cfaccess_mw.testing import LocalIssuer
from cfaccess_mw.testing.presets import GoogleIapIssuer

from . import apps
from .common import USERS, Case, jwt_scope, run_group, run_sync, scope, time_sync_group
from .inprocess import _cache_prefiller


def _iap_scope(token: str) -> dict[str, Any]:
    return scope([(b"x-goog-iap-jwt-assertion", token.encode("ascii"))])


class _Keys:
    def __init__(self, kid: str, key: Any) -> None:
        self.kid, self.key = kid, key

    async def get_key(self, kid: str) -> Any:
        return self.key

    def has_kid(self, kid: str) -> bool:
        return kid == self.kid


async def es256_rows(pool_size: int, rounds: int, batch_seconds: float) -> dict[str, Any]:
    """In-process cases (bare, same token, fresh token) and the crypto floor (raw ECDSA, PyJWT, ours)."""
    with GoogleIapIssuer(max_requests=1000, max_seconds=600) as iap, LocalIssuer(max_seconds=600) as cloudflare:
        settings = iap.settings()
        bare = apps.bare_starlette()
        mw = CloudflareAccessMiddleware(bare, settings=settings, user_lookup=apps.find_user)
        team = apps.Team(cloudflare.team_domain, cloudflare.audience, cloudflare.certs_url)
        cf = apps.ours(bare, team)
        for m in (mw, cf):
            assert m.jwks is not None
            await m.jwks.refresh()
        same = iap.identity_token(USERS[0])
        pool = [iap.identity_token(USERS[i % len(USERS)], jti=str(i)) for i in range(pool_size)]
        cases = [
            Case("bare Starlette", bare, [scope()], 200),
            Case(
                "cloudflare (a) same token, for comparison", cf, [jwt_scope(cloudflare.identity_token(USERS[0]))], 200
            ),
            Case("google-iap (a) same token", mw, [_iap_scope(same)], 200),
            Case(
                "google-iap (b) fresh token",
                mw,
                [_iap_scope(t) for t in pool],
                200,
                _cache_prefiller(mw, pool[0]),
                len(pool),
            ),
        ]
        await run_group(cases, rounds, batch_seconds)

        key = iap.private_key().public_key()
        header_b64, payload_b64, signature_b64 = same.split(".")
        signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
        der = es256_der_signature(base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4)))
        ecdsa = ECDSA(SHA256())
        verifier = TokenVerifier(
            issuer=IAP_ISSUER,
            audiences=(iap.audience,),
            keys=_Keys(iap.signing_kid, key),
            cache_size=0,
            profile=build_profile(settings),
        )
        assert run_sync(verifier.verify(same))["email"] == USERS[0]
        decode = jwt.decode
        crypto = time_sync_group(
            {
                "raw ECDSA P-256 verify": lambda: key.verify(der, signing_input, ecdsa),
                "PyJWT jwt.decode (ES256)": lambda: decode(
                    same, key, algorithms=["ES256"], audience=iap.audience, issuer=IAP_ISSUER, leeway=30
                ),
                "TokenVerifier.verify (google-iap), no cache": lambda: run_sync(verifier.verify(same)),
            },
            rounds,
            batch_seconds,
        )
    return {"cases": cases, "crypto": crypto}
